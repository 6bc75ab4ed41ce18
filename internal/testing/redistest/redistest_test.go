//go:build unix

package redistest_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// Ports of every server started by these tests; TestNoLeftoverProcesses
// checks that none of them still has a process.
var started struct {
	sync.Mutex
	ports []int
}

func track(servers ...*redistest.Server) {
	started.Lock()
	defer started.Unlock()
	for _, s := range servers {
		started.ports = append(started.ports, s.Port)
	}
}

// rawPing sends PING over a plain connection and returns the reply line.
func rawPing(addr string, readTimeout time.Duration) (string, error) {
	return rawCommand(addr, readTimeout, "PING")
}

func rawCommand(addr string, readTimeout time.Duration, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	if err := c.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

func TestStartPingSetGet(t *testing.T) {
	s := redistest.Start(t)
	track(s)
	if reply, err := rawPing(s.Addr, time.Second); err != nil || reply != "+PONG" {
		t.Fatalf("raw PING = %q, %v; want +PONG", reply, err)
	}
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("Do PING = %q", got)
	}
	if got := s.Do(t, "SET", "greeting", "hello world"); got != "OK" {
		t.Fatalf("SET = %q", got)
	}
	if got := s.Do(t, "GET", "greeting"); got != "hello world" {
		t.Fatalf("GET = %q", got)
	}
	if got := s.Do(t, "GET", "missing"); got != "" {
		t.Fatalf("GET missing = %q, want empty", got)
	}
	if want := "redis://" + s.Addr + "/0"; s.URL() != want {
		t.Fatalf("URL = %q, want %q", s.URL(), want)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") || s.Addr != "127.0.0.1:"+strconv.Itoa(s.Port) {
		t.Fatalf("Addr = %q, Port = %d", s.Addr, s.Port)
	}
	if got := s.Do(t, "CONFIG", "GET", "appendonly"); got != "appendonly\nno" {
		t.Fatalf("CONFIG GET appendonly = %q", got)
	}
}

func TestWithArgs(t *testing.T) {
	s := redistest.Start(t, redistest.WithArgs("--maxmemory", "10mb"))
	track(s)
	if got := s.Do(t, "CONFIG", "GET", "maxmemory"); got != "maxmemory\n10485760" {
		t.Fatalf("CONFIG GET maxmemory = %q", got)
	}
}

func TestRestartKeepsDataWithAOF(t *testing.T) {
	s := redistest.Start(t, redistest.WithAOF())
	track(s)
	addr := s.Addr
	s.Do(t, "SET", "k", "v")
	s.Stop(t)
	if _, err := rawPing(addr, 300*time.Millisecond); err == nil {
		t.Fatal("stopped server still answers PING")
	}
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("Addr changed across restart: %s -> %s", addr, s.Addr)
	}
	if got := s.Do(t, "GET", "k"); got != "v" {
		t.Fatalf("after Stop+Restart GET k = %q, want v", got)
	}

	// appendfsync always: an acknowledged write survives a crash too.
	s.Do(t, "SET", "k2", "v2")
	s.Kill(t)
	s.Restart(t)
	if got := s.Do(t, "GET", "k2"); got != "v2" {
		t.Fatalf("after Kill+Restart GET k2 = %q, want v2", got)
	}
}

func TestRestartLosesDataWithoutAOF(t *testing.T) {
	s := redistest.Start(t)
	track(s)
	s.Do(t, "SET", "k", "v")
	s.Stop(t)
	s.Restart(t)
	if got := s.Do(t, "GET", "k"); got != "" {
		t.Fatalf("after Stop+Restart without AOF GET k = %q, want empty", got)
	}
	// Restart of a running server stops it first.
	s.Do(t, "SET", "k", "v")
	s.Restart(t)
	if got := s.Do(t, "GET", "k"); got != "" {
		t.Fatalf("after Restart without AOF GET k = %q, want empty", got)
	}
}

func TestPauseResume(t *testing.T) {
	s := redistest.Start(t)
	track(s)
	s.Pause(t)
	start := time.Now()
	reply, err := rawPing(s.Addr, 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING to a paused server = %q, %v; want a read timeout", reply, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PING to a paused server took %v", d)
	}
	s.Resume(t)
	if reply, err := rawPing(s.Addr, 2*time.Second); err != nil || reply != "+PONG" {
		t.Fatalf("PING after Resume = %q, %v; want +PONG", reply, err)
	}
	// Stop on a paused server: SIGTERM is acted on once SIGCONT follows.
	s.Pause(t)
	start = time.Now()
	s.Stop(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop of a paused server took %v", d)
	}
	s.Restart(t)
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING after Pause+Stop+Restart = %q", got)
	}
	// Left paused on purpose: the cleanup must kill a stopped process too.
	s.Pause(t)
}

func TestWithPassword(t *testing.T) {
	s := redistest.Start(t, redistest.WithPassword("s3cret"))
	track(s)
	reply, err := rawCommand(s.Addr, time.Second, "GET", "k")
	if err != nil || !strings.HasPrefix(reply, "-NOAUTH") {
		t.Fatalf("unauthenticated GET = %q, %v; want -NOAUTH", reply, err)
	}
	if got := s.Do(t, "SET", "k", "v"); got != "OK" {
		t.Fatalf("SET with password = %q", got)
	}
	if want := "redis://:s3cret@" + s.Addr + "/0"; s.URL() != want {
		t.Fatalf("URL = %q, want %q", s.URL(), want)
	}
	// Restart keeps the password and the probe still authenticates.
	s.Restart(t)
	if got := s.Do(t, "PING"); got != "PONG" {
		t.Fatalf("PING after restart = %q", got)
	}
}

func TestWithACL(t *testing.T) {
	s := redistest.Start(t,
		redistest.WithACL(
			"user default on nopass ~* &* +@all",
			"user alice on >alicepw ~app:* +@all",
		))
	track(s)
	// One connection: AUTH as alice, then a key inside and outside her pattern.
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	for _, tc := range []struct{ cmd, want string }{
		{"*3\r\n$4\r\nAUTH\r\n$5\r\nalice\r\n$7\r\nalicepw\r\n", "+OK"},
		{"*3\r\n$3\r\nSET\r\n$5\r\napp:x\r\n$1\r\n1\r\n", "+OK"},
		{"*3\r\n$3\r\nSET\r\n$5\r\nother\r\n$1\r\n1\r\n", "-NOPERM"},
	} {
		if _, err := c.Write([]byte(tc.cmd)); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, tc.want) {
			t.Fatalf("%q -> %q, %v; want %s", tc.cmd, line, err, tc.want)
		}
	}
	if got := s.Do(t, "ACL", "WHOAMI"); got != "default" {
		t.Fatalf("ACL WHOAMI = %q", got)
	}
}

func TestCluster(t *testing.T) {
	c := redistest.Cluster(t, 3)
	track(c.Nodes...)
	if len(c.Addrs) != 3 || len(c.Nodes) != 3 {
		t.Fatalf("Addrs = %v, %d nodes", c.Addrs, len(c.Nodes))
	}
	for i, n := range c.Nodes {
		if c.Addrs[i] != n.Addr {
			t.Fatalf("Addrs[%d] = %s, node addr %s", i, c.Addrs[i], n.Addr)
		}
		info := n.Do(t, "CLUSTER", "INFO")
		for _, want := range []string{"cluster_state:ok", "cluster_known_nodes:3", "cluster_slots_assigned:16384"} {
			if !strings.Contains(info, want) {
				t.Fatalf("node %s CLUSTER INFO lacks %s:\n%s", n.Addr, want, info)
			}
		}
	}
	// Keys in different slots, redirections followed by redis-cli -c.
	for i := range 10 {
		key := "key" + strconv.Itoa(i)
		c.Do(t, "SET", key, "v"+strconv.Itoa(i))
		if got := c.Do(t, "GET", key); got != "v"+strconv.Itoa(i) {
			t.Fatalf("GET %s = %q", key, got)
		}
	}
}

func TestSentinel(t *testing.T) {
	ss := redistest.Sentinel(t)
	track(ss.Master, ss.Replica, ss.SentinelNode)
	if ss.MasterName != "mymaster" || len(ss.SentinelAddrs) != 1 || ss.SentinelAddrs[0] != ss.SentinelNode.Addr {
		t.Fatalf("MasterName %q, SentinelAddrs %v", ss.MasterName, ss.SentinelAddrs)
	}
	masterAddr := func() string {
		return strings.Join(strings.Fields(ss.SentinelNode.Do(t, "SENTINEL", "get-master-addr-by-name", "mymaster")), ":")
	}
	oldMaster, oldReplica := ss.Master, ss.Replica
	if got := masterAddr(); got != oldMaster.Addr {
		t.Fatalf("sentinel reports master %s, want %s", got, oldMaster.Addr)
	}
	oldMaster.Do(t, "SET", "k", "v")
	waitFor(t, 5*time.Second, "replication of k", func() bool { return oldReplica.Do(t, "GET", "k") == "v" })

	ss.Failover(t)
	if got := masterAddr(); got != oldReplica.Addr {
		t.Fatalf("after Failover sentinel reports master %s, want %s", got, oldReplica.Addr)
	}
	if ss.Master != oldReplica || ss.Replica != oldMaster {
		t.Fatal("Failover did not swap Master and Replica")
	}
	if info := ss.Master.Do(t, "INFO", "replication"); !strings.Contains(info, "role:master") {
		t.Fatalf("new master INFO replication:\n%s", info)
	}
	if got := ss.Master.Do(t, "GET", "k"); got != "v" {
		t.Fatalf("new master GET k = %q", got)
	}
	ss.Master.Do(t, "SET", "k2", "v2")
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakeTB records the outcome of Require; Fatalf and Skip end the goroutine
// like the real ones do.
type fakeTB struct {
	testing.TB
	kind, msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.kind, f.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.kind, f.msg = "skip", fmt.Sprint(args...)
	runtime.Goexit()
}

func TestRequireMissing(t *testing.T) {
	for _, tc := range []struct{ ci, kind, want string }{
		{"true", "fatal", "redis-server is required under CI; install the redis-server package"},
		{"", "skip", "SKIPPING: redis-server not installed; apt-get install -y redis-server"},
		{"false", "skip", "SKIPPING: redis-server not installed"},
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			f := &fakeTB{TB: t}
			done := make(chan string)
			go func() {
				var path string
				defer func() { done <- path }()
				path = redistest.Require(f)
			}()
			if path := <-done; path != "" {
				t.Fatalf("Require returned %q with an empty PATH", path)
			}
			if f.kind != tc.kind || !strings.Contains(f.msg, tc.want) {
				t.Fatalf("Require: %s %q; want %s containing %q", f.kind, f.msg, tc.kind, tc.want)
			}
		})
	}
}

func TestRequireFound(t *testing.T) {
	path := redistest.Require(t)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Require returned %q: %v", path, err)
	}
}

// Keep last: Go runs tests in source order, so every server above has been
// through its t.Cleanup by now.
func TestNoLeftoverProcesses(t *testing.T) {
	pgrep, err := exec.LookPath("pgrep")
	if err != nil {
		t.Skip("pgrep not installed")
	}
	started.Lock()
	ports := append([]int(nil), started.ports...)
	started.Unlock()
	if len(ports) == 0 {
		t.Skip("no servers started in this run")
	}
	for _, port := range ports {
		// redis-server retitles itself "redis-server 127.0.0.1:PORT [...]".
		pattern := `redis-server 127\.0\.0\.1:` + strconv.Itoa(port) + `( |$)`
		out, err := exec.Command(pgrep, "-a", "-f", pattern).Output()
		var ee *exec.ExitError
		switch {
		case err == nil:
			t.Errorf("redis-server on port %d still running:\n%s", port, out)
		case errors.As(err, &ee) && ee.ExitCode() == 1: // no match
		default:
			t.Fatalf("pgrep: %v", err)
		}
	}
	t.Logf("checked %d ports, no redis-server left", len(ports))
}

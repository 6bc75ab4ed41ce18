//go:build unix

// Package redistest starts throwaway redis-server processes for tests, the
// way net/http/httptest starts HTTP servers: Start runs one standalone server,
// Cluster runs an n-node Redis Cluster and Sentinel runs a master, a replica
// and a sentinel. Every server listens on 127.0.0.1 on a free port, keeps its
// files in its own t.TempDir, and is killed by t.Cleanup. A Server can be
// stopped, killed, restarted on the same port and dir, and paused with
// SIGSTOP (the black-hole case: the port accepts connections but nothing
// answers). NewProxy puts a TCP relay in front of one, to make Redis slow to
// answer or to cut a client off from it.
//
// It execs the redis-server and redis-cli binaries found on $PATH (see
// Require) and depends only on the standard library.
//
// What it does not do: it does not download, build or vendor Redis, and it
// is not a Redis client — Do runs one redis-cli process per command, which is
// fine for setting up and asserting state but not for load. It does not
// support TLS, unix sockets or Windows. It cannot clean up after a test
// binary that dies without running its cleanups (for example on a
// "test timed out" panic or SIGKILL): such servers keep running until killed
// by hand. Servers are never shared between tests.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	readyTimeout = 10 * time.Second // Start / Restart: until PING answers
	stopTimeout  = 10 * time.Second // Stop / Kill / cleanup: until the process has exited
	cliTimeout   = 10 * time.Second // one redis-cli invocation
	pollInterval = 50 * time.Millisecond
	startTries   = 5 // ports picked before giving up when they keep being taken
	logName      = "redis.log"
	stdioName    = "stdio.log" // stdout+stderr: config errors land here, before the log file is open
	aclName      = "users.acl"
)

// errPortInUse marks a start that failed only because somebody else bound
// the port between picking and starting; Start then retries on another port.
var errPortInUse = errors.New("port already in use")

// Require returns the path of redis-server (and checks that redis-cli is on
// $PATH as well). If either is missing, it fails the test when the
// environment variable CI is "true" and skips it otherwise.
func Require(t testing.TB) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err == nil {
		_, err = exec.LookPath("redis-cli")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redistest: redis-server is required under CI; install the redis-server package (apt-get install -y redis-server): %v", err)
		}
		t.Skip("SKIPPING: redis-server not installed; apt-get install -y redis-server (" + err.Error() + ")")
	}
	return server
}

// Option configures a Server started by Start.
type Option func(*config)

type config struct {
	aof      bool
	password string
	acl      []string
	args     []string

	clusterPorts bool                  // port < 55535 and port+10000 (the cluster bus) free too
	sentinel     bool                  // run as "redis-server sentinel.conf --sentinel"
	prepare      func(s *Server) error // called with the picked port, before each first-start attempt
	afterStart   func(s *Server) error // called after every successful start and restart
}

// WithAOF turns on the append-only file with appendfsync always, so every
// acknowledged write survives Stop, Kill and Restart. Without it the server
// runs with --save "" and --appendonly no and forgets everything on restart.
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithPassword sets requirepass. Do, URL and the readiness probe use the
// password.
func WithPassword(pw string) Option { return func(c *config) { c.password = pw } }

// WithACL writes lines (for example "user alice on >pw ~app:* +@all") to an
// aclfile in the server's dir and passes --aclfile. Do authenticates as the
// default user only (with the WithPassword password, if any), so keep the
// default user usable if you want Do to work.
func WithACL(lines ...string) Option {
	return func(c *config) { c.acl = append(c.acl, lines...) }
}

// WithArgs appends raw redis-server arguments, for example
// WithArgs("--maxmemory", "10mb"). They come last and so override the
// defaults.
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is one redis-server process. Its port and dir stay the same across
// Stop / Kill and Restart.
type Server struct {
	Addr string // "127.0.0.1:PORT"; read-only
	Port int    // read-only
	Dir  string // the server's --dir (a t.TempDir); read-only

	bin, cli string
	cfg      config

	mu   sync.Mutex
	proc *process // nil while stopped
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	err  error         // Wait's result, valid after done
}

// Start starts a redis-server on 127.0.0.1 and a free port, with its own
// t.TempDir as --dir, and waits (up to 10 s) until it answers PING. The
// server is killed by t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts...)
	s.start(t)
	return s
}

func newServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	bin := Require(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: %v", err) // Require has checked; not reached
	}
	s := &Server{bin: bin, cli: cli, Dir: t.TempDir()}
	for _, o := range opts {
		o(&s.cfg)
	}
	if len(s.cfg.acl) > 0 {
		data := strings.Join(s.cfg.acl, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(s.Dir, aclName), []byte(data), 0o600); err != nil {
			t.Fatalf("redistest: writing aclfile: %v", err)
		}
	}
	// Registered after t.TempDir, so it runs before the dir is removed.
	t.Cleanup(s.cleanup)
	return s
}

// start picks a port and launches; a port taken in the meantime costs one
// retry on another port.
func (s *Server) start(t testing.TB) {
	t.Helper()
	var taken []string
	for range startTries {
		port, err := reservePort(s.cfg.clusterPorts)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if s.cfg.prepare != nil {
			if err := s.cfg.prepare(s); err != nil {
				t.Fatalf("redistest: %v", err)
			}
		}
		err = s.launch()
		if err == nil {
			return
		}
		releasePort(port, s.cfg.clusterPorts)
		if !errors.Is(err, errPortInUse) {
			t.Fatalf("redistest: %v", err)
		}
		taken = append(taken, err.Error())
	}
	t.Fatalf("redistest: gave up after %d ports were taken before redis-server could bind them:\n%s",
		startTries, strings.Join(taken, "\n"))
}

func (s *Server) logPath() string { return filepath.Join(s.Dir, logName) }

func (s *Server) args() []string {
	if s.cfg.sentinel {
		return []string{filepath.Join(s.Dir, sentinelConfName), "--sentinel"}
	}
	a := []string{
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--dir", s.Dir,
		"--logfile", s.logPath(),
		"--save", "",
	}
	if s.cfg.aof {
		a = append(a, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		a = append(a, "--appendonly", "no")
	}
	if s.cfg.password != "" {
		a = append(a, "--requirepass", s.cfg.password)
	}
	if len(s.cfg.acl) > 0 {
		a = append(a, "--aclfile", filepath.Join(s.Dir, aclName))
	}
	return append(a, s.cfg.args...)
}

// launch execs redis-server and waits until it answers PING. On failure the
// process is gone and s.proc is nil.
func (s *Server) launch() error {
	logOff := fileSize(s.logPath())
	stdioPath := filepath.Join(s.Dir, stdioName)
	stdioOff := fileSize(stdioPath)
	stdio, err := os.OpenFile(stdioPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// An *os.File is handed to the child as is: no copying goroutine, so Wait
	// does not hang on forked children (BGSAVE, replication) holding the fd.
	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = stdio, stdio
	err = cmd.Start()
	stdio.Close()
	if err != nil {
		return fmt.Errorf("starting %s: %v", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	if err := s.waitReady(p, logOff, stdioOff); err != nil {
		s.mu.Lock()
		s.proc = nil
		s.mu.Unlock()
		p.signal(syscall.SIGKILL)
		p.wait(stopTimeout)
		return err
	}
	if s.cfg.afterStart != nil {
		if err := s.cfg.afterStart(s); err != nil {
			return fmt.Errorf("redis-server on %s: %v", s.Addr, err)
		}
	}
	return nil
}

func (s *Server) waitReady(p *process, logOff, stdioOff int64) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		select {
		case <-p.done:
			out := readFrom(s.logPath(), logOff) + readFrom(filepath.Join(s.Dir, stdioName), stdioOff)
			if strings.Contains(out, "Address already in use") {
				return fmt.Errorf("%w: redis-server on %s: %s", errPortInUse, s.Addr, lastLines(out, 3))
			}
			return fmt.Errorf("redis-server on %s exited before answering PING (%v)%s", s.Addr, p.err, s.tails())
		default:
		}
		pid, err := probe(s.Addr, s.cfg.password, 500*time.Millisecond)
		switch {
		case err != nil:
			last = err
		case pid == 0 || pid == p.cmd.Process.Pid:
			return nil
		default:
			// Somebody else's redis-server has the port; ours will exit
			// with "Address already in use" in a moment.
			last = fmt.Errorf("port answered by another redis-server (pid %d)", pid)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within %v (last: %v)%s", s.Addr, readyTimeout, last, s.tails())
		}
		select {
		case <-p.done:
		case <-time.After(pollInterval):
		}
	}
}

// tails returns the end of the server's log and stdio files for a failure
// message.
func (s *Server) tails() string {
	var b strings.Builder
	for _, name := range []string{logName, stdioName} {
		data, _ := os.ReadFile(filepath.Join(s.Dir, name))
		if len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", filepath.Join(s.Dir, name), lastLines(string(data), 30))
	}
	return b.String()
}

// probe dials addr, authenticates if password is set, sends PING and wants
// +PONG, then asks INFO and returns process_id (0 if unknown). A server that
// answers PING with NOAUTH or NOPERM (ACLs without a usable default user) is
// up as well. A server still loading its data set is not ready.
func probe(addr, password string, timeout time.Duration) (pid int, err error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	r := bufio.NewReader(c)
	if password != "" {
		reply, err := roundTrip(c, r, "AUTH", password)
		if err != nil {
			return 0, err
		}
		if reply != "+OK" {
			return 0, fmt.Errorf("AUTH: %s", reply)
		}
	}
	reply, err := roundTrip(c, r, "PING")
	switch {
	case err != nil:
		return 0, err
	case strings.HasPrefix(reply, "-NOAUTH"), strings.HasPrefix(reply, "-NOPERM"):
		return 0, nil
	case reply != "+PONG":
		return 0, fmt.Errorf("PING: %s", reply)
	}
	info, err := roundTrip(c, r, "INFO")
	if err != nil {
		return 0, err
	}
	if strings.HasPrefix(info, "-") {
		return 0, nil // not allowed to look; PING is enough
	}
	if infoField(info, "loading") == "1" || infoField(info, "async_loading") == "1" {
		return 0, errors.New("still loading its data set")
	}
	pid, _ = strconv.Atoi(infoField(info, "process_id"))
	return pid, nil
}

// roundTrip writes one command as a RESP array of bulk strings and reads one
// reply: simple strings, errors and integers come back with their type byte
// ("+PONG", "-ERR ...", ":1"), bulk strings as their content.
func roundTrip(w io.Writer, r *bufio.Reader, args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', '-', ':':
		return line, nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// infoField returns the value of "key:value" in INFO-style text.
func infoField(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), key+":"); ok {
			return v
		}
	}
	return ""
}

// URL returns "redis://127.0.0.1:PORT/0", or "redis://:PASSWORD@127.0.0.1:PORT/0"
// with WithPassword.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr, Path: "/0"}
	if s.cfg.password != "" {
		u.User = url.UserPassword("", s.cfg.password)
	}
	return u.String()
}

// Stop sends SIGTERM (and SIGCONT, in case it is paused) and waits for the
// process to exit. The port stays reserved for Restart. Stopping a stopped
// server does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	p := s.take()
	if p == nil {
		return
	}
	p.signal(syscall.SIGTERM)
	p.signal(syscall.SIGCONT)
	if !p.wait(stopTimeout) {
		p.signal(syscall.SIGKILL)
		p.wait(stopTimeout)
		t.Errorf("redistest: redis-server on %s ignored SIGTERM for %v; killed it%s", s.Addr, stopTimeout, s.tails())
	}
}

// Kill sends SIGKILL and waits for the process to exit: a crash. Only data
// already in the AOF (WithAOF) survives. The port stays reserved for Restart.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	p := s.take()
	if p == nil {
		return
	}
	p.signal(syscall.SIGKILL)
	if !p.wait(stopTimeout) {
		t.Errorf("redistest: redis-server on %s still running %v after SIGKILL", s.Addr, stopTimeout)
	}
}

// Restart starts the server again on the same port and dir and waits until
// it answers PING. A running server is stopped (SIGTERM) first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop(t)
	if err := s.launch(); err != nil {
		t.Fatalf("redistest: restart: %v", err)
	}
}

// Pause sends SIGSTOP. The kernel still completes TCP handshakes on the port,
// but nothing reads or answers: the black-hole case. Resume undoes it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.setPaused(t, true)
}

// Resume sends SIGCONT to a paused server.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.setPaused(t, false)
}

func (s *Server) setPaused(t testing.TB, paused bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatalf("redistest: redis-server on %s is not running", s.Addr)
	}
	sig := syscall.SIGCONT
	if paused {
		sig = syscall.SIGSTOP
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("redistest: %v to redis-server on %s: %v", sig, s.Addr, err)
	}
}

// Do runs one command through "redis-cli -h 127.0.0.1 -p PORT [-a PW
// --no-auth-warning] -e ARGS..." and returns its trimmed stdout (raw output:
// array elements one per line, a nil reply as ""). The test fails if
// redis-cli exits non-zero, which with -e includes error replies, or takes
// longer than 10 s (a paused server).
func (s *Server) Do(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.do(args...)
	if err != nil {
		t.Fatalf("redistest: redis-cli %s on %s: %v", strings.Join(args, " "), s.Addr, err)
	}
	return out
}

func (s *Server) do(args ...string) (string, error) {
	a := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.Port)}
	if s.cfg.password != "" {
		a = append(a, "-a", s.cfg.password, "--no-auth-warning")
	}
	a = append(a, "-e")
	return runCLI(s.cli, cliTimeout, append(a, args...)...)
}

func runCLI(cli string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if ctx.Err() != nil {
		return out, fmt.Errorf("no answer within %v", timeout)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String() + "\n" + out)
		return out, fmt.Errorf("%v: %s", err, msg)
	}
	return out, nil
}

// take detaches the running process, if any.
func (s *Server) take() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	s.proc = nil
	return p
}

func (s *Server) cleanup() {
	if p := s.take(); p != nil {
		p.signal(syscall.SIGKILL)
		p.wait(stopTimeout)
	}
	if s.Port != 0 {
		releasePort(s.Port, s.cfg.clusterPorts)
	}
}

func (p *process) signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

// wait reports whether the process exited within d.
func (p *process) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Ports handed out and not yet released, so that servers of one test binary
// never collide; collisions with other processes are retried by start.
var ports struct {
	sync.Mutex
	used map[int]bool
}

// reservePort picks a free port by listening on 127.0.0.1:0 and closing. For
// cluster nodes the port must be below 55535 and port+10000 (the cluster
// bus) must be free as well.
func reservePort(cluster bool) (int, error) {
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = map[int]bool{}
	}
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("picking a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if ports.used[port] {
			continue
		}
		if cluster {
			if port >= 55535 || ports.used[port+10000] || !portFree(port+10000) {
				continue
			}
			ports.used[port+10000] = true
		}
		ports.used[port] = true
		return port, nil
	}
	return 0, errors.New("no free port found in 200 tries")
}

func releasePort(port int, cluster bool) {
	ports.Lock()
	defer ports.Unlock()
	delete(ports.used, port)
	if cluster {
		delete(ports.used, port+10000)
	}
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the file's content from offset on.
func readFrom(path string, off int64) string {
	data, err := os.ReadFile(path)
	if err != nil || off > int64(len(data)) {
		return ""
	}
	return string(data[off:])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// poll calls cond every pollInterval until it reports done or timeout
// passes; it returns cond's last detail on timeout.
func poll(timeout time.Duration, cond func() (done bool, detail string)) (ok bool, detail string) {
	deadline := time.Now().Add(timeout)
	for {
		done, detail := cond()
		if done {
			return true, detail
		}
		if time.Now().After(deadline) {
			return false, detail
		}
		time.Sleep(pollInterval)
	}
}

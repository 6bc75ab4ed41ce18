package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// notifyListener stands in for systemd: a real unixgram socket at name (a path, or @abstract),
// with NOTIFY_SOCKET pointing at it for the rest of the test.
func notifyListener(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return ln
}

// receive reads one datagram, or fails the test after a second.
func receive(t *testing.T, ln *net.UnixConn) string {
	t.Helper()
	ln.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4096)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatalf("no notification arrived: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsEachStateAsOneDatagram(t *testing.T) {
	tests := []struct {
		name   string
		notify func() error
		want   string
	}{
		{"ready once both listeners serve", notifyReady, "READY=1\nSTATUS=serving"},
		{"stopping at SIGTERM", notifyStopping, "STOPPING=1"},
		{"ready again after a reload", notifyReloaded, "READY=1"},
		{"any state verbatim", func() error { return sdNotify("STATUS=waiting for the Redis store") }, "STATUS=waiting for the Redis store"},
	}
	ln := notifyListener(t, filepath.Join(t.TempDir(), "notify.sock"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.notify(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, receive(t, ln)); diff != "" {
				t.Errorf("datagram (-want +got):\n%s", diff)
			}
		})
	}
}

// systemd (and Type=notify-reload in particular) needs RELOADING=1 with the CLOCK_MONOTONIC time
// of the reload, in microseconds, to tell it from an earlier one.
func TestNotifyReloadingCarriesTheMonotonicTime(t *testing.T) {
	ln := notifyListener(t, filepath.Join(t.TempDir(), "notify.sock"))
	before, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	if err := notifyReloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonicUsec()
	got := receive(t, ln)
	first, rest, _ := strings.Cut(got, "\n")
	value, ok := strings.CutPrefix(rest, "MONOTONIC_USEC=")
	if first != "RELOADING=1" || !ok {
		t.Fatalf("datagram %q, want RELOADING=1 then MONOTONIC_USEC=…", got)
	}
	usec, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC=%q is not an integer", value)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, not between %d and %d", usec, before, after)
	}
	// CLOCK_MONOTONIC never runs ahead of CLOCK_BOOTTIME, which /proc/uptime shows: this tells it
	// from the wall clock or a clock that starts with the process.
	if runtime.GOOS == "linux" {
		b, err := os.ReadFile("/proc/uptime")
		if err != nil {
			t.Fatal(err)
		}
		var uptime float64
		fmt.Sscan(string(b), &uptime)
		if float64(usec) > (uptime+1)*1e6 {
			t.Errorf("MONOTONIC_USEC=%d is past the uptime (%.0f s): not CLOCK_MONOTONIC", usec, uptime)
		}
		if float64(usec) < (uptime-60)*1e6 && uptime > 120 {
			t.Logf("MONOTONIC_USEC=%d is well under the uptime (%.0f s): the machine has slept", usec, uptime)
		}
	}
}

// systemd may hand a socket in the abstract namespace, named with a leading '@'.
func TestNotifyReachesAnAbstractSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract unix sockets are Linux only")
	}
	ln := notifyListener(t, fmt.Sprintf("@scoregate-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := notifyReady(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ln); got != "READY=1\nSTATUS=serving" {
		t.Errorf("datagram %q", got)
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	tests := []struct {
		name    string
		socket  string
		wantErr error // nil: no error; errAny: some error
	}{
		{"unset: not run by systemd, nothing to do", "", nil},
		{"relative name: refused, never resolved against the working folder", "notify.sock", errNotifySocket},
		{"vsock address (systemd 254 in a VM): refused", "vsock:2:1234", errNotifySocket},
		{"socket gone: the error says so", filepath.Join(t.TempDir(), "missing.sock"), errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.socket)
			err := notifyReady()
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.wantErr == errAny && err == nil:
				t.Error("got no error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

// notifySocket is a stand-in for systemd's notification socket that records every datagram, for
// a gateway process started with NOTIFY_SOCKET naming it.
type notifySocket struct {
	path string
	got  chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, got: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(s.got)
				return
			}
			s.got <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

// next returns the next datagram, failing the test if none arrives within d.
func (s *notifySocket) next(t *testing.T, d time.Duration, while string) string {
	t.Helper()
	select {
	case msg := <-s.got:
		return msg
	case <-time.After(d):
		t.Fatalf("no notification within %s %s", d, while)
		return ""
	}
}

// none fails the test if a datagram arrives within d.
func (s *notifySocket) none(t *testing.T, d time.Duration, while string) {
	t.Helper()
	select {
	case msg := <-s.got:
		t.Fatalf("notification %q %s", msg, while)
	case <-time.After(d):
	}
}

// notifyGateway is `gateway serve` run as systemd runs a Type=notify service.
type notifyGateway struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
}

// startNotifyGateway runs the gateway binary on the configuration file with NOTIFY_SOCKET set.
func startNotifyGateway(t *testing.T, sock *notifySocket, cfgPath string) *notifyGateway {
	t.Helper()
	g := &notifyGateway{cmd: exec.Command(gatewayBin, "serve", "-config", cfgPath), stderr: &lockedBuffer{}, done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "GATEWAY_") {
			g.cmd.Env = append(g.cmd.Env, kv)
		}
	}
	g.cmd.Env = append(g.cmd.Env, "NOTIFY_SOCKET="+sock.path, "GATEWAY_ADMIN_KEY="+strings.Repeat("n", 40))
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.done
	})
	return g
}

func (g *notifyGateway) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v: %v\nstderr:\n%s", sig, err, g.stderr)
	}
}

// notifyAddrs are two free loopback addresses, for listen and admin_listen.
func notifyAddrs(t *testing.T) (data, admin string) {
	t.Helper()
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs[0], addrs[1]
}

// writeNotifyConfig writes a configuration listening on data and admin, with drain_delay so
// that the drain can be watched, and extra appended (a Redis store, more services).
func writeNotifyConfig(t *testing.T, path, data, admin, extra string) {
	t.Helper()
	cfg := fmt.Sprintf(`listen: %q
admin_listen: %q
store:
  dir: %q
server:
  drain_delay: 1s
  shutdown_timeout: 5s
services:
  - name: iris
    auth: key
    upstreams: ["http://127.0.0.1:9"]
%s`, data, admin, filepath.Join(filepath.Dir(path), "data"), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// accepts reports whether addr accepts a TCP connection now.
func accepts(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// httpStatus is the status of GET url, or 0 when it does not answer.
func httpStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The sd_notify protocol through the real serve path, as systemd sees a Type=notify service:
// READY=1 once both listeners accept connections, RELOADING=1 (with MONOTONIC_USEC) then READY=1
// on SIGHUP, for a reload applied and for one rejected, and STOPPING=1 on SIGTERM, sent while
// the gateway still serves its drain, then a clean exit.
func TestServeNotifiesTheServiceManager(t *testing.T) {
	sock := newNotifySocket(t)
	data, admin := notifyAddrs(t)
	cfgPath := filepath.Join(t.TempDir(), "gateway.yaml")
	writeNotifyConfig(t, cfgPath, data, admin, "")
	g := startNotifyGateway(t, sock, cfgPath)

	if msg := sock.next(t, 30*time.Second, "after start"); msg != "READY=1\nSTATUS=serving" {
		t.Fatalf("first notification %q, want READY=1 and STATUS=serving\nstderr:\n%s", msg, g.stderr)
	}
	// READY=1 means serving: both listeners take connections the moment it arrives.
	if !accepts(data) || !accepts(admin) {
		t.Fatalf("READY=1 arrived, but listen %s accepts: %v, admin_listen %s accepts: %v", data, accepts(data), admin, accepts(admin))
	}
	if s := httpStatus("http://" + admin + "/readyz"); s != http.StatusOK {
		t.Errorf("/readyz after READY=1: %d", s)
	}

	reload := func(name string) {
		t.Helper()
		before, _ := monotonicUsec()
		g.signal(t, syscall.SIGHUP)
		msg := sock.next(t, 10*time.Second, "after SIGHUP ("+name+")")
		value, ok := strings.CutPrefix(msg, "RELOADING=1\nMONOTONIC_USEC=")
		usec, err := strconv.ParseInt(value, 10, 64)
		if !ok || err != nil || usec < before {
			t.Fatalf("%s: notification %q, want RELOADING=1 and MONOTONIC_USEC of the reload (after %d)", name, msg, before)
		}
		if msg := sock.next(t, 10*time.Second, "after RELOADING=1 ("+name+")"); msg != "READY=1" {
			t.Fatalf("%s: notification %q after RELOADING=1, want READY=1", name, msg)
		}
	}
	// A reload applied: a service added.
	writeNotifyConfig(t, cfgPath, data, admin, "  - name: added\n    auth: key\n    upstreams: [\"http://127.0.0.1:9\"]\n")
	reload("a file applied")
	// A reload rejected (listen needs a restart): the gateway still serves, so READY=1 again.
	other, _ := notifyAddrs(t)
	writeNotifyConfig(t, cfgPath, other, admin, "")
	reload("a file rejected")
	// The log reaches the test through a pipe that a goroutine copies: it may trail READY=1.
	var logs string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		logs = g.stderr.String()
		if strings.Contains(logs, `"msg":"configuration reloaded"`) && strings.Contains(logs, `"msg":"configuration reload rejected`) ||
			time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(logs, `"msg":"configuration reloaded"`) || !strings.Contains(logs, `"msg":"configuration reload rejected`) {
		t.Errorf("the two reloads were not one applied and one rejected:\n%s", logs)
	}
	if !accepts(data) {
		t.Error("the data plane stopped after a rejected reload")
	}

	g.signal(t, syscall.SIGTERM)
	if msg := sock.next(t, 10*time.Second, "after SIGTERM"); msg != "STOPPING=1" {
		t.Fatalf("notification %q after SIGTERM, want STOPPING=1", msg)
	}
	// STOPPING=1 comes at the start of the drain: the gateway still runs and serves, and
	// /readyz turns 503.
	select {
	case <-g.done:
		t.Fatal("the gateway had exited when STOPPING=1 arrived: the notification came after the drain")
	default:
	}
	if !accepts(data) {
		t.Error("the data plane stopped taking connections at STOPPING=1, before the drain delay")
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for httpStatus("http://"+admin+"/readyz") != http.StatusServiceUnavailable && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := httpStatus("http://" + admin + "/readyz"); s != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the drain: %d, want 503", s)
	}
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the gateway did not exit after SIGTERM\nstderr:\n%s", g.stderr)
	}
	if code := g.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0\nstderr:\n%s", code, g.stderr)
	}
	sock.none(t, 200*time.Millisecond, "after STOPPING=1")
}

// A gateway whose Redis store is unreachable at start waits for it without telling systemd it
// is ready: "systemctl start" keeps waiting (and TimeoutStartSec= can give up) while /livez
// answers and the data plane answers 503. READY=1 comes once Redis answers and the gateway
// serves.
func TestServeWithholdsReadyWhileWaitingForRedis(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop(t)
	sock := newNotifySocket(t)
	data, admin := notifyAddrs(t)
	cfgPath := filepath.Join(t.TempDir(), "gateway.yaml")
	writeNotifyConfig(t, cfgPath, data, admin, "")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "store:\n", "store:\n  redis_url: \""+srv.URL()+"\"\n", 1))
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	g := startNotifyGateway(t, sock, cfgPath)

	deadline := time.Now().Add(30 * time.Second)
	for httpStatus("http://"+admin+"/livez") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("/livez never answered while waiting for Redis\nstderr:\n%s", g.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sock.none(t, 2*time.Second, "while the Redis store is unreachable")
	if s := httpStatus("http://" + admin + "/readyz"); s != http.StatusServiceUnavailable {
		t.Errorf("/readyz while waiting for Redis: %d, want 503", s)
	}
	if s := httpStatus("http://" + data + "/"); s != http.StatusServiceUnavailable {
		t.Errorf("the data plane before the gateway has read the shared state: %d, want 503", s)
	}

	srv.Restart(t)
	if msg := sock.next(t, 30*time.Second, "after Redis came back"); msg != "READY=1\nSTATUS=serving" {
		t.Fatalf("notification %q, want READY=1 and STATUS=serving\nstderr:\n%s", msg, g.stderr)
	}
	if !accepts(data) || !accepts(admin) {
		t.Fatalf("READY=1 arrived, but the listeners do not both accept connections")
	}
	g.signal(t, syscall.SIGTERM)
	if msg := sock.next(t, 10*time.Second, "after SIGTERM"); msg != "STOPPING=1" {
		t.Errorf("notification %q after SIGTERM, want STOPPING=1", msg)
	}
}

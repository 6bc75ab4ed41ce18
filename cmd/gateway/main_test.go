package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests build the gateway binary and use it the way an operator does: commands, signals,
// the admin API, curl-style requests.

var gatewayBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gateway-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayBin = filepath.Join(dir, "gateway")
	out, err := exec.Command("go", "build", "-o", gatewayBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the gateway: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running gateway process.
type proc struct {
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan error
	// from the "gateway started" log line
	dataURL  string
	adminURL string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs the gateway with args and env, and waits until it logs that it started.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(gatewayBin, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.stdout
	pr, pw := io.Pipe()
	p.cmd.Stderr = io.MultiWriter(p.stderr, pw)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "gateway started" {
				started <- rec
			}
		}
	}()
	go func() {
		p.done <- p.cmd.Wait()
		pw.Close()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	if args[0] == "quickstart" { // it logs as text, and says it is ready on stdout
		go func() {
			for i := 0; i < 3000 && !strings.Contains(p.stdout.String(), "Ctrl-C"); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			started <- map[string]any{}
		}()
	}
	select {
	case rec := <-started:
		if args[0] != "quickstart" {
			p.dataURL = "http://" + rec["listen"].(string)
			p.adminURL = "http://" + rec["admin_listen"].(string)
		}
	case err := <-p.done:
		t.Fatalf("gateway exited before starting: %v\nstderr:\n%s", err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not start\nstderr:\n%s", p.stderr)
	}
	return p
}

// stop sends sig and returns the exit code.
func (p *proc) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("gateway did not stop\nstderr:\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// runCLI runs a gateway command to completion.
func runCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(gatewayBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// recorder is a model stand-in that records what reaches it.
type recorder struct {
	mu    sync.Mutex
	reqs  []*http.Request
	delay time.Duration
	seen  chan struct{}
}

func newRecorder(t *testing.T) (*recorder, *httptest.Server) {
	r := &recorder{seen: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.reqs = append(r.reqs, req.Clone(context.Background()))
		delay := r.delay
		r.mu.Unlock()
		select { // tests that wait on it read it; the others must not block the model
		case r.seen <- struct{}{}:
		default:
		}
		time.Sleep(delay)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, req.URL.RequestURI())
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *recorder) last() *http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reqs[len(r.reqs)-1]
}

func writeConfig(t *testing.T, dir, upstream, extra string) string {
	t.Helper()
	path := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
compute_type: "sidecar"
store:
  dir: %q
services:
  - name: iris
    auth: key
    upstreams: [%q]
%s`, filepath.Join(dir, "data"), upstream, extra)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func score(t *testing.T, url, key string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func regenerateKey(t *testing.T, p *proc, adminKey, slot string) string {
	t.Helper()
	out, errOut, code := runCLI(t, []string{"GATEWAY_ADMIN_KEY=" + adminKey}, "keys", "-admin", p.adminURL, "regenerate", "iris", slot)
	if code != 0 {
		t.Fatalf("keys regenerate: exit %d: %s", code, errOut)
	}
	var nk struct{ Name, Key string }
	if err := json.Unmarshal([]byte(out), &nk); err != nil || nk.Name != slot || nk.Key == "" {
		t.Fatalf("keys regenerate printed %q (%v)", out, err)
	}
	return nk.Key
}

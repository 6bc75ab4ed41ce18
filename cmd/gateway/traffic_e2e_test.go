package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// The model-traffic issue's acceptance, through the binary: a replica killed under load and
// brought back (3), a 1 GiB upload streamed in bounded memory and an oversized one refused from
// its headers (4), one per-key rate enforced by two instances sharing Redis (6), and the scoring
// timeout (2).

// modelReplica is a model server on a fixed loopback address that can be killed (listener and
// every open connection closed at once) and started again on the same address.
type modelReplica struct {
	addr    string
	handler http.Handler
	scored  atomic.Int64 // scoring requests received (health probes excluded)

	mu  sync.Mutex
	srv *http.Server
}

// startModelReplica serves a model that answers GET /healthz with 200 and any other request, after
// reading its body and taking a couple of milliseconds as a model does, with 200 JSON.
func startModelReplica(t *testing.T, name string) *modelReplica {
	t.Helper()
	m := &modelReplica{}
	m.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(http.StatusOK)
			return
		}
		m.scored.Add(1)
		io.Copy(io.Discard, r.Body)
		time.Sleep(2 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"replica":%q}`, name)
	})
	m.listen(t, "127.0.0.1:0")
	t.Cleanup(m.kill)
	return m
}

func (m *modelReplica) listen(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("model replica listening on %s: %v", addr, err)
	}
	m.addr = ln.Addr().String()
	srv := &http.Server{Handler: m.handler}
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
	go srv.Serve(ln)
}

func (m *modelReplica) url() string { return "http://" + m.addr }

// kill closes the listener and every connection, idle or in the middle of a request.
func (m *modelReplica) kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		m.srv.Close()
		m.srv = nil
	}
}

// restart serves again on the address the replica had.
func (m *modelReplica) restart(t *testing.T) {
	t.Helper()
	m.listen(t, m.addr)
}

// replicaStates returns the health of each upstream of service, by URL, from GET /v1/services.
func replicaStates(t *testing.T, p *proc, service string) map[string]string {
	t.Helper()
	var services []struct {
		Name      string
		Upstreams []struct{ URL, Health string }
	}
	if s := adminCall(t, p, "GET", "/v1/services", "", &services); s != 200 {
		t.Fatalf("GET /v1/services: %d", s)
	}
	out := map[string]string{}
	for _, svc := range services {
		if svc.Name == service {
			for _, u := range svc.Upstreams {
				out[u.URL] = u.Health
			}
		}
	}
	return out
}

// loadClient is an HTTP client with enough keep-alive connections for the load tests' workers.
func loadClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// post sends one scoring request with key and returns the response, its body read and closed.
func post(c *http.Client, url, key string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func writeTrafficConfig(t *testing.T, dir, top, service string) string {
	t.Helper()
	path := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf("listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\n%sservices:\n%s", top, service)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newPrimaryKey regenerates the primary key of iris through p's admin API.
func newPrimaryKey(t *testing.T, p *proc) string {
	t.Helper()
	var nk struct{ Key string }
	if s := adminCall(t, p, "POST", "/v1/services/iris/keys/primary/regenerate", "", &nk); s != 200 || nk.Key == "" {
		t.Fatalf("regenerate the primary key: %d", s)
	}
	return nk.Key
}

// Acceptance 3: with two replicas under steady load, killing one costs no request once the
// health checks have noticed (interval × unhealthy_threshold, plus slack), /v1/services shows it
// out, and started again on the same port it is back in rotation within a few intervals.
func TestReplicaFailoverAndRecovery(t *testing.T) {
	a, b := startModelReplica(t, "A"), startModelReplica(t, "B")
	const interval, unhealthyThreshold = 200 * time.Millisecond, 2
	detection := interval*unhealthyThreshold + 600*time.Millisecond
	dir := t.TempDir()
	cfgPath := writeTrafficConfig(t, dir, fmt.Sprintf("store:\n  dir: %q\n", filepath.Join(dir, "data")), fmt.Sprintf(`  - name: iris
    auth: key
    upstreams: [%q, %q]
    health_check:
      path: /healthz
      interval: %s
      timeout: 100ms
      unhealthy_threshold: %d
      healthy_threshold: 1
`, a.url(), b.url(), interval, unhealthyThreshold))
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfgPath)
	key := newPrimaryKey(t, p)
	scoreURL := p.dataURL + "/api/v1/service/iris/score"

	// Steady load: four clients, each sending its next request as soon as the last is answered.
	type failure struct {
		sent, done time.Time
		what       string
	}
	var (
		mu       sync.Mutex
		failures []failure
		total    atomic.Int64
	)
	client := loadClient(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				resp, err := post(client, scoreURL, key)
				total.Add(1)
				var what string
				switch {
				case err != nil:
					what = err.Error()
				case resp.StatusCode != 200:
					what = resp.Status
				default:
					continue
				}
				mu.Lock()
				failures = append(failures, failure{sent, time.Now(), what})
				mu.Unlock()
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	time.Sleep(1500 * time.Millisecond)
	if a.scored.Load() == 0 || b.scored.Load() == 0 {
		t.Fatalf("before the kill the replicas got %d and %d requests; both should share the load", a.scored.Load(), b.scored.Load())
	}
	killStart := time.Now() // kill closes the connections one by one: a request may fail from here
	b.kill()
	killedAt := time.Now()

	time.Sleep(time.Until(killedAt.Add(detection)))
	downStates := []string{replicaStates(t, p, "iris")[b.url()]}
	time.Sleep(time.Until(killedAt.Add(2 * time.Second)))
	downStates = append(downStates, replicaStates(t, p, "iris")[b.url()])
	for i, s := range downStates {
		if s != "unhealthy" && s != "ejected" {
			t.Errorf("/v1/services showed the killed replica %q (check %d while it was down), want unhealthy or ejected", s, i+1)
		}
	}
	if st := replicaStates(t, p, "iris")[a.url()]; st != "healthy" {
		t.Errorf("the surviving replica is %q, want healthy", st)
	}
	metrics := getMetrics(t, p)
	for _, want := range []string{
		fmt.Sprintf(`scoregate_upstream_state{deployment="default",service="iris",state="unhealthy",upstream=%q} 1`, b.url()),
		fmt.Sprintf(`scoregate_upstream_state{deployment="default",service="iris",state="healthy",upstream=%q} 1`, a.url()),
		`scoregate_queue_length{deployment="default",service="iris"}`,
		`scoregate_queue_wait_seconds_bucket{deployment="default",service="iris"`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	before := b.scored.Load()
	b.restart(t)
	restartedAt := time.Now()
	var backAfter time.Duration
	for deadline := restartedAt.Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b.scored.Load() > before && replicaStates(t, p, "iris")[b.url()] == "healthy" {
			backAfter = time.Since(restartedAt)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted replica is not back in rotation after 10s: %d new requests, state %q",
				b.scored.Load()-before, replicaStates(t, p, "iris")[b.url()])
		}
	}
	if backAfter > 5*interval {
		t.Errorf("the restarted replica came back after %s, want within a few health-check intervals (5 × %s)", backAfter.Round(time.Millisecond), interval)
	}
	afterA, afterB := a.scored.Load(), b.scored.Load()
	time.Sleep(time.Second)
	stopLoad()
	if a.scored.Load() == afterA || b.scored.Load() == afterB {
		t.Errorf("after the recovery A got %d and B %d more requests; both should share the load", a.scored.Load()-afterA, b.scored.Load()-afterB)
	}

	var beforeKill, window, afterDetection []failure
	for _, f := range failures {
		switch {
		case f.done.Before(killStart):
			beforeKill = append(beforeKill, f)
		case f.sent.Before(killedAt.Add(detection)):
			window = append(window, f)
		default:
			afterDetection = append(afterDetection, f)
		}
	}
	t.Logf("%d requests under load; %d failed in all: %d answered before the kill, %d sent before %s after it (in flight at the kill included), %d sent later; the killed replica showed %v while down, and was back in rotation %s after its restart",
		total.Load(), len(failures), len(beforeKill), len(window), detection, len(afterDetection), downStates, backAfter.Round(time.Millisecond))
	for _, f := range failures {
		t.Logf("failed request sent %s after the kill, answered %s after it: %s", f.sent.Sub(killedAt).Round(time.Millisecond), f.done.Sub(killedAt).Round(time.Millisecond), f.what)
	}
	for line := range strings.SplitSeq(p.stderr.String(), "\n") {
		if strings.Contains(line, `"request failed"`) || strings.Contains(line, "replica") {
			t.Logf("gateway: %s", line)
		}
	}
	if len(beforeKill) > 0 {
		t.Errorf("%d requests failed before any replica was killed", len(beforeKill))
	}
	if len(afterDetection) > 0 {
		t.Errorf("%d requests failed after the detection time (%s after the kill), want 0", len(afterDetection), detection)
	}
}

// zeros is a request body of n zero bytes, made as it is read.
type zeros struct{ left int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// rss returns the resident set size of process pid, in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// Acceptance 4: a 1 GiB body streams through to the model while the gateway's memory grows by
// less than 64 MB, and a body declared over max_body_bytes gets 413 from its headers, without
// the model seeing anything.
func TestLargeUploadStreams(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc to read the gateway's memory from")
	}
	var requests, counted, declared atomic.Int64
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		declared.Store(r.ContentLength)
		n, err := io.Copy(io.Discard, r.Body)
		counted.Store(n)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"bytes":%d}`, n)
	}))
	t.Cleanup(model.Close)
	dir := t.TempDir()
	cfgPath := writeTrafficConfig(t, dir, fmt.Sprintf("store:\n  dir: %q\nserver:\n  read_timeout: 120s\n", filepath.Join(dir, "data")),
		fmt.Sprintf("  - name: iris\n    auth: key\n    upstreams: [%q]\n    scoring_timeout: 120s\n    max_body_bytes: 2147483648\n", model.URL))
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfgPath)
	key := newPrimaryKey(t, p)
	scoreURL := p.dataURL + "/api/v1/service/iris/score"
	tr := &http.Transport{WriteBufferSize: 256 << 10}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 2 * time.Minute}

	upload := func(n int64) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, scoreURL, &zeros{left: n})
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("uploading %d bytes: %v", n, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// A streamed body of 1 MiB first, so that the baseline includes the pools a streamed request
	// needs.
	if resp, body := upload(1 << 20); resp.StatusCode != 200 || counted.Load() != 1<<20 {
		t.Fatalf("1 MiB upload: %d %s, the model counted %d bytes", resp.StatusCode, body, counted.Load())
	}

	pid := p.cmd.Process.Pid
	baseline, err := rss(pid)
	if err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	peak.Store(baseline)
	var samples atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if v, err := rss(pid); err == nil {
				samples.Add(1)
				if v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	})
	const size = 1 << 30
	began := time.Now()
	resp, body := upload(size)
	took := time.Since(began)
	close(done)
	wg.Wait()
	growth := peak.Load() - baseline
	t.Logf("1 GiB upload: %d %s in %s (%.0f MB/s); the model counted %d bytes (declared Content-Length %d); gateway RSS %.1f MB before, peak %.1f MB over %d samples: growth %.1f MB",
		resp.StatusCode, body, took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6, counted.Load(), declared.Load(),
		float64(baseline)/1e6, float64(peak.Load())/1e6, samples.Load(), float64(growth)/1e6)
	if resp.StatusCode != 200 {
		t.Fatalf("1 GiB upload: %d %s", resp.StatusCode, body)
	}
	if counted.Load() != size || body != fmt.Sprintf(`{"bytes":%d}`, size) {
		t.Errorf("the model counted %d bytes (answered %s), want exactly %d", counted.Load(), body, size)
	}
	if samples.Load() == 0 {
		t.Error("no RSS sample was taken during the upload")
	}
	if growth >= 64<<20 {
		t.Errorf("the gateway's RSS grew by %.1f MB during the 1 GiB upload, want under 64 MB", float64(growth)/1e6)
	}

	// Declared over the limit: the answer comes from the headers, whatever of the body follows.
	host := strings.TrimPrefix(p.dataURL, "http://")
	for _, tc := range []struct {
		name   string
		expect bool // Expect: 100-continue
		body   int  // bytes of the body sent before waiting for the answer
	}{
		{name: "headers and a little of the body", body: 4 << 10},
		// A client that sends the headers and waits, without Expect: 100-continue, is answered
		// once the first byte of its body arrives (or 408 at server.read_timeout).
		{name: "headers and the first byte of the body", body: 1},
		{name: "headers with Expect 100-continue", expect: true, body: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := requests.Load()
			conn, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			head := fmt.Sprintf("POST /api/v1/service/iris/score HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n", host, key, int64(3)<<30)
			if tc.expect {
				head += "Expect: 100-continue\r\n"
			}
			sent := time.Now()
			if _, err := conn.Write(append([]byte(head+"\r\n"), make([]byte, tc.body)...)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			took := time.Since(sent)
			if err != nil {
				t.Fatalf("a body declared as 3 GiB, %d bytes of it sent: no answer after %s (%v)", tc.body, took.Round(time.Millisecond), err)
			}
			resp.Body.Close()
			t.Logf("a body declared as 3 GiB, %d bytes of it sent: %s after %s", tc.body, resp.Status, took.Round(time.Microsecond))
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("got %s, want 413", resp.Status)
			}
			if took > time.Second {
				t.Errorf("the 413 took %s, want it at once, from the headers", took.Round(time.Millisecond))
			}
			time.Sleep(100 * time.Millisecond)
			if n := requests.Load() - seen; n != 0 {
				t.Errorf("the model saw %d requests from the refused upload", n)
			}
		})
	}
}

func writeRateLimitConfig(t *testing.T, dir, redisURL, upstream string) string {
	t.Helper()
	return writeTrafficConfig(t, dir, fmt.Sprintf("store:\n  dir: %q\n  redis_url: %q\n", filepath.Join(dir, "data"), redisURL),
		fmt.Sprintf(`  - name: iris
    auth: key
    upstreams: [%q]
    rate_limit:
      per_key:
        requests_per_second: 50
        burst: 1
`, upstream))
}

// Acceptance 6: two instances on one Redis enforce one per-key rate together: hammered in
// parallel with the same key for 10 s at 50 requests per second, they accept 500 (within 10%)
// plus the burst, refuse the rest with 429 and Retry-After, and no refused request reaches the
// model.
func TestRateLimitSharedByInstances(t *testing.T) {
	srv := redistest.Start(t)
	var modelSaw atomic.Int64
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		modelSaw.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	t.Cleanup(model.Close)
	cfgPath := writeRateLimitConfig(t, t.TempDir(), srv.URL(), model.URL)
	env := []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}
	gateways := []*proc{start(t, env, "serve", "-config", cfgPath), start(t, env, "serve", "-config", cfgPath)}
	key := newPrimaryKey(t, gateways[0])
	for i, p := range gateways {
		deadline := time.Now().Add(5 * time.Second)
		for status(t, p.dataURL+"/api/v1/service/iris/score", key) != 200 {
			if time.Now().After(deadline) {
				t.Fatalf("instance %d does not accept the new key after 5s", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond) // the waits above used some of the rate

	const (
		rate     = 50
		burst    = 1
		window   = 10 * time.Second
		perProc  = 4
		expected = rate*10 + burst
	)
	type counts struct {
		ok, limited, noRetryAfter, other atomic.Int64
		firstOther                       atomic.Value
	}
	perInstance := make([]*counts, len(gateways))
	client := loadClient(t)
	modelBefore := modelSaw.Load()
	began := time.Now()
	var wg sync.WaitGroup
	for i, p := range gateways {
		c := &counts{}
		perInstance[i] = c
		url := p.dataURL + "/api/v1/service/iris/score"
		for range perProc {
			wg.Go(func() {
				for time.Since(began) < window {
					resp, err := post(client, url, key)
					switch {
					case err != nil:
						c.other.Add(1)
						c.firstOther.CompareAndSwap(nil, err.Error())
					case resp.StatusCode == 200:
						c.ok.Add(1)
					case resp.StatusCode == 429:
						c.limited.Add(1)
						if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
							c.noRetryAfter.Add(1)
						}
					default:
						c.other.Add(1)
						c.firstOther.CompareAndSwap(nil, resp.Status)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(began)
	var ok, limited, noRetryAfter, other int64
	for i, c := range perInstance {
		ok += c.ok.Load()
		limited += c.limited.Load()
		noRetryAfter += c.noRetryAfter.Load()
		other += c.other.Load()
		t.Logf("instance %d: %d accepted, %d refused with 429, %d other", i, c.ok.Load(), c.limited.Load(), c.other.Load())
		if c.other.Load() > 0 {
			t.Errorf("instance %d answered %d requests with neither 200 nor 429, first: %v", i, c.other.Load(), c.firstOther.Load())
		}
	}
	model.CloseClientConnections()
	modelGot := modelSaw.Load() - modelBefore
	t.Logf("over %s: %d accepted (want %d ± 10%% of %d), %d refused with 429; the model saw %d", elapsed.Round(time.Millisecond), ok, expected, rate*10, limited, modelGot)
	if lo, hi := int64(expected-rate), int64(expected+rate); ok < lo || ok > hi {
		t.Errorf("the two instances accepted %d requests in %s at %d/s with burst %d, want %d to %d", ok, window, rate, burst, lo, hi)
	}
	if limited == 0 {
		t.Error("no request was refused with 429")
	}
	if noRetryAfter > 0 {
		t.Errorf("%d of the 429 answers lack a Retry-After of at least 1 second", noRetryAfter)
	}
	if modelGot != ok {
		t.Errorf("the model saw %d requests while the gateways accepted %d: refused requests reached it", modelGot, ok)
	}
	for i, p := range gateways {
		// Each of these is up to a probe interval in which the instance enforced the limit alone.
		if n := strings.Count(p.stderr.String(), "rate limits are enforced by each instance alone"); n > 0 {
			t.Logf("instance %d fell back to its local rate limit %d times (Redis did not answer in time)", i, n)
		}
	}
	metrics := getMetrics(t, gateways[0])
	for _, want := range []string{`scoregate_ratelimit_degraded `, `scoregate_ratelimit_local_decisions_total `,
		`scoregate_admission_rejections_total{reason="rate_limited",service="iris"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, p := range gateways {
		if code := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("exit %d", code)
		}
	}
}

// Acceptance 2: a model slower than scoring_timeout gets the caller a 504 once the timeout has
// passed, within 100 ms of it, measured from just before the request is written.
func TestScoringTimeout(t *testing.T) {
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
		io.WriteString(w, `{"late":true}`)
	}))
	t.Cleanup(model.Close)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, model.URL, "    scoring_timeout: 300ms\n")
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfgPath)
	key := newPrimaryKey(t, p)
	client := loadClient(t)
	const timeout, slack = 300 * time.Millisecond, 100 * time.Millisecond
	for i := range 3 {
		var writing time.Time
		trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { writing = time.Now() }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost,
			p.dataURL+"/api/v1/service/iris/score", strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(writing)
		var e struct{ Error struct{ Code string } }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		t.Logf("request %d: %s (%s) after %s", i+1, resp.Status, e.Error.Code, took.Round(time.Microsecond))
		if resp.StatusCode != http.StatusGatewayTimeout || e.Error.Code != "GatewayTimeout" {
			t.Errorf("request %d to a model that takes 2s behind scoring_timeout %s: %s %q, want 504 GatewayTimeout", i+1, timeout, resp.Status, e.Error.Code)
		}
		if took < timeout || took >= timeout+slack {
			t.Errorf("request %d: the 504 came %s after the request was sent, want from %s to %s", i+1, took.Round(time.Microsecond), timeout, timeout+slack)
		}
	}
}

package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// model is a test model server that names itself in its answers, and counts the requests in
// flight on it and the most it ever had.
type model struct {
	name     string
	srv      *httptest.Server
	delay    time.Duration
	inflight atomic.Int32
	peak     atomic.Int32
	mu       sync.Mutex
	order    []string // the X-Seq of each request, in the order they arrived
	paths    []string
}

func newModel(t *testing.T, name string, delay time.Duration) *model {
	t.Helper()
	m := &model{name: name, delay: delay}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := m.inflight.Add(1)
		defer m.inflight.Add(-1)
		for {
			p := m.peak.Load()
			if n <= p || m.peak.CompareAndSwap(p, n) {
				break
			}
		}
		io.Copy(io.Discard, r.Body)
		m.mu.Lock()
		m.order = append(m.order, r.Header.Get("X-Seq"))
		m.paths = append(m.paths, r.URL.RequestURI())
		m.mu.Unlock()
		time.Sleep(m.delay)
		io.WriteString(w, m.name)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *model) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.order)
}

// trafficEnv is newEnv with one more service, "svc" (auth none), configured by edit.
func trafficEnv(t *testing.T, edit func(*config.Service)) *env {
	t.Helper()
	return newEnv(t, envOptions{config: func(c *config.Config) {
		svc := config.Service{Name: "svc", Auth: config.AuthNone}
		edit(&svc)
		c.Services = append(c.Services, svc)
	}})
}

func get(t *testing.T, client *http.Client, url string, header ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// sendInOrder sends send(0) … send(n-1), each on its own goroutine, and sends the next one only
// once the gateway holds the previous one (at a replica or in the queue of service) or has
// answered it, so that the gateway sees them in the order sent however busy the machine is. It
// calls between(i) after request i is held, and returns once every request has been answered.
func sendInOrder(t *testing.T, gw *proxy.Gateway, service string, n int, send func(i int), between func(i int)) {
	t.Helper()
	var answered atomic.Int64
	held := func() int {
		total := int(answered.Load())
		seen := map[string]bool{}
		for _, r := range gw.Replicas() {
			if r.Service != service {
				continue
			}
			total += r.Inflight
			if !seen[r.Deployment] {
				seen[r.Deployment] = true
				total += r.Queued
			}
		}
		return total
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			send(i)
			answered.Add(1)
		})
		for deadline := time.Now().Add(5 * time.Second); held() < i+1; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("request %d never reached the gateway", i)
			}
		}
		if between != nil {
			between(i)
		}
	}
	wg.Wait()
}

// A model taking 400 ms behind max_concurrent_requests 1 and
// max_request_wait 600 ms, sent 10 requests at once (in a known order, each once the gateway holds
// the one before): the first ones are served in order, the rest get 503 with Retry-After, and the
// model never has more than one in flight.
func TestAdmissionQueue(t *testing.T) {
	m := newModel(t, "m", 400*time.Millisecond)
	e := trafficEnv(t, func(s *config.Service) {
		s.Upstreams = []string{m.srv.URL}
		s.MaxConcurrentRequests = 1
		s.MaxRequestWait = 600 * time.Millisecond
	})
	type result struct {
		status     int
		retryAfter string
		done       time.Time
	}
	results := make([]result, 10)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 20}}
	sendInOrder(t, e.gw, "svc", len(results), func(i int) {
		status, _, h := get(t, client, "http://"+e.addr+"/api/v1/service/svc/score", "X-Seq", fmt.Sprint(i))
		results[i] = result{status, h.Get("Retry-After"), time.Now()}
	}, nil)
	ok := 0
	for i, r := range results {
		switch r.status {
		case 200:
			if ok != i {
				t.Errorf("request %d succeeded after request %d was refused: not first come, first served", i, ok)
			}
			ok++
		case 503:
			if r.retryAfter == "" {
				t.Errorf("request %d: 503 without Retry-After", i)
			}
		default:
			t.Errorf("request %d: status %d", i, r.status)
		}
	}
	// 0 is served at once and 1 after at most 400 ms of waiting; 2 would wait about 800 ms, over
	// the bound (it would take its sending 200 ms late to make it).
	if ok != 2 {
		t.Errorf("%d requests served, want 2 (each waits at most 600 ms for a 400 ms model)", ok)
	}
	if p := m.peak.Load(); p != 1 {
		t.Errorf("the model had %d requests in flight at once, want 1", p)
	}
	m.mu.Lock()
	order := strings.Join(m.order, ",")
	m.mu.Unlock()
	if order != "0,1" {
		t.Errorf("the model saw requests %s, want 0,1 in that order", order)
	}
}

// A queue that is full answers 503 at once, without waiting.
func TestAdmissionQueueFull(t *testing.T) {
	m := newModel(t, "m", 300*time.Millisecond)
	e := trafficEnv(t, func(s *config.Service) {
		s.Upstreams = []string{m.srv.URL}
		s.MaxConcurrentRequests = 1
		s.MaxQueueLength = 1
		s.MaxRequestWait = 2 * time.Second
	})
	client := &http.Client{}
	var wg sync.WaitGroup
	for range 2 { // one in flight, one queued
		wg.Go(func() { get(t, client, "http://"+e.addr+"/api/v1/service/svc/score") })
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	status, _, h := get(t, client, "http://"+e.addr+"/api/v1/service/svc/score")
	if status != 503 || h.Get("Retry-After") == "" {
		t.Fatalf("third request: %d Retry-After %q, want 503 with Retry-After", status, h.Get("Retry-After"))
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("a full queue took %s to refuse", d)
	}
	wg.Wait()
}

// In process: a model slower than scoring_timeout gives 504 within the
// timeout plus 100 ms.
func TestScoringTimeoutIs504(t *testing.T) {
	m := newModel(t, "m", 2*time.Second)
	e := trafficEnv(t, func(s *config.Service) {
		s.Upstreams = []string{m.srv.URL}
		s.ScoringTimeout = 300 * time.Millisecond
	})
	start := time.Now()
	status, _, _ := get(t, http.DefaultClient, "http://"+e.addr+"/api/v1/service/svc/score")
	d := time.Since(start)
	if status != 504 {
		t.Fatalf("status %d, want 504", status)
	}
	if d > 400*time.Millisecond {
		t.Errorf("504 after %s, want within 300ms + 100ms", d)
	}
}

// A 90/10 split over 10,000 requests lands within 2 points of 90/10, and
// the azureml-model-deployment header wins.
func TestTrafficSplit(t *testing.T) {
	blue, green := newModel(t, "blue", 0), newModel(t, "green", 0)
	e := trafficEnv(t, func(s *config.Service) {
		s.Deployments = []config.Deployment{
			{Name: "blue", Weight: 90, Upstreams: []string{blue.srv.URL}},
			{Name: "green", Weight: 10, Upstreams: []string{green.srv.URL}},
		}
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	const n = 10000
	var wg sync.WaitGroup
	var failed atomic.Int32
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	for range 8 {
		wg.Go(func() {
			for range work {
				req, _ := http.NewRequest(http.MethodGet, "http://"+e.addr+"/api/v1/service/svc/score", nil)
				resp, err := client.Do(req)
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if resp != nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	share := float64(blue.count()) / n * 100
	t.Logf("blue %d, green %d: %.2f%% blue", blue.count(), green.count(), share)
	if share < 88 || share > 92 {
		t.Errorf("blue got %.2f%% of the traffic, want 90 ± 2", share)
	}
	for _, pin := range []string{"green", "blue"} {
		for range 20 {
			status, body, _ := get(t, client, "http://"+e.addr+"/api/v1/service/svc/score", config.DeploymentHeader, pin)
			if status != 200 || body != pin {
				t.Fatalf("pinned to %s: %d %q", pin, status, body)
			}
		}
	}
	status, _, _ := get(t, client, "http://"+e.addr+"/api/v1/service/svc/score", config.DeploymentHeader, "purple")
	if status != 404 {
		t.Errorf("an unknown deployment: %d, want 404", status)
	}
}

// Least outstanding requests sends new requests to the replica with fewer in flight.
func TestLeastOutstanding(t *testing.T) {
	slow, fast := newModel(t, "slow", 500*time.Millisecond), newModel(t, "fast", 0)
	e := trafficEnv(t, func(s *config.Service) { s.Upstreams = []string{slow.srv.URL, fast.srv.URL} })
	var wg sync.WaitGroup
	for range 2 { // one of these lands on slow and stays there
		wg.Go(func() { get(t, http.DefaultClient, "http://"+e.addr+"/api/v1/service/svc/score") })
	}
	time.Sleep(100 * time.Millisecond)
	before := slow.count()
	for range 10 {
		if status, _, _ := get(t, http.DefaultClient, "http://"+e.addr+"/api/v1/service/svc/score"); status != 200 {
			t.Fatal(status)
		}
	}
	if slow.count() != before {
		t.Errorf("the busy replica got %d of 10 requests while another was idle", slow.count()-before)
	}
	wg.Wait()
}

// A replica that refuses connections: the request is retried once on another replica, so the
// caller sees no error, and after passive_failures refusals the replica is ejected.
func TestRetryAndPassiveEjection(t *testing.T) {
	up := newModel(t, "up", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	e := trafficEnv(t, func(s *config.Service) {
		s.Upstreams = []string{downURL, up.srv.URL}
		s.Balance = config.BalanceRoundRobin
		s.PassiveFailures = 2
		s.EjectionTime = time.Hour
	})
	for i := range 20 {
		if status, body, _ := get(t, http.DefaultClient, "http://"+e.addr+"/api/v1/service/svc/score"); status != 200 || body != "up" {
			t.Fatalf("request %d: %d %q, want the live replica's answer", i, status, body)
		}
	}
	states := map[string]string{}
	for _, r := range e.gw.Replicas() {
		if r.Service == "svc" {
			states[r.URL] = r.State
		}
	}
	if states[downURL] != "ejected" || states[up.srv.URL] != "healthy" {
		t.Errorf("replica states %v, want the refusing one ejected", states)
	}
}

// A request that reached the model and failed there is not retried.
func TestNoRetryAfterSending(t *testing.T) {
	var hits atomic.Int32
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close() // read the request, answer nothing
	}))
	defer broken.Close()
	other := newModel(t, "other", 0)
	e := trafficEnv(t, func(s *config.Service) {
		s.Upstreams = []string{broken.URL, other.srv.URL}
		s.Balance = config.BalanceRoundRobin
	})
	ok, bad := 0, 0
	for range 4 {
		switch status, _, _ := get(t, http.DefaultClient, "http://"+e.addr+"/api/v1/service/svc/score"); status {
		case 200:
			ok++
		case 502:
			bad++
		default:
			t.Fatalf("status %d", status)
		}
	}
	if bad == 0 || hits.Load() == 0 {
		t.Fatal("no request got 502 from the replica that drops requests")
	}
	if other.count() != ok {
		t.Errorf("the other replica answered %d requests for %d successes: a request the broken replica had read was sent on", other.count(), ok)
	}
}

// Blocked paths never reach the model, however they are spelled.
func TestBlockedPaths(t *testing.T) {
	m := newModel(t, "m", 0)
	e := trafficEnv(t, func(s *config.Service) {
		s.Upstreams = []string{m.srv.URL}
		s.BlockedPaths = []string{"/v2/repository", "/admin/"}
	})
	for _, p := range []string{"/v2/repository", "/v2/repository/models/x/load", "/V2/Repository/index", "/v2/%72epository/index",
		"/v2/repository;x=1/index", "/admin", "/ADMIN/x", "/%61dmin/x", "/admin;jsessionid=1"} {
		r := e.do(t, request("POST", "/api/v1/service/svc"+p, "Content-Length: 0"))
		if r.Status != 404 {
			t.Errorf("%s: %d, want 404", p, r.Status)
		}
	}
	if m.count() != 0 {
		t.Fatalf("blocked paths reached the model: %v", m.paths)
	}
	for _, p := range []string{"/v2/repositoryx", "/v2/models/x/infer", "/administrator", "/score"} {
		if r := e.do(t, request("POST", "/api/v1/service/svc"+p, "Content-Length: 0")); r.Status != 200 {
			t.Errorf("%s: %d, want 200", p, r.Status)
		}
	}
}

// The mirror gets a copy of the share of requests it is given; its answers (here, slow ones)
// never reach or delay the caller.
func TestMirror(t *testing.T) {
	live, shadow := newModel(t, "live", 0), newModel(t, "shadow", 300*time.Millisecond)
	e := trafficEnv(t, func(s *config.Service) {
		s.Deployments = []config.Deployment{
			{Name: "live", Weight: 100, Upstreams: []string{live.srv.URL}},
			{Name: "shadow", Weight: 0, Upstreams: []string{shadow.srv.URL}},
		}
		s.Mirror = config.Mirror{Deployment: "shadow", Percent: 100}
	})
	start := time.Now()
	for range 5 {
		if status, body, _ := get(t, http.DefaultClient, "http://"+e.addr+"/api/v1/service/svc/score?x=1"); status != 200 || body != "live" {
			t.Fatalf("%d %q, want the live deployment's answer", status, body)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("5 requests took %s: the mirror's slow answers held them up", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for shadow.count() < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if shadow.count() != 5 || live.count() != 5 {
		t.Fatalf("live saw %d, the mirror %d; want 5 each", live.count(), shadow.count())
	}
	if shadow.paths[0] != "/score?x=1" {
		t.Errorf("the mirror saw %q", shadow.paths[0])
	}
}

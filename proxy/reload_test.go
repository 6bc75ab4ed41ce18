package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// reloadEnv is a gateway serving services, built with newEnv (so the iris keys exist).
func reloadEnv(t *testing.T, services ...config.Service) *env {
	t.Helper()
	return newEnv(t, envOptions{config: func(c *config.Config) { c.Services = services }})
}

// configOf is a fresh, valid configuration of services, as a reload reads it from a file.
func configOf(t *testing.T, services ...config.Service) *config.Config {
	t.Helper()
	cfg := &config.Config{Server: config.Server{MaxResponseBytes: testMaxResponse}, Services: services}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustReload(t *testing.T, gw *proxy.Gateway, cfg *config.Config) proxy.ReloadSummary {
	t.Helper()
	sum, err := gw.Reload(cfg)
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	return sum
}

// Services present before and after reloads answer every request while reloads add, remove and
// change services in a loop under concurrent load: one unchanged (key auth), one whose replicas
// change (another model, an admission cap), one whose rules alone change (blocked paths), and one
// that comes and goes.
func TestReloadUnderLoadFailsNoRequest(t *testing.T) {
	a, b, c := newModel(t, "A", time.Millisecond), newModel(t, "B", time.Millisecond), newModel(t, "C", 0)
	variant := func(i int) []config.Service {
		svcs := []config.Service{
			{Name: "iris", Auth: config.AuthKey, Upstreams: []string{a.srv.URL}},
			{Name: "open", Auth: config.AuthNone, Upstreams: []string{a.srv.URL}},
			{Name: "rules", Auth: config.AuthNone, Upstreams: []string{a.srv.URL}},
		}
		if i%2 == 1 {
			svcs[1].Upstreams = []string{b.srv.URL}
			svcs[1].MaxConcurrentRequests, svcs[1].MaxRequestWait = 4, 5*time.Second
			svcs[2].BlockedPaths = []string{"/admin"}
			svcs = append(svcs, config.Service{Name: "extra", Auth: config.AuthNone, Upstreams: []string{c.srv.URL}})
		}
		return svcs
	}
	e := reloadEnv(t, variant(0)...)
	base := "http://" + e.addr + "/api/v1/service/"

	var (
		total, extraOK atomic.Int64
		mu             sync.Mutex
		failures       []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	send := func(url, key string) (int, error) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"data": [[1, 2]]}`))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	stop := make(chan struct{})
	var load sync.WaitGroup
	for w := range 8 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for _, target := range []struct{ service, key string }{{"iris", e.primary}, {"open", ""}, {"rules", ""}} {
					status, err := send(base+target.service+"/score", target.key)
					total.Add(1)
					if err != nil || status != 200 {
						fail("worker %d: %s: %d %v", w, target.service, status, err)
					}
				}
				switch status, err := send(base+"extra/score", ""); {
				case err != nil || (status != 200 && status != 404):
					fail("worker %d: extra: %d %v (want 200 or 404)", w, status, err)
				case status == 200:
					extraOK.Add(1)
				}
			}
		})
	}
	reloads := 0
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); reloads++ {
		mustReload(t, e.gw, configOf(t, variant(reloads+1)...))
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	load.Wait()

	t.Logf("%d requests to the kept services during %d reloads; %d answered by the coming-and-going service; models A %d, B %d, C %d",
		total.Load(), reloads, extraOK.Load(), a.count(), b.count(), c.count())
	if len(failures) > 0 {
		t.Fatalf("requests to services present in every configuration failed:\n%s", strings.Join(failures, "\n"))
	}
	if reloads < 20 || total.Load() < 100 {
		t.Fatalf("only %d reloads and %d requests: the test did not exercise anything", reloads, total.Load())
	}
	if b.count() == 0 || extraOK.Load() == 0 {
		t.Errorf("the reloaded configurations never took effect: model B got %d requests, extra answered %d", b.count(), extraOK.Load())
	}
}

// A reload's summary names what changed, a removed service is 404 at once, an added one answers,
// and GET-style reporting (Replicas) and /metrics follow the current table.
func TestReloadAddsAndRemovesServices(t *testing.T) {
	m := newModel(t, "m", 0)
	svc := func(name string) config.Service {
		return config.Service{Name: name, Auth: config.AuthNone, Upstreams: []string{m.srv.URL}}
	}
	e := reloadEnv(t, svc("kept"), svc("gone"), svc("changed"))
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { provider.Shutdown(context.Background()) })
	if err := e.gw.RegisterMetrics(provider.Meter("test")); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{}
	statusOf := func(name string) int {
		status, _, _ := get(t, client, "http://"+e.addr+"/api/v1/service/"+name+"/score")
		return status
	}
	for _, name := range []string{"kept", "gone", "changed"} {
		if s := statusOf(name); s != 200 {
			t.Fatalf("%s before the reload: %d", name, s)
		}
	}

	changed := svc("changed")
	changed.ScoringTimeout = 5 * time.Second
	sum := mustReload(t, e.gw, configOf(t, svc("new"), svc("kept"), changed))
	want := proxy.ReloadSummary{Added: []string{"new"}, Removed: []string{"gone"}, Changed: []string{"changed"}}
	if d := cmp.Diff(want, sum); d != "" {
		t.Errorf("summary (-want +got):\n%s", d)
	}
	for name, want := range map[string]int{"new": 200, "kept": 200, "changed": 200, "gone": 404} {
		if s := statusOf(name); s != want {
			t.Errorf("%s after the reload: %d, want %d", name, s, want)
		}
	}
	var order []string
	for _, r := range e.gw.Replicas() {
		order = append(order, r.Service)
	}
	if d := cmp.Diff([]string{"new", "kept", "changed"}, order); d != "" {
		t.Errorf("Replicas after the reload, by service (-want +got):\n%s", d)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var queued []string
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if g, ok := mt.Data.(metricdata.Gauge[int64]); ok && mt.Name == "scoregate.queue.length" {
				for _, dp := range g.DataPoints {
					v, _ := dp.Attributes.Value("service")
					queued = append(queued, v.AsString())
				}
			}
		}
	}
	slices.Sort(queued)
	if d := cmp.Diff([]string{"changed", "kept", "new"}, queued); d != "" {
		t.Errorf("queue gauges after the reload, by service (-want +got):\n%s", d)
	}

	if sum := mustReload(t, e.gw, configOf(t, svc("new"), svc("kept"), changed)); len(sum.Added)+len(sum.Removed)+len(sum.Changed) != 0 {
		t.Errorf("reloading the same configuration: %+v, want nothing changed", sum)
	}
}

// A request in flight on a service the reload removes or changes finishes on the service it
// started with.
func TestReloadLetsInFlightRequestsFinish(t *testing.T) {
	slow := newModel(t, "slow", 400*time.Millisecond)
	other := newModel(t, "other", 0)
	e := reloadEnv(t,
		config.Service{Name: "removed", Auth: config.AuthNone, Upstreams: []string{slow.srv.URL}},
		config.Service{Name: "changed", Auth: config.AuthNone, Upstreams: []string{slow.srv.URL}},
	)
	type result struct {
		status int
		body   string
	}
	results := map[string]chan result{"removed": make(chan result, 1), "changed": make(chan result, 1)}
	for name, ch := range results {
		go func() {
			status, body, _ := get(t, &http.Client{}, "http://"+e.addr+"/api/v1/service/"+name+"/score")
			ch <- result{status, body}
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); slow.inflight.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the requests never reached the model")
		}
	}
	mustReload(t, e.gw, configOf(t, config.Service{Name: "changed", Auth: config.AuthNone, Upstreams: []string{other.srv.URL}}))
	for name, ch := range results {
		if r := <-ch; r.status != 200 || r.body != "slow" {
			t.Errorf("%s: the request in flight during the reload got %d %q, want 200 from the model it started on", name, r.status, r.body)
		}
	}
	if status, body, _ := get(t, &http.Client{}, "http://"+e.addr+"/api/v1/service/changed/score"); status != 200 || body != "other" {
		t.Errorf("changed after the reload: %d %q, want 200 from the new model", status, body)
	}
}

// A service kept by a reload keeps what the gateway knows of its replicas; so does one whose
// rules alone change (same backend), and one whose pools are rebuilt carries the state of each
// replica that keeps its address. A replica with a new address starts healthy.
func TestReloadKeepsReplicaState(t *testing.T) {
	for _, c := range []struct {
		name  string
		edit  func(s *config.Service, otherDown string)
		state string
	}{
		{"unchanged", func(*config.Service, string) {}, "ejected"},
		{"rules changed", func(s *config.Service, _ string) { s.BlockedPaths = []string{"/admin"} }, "ejected"},
		{"pool rebuilt", func(s *config.Service, _ string) { s.MaxConnsPerUpstream = 7 }, "ejected"},
		{"address replaced", func(s *config.Service, other string) { s.Upstreams = []string{other} }, "healthy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			down, otherDown := closedPortURL(t), closedPortURL(t)
			svc := func() config.Service {
				return config.Service{Name: "down", Auth: config.AuthNone, Upstreams: []string{down},
					PassiveFailures: 1, EjectionTime: time.Minute}
			}
			e := reloadEnv(t, svc())
			if status, _, _ := get(t, &http.Client{}, "http://"+e.addr+"/api/v1/service/down/score"); status != 502 {
				t.Fatalf("the unreachable model: %d, want 502", status)
			}
			if st := e.gw.Replicas()[0].State; st != "ejected" {
				t.Fatalf("before the reload the replica is %q, want ejected", st)
			}
			next := svc()
			c.edit(&next, otherDown)
			mustReload(t, e.gw, configOf(t, next, config.Service{Name: "added", Auth: config.AuthNone, Upstreams: []string{down}}))
			if st := e.gw.Replicas()[0].State; st != c.state {
				t.Errorf("after the reload the replica is %q, want %q", st, c.state)
			}
		})
	}
}

// A reload that keeps a capped service (unchanged, or with new rules only) keeps its admission
// queue: requests queued across the reload are served first come, first served, and the model
// never has more than max_concurrent_requests in flight.
func TestReloadKeepsAdmissionQueue(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*config.Service)
	}{
		{"unchanged", func(*config.Service) {}},
		{"rules changed", func(s *config.Service) { s.BlockedPaths = []string{"/admin"}; s.MaxBodyBytes = 4096 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newModel(t, "m", 60*time.Millisecond)
			svc := func() config.Service {
				return config.Service{Name: "svc", Auth: config.AuthNone, Upstreams: []string{m.srv.URL},
					MaxConcurrentRequests: 1, MaxRequestWait: 5 * time.Second}
			}
			e := reloadEnv(t, svc())
			client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 20}}
			statuses := make([]int, 8)
			sendInOrder(t, e.gw, "svc", len(statuses), func(i int) {
				statuses[i], _, _ = get(t, client, "http://"+e.addr+"/api/v1/service/svc/score", "X-Seq", fmt.Sprint(i))
			}, func(i int) {
				if i == 3 {
					next := svc()
					c.edit(&next)
					mustReload(t, e.gw, configOf(t, next, config.Service{Name: "added", Auth: config.AuthNone, Upstreams: []string{m.srv.URL}}))
				}
			})
			for i, s := range statuses {
				if s != 200 {
					t.Errorf("request %d: %d, want 200", i, s)
				}
			}
			if p := m.peak.Load(); p != 1 {
				t.Errorf("the model had %d requests in flight at once, want 1", p)
			}
			m.mu.Lock()
			order := strings.Join(m.order, ",")
			m.mu.Unlock()
			if order != "0,1,2,3,4,5,6,7" {
				t.Errorf("the model saw the requests in the order %s, want first come, first served", order)
			}
		})
	}
}

// A service that cannot be built (its CA file is gone) fails the whole reload with a problem
// naming it; the running table is untouched, and services built before it are stopped again.
func TestReloadRejectsUnbuildableService(t *testing.T) {
	m := newModel(t, "m", 0)
	kept := func() config.Service {
		return config.Service{Name: "kept", Auth: config.AuthNone, Upstreams: []string{m.srv.URL}}
	}
	e := reloadEnv(t, kept())
	checked := config.Service{Name: "checked", Auth: config.AuthNone, Upstreams: []string{m.srv.URL},
		HealthCheck: config.HealthCheck{Path: "/healthz", Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond}}
	broken := config.Service{Name: "broken", Auth: config.AuthNone, Upstreams: []string{"https://127.0.0.1:1"},
		TLS: config.UpstreamTLS{CAFile: t.TempDir() + "/missing-ca.pem"}}
	_, err := e.gw.Reload(configOf(t, checked, broken))
	var probs config.Problems
	if !errors.As(err, &probs) || len(probs) != 1 || probs[0].Path != "services[1]" || !strings.Contains(probs[0].Message, "tls.ca_file") {
		t.Fatalf("Reload = %v, want one problem at services[1] naming tls.ca_file", err)
	}
	for name, want := range map[string]int{"kept": 200, "checked": 404, "broken": 404} {
		if status, _, _ := get(t, &http.Client{}, "http://"+e.addr+"/api/v1/service/"+name+"/score"); status != want {
			t.Errorf("%s after the rejected reload: %d, want %d", name, status, want)
		}
	}
}

func TestReloadAfterShutdown(t *testing.T) {
	m := newModel(t, "m", 0)
	e := reloadEnv(t, config.Service{Name: "svc", Auth: config.AuthNone, Upstreams: []string{m.srv.URL}})
	if status, _, _ := get(t, &http.Client{}, "http://"+e.addr+"/api/v1/service/svc/score"); status != 200 { // serving
		t.Fatalf("before Shutdown: %d", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.gw.Reload(configOf(t, config.Service{Name: "svc", Auth: config.AuthNone, Upstreams: []string{m.srv.URL},
		HealthCheck: config.HealthCheck{Path: "/"}})); !errors.Is(err, proxy.ErrClosed) {
		t.Fatalf("Reload after Shutdown = %v, want ErrClosed", err)
	}
}

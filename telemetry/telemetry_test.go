package telemetry

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/otlpsink"
)

var update = flag.Bool("update", false, "rewrite testdata/metrics.golden from the current /metrics output")

// TestMain fails the run when a test leaves a goroutine behind: after Shutdown the recorder must
// be gone. Nothing is ignored: the package starts only the recorder, and the tests close their
// httptest servers and idle client connections.
//
// The OTEL_* variables of the environment running the tests are cleared first, so that a sampler
// or resource set for something else cannot change what these tests see; tests that need one set
// it with t.Setenv.
func TestMain(m *testing.M) {
	otlpsink.ServeIfAsked() // a benchmark's OTLP receiver, when this process was started as one
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			os.Unsetenv(name)
		}
	}
	goleak.VerifyTestMain(m)
}

// keptExporter is tracetest's in-memory exporter, except that it keeps its spans when shut down:
// Telemetry.Shutdown flushes and then shuts the exporters down, and InMemoryExporter.Shutdown
// forgets everything it holds.
type keptExporter struct{ *tracetest.InMemoryExporter }

func (keptExporter) Shutdown(context.Context) error { return nil }

// newTel starts a Telemetry on the default configuration, changed by change, with an in-memory
// exporter unless o names exporters. It is shut down when the test ends (Shutdown is idempotent).
func newTel(tb testing.TB, change func(*config.Config), o Options) (*Telemetry, *tracetest.InMemoryExporter) {
	tb.Helper()
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	if change != nil {
		change(cfg)
	}
	mem := tracetest.NewInMemoryExporter()
	if o.Exporters == nil {
		o.Exporters = []sdktrace.SpanExporter{keptExporter{mem}}
	}
	tel, err := New(context.Background(), cfg, o)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { shutdown(tb, tel) })
	return tel, mem
}

func shutdown(tb testing.TB, tel *Telemetry) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		tb.Errorf("Shutdown: %v", err)
	}
}

// req is one request as the proxy would note it.
type req struct {
	method, target, userAgent, host, client string
	traceparent, tracestate                 string
	id                                      string

	service, auth, reason, upstream string
	deployment                      string
	queueWait                       time.Duration
	tls                             bool
	stream                          bool // the answer was streamed (with upstream)
	caller                          string
	genAI                           GenAI
	// wait is spent between Begin and End (and inside the upstream call when upstream is set),
	// so that durations are not zero.
	wait   time.Duration
	status int
}

// do records q the way the proxy does and returns the traceparent the model would have been sent.
func do(tel *Telemetry, q req) string {
	rec := tel.Begin()
	rec.SetRequest([]byte(q.method), []byte(q.target), []byte(q.userAgent), []byte(q.host), []byte(q.client),
		[]byte(q.traceparent), []byte(q.tracestate))
	rec.SetRequestID([]byte(q.id))
	rec.Service, rec.Auth, rec.Reason = q.service, q.auth, q.reason
	rec.Deployment, rec.QueueWait, rec.TLS = q.deployment, q.queueWait, q.tls
	rec.Caller, rec.GenAI = q.caller, q.genAI
	if q.upstream != "" {
		rec.Upstream = q.upstream
		rec.UpstreamStart()
		time.Sleep(q.wait)
		if q.stream {
			rec.Stream = true
			rec.MarkFirstByte()
		}
		rec.UpstreamEnd()
	} else {
		time.Sleep(q.wait)
	}
	tp := string(rec.AppendTraceparent(nil))
	rec.End(q.status)
	return tp
}

func attrs(kvs []attribute.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// spansByID indexes spans by their RequestId attribute.
func spansByID(tb testing.TB, spans tracetest.SpanStubs) map[string]tracetest.SpanStub {
	tb.Helper()
	out := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		id, _ := attrs(s.Attributes)["RequestId"].(string)
		if _, dup := out[id]; dup {
			tb.Fatalf("two spans with RequestId %q", id)
		}
		out[id] = s
	}
	return out
}

const (
	testUA     = "scoring-client/1.2 (+https://example.test)"
	testClient = "203.0.113.7"
)

// TestSpan checks every field of the SERVER span of a success, two refusals and an upstream
// failure.
func TestSpan(t *testing.T) {
	tel, mem := newTel(t, func(c *config.Config) { c.ComputeType = "edge" }, Options{})
	cases := []struct {
		name string
		req  req
		want map[string]any // every attribute but Duration and scoregate.upstream.duration_ms
	}{
		{
			name: "200 forwarded to the model, with a port in Host and a query",
			req: req{method: "POST", target: "/api/v1/service/iris/score?version=2", userAgent: testUA,
				host: "gw.test:8080", client: testClient, id: "req-200",
				service: "iris", auth: config.AuthKey, upstream: "127.0.0.1:9000", wait: 3 * time.Millisecond, status: 200},
			want: map[string]any{
				"http.request.method": "POST", "url.scheme": "http", "url.path": "/api/v1/service/iris/score",
				"url.query": "version=2", "http.route": Route, "http.response.status_code": int64(200),
				"server.address": "gw.test", "server.port": int64(8080), "user_agent.original": testUA,
				"client.address": testClient, "HTTPMethod": "POST", "UserAgent": testUA, "ComputeType": "edge",
				"RequestUrl": "http://gw.test:8080/api/v1/service/iris/score?version=2", "StatusCode": "200",
				"RequestId": "req-200", "scoregate.service": "iris", "scoregate.auth_mode": "key",
				"scoregate.outcome": "ok", "scoregate.upstream.address": "127.0.0.1:9000",
			},
		},
		{
			name: "401 refused before the model: no upstream attributes, no query",
			req: req{method: "POST", target: "/api/v1/service/iris/score", userAgent: testUA,
				host: "gw.test", client: testClient, id: "req-401",
				service: "iris", auth: config.AuthKey, reason: "missing_credential", wait: time.Millisecond, status: 401},
			want: map[string]any{
				"http.request.method": "POST", "url.scheme": "http", "url.path": "/api/v1/service/iris/score",
				"http.route": Route, "http.response.status_code": int64(401),
				"server.address": "gw.test", "user_agent.original": testUA,
				"client.address": testClient, "HTTPMethod": "POST", "UserAgent": testUA, "ComputeType": "edge",
				"RequestUrl": "http://gw.test/api/v1/service/iris/score", "StatusCode": "401",
				"RequestId": "req-401", "scoregate.service": "iris", "scoregate.auth_mode": "key",
				"scoregate.outcome": "missing_credential",
			},
		},
		{
			name: "404 for no service: service and auth mode empty",
			req: req{method: "GET", target: "/api/v1/service/nope/score?a=b", userAgent: "curl/8.5.0",
				host: "gw.test", client: "192.0.2.1", id: "req-404", reason: "not_found", wait: time.Millisecond, status: 404},
			want: map[string]any{
				"http.request.method": "GET", "url.scheme": "http", "url.path": "/api/v1/service/nope/score",
				"url.query": "a=b", "http.route": Route, "http.response.status_code": int64(404),
				"server.address": "gw.test", "user_agent.original": "curl/8.5.0",
				"client.address": "192.0.2.1", "HTTPMethod": "GET", "UserAgent": "curl/8.5.0", "ComputeType": "edge",
				"RequestUrl": "http://gw.test/api/v1/service/nope/score?a=b", "StatusCode": "404",
				"RequestId": "req-404", "scoregate.service": "", "scoregate.auth_mode": "",
				"scoregate.outcome": "not_found",
			},
		},
		{
			name: "502 from the model: an error span with the reason",
			req: req{method: "PUT", target: "/api/v1/service/iris/score?x=1&y=2", userAgent: testUA,
				host: "10.0.0.1:8443", client: "2001:db8::7", id: "req-502",
				service: "iris", auth: config.AuthNone, reason: "upstream_error", upstream: "10.0.0.9:5001",
				wait: 2 * time.Millisecond, status: 502},
			want: map[string]any{
				"http.request.method": "PUT", "url.scheme": "http", "url.path": "/api/v1/service/iris/score",
				"url.query": "x=1&y=2", "http.route": Route, "http.response.status_code": int64(502),
				"server.address": "10.0.0.1", "server.port": int64(8443), "user_agent.original": testUA,
				"client.address": "2001:db8::7", "HTTPMethod": "PUT", "UserAgent": testUA, "ComputeType": "edge",
				"RequestUrl": "http://10.0.0.1:8443/api/v1/service/iris/score?x=1&y=2", "StatusCode": "502",
				"RequestId": "req-502", "scoregate.service": "iris", "scoregate.auth_mode": "none",
				"scoregate.outcome": "upstream_error", "scoregate.upstream.address": "10.0.0.9:5001",
			},
		},
	}
	tps := map[string]string{}
	for _, c := range cases {
		tps[c.req.id] = do(tel, c.req)
	}
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	if len(spans) != len(cases) {
		t.Fatalf("%d spans exported, want %d", len(spans), len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, ok := spans[c.req.id]
			if !ok {
				t.Fatalf("no span with RequestId %q", c.req.id)
			}
			if want := c.req.method + " /api/v1/service/{name}/{rest}"; s.Name != want {
				t.Errorf("name %q, want %q", s.Name, want)
			}
			if s.SpanKind != trace.SpanKindServer {
				t.Errorf("kind %v, want server", s.SpanKind)
			}
			wantStatus := sdktrace.Status{Code: codes.Unset}
			if c.req.status >= 500 {
				wantStatus = sdktrace.Status{Code: codes.Error, Description: c.req.reason}
			}
			checkEqual(t, "status", wantStatus, s.Status)

			got := attrs(s.Attributes)
			if len(got) != len(s.Attributes) {
				t.Errorf("%d attributes but %d distinct keys: %v", len(s.Attributes), len(got), s.Attributes)
			}
			dur, ok := got["Duration"].(float64)
			if !ok {
				t.Fatalf("Duration %#v, want a float64 of milliseconds", got["Duration"])
			}
			delete(got, "Duration")
			elapsed := float64(s.EndTime.Sub(s.StartTime)) / float64(time.Millisecond)
			if math.Abs(dur-elapsed) > 1 || dur < float64(c.req.wait)/float64(time.Millisecond) {
				t.Errorf("Duration %gms, EndTime-StartTime %gms, waited %v", dur, elapsed, c.req.wait)
			}
			if c.req.upstream != "" {
				up, ok := got["scoregate.upstream.duration_ms"].(float64)
				if !ok {
					t.Fatalf("scoregate.upstream.duration_ms %#v, want a float64", got["scoregate.upstream.duration_ms"])
				}
				delete(got, "scoregate.upstream.duration_ms")
				if up < float64(c.req.wait)/float64(time.Millisecond) || up > dur {
					t.Errorf("scoregate.upstream.duration_ms %g, want from %v to Duration %g", up, c.req.wait, dur)
				}
			}
			checkEqual(t, "attributes", c.want, got)

			if s.Parent.IsValid() {
				t.Errorf("parent %v without an incoming traceparent", s.Parent)
			}
			sc := s.SpanContext
			if !sc.IsValid() || !sc.IsSampled() {
				t.Errorf("span context %v, want valid and sampled", sc)
			}
			if want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID()); tps[c.req.id] != want {
				t.Errorf("traceparent to the model %q, want %q", tps[c.req.id], want)
			}
			if name, _ := s.Resource.Set().Value("service.name"); name.AsString() != "scoregate" {
				t.Errorf("resource service.name %q, want scoregate", name.AsString())
			}
			if s.InstrumentationScope.Name != "github.com/scoregate/scoregate/telemetry" {
				t.Errorf("instrumentation scope %q", s.InstrumentationScope.Name)
			}
		})
	}
}

// A "BREW" request is named "HTTP …" and labelled _OTHER (its method kept as
// http.request.method_original), so a client cannot invent span names.
func TestSpanUnknownMethod(t *testing.T) {
	tel, mem := newTel(t, nil, Options{})
	do(tel, req{method: "BREW", target: "/api/v1/service/iris/score", host: "gw.test", id: "brew", status: 404})
	shutdown(t, tel)
	s := spansByID(t, mem.GetSpans())["brew"]
	if s.Name != "HTTP "+Route || attrs(s.Attributes)["http.request.method"] != "_OTHER" || attrs(s.Attributes)["HTTPMethod"] != "_OTHER" ||
		attrs(s.Attributes)["http.request.method_original"] != "BREW" {
		t.Errorf("name %q, attributes %v; want the method folded to _OTHER", s.Name, s.Attributes)
	}
}

// A request over HTTPS that waited for a replica of deployment "blue": the span says https, the
// deployment and the wait.
func TestSpanTLSAndDeployment(t *testing.T) {
	tel, mem := newTel(t, nil, Options{})
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test:8443", id: "tls", status: 200, tls: true,
		service: "iris", upstream: "127.0.0.1:5001", deployment: "blue", queueWait: 2500 * time.Microsecond})
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test:8080", id: "plain", status: 401})
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	a := attrs(spans["tls"].Attributes)
	if a["url.scheme"] != "https" || a["RequestUrl"] != "https://gw.test:8443/api/v1/service/iris/score" ||
		a["scoregate.deployment"] != "blue" || a["scoregate.queue_wait_ms"] != 2.5 {
		t.Errorf("HTTPS span attributes %v", a)
	}
	p := attrs(spans["plain"].Attributes)
	if _, ok := p["scoregate.deployment"]; ok || p["url.scheme"] != "http" {
		t.Errorf("plain span attributes %v: no deployment, http", p)
	}
}

func checkEqual[T any](tb testing.TB, what string, want, got T, opts ...cmp.Option) {
	tb.Helper()
	if diff := cmp.Diff(want, got, opts...); diff != "" {
		tb.Errorf("%s mismatch (-want +got):\n%s", what, diff)
	}
}

// ---------------------------------------------------------------------------------------------
// W3C trace context.

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
	zeroTrace   = "00000000000000000000000000000000"
	zeroSpan    = "0000000000000000"
)

// traceparentCases are parseTraceparent's table; FuzzParseTraceparent seeds its corpus with them.
var traceparentCases = []struct {
	name  string
	in    string
	ok    bool
	flags byte
}{
	{"version 00 sampled", "00-" + parentTrace + "-" + parentSpan + "-01", true, 0x01},
	{"version 00 not sampled", "00-" + parentTrace + "-" + parentSpan + "-00", true, 0x00},
	{"version 00 with unknown flags kept", "00-" + parentTrace + "-" + parentSpan + "-ff", true, 0xff},
	{"later version, same length", "01-" + parentTrace + "-" + parentSpan + "-01", true, 0x01},
	{"later version may add -fields", "cc-" + parentTrace + "-" + parentSpan + "-01-x", true, 0x01},
	{"later version with a longer extension", "fe-" + parentTrace + "-" + parentSpan + "-00-what-the-future-holds", true, 0x00},
	{"empty", "", false, 0},
	{"one byte short", "00-" + parentTrace + "-" + parentSpan + "-0", false, 0},
	{"one byte long", "00-" + parentTrace + "-" + parentSpan + "-010", false, 0},
	{"short trace id", "00-" + parentTrace[:31] + "-" + parentSpan + "-01", false, 0},
	{"version 00 with extra bytes", "00-" + parentTrace + "-" + parentSpan + "-01-x", false, 0},
	{"version 00 with a trailing dash", "00-" + parentTrace + "-" + parentSpan + "-01-", false, 0},
	{"later version, extra bytes without a dash", "cc-" + parentTrace + "-" + parentSpan + "-01x", false, 0},
	{"version ff is invalid", "ff-" + parentTrace + "-" + parentSpan + "-01", false, 0},
	{"uppercase trace id", "00-" + strings.ToUpper(parentTrace) + "-" + parentSpan + "-01", false, 0},
	{"uppercase span id", "00-" + parentTrace + "-" + strings.ToUpper("00f067aa0ba902b7") + "-01", false, 0},
	{"uppercase version", "0A-" + parentTrace + "-" + parentSpan + "-01", false, 0},
	{"uppercase flags", "00-" + parentTrace + "-" + parentSpan + "-0B", false, 0},
	{"all-zero trace id", "00-" + zeroTrace + "-" + parentSpan + "-01", false, 0},
	{"all-zero span id", "00-" + parentTrace + "-" + zeroSpan + "-01", false, 0},
	{"not hex", "00-" + parentTrace[:31] + "g-" + parentSpan + "-01", false, 0},
	{"underscores for dashes", "00_" + parentTrace + "_" + parentSpan + "_01", false, 0},
	{"spaces around", " 00-" + parentTrace + "-" + parentSpan + "-01", false, 0},
	{"dashes shifted", "00-" + parentTrace + parentSpan[:1] + "-" + parentSpan[1:] + "-01", false, 0},
}

func TestParseTraceparent(t *testing.T) {
	wantTID, _ := hex.DecodeString(parentTrace)
	wantPID, _ := hex.DecodeString(parentSpan)
	for _, c := range traceparentCases {
		t.Run(c.name, func(t *testing.T) {
			tid, pid, flags, ok := parseTraceparent([]byte(c.in))
			if ok != c.ok {
				t.Fatalf("parseTraceparent(%q) ok=%v, want %v", c.in, ok, c.ok)
			}
			if !ok {
				return
			}
			if !bytes.Equal(tid[:], wantTID) || !bytes.Equal(pid[:], wantPID) || flags != c.flags {
				t.Errorf("parseTraceparent(%q) = %x, %x, %02x; want %s, %s, %02x", c.in, tid, pid, flags, parentTrace, parentSpan, c.flags)
			}
		})
	}
}

// TestTraceContext checks what an incoming traceparent and tracestate do to the span and to the
// traceparent sent on to the model.
func TestTraceContext(t *testing.T) {
	tel, mem := newTel(t, nil, Options{})
	const state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
	cases := []struct {
		name, traceparent, tracestate string
		parent                        bool
	}{
		{"valid parent: same trace, remote parent, tracestate kept", "00-" + parentTrace + "-" + parentSpan + "-01", state, true},
		{"later version parent", "cc-" + parentTrace + "-" + parentSpan + "-01-x", state, true},
		{"invalid parent: new trace, tracestate dropped", "00-" + strings.ToUpper(parentTrace) + "-" + parentSpan + "-01", state, false},
		{"all-zero parent: new trace", "00-" + zeroTrace + "-" + parentSpan + "-01", state, false},
		{"no parent, stray tracestate dropped", "", state, false},
	}
	type sent struct{ traceparent, tracestate, traceID string }
	got := map[string]sent{}
	for i, c := range cases {
		id := fmt.Sprint("tc-", i)
		rec := tel.Begin()
		rec.SetRequest([]byte("POST"), []byte("/api/v1/service/iris/score"), nil, []byte("gw.test"), nil,
			[]byte(c.traceparent), []byte(c.tracestate))
		rec.SetRequestID([]byte(id))
		got[id] = sent{string(rec.AppendTraceparent(nil)), string(rec.Tracestate()), string(rec.AppendTraceID(nil))}
		if !c.parent && rec.Tracestate() != nil {
			t.Errorf("%s: Tracestate() = %q, want nil", c.name, rec.Tracestate())
		}
		rec.End(200)
	}
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprint("tc-", i)
			s, ok := spans[id]
			if !ok {
				t.Fatal("no span")
			}
			sc, g := s.SpanContext, got[id]
			if want := fmt.Sprintf("00-%s-%s-01", sc.TraceID(), sc.SpanID()); g.traceparent != want {
				t.Errorf("traceparent to the model %q, want %q (this span as the parent)", g.traceparent, want)
			}
			if g.traceID != sc.TraceID().String() {
				t.Errorf("AppendTraceID %q, span trace %s", g.traceID, sc.TraceID())
			}
			if c.parent {
				if sc.TraceID().String() != parentTrace {
					t.Errorf("trace id %s, want the parent's %s", sc.TraceID(), parentTrace)
				}
				if !s.Parent.IsValid() || !s.Parent.IsRemote() || s.Parent.TraceID().String() != parentTrace || s.Parent.SpanID().String() != parentSpan {
					t.Errorf("parent %+v, want remote %s/%s", s.Parent, parentTrace, parentSpan)
				}
				if g.tracestate != state || sc.TraceState().String() != state {
					t.Errorf("tracestate forwarded %q, on the span %q; want %q", g.tracestate, sc.TraceState(), state)
				}
				return
			}
			if s.Parent.IsValid() {
				t.Errorf("parent %v from an invalid traceparent", s.Parent)
			}
			if !sc.TraceID().IsValid() || sc.TraceID().String() == parentTrace {
				t.Errorf("trace id %s, want a new one", sc.TraceID())
			}
			if g.tracestate != "" || sc.TraceState().Len() != 0 {
				t.Errorf("tracestate forwarded %q, on the span %q; want none without a valid parent", g.tracestate, sc.TraceState())
			}
		})
	}
}

// TestPublicEndpointLinks is finding 8b of issue 17 on the telemetry side: under
// telemetry.public_endpoint a client's traceparent is not the span's parent: the span starts a
// new trace (sampled as a root), carries one link to the client's context, and nothing of the
// client's tracestate reaches the model or the span.
func TestPublicEndpointLinks(t *testing.T) {
	tel, mem := newTel(t, func(c *config.Config) { c.Telemetry.PublicEndpoint = true }, Options{})
	incoming := "00-" + parentTrace + "-" + parentSpan + "-01"
	rec := tel.Begin()
	rec.SetRequest([]byte("POST"), []byte("/api/v1/service/iris/score"), nil, []byte("gw.test"), nil,
		[]byte(incoming), []byte("congo=t61rcWkgMzE"))
	rec.SetRequestID([]byte("linked"))
	if ts := rec.Tracestate(); ts != nil {
		t.Errorf("Tracestate() = %q, want nil: the client's tracestate is not passed on", ts)
	}
	sent := string(rec.AppendTraceparent(nil))
	rec.End(200)
	rec = tel.Begin()
	rec.SetRequest([]byte("POST"), []byte("/x"), nil, []byte("gw.test"), nil, []byte("00-bad"), nil)
	rec.SetRequestID([]byte("unlinked"))
	rec.End(200)
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	s := spans["linked"]
	if s.Parent.IsValid() {
		t.Errorf("parent %v, want none: a public endpoint starts a new trace", s.Parent)
	}
	if s.SpanContext.TraceID().String() == parentTrace {
		t.Errorf("trace id %s is the client's", s.SpanContext.TraceID())
	}
	if want := fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), s.SpanContext.SpanID()); sent != want {
		t.Errorf("traceparent to the model %q, want the gateway's own %q", sent, want)
	}
	if s.SpanContext.TraceState().Len() != 0 {
		t.Errorf("span tracestate %q, want none", s.SpanContext.TraceState())
	}
	if len(s.Links) != 1 {
		t.Fatalf("%d links, want 1 to the client's context", len(s.Links))
	}
	l := s.Links[0].SpanContext
	if l.TraceID().String() != parentTrace || l.SpanID().String() != parentSpan || !l.IsSampled() || !l.IsRemote() {
		t.Errorf("link %s/%s sampled=%v remote=%v, want remote %s/%s sampled", l.TraceID(), l.SpanID(), l.IsSampled(), l.IsRemote(),
			parentTrace, parentSpan)
	}
	if n := len(spans["unlinked"].Links); n != 0 {
		t.Errorf("%d links from an invalid traceparent, want none", n)
	}
}

// A pooled Record that last carried a tracestate must not report one for a request whose
// traceparent is invalid: the proxy deletes the incoming Tracestate header only when Tracestate
// returns nil.
func TestTracestateNotReused(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	rec := tel.Begin()
	rec.SetRequest([]byte("GET"), []byte("/"), nil, nil, nil, []byte("00-"+parentTrace+"-"+parentSpan+"-01"), []byte("a=b"))
	if got := string(rec.Tracestate()); got != "a=b" {
		t.Fatalf("Tracestate() = %q with a valid parent, want a=b", got)
	}
	// The same Record reused for the next request, as the pool does.
	rec.SetRequest([]byte("GET"), []byte("/"), nil, nil, nil, []byte("00-bad"), []byte("evil=1"))
	if got := rec.Tracestate(); got != nil {
		t.Errorf("Tracestate() = %q after an invalid traceparent, want nil", got)
	}
	rec.SetRequest([]byte("GET"), []byte("/"), nil, nil, nil, nil, []byte("evil=1"))
	if got := rec.Tracestate(); got != nil {
		t.Errorf("Tracestate() = %q without a traceparent, want nil", got)
	}
	rec.End(200)
}

// ---------------------------------------------------------------------------------------------
// Sampling.

func TestSamplerFromEnv(t *testing.T) {
	cases := []struct {
		name, sampler, arg string
		want               sampler
		wantErr            bool
	}{
		{"default is parentbased_always_on", "", "", sampler{parentBased: true, all: true}, false},
		{"always_on", "always_on", "", sampler{all: true}, false},
		{"always_off", "always_off", "", sampler{}, false},
		{"parentbased_always_off", "parentbased_always_off", "", sampler{parentBased: true}, false},
		{"traceidratio without an argument samples all", "traceidratio", "", sampler{all: true}, false},
		{"traceidratio 1", "traceidratio", "1", sampler{all: true}, false},
		{"traceidratio 0 samples none", "traceidratio", "0", sampler{}, false},
		{"traceidratio 0.5", "traceidratio", "0.5", sampler{threshold: 1 << 63}, false},
		{"parentbased_traceidratio 0.25", "parentbased_traceidratio", "0.25", sampler{parentBased: true, threshold: 1 << 62}, false},
		{"unknown sampler", "sometimes", "", sampler{}, true},
		{"parentbased_ of nothing", "parentbased_", "", sampler{}, true},
		{"jaeger_remote is not supported", "jaeger_remote", "", sampler{}, true},
		{"ratio not a number", "traceidratio", "half", sampler{}, true},
		{"ratio negative", "traceidratio", "-0.1", sampler{}, true},
		{"ratio above 1", "traceidratio", "1.5", sampler{}, true},
		{"ratio NaN", "traceidratio", "NaN", sampler{}, true},
		{"ratio infinite", "traceidratio", "Inf", sampler{}, true},
		{"ratio of a parentbased sampler checked too", "parentbased_traceidratio", "2", sampler{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := map[string]string{"OTEL_TRACES_SAMPLER": c.sampler, "OTEL_TRACES_SAMPLER_ARG": c.arg}
			got, err := samplerFromEnv(func(k string) string { return env[k] })
			if (err != nil) != c.wantErr {
				t.Fatalf("samplerFromEnv: %v, want an error: %v", err, c.wantErr)
			}
			if err == nil {
				checkEqual(t, "sampler", c.want, got, cmp.AllowUnexported(sampler{}))
			}
		})
	}
}

// A bad sampler stops the gateway from starting rather than tracing in a way nobody asked for.
func TestNewRejectsBadSampler(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "2")
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	if tel, err := New(context.Background(), cfg, Options{Exporters: []sdktrace.SpanExporter{tracetest.NewNoopExporter()}}); err == nil {
		shutdown(t, tel)
		t.Fatal("New accepted OTEL_TRACES_SAMPLER_ARG=2")
	}
}

func TestSamplerRatio(t *testing.T) {
	env := map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
	s, err := samplerFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 10000 {
		var id [16]byte
		for i := range id {
			id[i] = byte(rand.Uint32())
		}
		if s.sample(id, false, false) {
			n++
		}
	}
	if n < 4000 || n > 6000 {
		t.Errorf("traceidratio 0.5 sampled %d of 10000 random trace ids, want about half", n)
	}
}

// TestSampling runs records through New under each sampler: unsampled requests export no span and
// say so to the model, and are counted in the metrics all the same.
func TestSampling(t *testing.T) {
	const (
		sampledParent   = "00-" + parentTrace + "-" + parentSpan + "-01"
		unsampledParent = "00-" + parentTrace + "-" + parentSpan + "-00"
	)
	cases := []struct {
		name, sampler, traceparent string
		sampled                    bool
	}{
		{"always_off exports nothing", "always_off", "", false},
		{"always_off ignores a sampled parent", "always_off", sampledParent, false},
		{"parentbased_always_on follows an unsampled parent", "parentbased_always_on", unsampledParent, false},
		{"parentbased_always_on follows a sampled parent", "parentbased_always_on", sampledParent, true},
		{"parentbased_always_on samples a root", "parentbased_always_on", "", true},
		{"parentbased_always_off follows a sampled parent", "parentbased_always_off", sampledParent, true},
		{"parentbased_always_off drops a root", "parentbased_always_off", "", false},
		{"always_on overrides an unsampled parent", "always_on", unsampledParent, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("OTEL_TRACES_SAMPLER", c.sampler)
			tel, mem := newTel(t, nil, Options{})
			const n = 3
			for i := range n {
				tp := do(tel, req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test",
					traceparent: c.traceparent, id: fmt.Sprint(i), service: "iris", status: 200})
				if flags := tp[len(tp)-2:]; flags != map[bool]string{true: "01", false: "00"}[c.sampled] {
					t.Errorf("traceparent to the model %q, want sampled=%v", tp, c.sampled)
				}
				if c.traceparent != "" && tp[3:35] != parentTrace {
					t.Errorf("traceparent to the model %q is not in the parent's trace", tp)
				}
			}
			shutdown(t, tel)
			if got, want := len(mem.GetSpans()), map[bool]int{true: n, false: 0}[c.sampled]; got != want {
				t.Errorf("%d spans exported, want %d", got, want)
			}
			h := findSeries(t, scrape(t, tel), "http_server_request_duration_seconds",
				map[string]string{"http_request_method": "POST", "http_response_status_class": "2xx", "service": "iris"})
			if h == nil || h.GetHistogram().GetSampleCount() != n {
				t.Errorf("request duration histogram %v, want %d requests counted", h, n)
			}
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Redaction and the access log.

// accessLog is the access-log lines written to a buffer, read once the recorder has stopped.
type accessLog struct{ buf bytes.Buffer }

func (a *accessLog) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(&a.buf, nil)) }

func (a *accessLog) lines(tb testing.TB) map[string]map[string]any {
	tb.Helper()
	out := map[string]map[string]any{}
	for line := range bytes.Lines(a.buf.Bytes()) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			tb.Fatalf("access log line %q: %v", line, err)
		}
		id, _ := m["request_id"].(string)
		out[id] = m
	}
	return out
}

func TestRedaction(t *testing.T) {
	// Every default parameter, in three spellings, and credentials under harmless names.
	var q, want []string
	for i, p := range config.DefaultRedactQueryParams {
		for j, name := range []string{p, strings.ToUpper(p), strings.ToUpper(p[:1]) + p[1:]} {
			secret := fmt.Sprintf("s3cr3t%d-%d", i, j)
			q = append(q, name+"="+secret)
			want = append(want, name+"=REDACTED")
		}
	}
	q = append(q, "token", "x=1", "api-key=", "model=sgk_0123456789abcdef", "v=prefix.sgp_abcdef", "id=eyJhbGciOiJIUzI1NiJ9.e30.sig", "sgk_bare", "keep=me")
	want = append(want, "REDACTED", "x=1", "api-key=REDACTED", "model=REDACTED", "v=REDACTED", "id=REDACTED", "REDACTED", "keep=me")
	query, wantQuery := strings.Join(q, "&"), strings.Join(want, "&")

	var log accessLog
	tel, mem := newTel(t, func(c *config.Config) { c.Telemetry.AccessLog = true }, Options{AccessLog: log.logger()})
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score?" + query, userAgent: testUA, host: "gw.test",
		client: testClient, id: "r", service: "iris", status: 200})
	shutdown(t, tel)

	s := spansByID(t, mem.GetSpans())["r"]
	a := attrs(s.Attributes)
	checkEqual(t, "url.query", any(wantQuery), a["url.query"])
	checkEqual(t, "RequestUrl", any("http://gw.test/api/v1/service/iris/score?"+wantQuery), a["RequestUrl"])
	line := log.lines(t)["r"]
	checkEqual(t, "access log query", any(wantQuery), line["query"])

	// No secret appears anywhere, under any key.
	for _, secret := range []string{"s3cr3t", "sgk_", "sgp_", "eyJ"} {
		for k, v := range a {
			if strings.Contains(fmt.Sprint(v), secret) {
				t.Errorf("span attribute %s=%v contains %q", k, v, secret)
			}
		}
		if bytes.Contains(log.buf.Bytes(), []byte(secret)) {
			t.Errorf("access log contains %q: %s", secret, log.buf.Bytes())
		}
	}
}

// Configured redact_query_params replace the defaults and still match without regard to case.
func TestRedactionConfigured(t *testing.T) {
	tel, mem := newTel(t, func(c *config.Config) { c.Telemetry.RedactQueryParams = []string{"Tenant"} }, Options{})
	do(tel, req{method: "GET", target: "/api/v1/service/iris/x?TENANT=acme&key=visible&k=sgk_x", host: "gw.test", id: "r", status: 200})
	shutdown(t, tel)
	checkEqual(t, "url.query", any("TENANT=REDACTED&key=visible&k=REDACTED"), attrs(spansByID(t, mem.GetSpans())["r"].Attributes)["url.query"])
}

// LOG-03: a traced request with canaries in its target, Host and query. The span carries no
// request header but the user agent and trace context (the Record is never handed the others:
// Authorization, X-API-Key and Cookie are covered end to end by TestLOG03SpansThroughTheBinary),
// the values of sensitive query parameters (the defaults and a configured one) are REDACTED, and
// RequestUrl (the url.full of this gateway) has no userinfo, whether the client put one in an
// absolute-form target or in Host.
func TestLOG03SpanRedaction(t *testing.T) {
	const canary = "CANARYlog03"
	var log accessLog
	tel, mem := newTel(t, func(c *config.Config) {
		c.Telemetry.AccessLog = true
		c.Telemetry.RedactQueryParams = append(slices.Clone(config.DefaultRedactQueryParams), "tenant_secret")
	}, Options{AccessLog: log.logger()})
	cases := []struct {
		name, target, host string
		wantURL, wantQuery string
	}{
		{"origin form, sensitive query values", "/api/v1/service/iris/score?x=1&api-key=" + canary + "1&Tenant_Secret=" + canary + "2&v=sgk_" + canary + "3",
			"gw.test:8080", "http://gw.test:8080/api/v1/service/iris/score?x=1&api-key=REDACTED&Tenant_Secret=REDACTED&v=REDACTED",
			"x=1&api-key=REDACTED&Tenant_Secret=REDACTED&v=REDACTED"},
		{"absolute form with userinfo", "http://alice:" + canary + "4@gw.test:8080/api/v1/service/iris/score?x=1",
			"gw.test:8080", "http://gw.test:8080/api/v1/service/iris/score?x=1", "x=1"},
		{"absolute form, scheme in capitals, a query right after the authority", "HTTPS://bob:" + canary + "5@gw.test?token=" + canary + "6",
			"gw.test", "http://gw.test?token=REDACTED", "token=REDACTED"},
		{"absolute form without a path", "http://carol:" + canary + "7@gw.test", "gw.test", "http://gw.test", ""},
		{"userinfo in Host", "/api/v1/service/iris/score", "dave:" + canary + "8@gw.test", "http://gw.test/api/v1/service/iris/score", ""},
	}
	for i, c := range cases {
		do(tel, req{method: "POST", target: c.target, userAgent: testUA, host: c.host, client: testClient,
			id: fmt.Sprint("log03-", i), service: "iris", auth: config.AuthKey, reason: "bad_path", status: 400})
	}
	shutdown(t, tel)
	spans := spansByID(t, mem.GetSpans())
	lines := log.lines(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := fmt.Sprint("log03-", i)
			s, ok := spans[id]
			if !ok {
				t.Fatalf("no span %s", id)
			}
			a := attrs(s.Attributes)
			checkEqual(t, "RequestUrl", any(c.wantURL), a["RequestUrl"])
			if u, err := url.Parse(c.wantURL); err != nil || u.User != nil {
				t.Fatalf("RequestUrl %q: %v, userinfo %v", c.wantURL, err, u.User)
			}
			if c.wantQuery != "" {
				checkEqual(t, "url.query", any(c.wantQuery), a["url.query"])
			}
			checkEqual(t, "server.address", any("gw.test"), a["server.address"])
			for k, v := range a {
				if strings.HasPrefix(k, "http.request.header.") {
					t.Errorf("span carries request header attribute %s=%v", k, v)
				}
				if strings.Contains(fmt.Sprint(v), canary) || strings.Contains(fmt.Sprint(v), "@") {
					t.Errorf("span attribute %s=%v carries the canary or a userinfo", k, v)
				}
			}
			line := lines[id]
			if line == nil {
				t.Fatalf("no access-log line %s", id)
			}
			for k, v := range line {
				if strings.Contains(fmt.Sprint(v), canary) {
					t.Errorf("access log %s=%v carries the canary", k, v)
				}
			}
		})
	}
}

func TestHighBusinessImpact(t *testing.T) {
	var log accessLog
	tel, mem := newTel(t, func(c *config.Config) {
		c.Telemetry.HighBusinessImpact = true
		c.Telemetry.AccessLog = true
	}, Options{AccessLog: log.logger()})
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score?version=2&key=abc", userAgent: testUA,
		host: "gw.test:8080", client: testClient, id: "r", service: "iris", status: 200})
	shutdown(t, tel)

	a := attrs(spansByID(t, mem.GetSpans())["r"].Attributes)
	for _, k := range []string{"user_agent.original", "UserAgent", "client.address", "url.query"} {
		if v, ok := a[k]; ok {
			t.Errorf("span attribute %s=%v with high_business_impact", k, v)
		}
	}
	checkEqual(t, "RequestUrl", any("http://gw.test:8080/api/v1/service/iris/score"), a["RequestUrl"])
	checkEqual(t, "url.path", any("/api/v1/service/iris/score"), a["url.path"])
	line := log.lines(t)["r"]
	if line == nil {
		t.Fatalf("no access-log line: %s", log.buf.Bytes())
	}
	for _, k := range []string{"client", "user_agent", "query"} {
		if v, ok := line[k]; ok {
			t.Errorf("access log %s=%v with high_business_impact", k, v)
		}
	}
	for _, secret := range []string{testUA, testClient, "version=2", "key"} {
		if bytes.Contains(log.buf.Bytes(), []byte(secret)) {
			t.Errorf("access log contains %q with high_business_impact: %s", secret, log.buf.Bytes())
		}
	}
}

func TestAccessLog(t *testing.T) {
	var log accessLog
	tel, _ := newTel(t, func(c *config.Config) {
		c.ComputeType = "edge"
		c.Telemetry.AccessLog = true
	}, Options{AccessLog: log.logger()})
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score?version=2", userAgent: testUA, host: "gw.test",
		client: testClient, traceparent: "00-" + parentTrace + "-" + parentSpan + "-01", id: "ok",
		service: "iris", auth: config.AuthKey, upstream: "127.0.0.1:9000", wait: time.Millisecond, status: 200})
	do(tel, req{method: "GET", target: "/api/v1/service/nope/x", host: "gw.test", client: testClient, id: "nf",
		reason: "not_found", status: 404})
	shutdown(t, tel)
	lines := log.lines(t)
	if len(lines) != 2 {
		t.Fatalf("%d access-log lines, want 2: %s", len(lines), log.buf.Bytes())
	}
	ok := lines["ok"]
	for _, k := range []string{"time", "duration_ms", "upstream_ms"} {
		if _, has := ok[k]; !has {
			t.Errorf("access log has no %s: %v", k, ok)
		}
		delete(ok, k)
	}
	checkEqual(t, "access log line", map[string]any{
		"level": "INFO", "msg": "request", "request_id": "ok", "trace_id": parentTrace, "method": "POST",
		"path": "/api/v1/service/iris/score", "status": 200.0, "service": "iris", "outcome": "ok",
		"compute_type": "edge", "upstream": "127.0.0.1:9000", "query": "version=2", "client": testClient,
		"user_agent": testUA,
	}, ok)
	if _, has := lines["nf"]["upstream"]; has {
		t.Errorf("access log of a request never forwarded names an upstream: %v", lines["nf"])
	}
}

// With access_log_sample 0 only the 5xx answers are logged.
func TestAccessLogSampleZero(t *testing.T) {
	var log accessLog
	tel, _ := newTel(t, func(c *config.Config) {
		c.Telemetry.AccessLog = true
		c.Telemetry.AccessLogSample = 0 // a configuration built in code; from a file, a written 0 is kept
	}, Options{AccessLog: log.logger()})
	for _, status := range []int{200, 204, 301, 401, 404, 499, 500, 502, 503, 504} {
		for i := range 20 {
			do(tel, req{method: "GET", target: "/api/v1/service/iris/x", host: "gw.test", id: fmt.Sprint(status, "-", i), status: status})
		}
	}
	shutdown(t, tel)
	got := map[int]int{}
	for _, line := range log.lines(t) {
		got[int(line["status"].(float64))]++
	}
	checkEqual(t, "lines by status", map[int]int{500: 20, 502: 20, 503: 20, 504: 20}, got)
}

// ---------------------------------------------------------------------------------------------
// The queue.

// blockingWriter holds the recorder inside its first access-log write until released.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() {
		close(w.entered)
		<-w.release
	})
	return len(p), nil
}

// TestQueueOverload: with the recorder stuck and queue_size 1, End drops and counts instead of
// waiting, and the dropped count reaches /metrics.
func TestQueueOverload(t *testing.T) {
	t.Run("recorder stuck: exactly the overflow is dropped", func(t *testing.T) {
		w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
		tel, mem := newTel(t, func(c *config.Config) {
			c.Telemetry.QueueSize = 1
			c.Telemetry.AccessLog = true
		}, Options{AccessLog: slog.New(slog.NewJSONHandler(w, nil))})
		const n = 1000
		do(tel, req{method: "GET", target: "/x", id: "first", status: 200})
		select {
		case <-w.entered: // the recorder holds the first record
		case <-time.After(10 * time.Second):
			t.Fatal("the recorder never took the first record")
		}
		for i := 1; i < n; i++ { // one fits the queue, the rest are dropped
			do(tel, req{method: "GET", target: "/x", id: fmt.Sprint(i), status: 200})
		}
		if got := tel.Dropped(); got != n-2 {
			t.Errorf("Dropped() = %d, want %d", got, n-2)
		}
		close(w.release)
		shutdown(t, tel)
		if got := len(mem.GetSpans()); got != 2 {
			t.Errorf("%d spans exported, want the 2 that were queued", got)
		}
		checkDroppedMetric(t, tel, n)
	})
	t.Run("burst of requests", func(t *testing.T) {
		tel, _ := newTel(t, func(c *config.Config) { c.Telemetry.QueueSize = 1 }, Options{})
		const n = 20000
		for i := range n {
			do(tel, req{method: "GET", target: "/x", id: fmt.Sprint(i), status: 200})
		}
		shutdown(t, tel)
		if tel.Dropped() == 0 {
			t.Errorf("Dropped() = 0 after %d requests through a queue of 1", n)
		}
		checkDroppedMetric(t, tel, n)
	})
}

// checkDroppedMetric checks, once the recorder has stopped, that /metrics reports Dropped() and
// that every one of n requests was either recorded or dropped.
func checkDroppedMetric(tb testing.TB, tel *Telemetry, n int) {
	tb.Helper()
	mfs := scrape(tb, tel)
	c := findSeries(tb, mfs, "scoregate_telemetry_dropped_spans_total", nil)
	if c == nil || mfs["scoregate_telemetry_dropped_spans_total"].GetType() != dto.MetricType_COUNTER {
		tb.Fatalf("no scoregate_telemetry_dropped_spans_total counter in %v", slices.Sorted(maps.Keys(mfs)))
	}
	if got := c.GetCounter().GetValue(); got != float64(tel.Dropped()) {
		tb.Errorf("scoregate_telemetry_dropped_spans_total %g, Dropped() %d", got, tel.Dropped())
	}
	h := findSeries(tb, mfs, "http_server_request_duration_seconds",
		map[string]string{"http_request_method": "GET", "http_response_status_class": "2xx", "service": ""})
	if recorded := h.GetHistogram().GetSampleCount(); recorded+uint64(tel.Dropped()) != uint64(n) {
		tb.Errorf("%d recorded + %d dropped, want %d requests", recorded, tel.Dropped(), n)
	}
}

// ---------------------------------------------------------------------------------------------
// Metrics.

// scrape fetches /metrics over HTTP and parses the text exposition.
func scrape(tb testing.TB, tel *Telemetry) map[string]*dto.MetricFamily {
	tb.Helper()
	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()
	resp, err := client.Get(srv.URL + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		tb.Fatalf("/metrics Content-Type %q, want the text exposition", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatalf("parsing /metrics: %v", err)
	}
	return mfs
}

// findSeries returns the series of family name whose labels are exactly labels.
func findSeries(tb testing.TB, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	tb.Helper()
	for _, m := range mfs[name].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if maps.Equal(got, labels) {
			return m
		}
	}
	return nil
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

// recordEveryKind records requests that make every metric appear.
func recordEveryKind(tel *Telemetry) {
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test", service: "iris", auth: "key",
		upstream: "127.0.0.1:9000", status: 200})
	do(tel, req{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test", service: "iris", auth: "key",
		reason: "missing_credential", status: 401})
	do(tel, req{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat", auth: "key",
		upstream: "127.0.0.1:9001", deployment: "blue", stream: true, caller: "key:AbCdEf012345", status: 200,
		genAI: GenAI{Operation: "chat", RequestModel: "m", ResponseModel: "m", InputTokens: 10, OutputTokens: 20, Usage: "reported",
			TimeToFirstToken: 20 * time.Millisecond}})
}

func TestMetrics(t *testing.T) {
	tel, _ := newTel(t, nil, Options{StateAge: func() time.Duration { return 1500 * time.Millisecond }})

	// Two requests in flight.
	open := []*Record{tel.Begin(), tel.Begin()}
	if g := findSeries(t, scrape(t, tel), "http_server_active_requests", nil); g.GetGauge().GetValue() != 2 {
		t.Errorf("http_server_active_requests %v, want 2 with two requests in flight", g)
	}
	for _, r := range open {
		r.SetRequest([]byte("GET"), []byte("/api/v1/service/iris/x"), nil, nil, nil, nil, nil)
		r.Service = "iris"
		r.End(200)
	}

	do(tel, req{method: "POST", service: "iris", upstream: "127.0.0.1:9000", status: 200})
	do(tel, req{method: "POST", service: "iris", upstream: "127.0.0.1:9000", status: 201})
	do(tel, req{method: "POST", service: "iris", upstream: "127.0.0.1:9000", status: 503, reason: "upstream_busy"})
	do(tel, req{method: "BREW", service: "iris", status: 400, reason: "bad_request"})
	do(tel, req{method: "brew", service: "iris", status: 400, reason: "bad_request"})
	do(tel, req{method: "get", status: 404, reason: "not_found"})
	for range 3 {
		do(tel, req{method: "POST", service: "iris", status: 401, reason: "missing_credential"})
	}
	do(tel, req{method: "POST", service: "iris", status: 401, reason: "invalid_credential"})
	do(tel, req{method: "POST", service: "tok", status: 403, reason: "forbidden"})
	do(tel, req{method: "POST", service: "iris", status: 400, reason: "multiple_credentials"})
	do(tel, req{method: "POST", service: "iris", status: 503, reason: "undecidable"})
	do(tel, req{method: "POST", service: "iris", status: 999})
	shutdown(t, tel) // everything is recorded
	mfs := scrape(t, tel)

	dur := mfs["http_server_request_duration_seconds"]
	if dur.GetType() != dto.MetricType_HISTOGRAM {
		t.Fatalf("http_server_request_duration_seconds is %v, want a histogram", dur.GetType())
	}
	counts := map[[3]string]uint64{}
	for _, m := range dur.GetMetric() {
		checkEqual(t, "request duration labels", []string{"http_request_method", "http_response_status_class", "service"}, labelNames(m))
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		counts[[3]string{l["http_request_method"], l["http_response_status_class"], l["service"]}] = m.GetHistogram().GetSampleCount()
	}
	checkEqual(t, "requests by method, class and service", map[[3]string]uint64{
		{"GET", "2xx", "iris"}:    2,
		{"POST", "2xx", "iris"}:   2,
		{"POST", "5xx", "iris"}:   2,
		{"_OTHER", "4xx", "iris"}: 2,
		{"_OTHER", "4xx", ""}:     1,
		{"POST", "4xx", "iris"}:   5,
		{"POST", "4xx", "tok"}:    1,
		{"POST", "other", "iris"}: 1,
	}, counts)

	up := findSeries(t, mfs, "scoregate_upstream_duration_seconds", map[string]string{"service": "iris"})
	if up.GetHistogram().GetSampleCount() != 3 {
		t.Errorf("scoregate_upstream_duration_seconds %v, want 3 forwarded requests", up)
	}

	rej := mfs["scoregate_auth_rejections_total"]
	if rej.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("scoregate_auth_rejections_total is %v, want a counter", rej.GetType())
	}
	byReason := map[[2]string]float64{}
	for _, m := range rej.GetMetric() {
		checkEqual(t, "rejection labels", []string{"reason", "service"}, labelNames(m))
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		byReason[[2]string{l["reason"], l["service"]}] = m.GetCounter().GetValue()
	}
	checkEqual(t, "rejections by reason and service", map[[2]string]float64{
		{"missing_credential", "iris"}:   3,
		{"invalid_credential", "iris"}:   1,
		{"forbidden", "tok"}:             1,
		{"multiple_credentials", "iris"}: 1,
		{"undecidable", "iris"}:          1,
	}, byReason)

	if g := findSeries(t, mfs, "http_server_active_requests", nil); g == nil || g.GetGauge().GetValue() != 0 {
		t.Errorf("http_server_active_requests %v, want 0 once every request ended", g)
	}
	if g := findSeries(t, mfs, "scoregate_shared_state_age_seconds", nil); g == nil || g.GetGauge().GetValue() != 1.5 {
		t.Errorf("scoregate_shared_state_age_seconds %v, want 1.5 from Options.StateAge", g)
	}
}

// Durations land in the buckets Prometheus expects: a bucket's upper bound is inclusive, and
// what is past the last bound is counted only in +Inf. Sum and count follow.
func TestMetricsBuckets(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	shutdown(t, tel)
	for _, d := range []time.Duration{500 * time.Microsecond, 600 * time.Microsecond, 3 * time.Millisecond, 61 * time.Second} {
		tel.metrics.record(&Record{t: tel, method: []byte("POST"), Service: "iris", status: 200, duration: d})
	}
	h := findSeries(t, scrape(t, tel), "http_server_request_duration_seconds",
		map[string]string{"http_request_method": "POST", "http_response_status_class": "2xx", "service": "iris"}).GetHistogram()
	got := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		got[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	want := map[float64]uint64{0.0005: 1, 0.001: 2, 0.0025: 2, 0.005: 3, 0.01: 3, 0.025: 3, 0.05: 3, 0.1: 3,
		0.25: 3, 0.5: 3, 1: 3, 2.5: 3, 5: 3, 10: 3, 30: 3, 60: 3, math.Inf(1): 4}
	checkEqual(t, "cumulative bucket counts", want, got)
	if h.GetSampleCount() != 4 || math.Abs(h.GetSampleSum()-61.0041) > 1e-9 {
		t.Errorf("count %d sum %g, want 4 and 61.0041", h.GetSampleCount(), h.GetSampleSum())
	}
}

// A scrape while the recorder records sees a consistent count, and every request in the end.
func TestMetricsScrapedWhileRecording(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	const n = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			do(tel, req{method: "POST", service: "iris", upstream: "127.0.0.1:9000", status: 200})
		}
	}()
	var last uint64
	for scraping := true; scraping; {
		select {
		case <-done:
			scraping = false
		default:
		}
		s := findSeries(t, scrape(t, tel), "http_server_request_duration_seconds",
			map[string]string{"http_request_method": "POST", "http_response_status_class": "2xx", "service": "iris"})
		if s == nil {
			continue
		}
		h := s.GetHistogram()
		if c := h.GetSampleCount(); c < last || h.GetBucket()[len(h.GetBucket())-1].GetCumulativeCount() > c {
			t.Fatalf("count went from %d to %d, or a bucket exceeds it: %v", last, c, h)
		} else {
			last = c
		}
	}
	shutdown(t, tel)
	if c := findSeries(t, scrape(t, tel), "scoregate_upstream_duration_seconds", map[string]string{"service": "iris"}).GetHistogram().GetSampleCount(); c != n {
		t.Errorf("upstream duration count %d, want %d", c, n)
	}
}

// Without Options.StateAge (the embedded store) the shared-state age is 0.
func TestMetricsStateAgeDefault(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	if g := findSeries(t, scrape(t, tel), "scoregate_shared_state_age_seconds", nil); g == nil || g.GetGauge().GetValue() != 0 {
		t.Errorf("scoregate_shared_state_age_seconds %v, want 0", g)
	}
}

// No label value is one the client chose: a made-up method or a credential in the query never
// reaches /metrics.
func TestMetricsCardinality(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	do(tel, req{method: "X-" + strings.Repeat("A", 100), target: "/api/v1/service/iris/x?key=sgk_secret", userAgent: "evil-agent",
		host: "evil.host", client: "198.51.100.66", id: "evil-id", service: "iris", status: 200})
	shutdown(t, tel)
	var body bytes.Buffer
	for _, mf := range scrape(t, tel) {
		expfmt.MetricFamilyToText(&body, mf)
	}
	for _, s := range []string{"AAAA", "sgk_secret", "evil", "198.51.100.66"} {
		if strings.Contains(body.String(), s) {
			t.Errorf("/metrics contains %q", s)
		}
	}
}

// TestMetricsGolden keeps the names, types and label names of /metrics in
// testdata/metrics.golden (go test -run MetricsGolden -update rewrites it).
func TestMetricsGolden(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	recordEveryKind(tel)
	shutdown(t, tel)
	var lines []string
	for name, mf := range scrape(t, tel) {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, l := range labelNames(m) {
				labels[l] = true
			}
		}
		line := name + " " + strings.ToLower(mf.GetType().String())
		if len(labels) > 0 {
			line += " " + strings.Join(slices.Sorted(maps.Keys(labels)), ",")
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	got := strings.Join(lines, "\n") + "\n"
	const golden = "testdata/metrics.golden"
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run MetricsGolden -update to create it)", err)
	}
	checkEqual(t, golden+" (go test -run MetricsGolden -update rewrites it)", string(want), got)
}

func TestRedactionDecodesNames(t *testing.T) {
	tel := &Telemetry{redact: map[string]bool{"key": true}}
	for q, want := range map[string]string{
		"ke%79=secret&x=1":         "ke%79=REDACTED&x=1",
		"KEY=secret":               "KEY=REDACTED",
		"v=sgk%5Fabc":              "v=REDACTED",
		"v=%65yJhbGciOiJFZERTQSJ9": "v=REDACTED",
		"x=1&y=2":                  "x=1&y=2",
		"sgk_abc=1&x=1":            "REDACTED&x=1",
	} {
		if got := tel.redactQuery(q); got != want {
			t.Errorf("redactQuery(%q) = %q, want %q", q, got, want)
		}
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080": "127.0.0.1", "example.com": "example.com", "[2001:db8::1]:443": "2001:db8::1", "[::1]": "::1",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

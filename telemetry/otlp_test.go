package telemetry

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
	"github.com/scoregate/scoregate/config"
)

// captureClient is an otlptrace.Client that keeps a copy of what it is asked to upload (the
// recorder refills its messages once UploadTraces has returned) and fails with err when set.
type captureClient struct {
	err error

	mu      sync.Mutex
	uploads []*tracepb.ResourceSpans
	started bool
	stopped bool
	late    int // uploads after Stop
}

func (c *captureClient) Start(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.started = true
	return nil
}

func (c *captureClient) Stop(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	return nil
}

func (c *captureClient) UploadTraces(_ context.Context, rss []*tracepb.ResourceSpans) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		c.late++
	}
	for _, rs := range rss {
		c.uploads = append(c.uploads, proto.CloneOf(rs))
	}
	return c.err
}

// spans returns every span uploaded, by RequestId, and the ResourceSpans that carried them with
// their spans taken out.
func (c *captureClient) spans(tb testing.TB) (map[string]*tracepb.Span, []*tracepb.ResourceSpans) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	byID := map[string]*tracepb.Span{}
	var envelopes []*tracepb.ResourceSpans
	for _, rs := range c.uploads {
		rs = proto.CloneOf(rs)
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				id := ""
				for _, kv := range s.Attributes {
					if kv.Key == "RequestId" {
						id = kv.Value.GetStringValue()
					}
				}
				if _, dup := byID[id]; dup {
					tb.Fatalf("two spans with RequestId %q", id)
				}
				byID[id] = s
			}
			ss.Spans = nil
		}
		envelopes = append(envelopes, rs)
	}
	return byID, envelopes
}

// otlpCases are requests whose spans exercise every branch of span and fillOTLP.
var otlpCases = []req{
	{method: "POST", target: "/api/v1/service/iris/score?version=2", userAgent: testUA, host: "gw.test:8080",
		client: testClient, service: "iris", auth: config.AuthKey, upstream: "127.0.0.1:9000", status: 200},
	{method: "POST", target: "/api/v1/service/iris/score?k=v&key=sgk_x", userAgent: testUA, host: "gw.test:8443", tls: true,
		client: testClient, service: "iris", auth: config.AuthKey, upstream: "127.0.0.1:9000", deployment: "blue",
		queueWait: 1500 * time.Microsecond, status: 200},
	{method: "POST", target: "/api/v1/service/iris/score", userAgent: testUA, host: "gw.test", client: testClient,
		service: "iris", auth: config.AuthKey, reason: "missing_credential", status: 401},
	{method: "GET", target: "/api/v1/service/nope/score?a=b", userAgent: "curl/8.5.0", host: "gw.test",
		client: "192.0.2.1", reason: "not_found", status: 404},
	{method: "PUT", target: "/api/v1/service/iris/score?x=1&y=2", userAgent: testUA, host: "10.0.0.1:8443",
		client: "2001:db8::7", service: "iris", auth: config.AuthNone, reason: "upstream_error", upstream: "10.0.0.9:5001", status: 502},
	{method: "DELETE", target: "/api/v1/service/iris/x", host: "[2001:db8::1]:443", status: 504, reason: "upstream_timeout",
		upstream: "[2001:db8::9]:5001", service: "iris"},
	{method: "PATCH", target: "/x", host: "[::1]", status: 204},
	{method: "HEAD", target: "/x", host: "::1", status: 200},
	{method: "OPTIONS", target: "/x", host: "gw.test:notaport", status: 200},
	{method: "GET", target: "/x", host: "gw.test:0", status: 999},
	{method: "GET", target: "", host: "", status: 100},
	{method: "BREW", target: "/api/v1/service/iris/score", host: "gw.test", status: 404},
	{method: "get", target: "/api/v1/service/iris/score", host: "gw.test", status: 404},
	{method: "X-" + strings.Repeat("A", 40), target: "/x", host: "gw.test", status: 400, reason: "bad_request"},
	{method: "GET", target: "/x?key=secret&x=1&token&api-key=&v=sgk_abc&w=%65yJhbGciOiJFZERTQSJ9&ke%79=s&KEY=s&keep=me",
		host: "gw.test", status: 200},
	{method: "GET", target: "/x?a&&b&", host: "gw.test", status: 200},
	{method: "POST", target: "http://u:pw@gw.test:8080/api/v1/service/iris/score?token=t&x=1", host: "gw.test:8080", status: 400}, // LOG-03
	{method: "POST", target: "https://u:pw@gw.test", host: "u:pw@gw.test", status: 400},                                           // LOG-03
	{method: "GET", target: "/x?" + strings.Repeat("p=1&", 50) + "code=2", host: "gw.test", status: 200},
	{method: "POST", target: "/x", host: "gw.test", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
		tracestate: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", status: 200},
	{method: "POST", target: "/x", host: "gw.test", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
		tracestate: " a=1 ,, b=2 ,", status: 200},
	{method: "POST", target: "/x", host: "gw.test", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
		tracestate: "Invalid=1", status: 200},
	{method: "POST", target: "/x", host: "gw.test", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01",
		tracestate: "a=1,a=2", status: 500, reason: "internal"},
	{method: "POST", target: "/x", host: "gw.test", traceparent: "00-" + parentTrace + "-" + parentSpan + "-01", status: 200},
	// Language-model calls and callers (issue 22).
	{method: "POST", target: "/api/v1/service/iris/score", host: "gw.test", service: "iris", auth: config.AuthKey,
		caller: "key:AbCdEf012345", status: 200, upstream: "127.0.0.1:9000"},
	{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat", auth: config.AuthKey,
		caller: "key:AbCdEf012345", upstream: "127.0.0.1:9001", deployment: "blue", stream: true, status: 200,
		genAI: GenAI{Operation: "chat", RequestModel: "gpt-4o-mini", ResponseModel: "gpt-4o-mini-2024-07-18",
			InputTokens: 12, OutputTokens: 300, Usage: "reported", TimeToFirstToken: 42 * time.Millisecond}},
	{method: "POST", target: "/api/v1/service/chat/v1/embeddings", host: "gw.test", service: "chat", auth: config.AuthToken,
		caller: "principal:scoring-team", upstream: "127.0.0.1:9001", status: 200,
		genAI: GenAI{Operation: "embeddings", RequestModel: "text-embedding-3-small", InputTokens: 1 << 20, Usage: "reported"}},
	{method: "POST", target: "/api/v1/service/chat/v1/completions", host: "gw.test", service: "chat", caller: "key:AbCdEf012345",
		upstream: "127.0.0.1:9001", status: 200, genAI: GenAI{Operation: "text_completion", RequestModel: "m", ResponseModel: "m", Usage: "missing"}},
	{method: "POST", target: "/api/v1/service/chat/v1/responses", host: "gw.test", service: "chat", upstream: "127.0.0.1:9001",
		status: 502, reason: "upstream_reset", stream: true,
		genAI: GenAI{Operation: "responses", RequestModel: "m", Usage: "cut", TimeToFirstToken: time.Nanosecond}},
	{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat", caller: "key:AbCdEf012345",
		status: 429, reason: "rate_limited", genAI: GenAI{Operation: "chat", RequestModel: "m"}}, // refused before the model
	{method: "POST", target: "/api/v1/service/chat/v1/chat/completions", host: "gw.test", service: "chat", upstream: "127.0.0.1:9001",
		status: 200, genAI: GenAI{Operation: "chat", RequestModel: "model-" + canaryServiceKey, ResponseModel: "m\xff\xfe" + strings.Repeat("é", 200),
			Usage: "unparsable"}},
}

// variedCase is the i-th of a long run of requests: otlpCases in turn, each time changed in
// another way (TLS, a deployment, long or non-ASCII values, an error), so that a run of a few
// batches covers every combination and varint lengths of one, two and three bytes.
func variedCase(i int) req {
	q := otlpCases[i%len(otlpCases)]
	q.id = fmt.Sprint("r", i)
	switch i / len(otlpCases) % 8 {
	case 1:
		q.tls = !q.tls
	case 2:
		q.deployment, q.queueWait, q.upstream = "green", time.Duration(i)*time.Microsecond, "10.1.2.3:5001"
		q.stream = i%2 == 0
	case 3:
		q.userAgent = "naïve-client/1.0 ✓ " + strings.Repeat("x", 150) // lengths past 127
		q.id = fmt.Sprint("r", i, "-", strings.Repeat("é", 70))
		if q.genAI.Operation != "" {
			q.genAI.RequestModel = strings.Repeat("模", 100) // cut at 256 bytes, within a rune
			q.caller = "principal:" + strings.Repeat("ü", 150)
		}
	case 4:
		q.status, q.reason = 503, "shed"
	case 5:
		q.target += "&q=" + strings.Repeat("long", 5000) // a span longer than 16 KiB
	case 6:
		q.host = ""
		q.client, q.userAgent = "", ""
	case 7:
		q.service, q.auth, q.reason = "a-much-longer-service-name", config.AuthToken, "upstream_timeout"
		q.status = 504
	}
	if q.caller == "" && i%3 == 1 {
		q.caller = fmt.Sprint("key:k", i)
	}
	return q
}

// TestOTLPMatchesSDK: the spans the library's OTLP client (grpc) gets, built without the SDK, are
// exactly what the OTLP exporter makes of span's SDK spans, for every case, with and without
// high_business_impact, and for a resource with attributes from the environment. Three batches'
// worth go through, so that the messages and the Records' buffers are reused with different
// contents.
func TestOTLPMatchesSDK(t *testing.T) {
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=scoring")
	for _, tc := range []struct{ hbi, public bool }{{false, false}, {true, false}, {false, true}} {
		hbi := tc.hbi
		t.Run(fmt.Sprint("high_business_impact=", hbi, ",public_endpoint=", tc.public), func(t *testing.T) {
			ref, got := &captureClient{}, &captureClient{}
			tel, _ := newTel(t, func(c *config.Config) {
				c.ComputeType = "edge"
				c.Telemetry.HighBusinessImpact = hbi
				c.Telemetry.PublicEndpoint = tc.public
			}, Options{Exporters: []sdktrace.SpanExporter{otlptrace.NewUnstarted(ref)}, Client: got})
			n := 2*batchSize + len(otlpCases)
			for i := range n {
				do(tel, variedCase(i))
			}
			shutdown(t, tel)
			want, wantEnv := ref.spans(t)
			spans, env := got.spans(t)
			if len(want) != n || len(spans) != n {
				t.Fatalf("%d spans through the SDK and %d through the OTLP batch, want %d each", len(want), len(spans), n)
			}
			if len(env) < 3 {
				t.Errorf("%d uploads, want at least 3 batches", len(env))
			}
			checkEqual(t, "resource and scope of every upload", wantEnv, env, protocmp.Transform())
			for i := range n {
				id := variedCase(i).id
				if diff := cmp.Diff(want[id], spans[id], protocmp.Transform()); diff != "" {
					t.Fatalf("request %d (%+v): span mismatch (-SDK +OTLP batch):\n%s", i, variedCase(i), diff)
				}
			}
		})
	}
}

// bodyRecorder is an OTLP/HTTP collector that keeps every request body it is sent, decompressed,
// and answers with status (200 when 0).
type bodyRecorder struct {
	status int

	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
}

func (c *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.bodies = append(c.bodies, b)
	c.headers = append(c.headers, r.Header.Clone())
	c.mu.Unlock()
	if c.status != 0 {
		w.WriteHeader(c.status)
	}
}

func (c *bodyRecorder) received() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.bodies)
}

// TestOTLPWireMatchesSDK: every request body the OTLP/HTTP exporter sends is, byte for byte, what
// the library's otlptracehttp client would send for the same batch: proto.Marshal of the
// ExportTraceServiceRequest the OTLP exporter makes of span's SDK spans. Over three batches of
// varied requests (every otlpCases branch, TLS, deployments, tracestates, parents, unknown
// methods, redacted queries, errors, lengths whose varints take one to three bytes), with and
// without high_business_impact, with a resource from the environment, and compressed or not.
// A mismatch is shown span by span, as the messages differ.
func TestOTLPWireMatchesSDK(t *testing.T) {
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=scoring")
	for _, tc := range []struct {
		name        string
		hbi         bool
		compression string
		public      bool // links instead of parents
	}{
		{"plain", false, "", false},
		{"high_business_impact", true, "", false},
		{"gzip", false, "gzip", false},
		{"public_endpoint", false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := &bodyRecorder{}
			srv := httptest.NewServer(col)
			t.Cleanup(srv.Close)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
			t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", tc.compression)
			ref := &captureClient{}
			tel, _ := newTel(t, func(c *config.Config) {
				c.ComputeType = "edge"
				c.Telemetry.HighBusinessImpact = tc.hbi
				c.Telemetry.PublicEndpoint = tc.public
			}, Options{Exporters: []sdktrace.SpanExporter{otlptrace.NewUnstarted(ref)}})
			if tel.otlpHTTP == nil {
				t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT did not choose the OTLP/HTTP exporter")
			}
			n := 2*batchSize + 8*len(otlpCases)
			for i := range n {
				do(tel, variedCase(i))
			}
			shutdown(t, tel)
			if tel.Dropped() != 0 {
				t.Fatalf("%d spans dropped", tel.Dropped())
			}
			bodies := col.received()
			ref.mu.Lock()
			uploads := slices.Clone(ref.uploads)
			ref.mu.Unlock()
			if len(bodies) != len(uploads) || len(bodies) < 3 {
				t.Fatalf("%d requests from the exporter, %d uploads through the SDK; want the same, at least 3", len(bodies), len(uploads))
			}
			spans := 0
			for i, body := range bodies {
				want, err := proto.Marshal(&collectortrace.ExportTraceServiceRequest{ResourceSpans: uploads[i : i+1]})
				if err != nil {
					t.Fatal(err)
				}
				var got collectortrace.ExportTraceServiceRequest
				if err := proto.Unmarshal(body, &got); err != nil {
					t.Fatalf("request %d: not an ExportTraceServiceRequest: %v", i, err)
				}
				if !bytes.Equal(body, want) {
					t.Errorf("request %d: %d bytes, the library's %d differ", i, len(body), len(want))
					showWireDiff(t, uploads[i], &got)
				}
				for _, ss := range got.ResourceSpans[0].ScopeSpans {
					spans += len(ss.Spans)
				}
			}
			if spans != n {
				t.Errorf("%d spans sent, want %d", spans, n)
			}
		})
	}
}

// showWireDiff reports the first span, or the envelope, in which got differs from want.
func showWireDiff(t *testing.T, want *tracepb.ResourceSpans, got *collectortrace.ExportTraceServiceRequest) {
	t.Helper()
	if len(got.ResourceSpans) != 1 || len(got.ResourceSpans[0].ScopeSpans) != 1 {
		t.Errorf("got %d ResourceSpans, want one with one ScopeSpans", len(got.ResourceSpans))
		return
	}
	gotRS, wantRS := got.ResourceSpans[0], proto.CloneOf(want)
	gotSpans, wantSpans := gotRS.ScopeSpans[0].Spans, wantRS.ScopeSpans[0].Spans
	for i := range min(len(gotSpans), len(wantSpans)) {
		if diff := cmp.Diff(wantSpans[i], gotSpans[i], protocmp.Transform()); diff != "" {
			t.Errorf("span %d (-library +exporter):\n%s", i, diff)
			return
		}
	}
	gotRS = proto.CloneOf(gotRS)
	gotRS.ScopeSpans[0].Spans, wantRS.ScopeSpans[0].Spans = nil, nil
	if diff := cmp.Diff(wantRS, gotRS, protocmp.Transform()); diff != "" || len(gotSpans) != len(wantSpans) {
		t.Errorf("%d spans, want %d; envelope (-library +exporter):\n%s", len(gotSpans), len(wantSpans), diff)
		return
	}
	t.Errorf("the messages are equal but not their encoding")
}

// An upload that fails counts its spans as dropped, in Dropped and in /metrics.
func TestOTLPUploadFailureCounted(t *testing.T) {
	client := &captureClient{err: errors.New("collector down")}
	tel, _ := newTel(t, nil, Options{Exporters: []sdktrace.SpanExporter{}, Client: client})
	const n = 3
	for i := range n {
		do(tel, req{method: "GET", target: "/x", id: fmt.Sprint(i), status: 200})
	}
	shutdown(t, tel)
	if got := tel.Dropped(); got != n {
		t.Errorf("Dropped() = %d after a failed upload of %d spans", got, n)
	}
	c := findSeries(t, scrape(t, tel), "scoregate_telemetry_dropped_spans_total", nil)
	if got := c.GetCounter().GetValue(); got != n {
		t.Errorf("scoregate_telemetry_dropped_spans_total %g, want %d", got, n)
	}
}

// New starts the client; Shutdown uploads what is left, then stops it.
func TestOTLPClientLifecycle(t *testing.T) {
	client := &captureClient{}
	tel, _ := newTel(t, nil, Options{Client: client})
	client.mu.Lock()
	started := client.started
	client.mu.Unlock()
	if !started {
		t.Error("New did not start the client")
	}
	do(tel, req{method: "GET", target: "/x", id: "last", status: 200})
	shutdown(t, tel)
	spans, _ := client.spans(t)
	client.mu.Lock()
	defer client.mu.Unlock()
	if spans["last"] == nil || !client.stopped || client.late != 0 {
		t.Errorf("span uploaded: %v, client stopped: %v, uploads after Stop: %d; want the span, then Stop",
			spans["last"] != nil, client.stopped, client.late)
	}
}

// otlpCollector is a real OTLP endpoint, over HTTP or gRPC, that keeps the spans it receives.
type otlpCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *otlpCollector) Export(_ context.Context, r *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range r.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var msg collectortrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &msg) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	c.Export(r.Context(), &msg)
}

func (c *otlpCollector) requestIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, s := range c.spans {
		for _, kv := range s.Attributes {
			if kv.Key == "RequestId" {
				ids = append(ids, kv.Value.GetStringValue())
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// telemetryToCollector starts a real OTLP collector speaking protocol ("grpc" or
// "http/protobuf"), points the OTLP environment at it, and sets up telemetry that exports to it
// and to traces_file (file).
func telemetryToCollector(t *testing.T, protocol string) (col *otlpCollector, tel *Telemetry, file string) {
	t.Helper()
	col = &otlpCollector{}
	var endpoint string
	if protocol == "grpc" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		collectortrace.RegisterTraceServiceServer(srv, col)
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		endpoint = "http://" + ln.Addr().String()
	} else {
		srv := httptest.NewServer(col)
		t.Cleanup(srv.Close)
		endpoint = srv.URL
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
	file = filepath.Join(t.TempDir(), "spans.jsonl")
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	cfg.Telemetry.TracesFile = file
	tel, err := New(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return col, tel, file
}

// TestOTLPFromEnv: with an OTLP endpoint in the environment, spans reach a real collector through
// the library's client, over either protocol; with telemetry.traces_file as well, the file gets
// them too.
func TestOTLPFromEnv(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			col, tel, file := telemetryToCollector(t, protocol)
			for _, id := range []string{"a", "b"} {
				do(tel, req{method: "POST", target: "/api/v1/service/iris/score?key=sgk_secret", host: "gw.test", id: id, status: 200})
			}
			shutdown(t, tel)
			checkEqual(t, "spans at the collector", []string{"a", "b"}, col.requestIDs())
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var inFile []string
			for sc := bufio.NewScanner(f); sc.Scan(); {
				var s struct{ Attributes []struct{ Key string } }
				if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
					t.Fatalf("traces_file line %q: %v", sc.Text(), err)
				}
				inFile = append(inFile, sc.Text())
			}
			if len(inFile) != 2 {
				t.Errorf("%d spans in traces_file, want 2", len(inFile))
			}
			for _, s := range col.spans {
				for _, kv := range s.Attributes {
					if strings.Contains(kv.Value.GetStringValue(), "sgk_") {
						t.Errorf("the credential in the query reached the collector: %s=%s", kv.Key, kv.Value.GetStringValue())
					}
				}
			}
		})
	}
}

// redactQueryReference is redactQuery as it was first written, with strings.Split and Join: the
// specification FuzzRedactQuery holds the allocation-free one to.
func redactQueryReference(t *Telemetry, q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		plainName, plain := name, p
		if u, err := url.QueryUnescape(name); err == nil {
			plainName = u
		}
		if u, err := url.QueryUnescape(p); err == nil {
			plain = u
		}
		if t.redact[strings.ToLower(plainName)] || looksLikeCredential(p) || looksLikeCredential(plain) {
			if hasValue {
				parts[i] = name + "=REDACTED"
			} else {
				parts[i] = "REDACTED"
			}
		}
	}
	return strings.Join(parts, "&")
}

// FuzzRedactQuery: redactQuery says what the reference says for any query, and appending
// (what the OTLP batch does) keeps what dst held.
func FuzzRedactQuery(f *testing.F) {
	tel := &Telemetry{redact: map[string]bool{}}
	for _, p := range config.DefaultRedactQueryParams {
		tel.redact[p] = true
	}
	tel.redact["ünïcode"] = true
	for _, q := range []string{
		"", "&", "=", "a&&b&", "x=1&y=2", "key=s", "KEY=s&x=1", "ke%79=secret&x=1", "v=sgk%5Fabc", "v=%65yJhbGciOiJFZERTQSJ9",
		"token", "x=1&token", "api-key=&x", "%zz=1&key=2", "ÜNÏCODE=1", "K" + strings.Repeat("E", 70) + "Y=1",
		"a=1+sgk_&b", "x=1&y=2&code", "CODE=1&Code=2&code=3",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		want := redactQueryReference(tel, q)
		if got := tel.redactQuery(q); got != want {
			t.Fatalf("redactQuery(%q) = %q, want %q", q, got, want)
		}
		dst, ok := tel.appendRedactedQuery([]byte("held|"), q)
		if got := string(dst); ok && got != "held|"+want || !ok && (got != "held|" || q != want) {
			t.Fatalf("appendRedactedQuery(%q) = %q, %v; want %q", q, got, ok, want)
		}
	})
}

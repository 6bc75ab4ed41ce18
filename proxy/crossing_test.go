package proxy_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

// Issue 17, findings 8 and 9: what of a client's request must not cross the gateway to the model,
// on the HTTP/1.1 listener (a recording model that keeps every byte) and the HTTP/2 one (a
// recording HTTP/2 model that keeps every header and trailer field).

const (
	clientTrace   = "0af7651916cd43dd8448eb211c80319c"
	clientSpan    = "b7ad6b7169203331"
	clientParent  = "00-" + clientTrace + "-" + clientSpan + "-01"
	clientParent2 = "00-" + "1af7651916cd43dd8448eb211c80319c" + "-" + clientSpan + "-01"
)

// testTelemetry is a telemetry for a gateway whose configuration sets public, recording spans.
func testTelemetry(tb testing.TB, public bool) (proxy.Option, *tracetest.InMemoryExporter) {
	tb.Helper()
	cfg := &config.Config{Telemetry: config.Telemetry{PublicEndpoint: public}}
	cfg.ApplyDefaults()
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(context.Background(), cfg, telemetry.Options{Exporters: []sdktrace.SpanExporter{spans}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tel.Shutdown(ctx)
	})
	return proxy.WithTelemetry(tel), spans
}

// chunked renders body as chunks of at most size bytes, the last chunk, then the trailer lines.
func chunked(body string, size int, trailer ...string) string {
	var b strings.Builder
	for len(body) > 0 {
		n := min(size, len(body))
		b.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n" + body[:n] + "\r\n")
		body = body[n:]
	}
	b.WriteString("0\r\n")
	for _, l := range trailer {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// hostileTrailer is a trailer section carrying what the gateway removes or sets in the header
// section.
var hostileTrailer = []string{
	"X-Api-Key: sgk_trailerkey", "Forwarded: for=6.6.6.6", "X-Request-Id: from-the-trailer",
	"Traceparent: " + clientParent2, "X-HTTP-Method-Override: DELETE", "X_Under: 1", "X-Checksum: abc",
}

// TestHeaders8aRequestTrailers: a chunked request's trailer fields never reach the model, and a
// small chunked body (under the streaming threshold) reaches it with a Content-Length.
func TestHeaders8aRequestTrailers(t *testing.T) {
	e := newEnv(t, envOptions{})
	big := strings.Repeat("0123456789abcdef", (config.StreamedBodyThresholdBytes+4096)/16)
	tests := []struct {
		name, service, key, body string
		trailer                  []string
		streamed                 bool // over the threshold: it streams through, chunked
	}{
		{"small body, hostile trailers", "iris", e.primary, `{"a":1}`, hostileTrailer, false},
		{"small body, announced trailers", "iris", e.primary, `{"a":1}`, []string{"X-Checksum: abc"}, false},
		{"small body, obs-folded trailer", "iris", e.primary, `{"a":1}`, []string{"X-Fold: a", " b", "X-Api-Key: sgk_x"}, false},
		{"small body without trailers", "iris", e.primary, `{"a":1}`, nil, false},
		{"streamed body, hostile trailers", "other", e.otherKey, big, hostileTrailer, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			lines := []string{bearer(tc.key), "Transfer-Encoding: chunked", "Content-Type: application/json"}
			if tc.name == "small body, announced trailers" {
				lines = append(lines, "Trailer: X-Checksum")
			}
			r := e.do(t, request("POST", "/api/v1/service/"+tc.service+"/score", lines...)+chunked(tc.body, 1000, tc.trailer...))
			reqs := e.up.requests()
			if r.Status == 400 && len(reqs) == 0 && strings.Contains(tc.name, "obs-folded") {
				return // refused whole: nothing of it reached the model
			}
			if r.Status != 200 {
				t.Fatalf("status %d %s, want 200", r.Status, r.Body)
			}
			seen := e.up.requireOne(t)
			if len(seen.Trailer) != 0 {
				t.Errorf("the model received trailers %q", seen.Trailer)
			}
			if string(seen.Body) != tc.body {
				t.Errorf("the model received a body of %d bytes, want %d", len(seen.Body), len(tc.body))
			}
			for _, name := range []string{"Trailer", "X-Api-Key", "Forwarded", "X-Http-Method-Override", "X_under", "X-Checksum", "X-Fold"} {
				if seen.has(name) {
					t.Errorf("the model saw %s: %q", name, seen.values(name))
				}
			}
			checkEqual(t, "the model's X-Request-Id", []string{checkRequestIDs(t, r)}, seen.values("X-Request-Id"))
			if seen.has("Traceparent") {
				t.Errorf("the model saw Traceparent %q", seen.values("Traceparent"))
			}
			if tc.streamed {
				checkEqual(t, "the model's Transfer-Encoding", []string{"chunked"}, seen.values("Transfer-Encoding"))
				return
			}
			if seen.has("Transfer-Encoding") {
				t.Errorf("a small body reached the model chunked (%q), want it with a Content-Length", seen.values("Transfer-Encoding"))
			}
			checkEqual(t, "the model's Content-Length", []string{strconv.Itoa(len(tc.body))}, seen.values("Content-Length"))
		})
	}
}

// members splits a list header value on commas.
func members(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// TestHeaders8bTraceContext: the model gets at most one traceparent (the gateway's, with
// telemetry), a tracestate within 512 characters and 32 members, a baggage within 8192 bytes and
// 180 members (whole members, in order), and under telemetry.public_endpoint nothing of the
// client's trace context, the span linking to it instead.
func TestHeaders8bTraceContext(t *testing.T) {
	var longState []string // 4 KB in 64 members
	for i := range 64 {
		longState = append(longState, "v"+strconv.Itoa(i)+"="+strings.Repeat("x", 58))
	}
	var bigBaggage []string // 10 KB in 200 members
	for i := range 200 {
		bigBaggage = append(bigBaggage, "k"+strconv.Itoa(i)+"="+strings.Repeat("y", 45))
	}
	score := "/api/v1/service/iris/score"
	tests := []struct {
		name      string
		telemetry bool
		public    bool
		lines     []string
		// check looks at what the model saw; traceresponse is the gateway's trace, when telemetry.
		check func(t *testing.T, seen *seenRequest, traceresponse string)
	}{
		{"two traceparents, telemetry: the gateway's alone", true, false,
			[]string{"Traceparent: " + clientParent, "Traceparent: " + clientParent2},
			func(t *testing.T, seen *seenRequest, tr string) {
				checkEqual(t, "the model's traceparent", []string{tr}, seen.values("Traceparent"))
				if strings.Contains(tr, clientTrace) || strings.Contains(tr, "1af7651916cd43dd") {
					t.Errorf("two traceparents: the gateway took %q as the parent", tr)
				}
			}},
		{"one traceparent, telemetry: the same trace, the gateway's span", true, false,
			[]string{"Traceparent: " + clientParent, "Tracestate: congo=t61rcWkgMzE"},
			func(t *testing.T, seen *seenRequest, tr string) {
				checkEqual(t, "the model's traceparent", []string{tr}, seen.values("Traceparent"))
				if !strings.Contains(tr, clientTrace) {
					t.Errorf("traceparent %q is not in the client's trace", tr)
				}
				checkEqual(t, "the model's tracestate", []string{"congo=t61rcWkgMzE"}, seen.values("Tracestate"))
			}},
		{"two traceparents, no telemetry: neither", false, false,
			[]string{"Traceparent: " + clientParent, "Traceparent: " + clientParent2, "Tracestate: a=1"},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkEqual(t, "the model's traceparent", []string(nil), seen.values("Traceparent"))
				checkEqual(t, "the model's tracestate", []string(nil), seen.values("Tracestate"))
			}},
		{"one valid traceparent, no telemetry: kept", false, false,
			[]string{"Traceparent: " + clientParent, "Tracestate: a=1", "Tracestate: b=2"},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkEqual(t, "the model's traceparent", []string{clientParent}, seen.values("Traceparent"))
				checkEqual(t, "the model's tracestate", []string{"a=1,b=2"}, seen.values("Tracestate"))
			}},
		{"invalid traceparent, no telemetry: dropped with its tracestate", false, false,
			[]string{"Traceparent: 00-" + strings.ToUpper(clientTrace) + "-" + clientSpan + "-01", "Tracestate: a=1"},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkEqual(t, "the model's traceparent", []string(nil), seen.values("Traceparent"))
				checkEqual(t, "the model's tracestate", []string(nil), seen.values("Tracestate"))
			}},
		{"4 KB tracestate cut by whole members", true, false,
			[]string{"Traceparent: " + clientParent, "Tracestate: " + strings.Join(longState, ",")},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkBoundedList(t, "tracestate", seen.values("Tracestate"), longState, 512, 32)
			}},
		{"4 KB tracestate cut without telemetry", false, false,
			[]string{"Traceparent: " + clientParent, "Tracestate: " + strings.Join(longState, ",")},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkBoundedList(t, "tracestate", seen.values("Tracestate"), longState, 512, 32)
			}},
		{"10 KB baggage cut by whole members", true, false,
			[]string{"Baggage: " + strings.Join(bigBaggage[:100], ","), "Baggage: " + strings.Join(bigBaggage[100:], ",")},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkBoundedList(t, "baggage", seen.values("Baggage"), bigBaggage, 8192, 180)
			}},
		{"small baggage passes as it is", false, false,
			[]string{"Baggage: userId=alice,serverNode=DF%2028,isProduction=false"},
			func(t *testing.T, seen *seenRequest, _ string) {
				checkEqual(t, "the model's baggage", []string{"userId=alice,serverNode=DF%2028,isProduction=false"}, seen.values("Baggage"))
			}},
		{"public endpoint: only the gateway's traceparent", true, true,
			[]string{"Traceparent: " + clientParent, "Tracestate: a=1", "Baggage: userId=alice"},
			func(t *testing.T, seen *seenRequest, tr string) {
				checkEqual(t, "the model's traceparent", []string{tr}, seen.values("Traceparent"))
				if strings.Contains(tr, clientTrace) {
					t.Errorf("traceparent %q continues the client's trace", tr)
				}
				checkEqual(t, "the model's tracestate", []string(nil), seen.values("Tracestate"))
				checkEqual(t, "the model's baggage", []string(nil), seen.values("Baggage"))
			}},
		{"public endpoint without telemetry: none of the client's", false, true,
			[]string{"Traceparent: " + clientParent, "Tracestate: a=1", "Baggage: userId=alice"},
			func(t *testing.T, seen *seenRequest, _ string) {
				for _, name := range []string{"Traceparent", "Tracestate", "Baggage"} {
					checkEqual(t, "the model's "+name, []string(nil), seen.values(name))
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []proxy.Option
			var spans *tracetest.InMemoryExporter
			if tc.telemetry {
				var o proxy.Option
				o, spans = testTelemetry(t, tc.public)
				opts = append(opts, o)
			}
			e := newEnv(t, envOptions{options: opts, config: func(c *config.Config) { c.Telemetry.PublicEndpoint = tc.public }})
			r := e.do(t, request("GET", score, append([]string{bearer(e.primary)}, tc.lines...)...))
			if r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			tr := r.get("Traceresponse")
			tc.check(t, e.up.requireOne(t), tr)
			if tc.public && spans != nil {
				checkLinked(t, spans, tr)
			}
		})
	}
}

// checkBoundedList checks a list header the model saw: one line, within maxBytes and
// maxMembers, made of the first members sent, whole.
func checkBoundedList(t *testing.T, what string, got, sent []string, maxBytes, maxMembers int) {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("the model saw %d %s lines, want 1", len(got), what)
	}
	m := members(got[0])
	if len(got[0]) > maxBytes || len(m) > maxMembers || len(m) == 0 {
		t.Errorf("the model's %s: %d bytes in %d members, want 1 to %d members within %d bytes", what, len(got[0]), len(m), maxMembers, maxBytes)
	}
	checkEqual(t, "the model's "+what+" members", sent[:len(m)], m)
}

// checkLinked checks that the span of the request whose traceresponse is tr started a new trace
// with a link to the client's context.
func checkLinked(t *testing.T, spans *tracetest.InMemoryExporter, tr string) {
	t.Helper()
	var found bool
	deadline := time.Now().Add(ioDeadline)
	for !found && time.Now().Before(deadline) {
		for _, s := range spans.GetSpans() {
			if !strings.Contains(tr, s.SpanContext.TraceID().String()) {
				continue
			}
			found = true
			if s.Parent.IsValid() {
				t.Errorf("the span has the parent %v, want a new trace", s.Parent)
			}
			if len(s.Links) != 1 || s.Links[0].SpanContext.TraceID().String() != clientTrace ||
				s.Links[0].SpanContext.SpanID().String() != clientSpan {
				t.Errorf("links %v, want one to %s/%s", s.Links, clientTrace, clientSpan)
			}
		}
		if !found {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !found {
		t.Errorf("no span of trace %s", tr)
	}
}

// TestHeaders8cCredentialCarriers: a second credential beside a valid Authorization (a key
// header, a query parameter, a cookie) never reaches the model, unless the service names it in
// forward_credentials; the rest of the query string and the other cookies reach it unchanged.
func TestHeaders8cCredentialCarriers(t *testing.T) {
	e := newEnv(t, envOptions{config: editService("other", func(s *config.Service) {
		s.ForwardCredentials = []string{"x-api-key", "code"}
	})})
	tests := []struct {
		name, service, key, target string
		lines                      []string
		wantTarget                 string
		absent                     []string
		present                    map[string][]string
	}{
		{name: "key headers", service: "iris", key: e.primary, target: "/score",
			lines:      []string{"X-API-Key: sgk_second", "api-key: sgk_second", "Ocp-Apim-Subscription-Key: 0123", "X-Kept: yes"},
			wantTarget: "/score", absent: []string{"X-Api-Key", "Api-Key", "Ocp-Apim-Subscription-Key"},
			present: map[string][]string{"X-Kept": {"yes"}}},
		{name: "query parameters, the rest byte for byte", service: "iris", key: e.primary,
			target:     "/score?a=1&access_token=t&api_key=k&b=%20x+y&key=k&code=c&sig=s&c&&d=",
			wantTarget: "/score?a=1&b=%20x+y&c&&d="},
		{name: "query parameters in another case or encoded", service: "iris", key: e.primary,
			target: "/score?KEY=k&ke%79=k&Access_Token=t&x=1", wantTarget: "/score?x=1"},
		{name: "only credential parameters: no query left", service: "iris", key: e.primary,
			target: "/score?key=k&sig=s", wantTarget: "/score"},
		{name: "a value named key is not a parameter named key", service: "iris", key: e.primary,
			target: "/score?q=key&keys=1&monkey=2", wantTarget: "/score?q=key&keys=1&monkey=2"},
		{name: "cookies: the others stay in order", service: "iris", key: e.primary, target: "/score",
			lines:      []string{"Cookie: session=1; access_token=t; theme=dark", "Cookie: code=c; key=k"},
			wantTarget: "/score", present: map[string][]string{"Cookie": {"session=1; theme=dark"}}},
		{name: "only credential cookies: no Cookie left", service: "iris", key: e.primary, target: "/score",
			lines: []string{"Cookie: api_key=k"}, wantTarget: "/score", absent: []string{"Cookie"}},
		{name: "forward_credentials keeps what it names", service: "other", key: e.otherKey,
			target: "/score?code=c&key=k&x=1", lines: []string{"X-Api-Key: app-key", "Api-Key: k", "Cookie: code=1; sig=2"},
			wantTarget: "/score?code=c&x=1", absent: []string{"Api-Key"},
			present: map[string][]string{"X-Api-Key": {"app-key"}, "Cookie": {"code=1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, request("GET", "/api/v1/service/"+tc.service+tc.target, append([]string{bearer(tc.key)}, tc.lines...)...))
			if r.Status != 200 {
				t.Fatalf("status %d %s", r.Status, r.Body)
			}
			seen := e.up.requireOne(t)
			checkEqual(t, "the model's target", tc.wantTarget, seen.Target)
			for _, name := range append(tc.absent, "Authorization") {
				if seen.has(name) {
					t.Errorf("the model saw %s: %q", name, seen.values(name))
				}
			}
			for name, want := range tc.present {
				checkEqual(t, "the model's "+name, want, seen.values(name))
			}
		})
	}
}

// TestHeaders8dHTTPVersion: the model is spoken to in HTTP/1.1 whatever version the client's
// request line names.
func TestHeaders8dHTTPVersion(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, version := range []string{"HTTP/1.0", "HTTP/2.0", "HTTP/1.1"} {
		t.Run(version, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, "GET /api/v1/service/iris/score "+version+"\r\nHost: gw.test\r\n"+bearer(e.primary)+"\r\n\r\n")
			if r.Status != 200 {
				t.Fatalf("status %d %s, want 200", r.Status, r.Body)
			}
			checkEqual(t, "the model's request line version", "HTTP/1.1", e.up.requireOne(t).Proto)
		})
	}
}

// TestFraming9Refused: a request with both Content-Length and Transfer-Encoding, or a header
// line ended by a bare LF, gets 400, its connection is closed (the request behind it is never
// answered), and the model receives nothing.
func TestFraming9Refused(t *testing.T) {
	e := newEnv(t, envOptions{})
	head := "POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\n" + bearer(e.primary) + "\r\n"
	const body = "5\r\nhello\r\n0\r\n\r\n"
	tests := []struct{ name, raw string }{
		{"CL then TE", head + "Content-Length: 15\r\nTransfer-Encoding: chunked\r\n\r\n" + body},
		{"TE then CL", head + "Transfer-Encoding: chunked\r\nContent-Length: 15\r\n\r\n" + body},
		{"CL 0 with TE", head + "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n" + body},
		{"CL and TE in other cases", head + "content-length: 15\r\nTRANSFER-ENCODING: chunked\r\n\r\n" + body},
		{"a bare LF splits a header line", head + "a: b\nX-Inj: 1\r\nContent-Length: 0\r\n\r\n"},
		{"a bare LF ends the last header line", head + "Content-Length: 0\n\r\n"},
		{"a bare LF ends the first header line", "GET /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\n" + bearer(e.primary) + "\r\n\r\n"},
		{"a bare LF before the credential", head + "X-A: 1\nAuthorization: Bearer sgk_other\r\n\r\n"},
	}
	after := request("GET", "/api/v1/service/open/after")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			resps := e.exchange(t, tc.raw+after)
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want one 400 and the connection closed: %s", len(resps), describe(resps))
			}
			checkError(t, resps[0], 400, "BadRequest", "")
			e.up.requireNone(t)
		})
	}
}

// ---------------------------------------------------------------------------------------------
// The HTTP/2 listener: a recording gRPC model, and calls made with net/http's HTTP/2 client, which
// sends any metadata and request trailers.

type h2Seen struct{ header, trailer http.Header }

type h2Recorder struct {
	mu   sync.Mutex
	seen []h2Seen
}

func (m *h2Recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	m.mu.Lock()
	m.seen = append(m.seen, h2Seen{r.Header.Clone(), r.Trailer.Clone()})
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status")
	w.WriteHeader(200)
	w.Write([]byte{0, 0, 0, 0, 0}) // one empty message
	w.Header().Set("Grpc-Status", "0")
}

func (m *h2Recorder) one(t *testing.T) h2Seen {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.seen) != 1 {
		t.Fatalf("the model received %d calls, want 1", len(m.seen))
	}
	s := m.seen[0]
	m.seen = nil
	return s
}

// newH2RecordingEnv is a gateway whose gRPC service kserve calls a recording model.
func newH2RecordingEnv(t *testing.T, telemetry, public bool, keep []string) (*grpcEnv, *h2Recorder) {
	t.Helper()
	model := &h2Recorder{}
	modelURL := serveH2C(t, model)
	e := newGRPCEnv(t, grpcEnvOptions{telemetry: telemetry, config: func(c *config.Config) {
		c.Services[0].Upstreams = []string{modelURL}
		c.Services[0].ForwardCredentials = keep
		c.Telemetry.PublicEndpoint = public
	}})
	return e, model
}

// serveH2C serves a model h on a loopback port over cleartext HTTP/2 until the test ends, and
// returns its URL.
func serveH2C(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// h2Call makes one unary call to the gateway with header (added to the gRPC ones) and trailer,
// and returns the HTTP status and grpc-status.
func h2Call(t *testing.T, e *grpcEnv, header http.Header, trailer http.Header) (int, string, http.Header) {
	t.Helper()
	return h2Do(t, e, http.MethodPost, header, trailer)
}

// h2Do is h2Call with any method, for requests to the HTTP/2 listener that are not gRPC calls. An
// Authorization in header (even one without a value) replaces the key.
func h2Do(t *testing.T, e *grpcEnv, method string, header http.Header, trailer http.Header) (int, string, http.Header) {
	t.Helper()
	status, st, h, err := h2Try(t, e, method, header, trailer)
	if err != nil {
		t.Fatal(err)
	}
	return status, st, h
}

// h2Try is h2Do that returns the error of a request that got no answer.
func h2Try(t *testing.T, e *grpcEnv, method string, header http.Header, trailer http.Header) (int, string, http.Header, error) {
	t.Helper()
	var msg [5]byte
	binary.BigEndian.PutUint32(msg[1:], 0)
	req, err := http.NewRequest(method, "http://"+e.addr+methodModelInfer, io.NopCloser(bytes.NewReader(msg[:])))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set(config.GRPCServiceHeader, "kserve")
	if _, ok := header["Authorization"]; !ok {
		req.Header.Set("Authorization", "Bearer "+e.key)
	}
	req.Trailer = trailer
	req.ContentLength = -1
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: ioDeadline}).Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	st := resp.Header.Get("Grpc-Status")
	if st == "" {
		st = resp.Trailer.Get("Grpc-Status")
	}
	return resp.StatusCode, st, resp.Header, nil
}

var traceparentPattern = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$`)

// TestGRPCHeaders8: on the HTTP/2 listener, request trailers, credential carriers and the
// client's trace context obey the rules of the HTTP/1.1 one.
func TestGRPCHeaders8(t *testing.T) {
	var longState []string
	for i := range 64 {
		longState = append(longState, "v"+strconv.Itoa(i)+"="+strings.Repeat("x", 58))
	}
	var bigBaggage []string
	for i := range 200 {
		bigBaggage = append(bigBaggage, "k"+strconv.Itoa(i)+"="+strings.Repeat("y", 45))
	}
	t.Run("8a request trailers never reach the model", func(t *testing.T) {
		// gRPC has no request trailers: the listener's gRPC server takes a HEADERS frame after
		// the request's data for a protocol error and closes the connection. Nothing of the
		// call, and nothing of the trailers, reaches the model.
		e, model := newH2RecordingEnv(t, false, false, nil)
		if _, _, _, err := h2Try(t, e, http.MethodPost, nil, http.Header{"X-Api-Key": {"sgk_trailer"}, "X-Request-Id": {"evil"},
			"Traceparent": {clientParent}, "X-Checksum": {"abc"}}); err == nil {
			t.Fatal("a call with request trailers was answered")
		}
		status, st, _ := h2Call(t, e, nil, nil)
		if status != 200 || st != "0" {
			t.Fatalf("the next call: HTTP %d grpc-status %q, want 200 and 0", status, st)
		}
		model.mu.Lock()
		defer model.mu.Unlock()
		for _, seen := range model.seen {
			if len(seen.trailer) != 0 {
				t.Errorf("the model received request trailers %v", seen.trailer)
			}
			for _, name := range []string{"X-Api-Key", "X-Checksum", "Traceparent"} {
				if v := seen.header.Values(name); len(v) != 0 {
					t.Errorf("the model saw %s: %q", name, v)
				}
			}
		}
	})
	t.Run("8b two traceparents, telemetry: the gateway's alone", func(t *testing.T) {
		e, model := newH2RecordingEnv(t, true, false, nil)
		h2Call(t, e, http.Header{"Traceparent": {clientParent, clientParent2}, "Tracestate": {strings.Join(longState, ",")},
			"Baggage": {strings.Join(bigBaggage, ",")}}, nil)
		seen := model.one(t)
		tp := seen.header.Values("Traceparent")
		if len(tp) != 1 || !traceparentPattern.MatchString(tp[0]) || strings.Contains(tp[0], clientTrace) {
			t.Errorf("the model's traceparent %q, want one of the gateway's own trace", tp)
		}
		checkEqual(t, "the model's tracestate", []string(nil), seen.header.Values("Tracestate"))
		checkBoundedList(t, "baggage", seen.header.Values("Baggage"), bigBaggage, 8192, 180)
	})
	t.Run("8b one traceparent, long tracestate cut", func(t *testing.T) {
		e, model := newH2RecordingEnv(t, true, false, nil)
		h2Call(t, e, http.Header{"Traceparent": {clientParent}, "Tracestate": {strings.Join(longState, ",")}}, nil)
		seen := model.one(t)
		if tp := seen.header.Values("Traceparent"); len(tp) != 1 || !strings.Contains(tp[0], clientTrace) {
			t.Errorf("the model's traceparent %q, want one in the client's trace", tp)
		}
		checkBoundedList(t, "tracestate", seen.header.Values("Tracestate"), longState, 512, 32)
	})
	t.Run("8b two traceparents, no telemetry: neither", func(t *testing.T) {
		e, model := newH2RecordingEnv(t, false, false, nil)
		h2Call(t, e, http.Header{"Traceparent": {clientParent, clientParent2}, "Tracestate": {"a=1"}}, nil)
		seen := model.one(t)
		checkEqual(t, "the model's traceparent", []string(nil), seen.header.Values("Traceparent"))
		checkEqual(t, "the model's tracestate", []string(nil), seen.header.Values("Tracestate"))
	})
	t.Run("8b public endpoint: only the gateway's traceparent, the span linked", func(t *testing.T) {
		e, model := newH2RecordingEnv(t, true, true, nil)
		_, _, h := h2Call(t, e, http.Header{"Traceparent": {clientParent}, "Tracestate": {"a=1"}, "Baggage": {"u=1"}}, nil)
		seen := model.one(t)
		tp := seen.header.Values("Traceparent")
		if len(tp) != 1 || strings.Contains(tp[0], clientTrace) {
			t.Errorf("the model's traceparent %q, want one of a new trace", tp)
		}
		checkEqual(t, "the model's tracestate", []string(nil), seen.header.Values("Tracestate"))
		checkEqual(t, "the model's baggage", []string(nil), seen.header.Values("Baggage"))
		checkLinked(t, e.spans, h.Get("Traceresponse"))
	})
	t.Run("8c credential metadata and cookies never reach the model", func(t *testing.T) {
		e, model := newH2RecordingEnv(t, false, false, nil)
		h2Call(t, e, http.Header{"X-Api-Key": {"sgk_second"}, "Api-Key": {"k"}, "Ocp-Apim-Subscription-Key": {"s"},
			"Cookie": {"session=1; access_token=t; theme=dark"}, "X-Kept": {"yes"}}, nil)
		seen := model.one(t)
		for _, name := range []string{"X-Api-Key", "Api-Key", "Ocp-Apim-Subscription-Key", "Authorization"} {
			if v := seen.header.Values(name); len(v) != 0 {
				t.Errorf("the model saw %s: %q", name, v)
			}
		}
		checkEqual(t, "the model's cookie", []string{"session=1; theme=dark"}, seen.header.Values("Cookie"))
		checkEqual(t, "the model's x-kept", []string{"yes"}, seen.header.Values("X-Kept"))
	})
	t.Run("8c forward_credentials keeps what it names", func(t *testing.T) {
		e, model := newH2RecordingEnv(t, false, false, []string{"X-API-KEY"})
		h2Call(t, e, http.Header{"X-Api-Key": {"app"}, "Api-Key": {"k"}}, nil)
		seen := model.one(t)
		checkEqual(t, "the model's x-api-key", []string{"app"}, seen.header.Values("X-Api-Key"))
		checkEqual(t, "the model's api-key", []string(nil), seen.header.Values("Api-Key"))
	})
}

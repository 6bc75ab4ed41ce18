package telemetry

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/google/go-cmp/cmp"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// envMap is a getenv over a map.
func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestOTLPHTTPConfig: the OTEL_EXPORTER_OTLP_* variables as the specification and the library's
// client read them, the traces-specific ones first; an invalid value fails with its variable's
// name.
func TestOTLPHTTPConfig(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	ca := testpki.NewCA(t, "telemetry test CA")
	certPEM, keyPEM := testpki.PEM(t, ca.Issue(t, "gateway.test"))
	for file, data := range map[string][]byte{caFile: ca.CertPEM(), certFile: certPEM, keyFile: keyPEM, filepath.Join(dir, "junk"): []byte("junk")} {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	type want struct {
		url        string
		header     map[string]string // headers that must be there, canonical names
		timeout    time.Duration
		gzip       bool
		rootCAs    bool
		clientCert bool
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want want
		err  string // a part of the error, naming the variable
	}{
		{"the specification's default endpoint", map[string]string{},
			want{url: "http://localhost:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"a base endpoint gets /v1/traces", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			want{url: "http://collector:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"a base endpoint's path is kept", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector/otlp/"},
			want{url: "https://collector/otlp/v1/traces", timeout: 10 * time.Second}, ""},
		{"the traces endpoint is used as it is", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://ignored:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": " https://ingest.example.com/custom/traces "},
			want{url: "https://ingest.example.com/custom/traces", timeout: 10 * time.Second}, ""},
		{"a traces endpoint without a path is the root", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318"},
			want{url: "http://collector:4318/", timeout: 10 * time.Second}, ""},
		{"a blank traces endpoint falls back", map[string]string{
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "  ", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
			want{url: "http://collector:4318/v1/traces", timeout: 10 * time.Second}, ""},
		{"INSECURE does not change an https endpoint", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector", "OTEL_EXPORTER_OTLP_INSECURE": "true"},
			want{url: "https://collector/v1/traces", timeout: 10 * time.Second}, ""},
		{"an endpoint without a scheme", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
			want{}, "OTEL_EXPORTER_OTLP_ENDPOINT \"collector:4318\""},
		{"a traces endpoint of another scheme", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "unix:///run/otel.sock"},
			want{}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
		{"headers are URL-decoded and trimmed", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
			"OTEL_EXPORTER_OTLP_HEADERS":  " api-key = s%3Dcret%20value ,x-tenant=a%2Cb,,"},
			want{url: "http://c/v1/traces", timeout: 10 * time.Second, header: map[string]string{
				"Api-Key": "s=cret value", "X-Tenant": "a,b", "Content-Type": "application/x-protobuf", "User-Agent": "scoregate"}}, ""},
		{"traces headers replace the general ones", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":       "http://c",
			"OTEL_EXPORTER_OTLP_HEADERS":        "a=1,b=2",
			"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "c=3"},
			want{url: "http://c/v1/traces", timeout: 10 * time.Second, header: map[string]string{"C": "3", "A": "", "B": ""}}, ""},
		{"configured headers cannot change the content type", map[string]string{
			"OTEL_EXPORTER_OTLP_HEADERS": "content-type=text/plain,user-agent=mine"},
			want{url: "http://localhost:4318/v1/traces", timeout: 10 * time.Second, header: map[string]string{
				"Content-Type": "application/x-protobuf", "User-Agent": "mine"}}, ""},
		{"a header without a value", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=1,token"},
			want{}, "OTEL_EXPORTER_OTLP_HEADERS: header \"token\""},
		{"a header name that is not a token", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "bad name=1"},
			want{}, "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header name \"bad name\""},
		{"a header value that does not decode", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "a=%zz"},
			want{}, "OTEL_EXPORTER_OTLP_HEADERS: header a:"},
		{"timeout in milliseconds, traces first", map[string]string{
			"OTEL_EXPORTER_OTLP_TIMEOUT": "2000", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1500"},
			want{url: "http://localhost:4318/v1/traces", timeout: 1500 * time.Millisecond}, ""},
		{"a timeout of 0 is the library's minute of retrying", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "0"},
			want{url: "http://localhost:4318/v1/traces", timeout: time.Minute}, ""},
		{"a timeout with a unit", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"},
			want{}, "OTEL_EXPORTER_OTLP_TIMEOUT \"10s\""},
		{"a negative timeout", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1"},
			want{}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT \"-1\""},
		{"gzip", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_COMPRESSION": "none"},
			want{url: "http://localhost:4318/v1/traces", timeout: 10 * time.Second, gzip: true,
				header: map[string]string{"Content-Encoding": "gzip"}}, ""},
		{"traces compression none wins", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"},
			want{url: "http://localhost:4318/v1/traces", timeout: 10 * time.Second, header: map[string]string{"Content-Encoding": ""}}, ""},
		{"an unknown compression", map[string]string{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
			want{}, "OTEL_EXPORTER_OTLP_COMPRESSION \"zstd\""},
		{"a CA and a client certificate", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c", "OTEL_EXPORTER_OTLP_CERTIFICATE": caFile,
			"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certFile, "OTEL_EXPORTER_OTLP_CLIENT_KEY": keyFile},
			want{url: "https://c/v1/traces", timeout: 10 * time.Second, rootCAs: true, clientCert: true}, ""},
		{"the traces client certificate", map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT":                  "https://c",
			"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": certFile, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": keyFile,
			"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/nonexistent", "OTEL_EXPORTER_OTLP_CLIENT_KEY": "/nonexistent"},
			want{url: "https://c/v1/traces", timeout: 10 * time.Second, clientCert: true}, ""},
		{"a missing CA file", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": "/nonexistent/ca.pem"},
			want{}, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"},
		{"a CA file without a certificate", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c", "OTEL_EXPORTER_OTLP_CERTIFICATE": filepath.Join(dir, "junk")},
			want{}, "OTEL_EXPORTER_OTLP_CERTIFICATE " + filepath.Join(dir, "junk") + ": no PEM certificate"},
		{"a client certificate without its key", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certFile},
			want{}, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set without OTEL_EXPORTER_OTLP_CLIENT_KEY"},
		{"a client key that is not the certificate's", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c",
			"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": certFile, "OTEL_EXPORTER_OTLP_CLIENT_KEY": filepath.Join(dir, "junk")},
			want{}, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY"},
		{"TLS settings for a plain http endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_CERTIFICATE": caFile},
			want{}, "TLS settings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := otlpHTTPConfigFromEnv(envMap(tc.env), os.ReadFile)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := want{url: cfg.url, timeout: cfg.timeout, gzip: cfg.gzip, header: tc.want.header,
				rootCAs: cfg.tls != nil && cfg.tls.RootCAs != nil, clientCert: cfg.tls != nil && len(cfg.tls.Certificates) == 1}
			for name, v := range tc.want.header {
				if cfg.header.Get(name) != v {
					t.Errorf("header %s: %q, want %q", name, cfg.header.Get(name), v)
				}
			}
			checkEqual(t, "configuration", tc.want, got, cmp.AllowUnexported(want{}))
		})
	}
}

// An invalid variable stops New, with its name.
func TestNewRejectsBadOTLPSetting(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "ten")
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	if tel, err := New(context.Background(), cfg, Options{}); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_TIMEOUT") {
		if err == nil {
			shutdown(t, tel)
		}
		t.Fatalf("New: %v, want an error naming OTEL_EXPORTER_OTLP_TIMEOUT", err)
	}
}

// scriptedCollector answers the i-th request with answers[i] (the last one thereafter) and keeps
// every body.
type scriptedCollector struct {
	answers []func(w http.ResponseWriter)

	mu     sync.Mutex
	bodies [][]byte
}

func (c *scriptedCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	c.mu.Lock()
	c.bodies = append(c.bodies, body)
	answer := c.answers[min(len(c.bodies), len(c.answers))-1]
	c.mu.Unlock()
	answer(w)
}

func (c *scriptedCollector) attempts() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bodies
}

func status(code int, header ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "  status %d from the collector\n", code)
	}
}

// testExporter is an OTLP/HTTP exporter to url, with the given timeout and quick retries, holding
// n encoded spans of tel's requests.
func testExporter(t *testing.T, tel *Telemetry, url string, timeout time.Duration, n int, log *slog.Logger) *otlpHTTP {
	t.Helper()
	x, err := newOTLPHTTP(envMap(map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url,
		"OTEL_EXPORTER_OTLP_TIMEOUT":         fmt.Sprint(timeout.Milliseconds()),
	}), os.ReadFile, tel.resource, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.close)
	x.retryFrom = 20 * time.Millisecond
	for i := range n {
		rec := tel.Begin()
		rec.SetRequest([]byte("GET"), []byte("/x"), nil, []byte("gw.test"), nil, nil, nil)
		rec.SetRequestID(fmt.Appendf(nil, "id-%d", i))
		rec.status = 200
		x.add(tel, rec)
		rec.End(200)
	}
	return x
}

// The exporter's answer to each kind of collector behaviour: taken, retried as the library
// retries (429, 502, 503, 504, no connection; never past the timeout, Retry-After respected),
// refused for good, accepted with some spans rejected.
func TestOTLPHTTPSend(t *testing.T) {
	partial, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{
		PartialSuccess: &collectortrace.ExportTracePartialSuccess{RejectedSpans: 2, ErrorMessage: "too old"}})
	for _, tc := range []struct {
		name     string
		answers  []func(http.ResponseWriter) // nil: nothing listens
		timeout  time.Duration
		attempts int    // requests the collector sees; -1: more than one
		err      string // a part of the error; "" for success
		log      string // a part of the debug log
	}{
		{"taken", []func(http.ResponseWriter){status(200)}, time.Second, 1, "", ""},
		{"retried until taken", []func(http.ResponseWriter){status(503), status(429, "Retry-After", "0"), status(502), status(504), status(200)},
			5 * time.Second, 5, "", ""},
		{"refused for good", []func(http.ResponseWriter){status(400)}, time.Second, 1, "400 Bad Request: status 400 from the collector", ""},
		{"Retry-After past the timeout", []func(http.ResponseWriter){status(429, "Retry-After", "30")}, time.Second, 1,
			"giving up after 1 attempts", ""},
		{"unavailable until the timeout", []func(http.ResponseWriter){status(503)}, 300 * time.Millisecond, -1, "503 Service Unavailable", ""},
		{"no collector", nil, 300 * time.Millisecond, 0, "connect", ""},
		{"partial success", []func(http.ResponseWriter){func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.Write(partial)
		}}, time.Second, 1, "", `msg="the OTLP collector rejected spans" spans=2 message="too old"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col := &scriptedCollector{answers: tc.answers}
			srv := httptest.NewServer(col)
			t.Cleanup(srv.Close)
			url := srv.URL + "/v1/traces"
			if tc.answers == nil {
				srv.Close()
			}
			var logged bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
			tel, _ := newTel(t, nil, Options{Exporters: []sdktrace.SpanExporter{}})
			x := testExporter(t, tel, url, tc.timeout, 3, log)
			want := slices.Clone(x.enc.request())
			start := time.Now()
			err := x.upload(context.Background())
			if took := time.Since(start); took > tc.timeout+time.Second {
				t.Errorf("upload took %v with a timeout of %v", took, tc.timeout)
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("upload: %v, want an error containing %q", err, tc.err)
			}
			attempts := col.attempts()
			if tc.attempts >= 0 && len(attempts) != tc.attempts || tc.attempts < 0 && len(attempts) < 2 {
				t.Errorf("%d attempts, want %d", len(attempts), tc.attempts)
			}
			for i, body := range attempts {
				if !bytes.Equal(body, want) {
					t.Errorf("attempt %d sent %d bytes, not the batch's %d", i+1, len(body), len(want))
				}
			}
			if !strings.Contains(logged.String(), tc.log) {
				t.Errorf("log %q, want %q in it", logged.String(), tc.log)
			}
			if x.enc.spans != 0 {
				t.Errorf("%d spans left in the batch after the upload", x.enc.spans)
			}
		})
	}
}

// Through the recorder: the configured headers and gzip reach the collector, a refused batch
// counts its spans as dropped, and the next batch (the same buffer, written again) goes through.
func TestOTLPHTTPThroughRecorder(t *testing.T) {
	var refuse atomic.Bool
	col := &bodyRecorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refuse.Load() {
			io.Copy(io.Discard, r.Body)
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		col.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", srv.URL+"/ingest")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%3Dcret")
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
	tel, _ := newTel(t, func(c *config.Config) { c.Telemetry.QueueSize = 4 * batchSize }, Options{Exporters: []sdktrace.SpanExporter{}})
	refuse.Store(true)
	for i := range batchSize {
		do(tel, req{method: "GET", target: "/x", id: fmt.Sprint("refused-", i), status: 200})
	}
	waitFor(t, "the refused batch", func() bool { return tel.Dropped() == batchSize })
	refuse.Store(false)
	do(tel, req{method: "GET", target: "/x", id: "taken", status: 200})
	shutdown(t, tel)
	if tel.Dropped() != batchSize {
		t.Errorf("Dropped() = %d, want the refused batch's %d", tel.Dropped(), batchSize)
	}
	bodies := col.received()
	if len(bodies) != 1 {
		t.Fatalf("%d batches taken, want 1", len(bodies))
	}
	var msg collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(bodies[0], &msg); err != nil {
		t.Fatal(err)
	}
	spans := msg.ResourceSpans[0].ScopeSpans[0].Spans
	if len(spans) != 1 || attrOf(spans[0], "RequestId") != "taken" {
		t.Errorf("the batch after the refused one holds %d spans, want the one taken", len(spans))
	}
	h := col.headers[0]
	for name, want := range map[string]string{"X-Api-Key": "s=cret", "Content-Encoding": "gzip", "Content-Type": "application/x-protobuf"} {
		if got := h.Get(name); got != want {
			t.Errorf("header %s: %q, want %q", name, got, want)
		}
	}
}

// attrOf is the string value of s's attribute key.
func attrOf(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
	}
}

// Shutdown's deadline bounds an export in flight: a collector that never answers does not keep
// the recorder past it, and the batch counts as dropped.
func TestOTLPHTTPShutdownCancelsUpload(t *testing.T) {
	release := make(chan struct{})
	var arrived atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Store(true)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	tel, _ := newTel(t, nil, Options{Exporters: []sdktrace.SpanExporter{}})
	for i := range batchSize {
		do(tel, req{method: "GET", target: "/x", id: fmt.Sprint(i), status: 200})
	}
	waitFor(t, "the upload", arrived.Load)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := tel.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	select {
	case <-tel.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the recorder is still uploading 5s after Shutdown's deadline")
	}
	if tel.Dropped() != batchSize {
		t.Errorf("Dropped() = %d, want %d", tel.Dropped(), batchSize)
	}
}

// OTLP over https, with the collector's CA from OTEL_EXPORTER_OTLP_CERTIFICATE and a client
// certificate the collector requires.
func TestOTLPHTTPMutualTLS(t *testing.T) {
	col := &otlpCollector{}
	var clientCerts atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clientCerts.Store(int64(len(r.TLS.PeerCertificates)))
		col.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	certPEM, keyPEM := testpki.PEM(t, testpki.NewCA(t, "telemetry test CA").Issue(t, "gateway.test"))
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", caFile)
	t.Setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certFile)
	t.Setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", keyFile)
	tel, _ := newTel(t, nil, Options{Exporters: []sdktrace.SpanExporter{}})
	do(tel, req{method: "GET", target: "/x", id: "over-tls", status: 200})
	shutdown(t, tel)
	checkEqual(t, "spans at the collector", []string{"over-tls"}, col.requestIDs())
	if clientCerts.Load() != 1 {
		t.Errorf("the collector saw %d client certificates, want 1", clientCerts.Load())
	}
}

// A header value that is not UTF-8 is sent with U+FFFD in its place: the collector takes the
// batch. (The library's client cannot marshal such a batch at all: every span in it is lost.)
func TestOTLPWireInvalidUTF8(t *testing.T) {
	col := &otlpCollector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	ref := &captureClient{}
	tel, _ := newTel(t, nil, Options{Exporters: []sdktrace.SpanExporter{otlptrace.NewUnstarted(ref)}})
	do(tel, req{method: "GET", target: "/x\xfe?q=\xff", userAgent: "a-longer-agent/1.0 (\xff\xfe) ü", host: "gw.test", id: "utf8", status: 200})
	do(tel, req{method: "GET", target: "/x", host: "gw.test", id: "fine", status: 200})
	shutdown(t, tel)
	checkEqual(t, "spans at the collector", []string{"fine", "utf8"}, col.requestIDs())
	for _, s := range col.spans {
		if attrOf(s, "RequestId") == "utf8" {
			checkEqual(t, "user agent", "a-longer-agent/1.0 (\uFFFD) ü", attrOf(s, "UserAgent"))
			checkEqual(t, "URL", "http://gw.test/x\uFFFD?q=\uFFFD", attrOf(s, "RequestUrl"))
		}
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	if _, err := proto.Marshal(ref.uploads[0]); err == nil {
		t.Error("the library's messages for the batch marshal; the comment above is wrong")
	}
}

// setLength gives a span's length the varint it needs, moving the span when that is not two bytes.
func TestSetLength(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 2097151, 2097152} {
		msg := bytes.Repeat([]byte{0xab}, n)
		b := append([]byte("prefix"), tagSpan, 0, 0)
		b = setLength(append(b, msg...), len(b))
		want := protowire.AppendBytes(append([]byte("prefix"), tagSpan), msg)
		if !bytes.Equal(b, want) {
			t.Errorf("a message of %d bytes: %d bytes written, want %d", n, len(b), len(want))
		}
	}
}

// Encoding a span allocates nothing once the buffers have grown, with or without a redacted
// query (a tracestate, parsed by the trace package, would).
func TestOTLPWireAllocs(t *testing.T) {
	tel, _ := newTel(t, nil, Options{})
	enc, err := newSpanEncoder(tel.resource)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*Record
	for i, target := range []string{"/api/v1/service/iris/score?version=2", "/api/v1/service/iris/score?x=1&key=abc&KEY=sgk_x"} {
		rec := tel.Begin()
		rec.SetRequest([]byte("POST"), []byte(target), []byte(testUA), []byte("gw.test:8080"), []byte(testClient),
			[]byte("00-"+parentTrace+"-"+parentSpan+"-01"), nil)
		rec.SetRequestID([]byte(fmt.Sprint("id-", i)))
		rec.Service, rec.Auth, rec.Reason, rec.Upstream, rec.status = "iris", config.AuthKey, "ok", "127.0.0.1:5001", 200
		recs = append(recs, rec)
	}
	// A language-model call of an authenticated caller (issue 22) allocates nothing more.
	llm := tel.Begin()
	llm.SetRequest([]byte("POST"), []byte("/api/v1/service/chat/v1/chat/completions"), []byte(testUA), []byte("gw.test:8080"),
		[]byte(testClient), nil, nil)
	llm.SetRequestID([]byte("id-llm"))
	llm.Service, llm.Auth, llm.Reason, llm.Upstream, llm.status = "chat", config.AuthKey, "ok", "127.0.0.1:5001", 200
	llm.Caller, llm.GenAI = "key:AbCdEf012345", GenAI{Operation: "chat", RequestModel: "gpt-4o-mini", ResponseModel: "gpt-4o-mini-2024-07-18",
		InputTokens: 12, OutputTokens: 300, Usage: "reported", TimeToFirstToken: 40 * time.Millisecond}
	recs = append(recs, llm)
	batch := func() {
		for _, r := range recs {
			enc.add(tel, r)
		}
		enc.request()
		enc.reset()
	}
	batch() // grows the buffers
	if n := testing.AllocsPerRun(100, batch); n != 0 {
		t.Errorf("encoding a batch of %d spans allocates %v times", len(recs), n)
	}
	for _, rec := range recs {
		rec.End(200)
	}
}

// A body handed to net/http cannot be read once the batch has moved on.
func TestBodyGate(t *testing.T) {
	g := &bodyGate{buf: []byte("spans")}
	r := g.reader()
	p := make([]byte, 2)
	if n, err := r.Read(p); n != 2 || err != nil {
		t.Fatalf("Read: %d, %v", n, err)
	}
	g.close()
	if _, err := r.Read(p); !errors.Is(err, errBodyGone) {
		t.Errorf("Read after close: %v, want errBodyGone", err)
	}
	if _, err := io.ReadAll(g.reader()); !errors.Is(err, errBodyGone) {
		t.Errorf("a new reader after close: %v, want errBodyGone", err)
	}
}

// ascii finds a byte with the high bit set wherever it is, in the eight-byte words or the tail.
func TestASCII(t *testing.T) {
	for n := range 20 {
		for at := -1; at < n; at++ {
			b := bytes.Repeat([]byte{'a'}, n)
			if at >= 0 {
				b[at] = 0x80
			}
			if got := ascii(b); got != (at < 0) || asciiString(string(b)) != got {
				t.Errorf("ascii(%q) = %v", b, got)
			}
		}
	}
}

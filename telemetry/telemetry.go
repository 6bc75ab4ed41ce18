// Package telemetry records every data-plane request as an OpenTelemetry SERVER span carrying both
// the HTTP semantic-convention attributes and the Application Insights request fields (HTTPMethod,
// UserAgent, ComputeType, RequestUrl, StatusCode, RequestId, Duration), as Prometheus metrics and,
// when enabled, as an access-log line; a language-model call's also carry its operation, models,
// token usage and time to first token after the OpenTelemetry GenAI conventions (gen_ai.*), and an
// authenticated request's its caller. The request path only fills a pooled Record with plain
// values and hands it over without blocking; spans, metrics and log lines are built in the
// background. It redacts credentials and sensitive query values everywhere and never sees an
// Authorization header. It knows nothing of HTTP servers or of business rules.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/scoregate/scoregate/config"
)

// Telemetry records requests.
type Telemetry struct {
	cfg         config.Telemetry
	computeType string
	redact      map[string]bool
	sampler     sampler
	resource    *resource.Resource
	client      otlptrace.Client // the library's OTLP client (grpc, or a test's), or nil
	otlp        *otlpBatch       // the client's batch, when there is a client
	otlpHTTP    *otlpHTTP        // the OTLP/HTTP exporter, when OTLP goes over http/protobuf
	exporters   []sdktrace.SpanExporter
	metrics     *metrics
	traffic     *traffic // the last five minutes per service, for the status page
	accessLog   *slog.Logger
	log         *slog.Logger

	pool     sync.Pool
	queue    chan *Record
	inflight atomic.Int64
	dropped  atomic.Int64
	stop     chan struct{} // closed by Shutdown; the queue itself is never closed
	done     chan struct{}
	stopOnce sync.Once
	// uploads is the context of every export; Shutdown cancels it when its own context ends
	// before the recorder has flushed, so that an export in flight gives up.
	uploads       context.Context
	cancelUploads context.CancelFunc
}

// Options are Telemetry's dependencies beyond the configuration.
type Options struct {
	// Log is the gateway's own log (exporter errors); AccessLog, when set, receives access-log
	// lines (default: a JSON logger on stderr).
	Log, AccessLog *slog.Logger
	// Exporters, when not nil, replace the exporter of telemetry.traces_file, and Client, when
	// set, the OTLP exporter the environment chooses (for tests and benchmarks). Exporters get
	// every span as an SDK span; Client gets them as OTLP messages, built without the SDK. New
	// starts Client and Shutdown stops it.
	Exporters []sdktrace.SpanExporter
	Client    otlptrace.Client
	// StateAge, when set, reports how old the shared-state copy is, for the metric.
	StateAge func() time.Duration
}

// batchSize is how many spans are exported at once; flushInterval bounds how long one waits.
const (
	batchSize     = 512
	flushInterval = time.Second
	// pollInterval is how often a busy recorder looks at its queue. At 100,000 requests a
	// second that is 100 records a look, far below telemetry.queue_size.
	pollInterval = time.Millisecond
)

// New sets up exporters and metrics from cfg and the OTEL_* environment, and starts the
// background recorder. Shutdown stops it.
func New(ctx context.Context, cfg *config.Config, o Options) (*Telemetry, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{
		cfg:         cfg.Telemetry,
		computeType: cfg.ComputeType,
		redact:      map[string]bool{},
		log:         log,
		queue:       make(chan *Record, cfg.Telemetry.QueueSize),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		traffic:     newTraffic(),
	}
	for _, p := range cfg.Telemetry.RedactQueryParams {
		t.redact[strings.ToLower(p)] = true
	}
	t.pool.New = func() any { return &Record{t: t} }
	t.uploads, t.cancelUploads = context.WithCancel(context.Background())
	var err error
	if t.sampler, err = samplerFromEnv(os.Getenv); err != nil {
		return nil, err
	}
	if t.resource, err = newResource(ctx); err != nil {
		return nil, err
	}
	if t.client = o.Client; t.client == nil {
		if t.client, t.otlpHTTP, err = otlpFromEnv(os.Getenv, t.resource, log); err != nil {
			return nil, err
		}
	}
	if t.exporters = o.Exporters; t.exporters == nil {
		if t.exporters, err = fileExporters(cfg.Telemetry); err != nil {
			return nil, err
		}
	}
	if t.client != nil {
		if err := t.client.Start(ctx); err != nil {
			return nil, errors.Join(fmt.Errorf("starting the OTLP exporter: %w", err), t.shutdownExporters(ctx))
		}
		t.otlp = newOTLPBatch(t.resource)
	}
	if t.metrics, err = newMetrics(t, o.StateAge); err != nil {
		return nil, err
	}
	if cfg.Telemetry.AccessLog {
		t.accessLog = o.AccessLog
		if t.accessLog == nil {
			t.accessLog = slog.New(slog.NewJSONHandler(os.Stderr, nil))
		}
	}
	go t.run()
	return t, nil
}

// MetricsHandler serves the Prometheus text exposition of the gateway's metrics.
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics.handler }

// Dropped counts spans dropped because the recorder was behind or an export failed.
func (t *Telemetry) Dropped() int64 { return t.dropped.Load() }

// Begin starts the record of one request.
func (t *Telemetry) Begin() *Record {
	r := t.pool.Get().(*Record)
	r.start = time.Now()
	t.inflight.Add(1)
	return r
}

func (t *Telemetry) put(r *Record) {
	r.Service, r.Auth, r.Reason, r.Upstream, r.Deployment = "", "", "", "", ""
	r.QueueWait, r.TLS = 0, false
	r.RPCService, r.RPCMethod, r.GRPCStatus = "", "", 0
	r.upstreamStart, r.upstreamDur = time.Time{}, 0
	r.Stream, r.FirstByte = false, 0
	r.Caller, r.GenAI = "", GenAI{}
	r.requestID = r.requestID[:0]
	t.pool.Put(r)
}

// Shutdown records what is queued, flushes the exporters and stops them, within ctx.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.stopOnce.Do(func() { close(t.stop) })
	select {
	case <-t.done:
	case <-ctx.Done():
		t.cancelUploads() // the export in flight gives up, and so will the recorder's last
		return ctx.Err()
	}
	t.cancelUploads()
	var err error
	if t.client != nil {
		err = t.client.Stop(ctx)
	}
	if t.otlpHTTP != nil {
		t.otlpHTTP.close()
	}
	return errors.Join(err, t.shutdownExporters(ctx))
}

func (t *Telemetry) shutdownExporters(ctx context.Context) error {
	var errs []error
	for _, e := range t.exporters {
		errs = append(errs, e.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// run is the background recorder: metrics and access log for every record, spans in batches. The
// OTLP/HTTP exporter encodes each sampled Record's span into its next request at once; the
// library client's batch holds the sampled Records themselves until it is uploaded; the other
// exporters get SDK spans, made at once.
func (t *Telemetry) run() {
	defer close(t.done)
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	spans := make([]sdktrace.ReadOnlySpan, 0, batchSize)
	pending := 0 // sampled requests since the last flush
	flush := func() {
		if pending == 0 {
			return
		}
		if t.otlpHTTP != nil { // within its own OTEL_EXPORTER_OTLP_TIMEOUT
			if err := t.otlpHTTP.upload(t.uploads); err != nil {
				t.dropped.Add(int64(pending))
				t.log.Warn("exporting spans", "spans", pending, "err", err)
			}
		}
		ctx, cancel := context.WithTimeout(t.uploads, 10*time.Second)
		if t.otlp != nil {
			err := t.client.UploadTraces(ctx, t.otlp.build(t))
			t.otlp.release(t)
			if err != nil {
				t.dropped.Add(int64(pending))
				t.log.Warn("exporting spans", "spans", pending, "err", err)
			}
		}
		for _, e := range t.exporters {
			if err := e.ExportSpans(ctx, spans); err != nil {
				t.dropped.Add(int64(len(spans)))
				t.log.Warn("exporting spans", "spans", len(spans), "err", err)
			}
		}
		cancel()
		clear(spans)
		spans = spans[:0]
		pending = 0
	}
	handle := func(r *Record) {
		r.boundChosenValues()
		t.metrics.record(r)
		t.traffic.record(r)
		if t.accessLog != nil {
			t.logAccess(r)
		}
		if !r.sampled || (t.otlp == nil && t.otlpHTTP == nil && len(t.exporters) == 0) {
			t.put(r)
			return
		}
		if len(t.exporters) > 0 {
			spans = append(spans, t.span(r))
		}
		if t.otlpHTTP != nil {
			t.otlpHTTP.add(t, r)
		}
		if t.otlp != nil {
			t.otlp.add(r) // back to the pool once uploaded
		} else {
			t.put(r)
		}
		if pending++; pending == batchSize {
			flush()
		}
	}
	// While requests keep ending, the recorder polls the queue every pollInterval instead of
	// waiting on it: a record sent to a channel nobody waits on costs the request no wake-up of
	// this goroutine (a futex call each). Once a poll finds the queue empty, it waits again.
	poll := time.NewTimer(pollInterval)
	poll.Stop()
	busy := false
	for {
		if busy {
			busy = false
			for range cap(t.queue) {
				select {
				case r := <-t.queue:
					handle(r)
					busy = true
					continue
				default:
				}
				break
			}
		}
		var wait <-chan *Record // nil while polling: only the timer ends the wait
		if busy {
			poll.Reset(pollInterval)
		} else {
			wait = t.queue
		}
		select {
		case r := <-wait:
			handle(r)
			busy = true
		case <-poll.C:
		case <-tick.C:
			flush()
		case <-t.stop:
			for { // what is queued now is recorded; later records stay unread
				select {
				case r := <-t.queue:
					handle(r)
				default:
					flush()
					return
				}
			}
		}
	}
}

// Route is the low-cardinality route of every data-plane request.
const Route = "/api/v1/service/{name}/{rest}"

// span turns a record into a finished SERVER span.
func (t *Telemetry) span(r *Record) sdktrace.ReadOnlySpan {
	method := normalMethod(r.method)
	path, query := splitTarget(r.target)
	query = t.redactQuery(query)
	end := r.start.Add(r.duration)
	host := string(r.host)
	scheme := r.scheme()
	requestURL := scheme + "://" + host + path
	if query != "" && !t.cfg.HighBusinessImpact {
		requestURL += "?" + query
	}
	size := plainMaxAttrs
	if r.GenAI.Operation != "" {
		size = otlpMaxAttrs
	}
	attrs := make([]attribute.KeyValue, 0, size)
	attrs = append(attrs,
		attribute.String("http.request.method", method),
		attribute.String("url.scheme", scheme),
		attribute.String("url.path", path),
		attribute.String("http.route", Route),
		attribute.Int("http.response.status_code", r.status),
		attribute.String("server.address", hostOnly(host)),
		// The Application Insights request fields.
		attribute.String("HTTPMethod", method),
		attribute.String("ComputeType", t.computeType),
		attribute.String("RequestUrl", requestURL),
		attribute.String("StatusCode", strconv.Itoa(r.status)),
		attribute.String("RequestId", string(r.requestID)),
		attribute.Float64("Duration", float64(r.duration.Microseconds())/1000),
		attribute.String("scoregate.service", r.Service),
		attribute.String("scoregate.auth_mode", r.Auth),
		attribute.String("scoregate.outcome", r.Reason),
	)
	if port := portOf(host); port > 0 {
		attrs = append(attrs, attribute.Int("server.port", port))
	}
	if !t.cfg.HighBusinessImpact {
		ua := string(r.userAgent)
		attrs = append(attrs,
			attribute.String("user_agent.original", ua),
			attribute.String("UserAgent", ua),
			attribute.String("client.address", string(r.client)),
		)
		if query != "" {
			attrs = append(attrs, attribute.String("url.query", query))
		}
	}
	if r.Upstream != "" {
		attrs = append(attrs,
			attribute.String("scoregate.upstream.address", r.Upstream),
			attribute.Float64("scoregate.upstream.duration_ms", float64(r.upstreamDur.Microseconds())/1000))
	}
	if r.Stream {
		attrs = append(attrs,
			attribute.Bool("scoregate.stream", true),
			attribute.Float64("scoregate.upstream.first_byte_ms", float64(r.FirstByte.Microseconds())/1000))
	}
	if r.Deployment != "" {
		attrs = append(attrs,
			attribute.String("scoregate.deployment", r.Deployment),
			attribute.Float64("scoregate.queue_wait_ms", float64(r.QueueWait.Microseconds())/1000))
	}
	if r.RPCService != "" {
		attrs = append(attrs,
			attribute.String("rpc.system", "grpc"),
			attribute.String("rpc.service", r.RPCService),
			attribute.String("rpc.method", r.RPCMethod),
			attribute.Int("rpc.grpc.status_code", r.GRPCStatus))
	}
	if r.Caller != "" {
		attrs = append(attrs, attribute.String(attrEndUser, r.Caller))
	}
	if r.GenAI.Operation != "" {
		attrs = appendGenAIAttrs(attrs, &r.GenAI)
	}
	flags := trace.TraceFlags(0)
	if r.sampled {
		flags = trace.FlagsSampled
	}
	ts, _ := trace.ParseTraceState(string(r.tracestate))
	name := spanName(method)
	if method == "_OTHER" {
		orig := r.method
		if len(orig) > 32 {
			orig = orig[:32]
		}
		attrs = append(attrs, attribute.String("http.request.method_original", string(orig)))
	}
	stub := tracetest.SpanStub{
		Name:        name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: r.traceID, SpanID: r.spanID, TraceFlags: flags, TraceState: ts}),
		SpanKind:    trace.SpanKindServer,
		StartTime:   r.start,
		EndTime:     end,
		Attributes:  attrs,
		Resource:    t.resource,
		InstrumentationScope: instrumentation.Scope{
			Name: scopeName,
		},
	}
	if r.hasParent {
		stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: r.traceID, SpanID: r.parentID, TraceFlags: flags, Remote: true})
	}
	if r.hasLink {
		stub.Links = []sdktrace.Link{{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: r.linkTraceID, SpanID: r.linkSpanID, TraceFlags: trace.TraceFlags(r.linkFlags), Remote: true})}}
	}
	if r.status >= 500 {
		stub.Status = sdktrace.Status{Code: codes.Error, Description: r.Reason}
	}
	return stub.Snapshot()
}

func (t *Telemetry) logAccess(r *Record) {
	if r.status < 500 && t.cfg.AccessLogSample < 1 && rand.Float64() >= t.cfg.AccessLogSample {
		return
	}
	path, query := splitTarget(r.target)
	size := 16 // the fields of any request
	if r.GenAI.Operation != "" {
		size += 8
	}
	attrs := make([]slog.Attr, 0, size)
	attrs = append(attrs,
		slog.String("request_id", string(r.requestID)),
		slog.String("trace_id", fmt.Sprintf("%x", r.traceID)),
		slog.String("method", normalMethod(r.method)),
		slog.String("path", path),
		slog.Int("status", r.status),
		slog.Float64("duration_ms", float64(r.duration.Microseconds())/1000),
		slog.String("service", r.Service),
		slog.String("outcome", r.Reason),
		slog.String("compute_type", t.computeType),
	)
	if r.Upstream != "" {
		attrs = append(attrs, slog.String("upstream", r.Upstream), slog.Float64("upstream_ms", float64(r.upstreamDur.Microseconds())/1000))
	}
	if r.Caller != "" {
		attrs = append(attrs, slog.String("caller", r.Caller))
	}
	if g := &r.GenAI; g.Operation != "" {
		attrs = append(attrs, slog.String("gen_ai_operation", g.Operation))
		if g.RequestModel != "" {
			attrs = append(attrs, slog.String("request_model", g.RequestModel))
		}
		if g.ResponseModel != "" {
			attrs = append(attrs, slog.String("response_model", g.ResponseModel))
		}
		if g.Usage != "" {
			attrs = append(attrs, slog.String("usage", g.Usage))
		}
		if g.Usage == usageReported {
			attrs = append(attrs, slog.Int64("input_tokens", g.InputTokens), slog.Int64("output_tokens", g.OutputTokens))
		}
		if g.TimeToFirstToken > 0 {
			attrs = append(attrs, slog.Float64("first_token_ms", float64(g.TimeToFirstToken.Microseconds())/1000))
		}
	}
	if !t.cfg.HighBusinessImpact {
		if q := t.redactQuery(query); q != "" {
			attrs = append(attrs, slog.String("query", q))
		}
		attrs = append(attrs, slog.String("client", string(r.client)), slog.String("user_agent", string(r.userAgent)))
	}
	t.accessLog.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs...)
}

// normalMethod keeps the standard methods and folds anything else into _OTHER, so a client cannot
// grow the metrics' label values.
func normalMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "PATCH":
		return "PATCH"
	case "HEAD":
		return "HEAD"
	case "OPTIONS":
		return "OPTIONS"
	}
	return "_OTHER"
}

func splitTarget(target []byte) (path, query string) {
	s := string(target)
	path, query, _ = strings.Cut(s, "?")
	return path, query
}

func portOf(hostport string) int {
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		n, _ := strconv.Atoi(hostport[i+1:])
		return n
	}
	return 0
}

// hostOnly is the host of a Host value, without port or IPv6 brackets.
func hostOnly(hostport string) string {
	// Without a colon there is no port, and net.SplitHostPort would allocate the error saying so.
	if strings.IndexByte(hostport, ':') >= 0 {
		if h, _, err := net.SplitHostPort(hostport); err == nil {
			return h
		}
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// redactQuery replaces the values of sensitive parameters with REDACTED, keeping the rest as sent.
func (t *Telemetry) redactQuery(q string) string {
	if redacted, ok := t.appendRedactedQuery(nil, q); ok {
		return string(redacted)
	}
	return q
}

// appendRedactedQuery appends q to dst with the values of sensitive parameters replaced by
// REDACTED and the rest as sent, and returns true; when no parameter is sensitive it appends
// nothing and returns false, q being its own redacted form. It allocates nothing but dst's growth
// (and url.QueryUnescape's result for a parameter with an escape in it).
func (t *Telemetry) appendRedactedQuery(dst []byte, q string) ([]byte, bool) {
	if q == "" {
		return dst, false
	}
	redacted := false
	for start := 0; ; {
		p, _, more := strings.Cut(q[start:], "&")
		if t.sensitive(p) {
			if !redacted {
				dst = append(dst, q[:start]...) // the parameters before this one, as sent
				redacted = true
			}
			if name, _, hasValue := strings.Cut(p, "="); hasValue && !holdsCredential(name) {
				dst = append(dst, name...)
				dst = append(dst, "=REDACTED"...)
			} else {
				dst = append(dst, "REDACTED"...)
			}
		} else if redacted {
			dst = append(dst, p...)
		}
		if !more {
			return dst, redacted
		}
		if redacted {
			dst = append(dst, '&')
		}
		start += len(p) + 1
	}
}

// sensitive says whether the query parameter p ("name=value", or a bare "name") must be redacted:
// its name is one of redact_query_params, or it holds a credential, as sent or decoded.
func (t *Telemetry) sensitive(p string) bool {
	name, _, _ := strings.Cut(p, "=")
	if !strings.ContainsAny(p, "%+") { // nothing to decode: p reads the same to the model
		return t.redactedName(name) || looksLikeCredential(p)
	}
	plainName, plain := name, p // as the model's framework will read them
	if u, err := url.QueryUnescape(name); err == nil {
		plainName = u
	}
	if u, err := url.QueryUnescape(p); err == nil {
		plain = u
	}
	return t.redactedName(plainName) || looksLikeCredential(p) || looksLikeCredential(plain)
}

// redactedName says whether name is one of redact_query_params, without regard to case. A short
// ASCII name is lowered on the stack, which the map lookup does not copy.
func (t *Telemetry) redactedName(name string) bool {
	var lower [64]byte
	if len(name) > len(lower) {
		return t.redact[strings.ToLower(name)]
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= utf8.RuneSelf:
			return t.redact[strings.ToLower(name)]
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return t.redact[string(lower[:len(name)])]
}

// looksLikeCredential catches a scoregate key or a JWT in any query value, whatever its name.
func looksLikeCredential(s string) bool {
	return strings.Contains(s, "sgk_") || strings.Contains(s, "sgp_") || strings.Contains(s, "eyJ")
}

package telemetry

import (
	"strconv"
	"strings"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// scopeName is the instrumentation scope of every span.
const scopeName = "github.com/scoregate/scoregate/telemetry"

// otlpBatch is the batch of spans for the library's OTLP client (grpc), written straight into the
// OTLP protobuf messages the client marshals, without the SDK's span in between. It holds the
// batch's Records rather than copies of their contents: the messages' string values point into
// the Records' buffers, so a Record goes back to the pool only once the upload that carried it
// has returned. Every message is allocated once and refilled from batch to batch. Only the
// recorder goroutine uses it.
type otlpBatch struct {
	records []*Record
	spans   []*otlpSpan     // spans[i] is records[i]'s span; grown to the largest batch seen
	ptrs    []*tracepb.Span // the first len(records) of spans, as ScopeSpans.Spans takes them
	scope   *tracepb.ScopeSpans
	upload  []*tracepb.ResourceSpans // the gateway's resource, with the one scope
}

func newOTLPBatch(res *resource.Resource) *otlpBatch {
	b := &otlpBatch{
		records: make([]*Record, 0, batchSize),
		scope:   &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: scopeName}},
	}
	b.upload = []*tracepb.ResourceSpans{{
		Resource:   otlpResource(res),
		ScopeSpans: []*tracepb.ScopeSpans{b.scope},
		SchemaUrl:  res.SchemaURL(),
	}}
	return b
}

// add holds r until the batch has been uploaded.
func (b *otlpBatch) add(r *Record) { b.records = append(b.records, r) }

// build writes the held Records' spans into the batch's messages and returns them for
// otlptrace.Client.UploadTraces. They stay valid until release.
func (b *otlpBatch) build(t *Telemetry) []*tracepb.ResourceSpans {
	for len(b.spans) < len(b.records) {
		s := newOTLPSpan()
		b.spans = append(b.spans, s)
		b.ptrs = append(b.ptrs, &s.span)
	}
	for i, r := range b.records {
		t.fillOTLP(b.spans[i], r)
	}
	b.scope.Spans = b.ptrs[:len(b.records)]
	return b.upload
}

// release hands the Records back to the pool, once what build returned is no longer in use.
func (b *otlpBatch) release(t *Telemetry) {
	for _, r := range b.records {
		t.put(r)
	}
	clear(b.records)
	b.records = b.records[:0]
	b.scope.Spans = nil
}

// plainMaxAttrs is the most attributes the span of a request other than a language-model call
// has (span's full list: no high_business_impact, a port, a query, an upstream, a streamed
// answer, a deployment, an unknown method, a gRPC call and a caller); otlpMaxAttrs the most any
// span has, a language-model call's.
const (
	plainMaxAttrs = 33
	otlpMaxAttrs  = plainMaxAttrs + genAIMaxAttrs
)

// otlpSpan is one span's messages: the span, its status and its attributes, each attribute's
// KeyValue, AnyValue and oneof wrapper allocated once, in place.
type otlpSpan struct {
	span    tracepb.Span
	status  tracepb.Status
	link    tracepb.Span_Link
	links   [1]*tracepb.Span_Link
	attrs   [otlpMaxAttrs]*commonpb.KeyValue
	kvs     [otlpMaxAttrs]commonpb.KeyValue
	values  [otlpMaxAttrs]commonpb.AnyValue
	strs    [otlpMaxAttrs]commonpb.AnyValue_StringValue
	ints    [otlpMaxAttrs]commonpb.AnyValue_IntValue
	doubles [otlpMaxAttrs]commonpb.AnyValue_DoubleValue
	bools   [otlpMaxAttrs]commonpb.AnyValue_BoolValue
	n       int // attributes set
}

func newOTLPSpan() *otlpSpan {
	s := &otlpSpan{}
	for i := range s.kvs {
		s.attrs[i] = &s.kvs[i]
		s.kvs[i].Value = &s.values[i]
	}
	s.span.Kind = tracepb.Span_SPAN_KIND_SERVER
	s.span.Status = &s.status
	s.links[0] = &s.link
	return s
}

func (s *otlpSpan) str(key, v string) {
	s.kvs[s.n].Key = key
	s.strs[s.n].StringValue = v
	s.values[s.n].Value = &s.strs[s.n]
	s.n++
}

func (s *otlpSpan) int(key string, v int64) {
	s.kvs[s.n].Key = key
	s.ints[s.n].IntValue = v
	s.values[s.n].Value = &s.ints[s.n]
	s.n++
}

func (s *otlpSpan) bool(key string, v bool) {
	s.kvs[s.n].Key = key
	s.bools[s.n].BoolValue = v
	s.values[s.n].Value = &s.bools[s.n]
	s.n++
}

func (s *otlpSpan) double(key string, v float64) {
	s.kvs[s.n].Key = key
	s.doubles[s.n].DoubleValue = v
	s.values[s.n].Value = &s.doubles[s.n]
	s.n++
}

// fillOTLP writes r's span into s: the span t.span(r) makes, as the OTLP exporter would encode it,
// field for field and attribute for attribute (TestOTLPMatchesSDK holds the two together). String
// values are constants or point into r's buffers; the ones built from several pieces (a redacted
// query, RequestUrl, StatusCode, the tracestate) are built in r.spanBuf.
func (t *Telemetry) fillOTLP(s *otlpSpan, r *Record) {
	method := normalMethod(r.method)
	path, query, _ := strings.Cut(unsafeString(r.target), "?")
	host := unsafeString(r.host)

	buf := r.spanBuf[:0]
	if redacted, ok := t.appendRedactedQuery(buf, query); ok {
		buf, query = redacted, unsafeString(redacted)
	}
	start := len(buf)
	buf = append(buf, r.scheme()...)
	buf = append(buf, "://"...)
	buf = append(buf, host...)
	buf = append(buf, path...)
	if query != "" && !t.cfg.HighBusinessImpact {
		buf = append(buf, '?')
		buf = append(buf, query...)
	}
	requestURL := unsafeString(buf[start:])
	start = len(buf)
	buf = strconv.AppendInt(buf, int64(r.status), 10)
	statusCode := unsafeString(buf[start:])
	start = len(buf)
	buf = appendTraceState(buf, r.tracestate)
	traceState := unsafeString(buf[start:])
	r.spanBuf = buf // strings taken before a reallocation keep the old array, which nothing writes

	s.n = 0
	s.str("http.request.method", method)
	s.str("url.scheme", r.scheme())
	s.str("url.path", path)
	s.str("http.route", Route)
	s.int("http.response.status_code", int64(r.status))
	s.str("server.address", hostOnly(host))
	s.str("HTTPMethod", method)
	s.str("ComputeType", t.computeType)
	s.str("RequestUrl", requestURL)
	s.str("StatusCode", statusCode)
	s.str("RequestId", unsafeString(r.requestID))
	s.double("Duration", float64(r.duration.Microseconds())/1000)
	s.str("scoregate.service", r.Service)
	s.str("scoregate.auth_mode", r.Auth)
	s.str("scoregate.outcome", r.Reason)
	if port := portOf(host); port > 0 {
		s.int("server.port", int64(port))
	}
	if !t.cfg.HighBusinessImpact {
		ua := unsafeString(r.userAgent)
		s.str("user_agent.original", ua)
		s.str("UserAgent", ua)
		s.str("client.address", unsafeString(r.client))
		if query != "" {
			s.str("url.query", query)
		}
	}
	if r.Upstream != "" {
		s.str("scoregate.upstream.address", r.Upstream)
		s.double("scoregate.upstream.duration_ms", float64(r.upstreamDur.Microseconds())/1000)
	}
	if r.Stream {
		s.bool("scoregate.stream", true)
		s.double("scoregate.upstream.first_byte_ms", float64(r.FirstByte.Microseconds())/1000)
	}
	if r.Deployment != "" {
		s.str("scoregate.deployment", r.Deployment)
		s.double("scoregate.queue_wait_ms", float64(r.QueueWait.Microseconds())/1000)
	}
	if r.RPCService != "" {
		s.str("rpc.system", "grpc")
		s.str("rpc.service", r.RPCService)
		s.str("rpc.method", r.RPCMethod)
		s.int("rpc.grpc.status_code", int64(r.GRPCStatus))
	}
	if r.Caller != "" {
		s.str(attrEndUser, r.Caller)
	}
	if r.GenAI.Operation != "" {
		s.genAI(&r.GenAI)
	}
	if method == "_OTHER" {
		orig := r.method
		if len(orig) > 32 {
			orig = orig[:32]
		}
		s.str("http.request.method_original", unsafeString(orig))
	}

	sp := &s.span
	sp.Name = spanName(method)
	sp.Attributes = s.attrs[:s.n]
	sp.TraceId = r.traceID[:]
	sp.SpanId = r.spanID[:]
	sp.TraceState = traceState
	// The low 8 bits are the W3C trace flags; the exporter always says whether the parent is remote.
	sp.Flags = uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if r.sampled {
		sp.Flags |= uint32(trace.FlagsSampled)
	}
	sp.ParentSpanId = nil
	if r.hasParent {
		sp.ParentSpanId = r.parentID[:]
		sp.Flags |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	sp.Links = nil
	if r.hasLink {
		s.link.TraceId, s.link.SpanId = r.linkTraceID[:], r.linkSpanID[:]
		s.link.Flags = uint32(r.linkFlags) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK) |
			uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
		sp.Links = s.links[:]
	}
	sp.StartTimeUnixNano = uint64(max(0, r.start.UnixNano()))
	sp.EndTimeUnixNano = uint64(max(0, r.start.Add(r.duration).UnixNano()))
	s.status.Code, s.status.Message = tracepb.Status_STATUS_CODE_UNSET, ""
	if r.status >= 500 {
		s.status.Code, s.status.Message = tracepb.Status_STATUS_CODE_ERROR, r.Reason
	}
}

// spanName is the span's name for a method normalMethod returned, without building it.
func spanName(method string) string {
	switch method {
	case "GET":
		return "GET " + Route
	case "POST":
		return "POST " + Route
	case "PUT":
		return "PUT " + Route
	case "DELETE":
		return "DELETE " + Route
	case "PATCH":
		return "PATCH " + Route
	case "HEAD":
		return "HEAD " + Route
	case "OPTIONS":
		return "OPTIONS " + Route
	}
	return "HTTP " + Route // semantic conventions: "HTTP" for a method outside the standard set
}

// appendTraceState appends the incoming tracestate as the SDK span carries it: parsed by
// trace.ParseTraceState (an invalid one is dropped whole) and written back as its String method
// writes it, without the copies. Parsing allocates the member list.
func appendTraceState(dst, raw []byte) []byte {
	if len(raw) == 0 {
		return dst
	}
	ts, err := trace.ParseTraceState(unsafeString(raw))
	if err != nil {
		return dst
	}
	first := true
	ts.Walk(func(key, value string) bool {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, key...)
		dst = append(dst, '=')
		dst = append(dst, value...)
		return true
	})
	return dst
}

// unsafeString is b as a string, without a copy. b must not change while the string is in use:
// the OTLP batch's strings point into its Records' buffers, and those are written again only once
// the Record is back from the pool, after the upload that carried it has returned
// (otlpBatch.release).
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// otlpResource is res as the OTLP exporter encodes it, converted once.
func otlpResource(res *resource.Resource) *resourcepb.Resource {
	out := &resourcepb.Resource{}
	for iter := res.Iter(); iter.Next(); {
		kv := iter.Attribute()
		out.Attributes = append(out.Attributes, &commonpb.KeyValue{Key: string(kv.Key), Value: otlpValue(kv.Value)})
	}
	return out
}

// otlpValue converts the scalar attribute values a resource holds. newResource's resources hold
// strings only (service.name, telemetry.sdk.*, and OTEL_RESOURCE_ATTRIBUTES, whose values are
// strings); any other kind is written as its string form.
func otlpValue(v attribute.Value) *commonpb.AnyValue {
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	case attribute.STRING:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.AsString()}}
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.String()}}
}

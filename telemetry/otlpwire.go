package telemetry

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/sdk/resource"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// spanEncoder writes an OTLP ExportTraceServiceRequest in the protobuf wire format, span by span,
// straight from the Records: the bytes proto.Marshal writes for the messages the library's
// exporter makes of span's SDK spans (TestOTLPWireMatchesSDK holds them together), without the
// messages. The request is one ResourceSpans (the gateway's resource, encoded once) holding one
// ScopeSpans (the scope, encoded once) holding the spans.
//
// The spans are written after room left for the fields that come before them, whose lengths are
// known only once the batch is complete; request writes those fields into the end of that room,
// so the body is never copied. A string that is not valid UTF-8 (a header a client sent) is
// written with its invalid bytes replaced by U+FFFD, where proto.Marshal would refuse the whole
// batch and a collector would reject it.
type spanEncoder struct {
	buf   []byte // room, then the spans added since the last reset (then, after request, the schema)
	room  int    // the room before the first span
	end   int    // the end of the last span
	spans int    // spans in buf

	resource []byte // ResourceSpans.resource, tag and length included
	scope    []byte // ScopeSpans.scope, tag and length included
	schema   []byte // ResourceSpans.schema_url, tag and length included; empty without a schema
	head     []byte // the fields before the first span, as request writes them

	query, url, scratch []byte // the span's values built from pieces
}

// Field tags: field number << 3 | wire type. Every field number below 16 makes a one-byte tag.
const (
	tagResourceSpans = 1<<3 | byte(protowire.BytesType) // ExportTraceServiceRequest.resource_spans
	tagScopeSpans    = 2<<3 | byte(protowire.BytesType) // ResourceSpans.scope_spans
	tagSpan          = 2<<3 | byte(protowire.BytesType) // ScopeSpans.spans

	tagTraceID      = 1<<3 | byte(protowire.BytesType)
	tagSpanID       = 2<<3 | byte(protowire.BytesType)
	tagTraceState   = 3<<3 | byte(protowire.BytesType)
	tagParentSpanID = 4<<3 | byte(protowire.BytesType)
	tagName         = 5<<3 | byte(protowire.BytesType)
	tagKind         = 6<<3 | byte(protowire.VarintType)
	tagStartTime    = 7<<3 | byte(protowire.Fixed64Type)
	tagEndTime      = 8<<3 | byte(protowire.Fixed64Type)
	tagAttribute    = 9<<3 | byte(protowire.BytesType)
	tagLink         = 13<<3 | byte(protowire.BytesType)
	tagStatus       = 15<<3 | byte(protowire.BytesType)
	// Span.flags is field 16, fixed32: its tag is the two-byte varint of 16<<3|5.
	tagFlags0, tagFlags1 = 0x85, 0x01

	// Span.Link: trace_id and span_id as in Span, flags (field 6, fixed32).
	tagLinkFlags = 6<<3 | byte(protowire.Fixed32Type)

	tagStatusMessage = 2<<3 | byte(protowire.BytesType)
	tagStatusCode    = 3<<3 | byte(protowire.VarintType)

	tagKey         = 1<<3 | byte(protowire.BytesType) // KeyValue.key
	tagValue       = 2<<3 | byte(protowire.BytesType) // KeyValue.value
	tagStringValue = 1<<3 | byte(protowire.BytesType) // AnyValue.string_value
	tagBoolValue   = 2<<3 | byte(protowire.VarintType)
	tagIntValue    = 3<<3 | byte(protowire.VarintType)
	tagDoubleValue = 4<<3 | byte(protowire.Fixed64Type)
)

func newSpanEncoder(res *resource.Resource) (spanEncoder, error) {
	resMsg, err := proto.Marshal(otlpResource(res))
	if err != nil {
		return spanEncoder{}, err
	}
	scopeMsg, err := proto.Marshal(&commonpb.InstrumentationScope{Name: scopeName})
	if err != nil {
		return spanEncoder{}, err
	}
	e := spanEncoder{
		resource: protowire.AppendBytes([]byte{1<<3 | byte(protowire.BytesType)}, resMsg),
		scope:    protowire.AppendBytes([]byte{1<<3 | byte(protowire.BytesType)}, scopeMsg),
	}
	if s := res.SchemaURL(); s != "" {
		e.schema = protowire.AppendString([]byte{3<<3 | byte(protowire.BytesType)}, s)
	}
	// Each of the two lengths before the spans takes at most 10 bytes.
	e.room = 1 + protowire.SizeVarint(math.MaxUint64) + len(e.resource) + 1 + protowire.SizeVarint(math.MaxUint64) + len(e.scope)
	e.buf = make([]byte, e.room)
	e.end = e.room
	return e, nil
}

// request completes the batch and returns it, valid until reset.
func (e *spanEncoder) request() []byte {
	scopeSpans := len(e.scope) + e.end - e.room
	resourceSpans := len(e.resource) + 1 + protowire.SizeVarint(uint64(scopeSpans)) + scopeSpans + len(e.schema)
	e.buf = append(e.buf[:e.end], e.schema...)
	h := append(e.head[:0], tagResourceSpans)
	h = protowire.AppendVarint(h, uint64(resourceSpans))
	h = append(h, e.resource...)
	h = append(h, tagScopeSpans)
	h = protowire.AppendVarint(h, uint64(scopeSpans))
	h = append(h, e.scope...)
	e.head = h
	start := e.room - len(h)
	copy(e.buf[start:], h)
	return e.buf[start:]
}

// reset empties the batch.
func (e *spanEncoder) reset() {
	if cap(e.buf) > otlpMaxBuffer {
		e.buf = make([]byte, e.room)
	}
	e.buf, e.end = e.buf[:e.room], e.room
	e.spans = 0
}

// add writes r's span: the span t.span(r) makes, field for field and attribute for attribute, in
// the order proto.Marshal writes them (by field number; zero scalars left out; Status always there).
// The values a client or a model chose are those boundChosenValues left, valid UTF-8.
func (e *spanEncoder) add(t *Telemetry, r *Record) {
	if !validRecord(r) {
		r = sanitized(r)
	}
	method := normalMethod(r.method)
	path, query, _ := strings.Cut(unsafeString(r.target), "?")
	host := unsafeString(r.host)
	if redacted, ok := t.appendRedactedQuery(e.query[:0], query); ok {
		e.query, query = redacted, unsafeString(redacted)
	}
	scheme := r.scheme()
	u := append(e.url[:0], scheme...)
	u = append(u, "://"...)
	u = append(u, host...)
	u = append(u, path...)
	if query != "" && !t.cfg.HighBusinessImpact {
		u = append(u, '?')
		u = append(u, query...)
	}
	e.url = u

	b := append(e.buf[:e.end], tagSpan, 0, 0) // two bytes for the span's length, the usual size
	start := len(b)
	b = append(b, tagTraceID, byte(len(r.traceID)))
	b = append(b, r.traceID[:]...)
	b = append(b, tagSpanID, byte(len(r.spanID)))
	b = append(b, r.spanID[:]...)
	if len(r.tracestate) > 0 {
		if e.scratch = appendTraceState(e.scratch[:0], r.tracestate); len(e.scratch) > 0 {
			b = appendString(b, tagTraceState, unsafeString(e.scratch))
		}
	}
	if r.hasParent {
		b = append(b, tagParentSpanID, byte(len(r.parentID)))
		b = append(b, r.parentID[:]...)
	}
	b = appendString(b, tagName, spanName(method))
	b = append(b, tagKind, byte(tracepb.Span_SPAN_KIND_SERVER))
	if ns := uint64(max(0, r.start.UnixNano())); ns != 0 {
		b = protowire.AppendFixed64(append(b, tagStartTime), ns)
	}
	if ns := uint64(max(0, r.start.Add(r.duration).UnixNano())); ns != 0 {
		b = protowire.AppendFixed64(append(b, tagEndTime), ns)
	}

	b = appendStringAttr(b, "http.request.method", method)
	b = appendStringAttr(b, "url.scheme", scheme)
	b = appendStringAttr(b, "url.path", path)
	b = appendStringAttr(b, "http.route", Route)
	b = appendIntAttr(b, "http.response.status_code", int64(r.status))
	b = appendStringAttr(b, "server.address", hostOnly(host))
	b = appendStringAttr(b, "HTTPMethod", method)
	b = appendStringAttr(b, "ComputeType", t.computeType)
	b = appendStringAttr(b, "RequestUrl", unsafeString(e.url))
	var digits [20]byte
	b = appendStringAttr(b, "StatusCode", unsafeString(strconv.AppendInt(digits[:0], int64(r.status), 10)))
	b = appendStringAttr(b, "RequestId", unsafeString(r.requestID))
	b = appendDoubleAttr(b, "Duration", float64(r.duration.Microseconds())/1000)
	b = appendStringAttr(b, "scoregate.service", r.Service)
	b = appendStringAttr(b, "scoregate.auth_mode", r.Auth)
	b = appendStringAttr(b, "scoregate.outcome", r.Reason)
	if port := portOf(host); port > 0 {
		b = appendIntAttr(b, "server.port", int64(port))
	}
	if !t.cfg.HighBusinessImpact {
		ua := unsafeString(r.userAgent)
		b = appendStringAttr(b, "user_agent.original", ua)
		b = appendStringAttr(b, "UserAgent", ua)
		b = appendStringAttr(b, "client.address", unsafeString(r.client))
		if query != "" {
			b = appendStringAttr(b, "url.query", query)
		}
	}
	if r.Upstream != "" {
		b = appendStringAttr(b, "scoregate.upstream.address", r.Upstream)
		b = appendDoubleAttr(b, "scoregate.upstream.duration_ms", float64(r.upstreamDur.Microseconds())/1000)
	}
	if r.Stream {
		b = appendBoolAttr(b, "scoregate.stream", true)
		b = appendDoubleAttr(b, "scoregate.upstream.first_byte_ms", float64(r.FirstByte.Microseconds())/1000)
	}
	if r.Deployment != "" {
		b = appendStringAttr(b, "scoregate.deployment", r.Deployment)
		b = appendDoubleAttr(b, "scoregate.queue_wait_ms", float64(r.QueueWait.Microseconds())/1000)
	}
	if r.RPCService != "" {
		b = appendStringAttr(b, "rpc.system", "grpc")
		b = appendStringAttr(b, "rpc.service", validUTF8(r.RPCService))
		b = appendStringAttr(b, "rpc.method", validUTF8(r.RPCMethod))
		b = appendIntAttr(b, "rpc.grpc.status_code", int64(r.GRPCStatus))
	}
	if r.Caller != "" {
		b = appendStringAttr(b, attrEndUser, r.Caller)
	}
	if r.GenAI.Operation != "" {
		b = appendGenAIWire(b, &r.GenAI)
	}
	if method == "_OTHER" {
		orig := r.method
		if len(orig) > 32 {
			orig = orig[:32]
		}
		b = appendStringAttr(b, "http.request.method_original", validUTF8(unsafeString(orig))) // cut in a rune?
	}

	if r.hasLink {
		// Links (field 13) come after the attributes, before the status.
		const size = 2 + 16 + 2 + 8 + 5
		b = append(b, tagLink, size, tagTraceID, byte(len(r.linkTraceID)))
		b = append(b, r.linkTraceID[:]...)
		b = append(b, tagSpanID, byte(len(r.linkSpanID)))
		b = append(b, r.linkSpanID[:]...)
		flags := uint32(r.linkFlags) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK) |
			uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
		b = protowire.AppendFixed32(append(b, tagLinkFlags), flags)
	}

	// Status: the message, then the code, each left out when empty; the message itself always.
	if r.status >= 500 {
		msg := r.Reason
		size := 2 // the code
		if msg != "" {
			size += 1 + protowire.SizeBytes(len(msg))
		}
		b = protowire.AppendVarint(append(b, tagStatus), uint64(size))
		if msg != "" {
			b = protowire.AppendString(append(b, tagStatusMessage), msg)
		}
		b = append(b, tagStatusCode, byte(tracepb.Status_STATUS_CODE_ERROR))
	} else {
		b = append(b, tagStatus, 0)
	}
	// The low 8 bits are the W3C trace flags; the exporter always says whether the parent is remote.
	flags := uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if r.sampled {
		flags |= 1 // trace.FlagsSampled
	}
	if r.hasParent {
		flags |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	b = protowire.AppendFixed32(append(b, tagFlags0, tagFlags1), flags)

	e.buf = setLength(b, start)
	e.end = len(e.buf)
	e.spans++
}

// setLength writes the length of the message b[start:] into the two bytes left for it before
// start, moving the message when its length takes another number of bytes.
func setLength(b []byte, start int) []byte {
	n := len(b) - start
	size := protowire.SizeVarint(uint64(n))
	if size != 2 {
		end := len(b)
		if size > 2 {
			b = append(b, make([]byte, size-2)...)
		}
		copy(b[start-2+size:], b[start:end])
		b = b[:start-2+size+n]
	}
	protowire.AppendVarint(b[:start-2], uint64(n))
	return b
}

// validRecord says whether every string a span takes from r is valid UTF-8, as a proto3 string
// must be. The values built from them are, then: they are cut and joined at ASCII bytes.
func validRecord(r *Record) bool {
	if ascii(r.target) && ascii(r.host) && ascii(r.userAgent) && ascii(r.client) && ascii(r.requestID) &&
		ascii(r.method) && asciiString(r.Service) && asciiString(r.Auth) && asciiString(r.Reason) &&
		asciiString(r.Upstream) && asciiString(r.Deployment) {
		return true // the usual case, found faster
	}
	return utf8.Valid(r.target) && utf8.Valid(r.host) && utf8.Valid(r.userAgent) && utf8.Valid(r.client) &&
		utf8.Valid(r.requestID) && utf8.Valid(r.method) && utf8.ValidString(r.Service) && utf8.ValidString(r.Auth) &&
		utf8.ValidString(r.Reason) && utf8.ValidString(r.Upstream) && utf8.ValidString(r.Deployment)
}

// ascii says whether b is all ASCII, eight bytes at a time.
func ascii(b []byte) bool {
	var or uint64
	for len(b) >= 8 {
		or |= binary.LittleEndian.Uint64(b)
		b = b[8:]
	}
	for _, c := range b {
		or |= uint64(c)
	}
	return or&0x8080808080808080 == 0
}

func asciiString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// sanitized is a copy of r whose strings have each run of invalid UTF-8 replaced by U+FFFD.
func sanitized(r *Record) *Record {
	c := *r
	fix := func(b []byte) []byte { return bytes.ToValidUTF8(b, []byte("\uFFFD")) }
	c.target, c.host, c.userAgent, c.client, c.requestID, c.method = fix(r.target), fix(r.host), fix(r.userAgent),
		fix(r.client), fix(r.requestID), fix(r.method)
	c.Service, c.Auth, c.Reason, c.Upstream, c.Deployment = validUTF8(r.Service), validUTF8(r.Auth), validUTF8(r.Reason),
		validUTF8(r.Upstream), validUTF8(r.Deployment)
	return &c
}

// appendString appends a string field.
func appendString(b []byte, tag byte, s string) []byte {
	return protowire.AppendString(append(b, tag), s)
}

// appendStringAttr appends a Span.attributes KeyValue{key, AnyValue{string_value: v}}. The key
// is one of span's names, all shorter than 128 bytes.
func appendStringAttr(b []byte, key, v string) []byte {
	if kv := 2 + len(key) + 2 + 2 + len(v); kv < 128 { // every length one byte: the usual case
		b = append(b, tagAttribute, byte(kv), tagKey, byte(len(key)))
		b = append(b, key...)
		b = append(b, tagValue, byte(2+len(v)), tagStringValue, byte(len(v)))
		return append(b, v...)
	}
	value := 1 + protowire.SizeBytes(len(v))
	b = append(b, tagAttribute)
	b = protowire.AppendVarint(b, uint64(2+len(key)+1+protowire.SizeBytes(value)))
	b = append(b, tagKey, byte(len(key)))
	b = append(b, key...)
	b = append(b, tagValue)
	b = protowire.AppendVarint(b, uint64(value))
	return protowire.AppendString(append(b, tagStringValue), v)
}

// appendIntAttr appends a KeyValue{key, AnyValue{int_value: v}}.
func appendIntAttr(b []byte, key string, v int64) []byte {
	value := 1 + protowire.SizeVarint(uint64(v))
	b = append(b, tagAttribute, byte(2+len(key)+2+value), tagKey, byte(len(key)))
	b = append(b, key...)
	b = append(b, tagValue, byte(value), tagIntValue)
	return protowire.AppendVarint(b, uint64(v))
}

// appendBoolAttr appends a KeyValue{key, AnyValue{bool_value: v}}.
func appendBoolAttr(b []byte, key string, v bool) []byte {
	b = append(b, tagAttribute, byte(2+len(key)+2+2), tagKey, byte(len(key)))
	b = append(b, key...)
	b = append(b, tagValue, 2, tagBoolValue)
	return protowire.AppendVarint(b, protowire.EncodeBool(v))
}

// appendDoubleAttr appends a KeyValue{key, AnyValue{double_value: v}}.
func appendDoubleAttr(b []byte, key string, v float64) []byte {
	b = append(b, tagAttribute, byte(2+len(key)+2+9), tagKey, byte(len(key)))
	b = append(b, key...)
	b = append(b, tagValue, 9, tagDoubleValue)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// validUTF8 is s, or s with each run of invalid bytes replaced by U+FFFD.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

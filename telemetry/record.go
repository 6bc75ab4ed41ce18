package telemetry

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"time"
)

// Record is what the gateway notes of one request while it handles it. The request path fills it
// with plain values (bytes are copied into buffers the Record owns and reuses), then End hands it
// to the background recorder, which turns it into a span, metrics and an access-log line. A
// Record must not be touched after End.
type Record struct {
	t     *Telemetry
	start time.Time

	method, target, userAgent, host, client, requestID, tracestate []byte
	// spanBuf holds the span's values built from several pieces, for the OTLP batch (fillOTLP).
	spanBuf []byte

	traceID   [16]byte
	spanID    [8]byte
	parentID  [8]byte
	hasParent bool
	sampled   bool
	// The client's trace context under telemetry.public_endpoint: the span's one link.
	linkTraceID [16]byte
	linkSpanID  [8]byte
	linkFlags   byte
	hasLink     bool

	// Service is the service's name ("" when no service matched). Static strings only.
	Service string
	// Auth is the service's auth mode.
	Auth string
	// Reason is a low-cardinality outcome code: "ok", or why the request was refused or failed.
	Reason string
	// Upstream is the model's host:port, when the request was forwarded.
	Upstream string
	// Deployment is the deployment that took the request, when it was forwarded.
	Deployment string
	// QueueWait is how long the request waited for a replica.
	QueueWait time.Duration
	// TLS is true for a request that came over HTTPS.
	TLS bool
	// RPCService and RPCMethod name the gRPC service and method of a gRPC call ("" for any other
	// request); the span then carries rpc.system "grpc", rpc.service, rpc.method and
	// rpc.grpc.status_code (GRPCStatus). One that holds a key or a JWT is recorded as REDACTED.
	RPCService, RPCMethod string
	// GRPCStatus is the gRPC status code of a gRPC call's answer.
	GRPCStatus int
	// Stream is true for a request whose answer was streamed to the client as the model wrote
	// it; the record then ends when the stream ends, and Duration covers the whole stream.
	Stream bool
	// FirstByte is how long after the call to the model began the first byte of a streamed
	// answer's body arrived (0 when none did); see MarkFirstByte.
	FirstByte time.Duration
	// Caller names who called, once authenticated: "key:<key id>" or "principal:<name>", never
	// the credential. "" before authentication or when it failed.
	Caller string
	// GenAI is what a language-model call (a service with api: openai) adds; its Operation is
	// "" for every other request.
	GenAI GenAI

	upstreamStart time.Time
	upstreamDur   time.Duration
	status        int
	duration      time.Duration
}

// GenAI is the usage and models of one language-model call, after the OpenTelemetry GenAI
// semantic conventions (gen_ai.*).
type GenAI struct {
	// Operation is gen_ai.operation.name: "chat" (chat completions and the Responses API, as
	// the conventions name both), "text_completion" or "embeddings"; "" when the request is not
	// a language-model call.
	Operation string
	// RequestModel and ResponseModel are gen_ai.request.model (the request body's "model") and
	// gen_ai.response.model (the answer's).
	RequestModel, ResponseModel string
	// InputTokens and OutputTokens are the model's own counts (gen_ai.usage.input_tokens and
	// gen_ai.usage.output_tokens), meaningful only when Usage is "reported".
	InputTokens, OutputTokens int64
	// Usage says where the counts come from: "reported" (the model's answer gave them), or why
	// there are none: "missing" (the answer had no usage), "unparsable", "cut" (the answer
	// ended early). Counts are never guessed.
	Usage string
	// TimeToFirstToken is how long after the call to the model began the first token of a
	// streamed answer arrived (0 for an answer that was not streamed).
	TimeToFirstToken time.Duration
}

// SetRequest copies what the request says of itself. traceparent and tracestate are the incoming
// W3C trace-context headers (nil when absent): a valid traceparent makes this request's span its
// child and decides sampling when it is parent-based; under telemetry.public_endpoint it is not
// trusted: the span starts a new trace, with a link to it, and tracestate is dropped. The
// caller passes a traceparent only when the request had exactly one, and a tracestate already
// cut to W3C's limits. Of an absolute-form target only the path
// and query are kept, and of host nothing up to an "@", so that a userinfo a client put in the
// URL is never recorded. A path segment, query parameter, Host or User-Agent that holds a key or
// a JWT is recorded as REDACTED (see appendRedactedTarget), wherever the client put it.
func (r *Record) SetRequest(method, target, userAgent, host, client, traceparent, tracestate []byte) {
	r.method = append(r.method[:0], method...)
	r.target = appendRedactedTarget(r.target[:0], originForm(target))
	r.userAgent = appendRedacted(r.userAgent[:0], userAgent)
	r.host = appendRedacted(r.host[:0], withoutUserinfo(host))
	r.client = append(r.client[:0], client...)
	r.tracestate = r.tracestate[:0]
	r.hasParent, r.hasLink = false, false
	parentSampled := false
	tid, pid, flags, ok := parseTraceparent(traceparent)
	if ok && r.t.cfg.PublicEndpoint {
		r.linkTraceID, r.linkSpanID, r.linkFlags, r.hasLink = tid, pid, flags, true
		ok = false
	}
	if ok {
		r.traceID, r.parentID, r.hasParent = tid, pid, true
		parentSampled = flags&1 == 1
		r.tracestate = append(r.tracestate, tracestate...)
	} else {
		binary.LittleEndian.PutUint64(r.traceID[:8], rand.Uint64())
		binary.LittleEndian.PutUint64(r.traceID[8:], rand.Uint64())
	}
	binary.LittleEndian.PutUint64(r.spanID[:], rand.Uint64()|1) // never all zeros
	r.sampled = r.t.sampler.sample(r.traceID, r.hasParent, parentSampled)
}

// originForm is the path and query of an absolute-form request target (RFC 9112 §3.2.2):
// "http://user:password@host/path?q" gives "/path?q", so that a userinfo (or another host) in
// the target never reaches a span or the access log. Any other target is returned as it is.
func originForm(target []byte) []byte {
	if len(target) == 0 || target[0] == '/' {
		return target
	}
	i := bytes.Index(target, []byte("://"))
	if i <= 0 {
		return target
	}
	for j, c := range target[:i] { // RFC 3986 §3.1: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
		alpha := c|0x20 >= 'a' && c|0x20 <= 'z'
		if !alpha && (j == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return target
		}
	}
	rest := target[i+3:]
	// The authority, and with it any userinfo, ends at the first "/", "?" or "#" (RFC 3986 §3.2).
	end := bytes.IndexAny(rest, "/?#")
	if end < 0 || rest[end] == '#' {
		return rest[:0]
	}
	return rest[end:]
}

// withoutUserinfo is a Host value without anything up to its last "@": a Host header holds no
// userinfo (RFC 9110 §7.2), so whatever a client put there is dropped rather than recorded.
func withoutUserinfo(host []byte) []byte {
	if i := bytes.LastIndexByte(host, '@'); i >= 0 {
		return host[i+1:]
	}
	return host
}

// SetRequestID records the request id the response carries.
func (r *Record) SetRequestID(id []byte) { r.requestID = append(r.requestID[:0], id...) }

// AppendTraceparent appends the traceparent to send to the model: this request's trace, with the
// gateway's span as the parent.
func (r *Record) AppendTraceparent(dst []byte) []byte {
	dst = append(dst, "00-"...)
	dst = hex.AppendEncode(dst, r.traceID[:])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, r.spanID[:])
	if r.sampled {
		return append(dst, "-01"...)
	}
	return append(dst, "-00"...)
}

// Tracestate is the incoming tracestate, to forward unchanged (nil when there was no valid parent).
func (r *Record) Tracestate() []byte {
	if !r.hasParent {
		return nil // r.tracestate is the reused buffer, empty but not nil
	}
	return r.tracestate
}

// AppendTraceID appends the trace id in hex, for the response.
func (r *Record) AppendTraceID(dst []byte) []byte { return hex.AppendEncode(dst, r.traceID[:]) }

// UpstreamStart marks the call to the model beginning.
func (r *Record) UpstreamStart() { r.upstreamStart = time.Now() }

// MarkFirstByte notes that the first byte of a streamed answer's body arrived, as FirstByte.
func (r *Record) MarkFirstByte() {
	if !r.upstreamStart.IsZero() && r.FirstByte == 0 {
		r.FirstByte = max(time.Since(r.upstreamStart), time.Nanosecond)
	}
}

// UpstreamEnd marks the call to the model over.
func (r *Record) UpstreamEnd() {
	if !r.upstreamStart.IsZero() {
		r.upstreamDur = time.Since(r.upstreamStart)
	}
}

// End closes the record with the response status and hands it to the recorder. It never blocks:
// when the recorder is behind by queue_size requests, the record is dropped and counted.
func (r *Record) End(status int) {
	r.status = status
	r.duration = time.Since(r.start)
	if r.Reason == "" {
		r.Reason = "ok"
	}
	if r.RPCService != "" || r.RPCMethod != "" { // parts of the path the client chose
		r.RPCService, r.RPCMethod = redactedString(r.RPCService), redactedString(r.RPCMethod)
	}
	t := r.t
	t.inflight.Add(-1)
	select {
	case t.queue <- r:
	default:
		t.dropped.Add(1)
		t.put(r)
	}
}

// ValidTraceparent reports whether v is a W3C traceparent the gateway would take as a parent.
func ValidTraceparent(v []byte) bool {
	_, _, _, ok := parseTraceparent(v)
	return ok
}

// parseTraceparent reads a W3C traceparent "vv-<32 hex>-<16 hex>-<2 hex>": version 00 is exactly
// that; a later version may add "-…" after it; version ff and all-zero ids are invalid.
func parseTraceparent(v []byte) (tid [16]byte, pid [8]byte, flags byte, ok bool) {
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return tid, pid, 0, false
	}
	var ver, f [1]byte
	switch {
	case !decodeHex(ver[:], v[0:2]) || ver[0] == 0xff:
		return tid, pid, 0, false
	case ver[0] == 0 && len(v) != 55, len(v) > 55 && v[55] != '-':
		return tid, pid, 0, false
	case !decodeHex(tid[:], v[3:35]) || !decodeHex(pid[:], v[36:52]) || !decodeHex(f[:], v[53:55]):
		return tid, pid, 0, false
	case tid == [16]byte{} || pid == [8]byte{}:
		return tid, pid, 0, false
	}
	return tid, pid, f[0], true
}

// decodeHex decodes lowercase hex (as W3C requires) into dst.
func decodeHex(dst, src []byte) bool {
	if len(src) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := hexValue(src[2*i])
		lo, ok2 := hexValue(src[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func hexValue(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// scheme is the request's URL scheme.
func (r *Record) scheme() string {
	if r.TLS {
		return "https"
	}
	return "http"
}

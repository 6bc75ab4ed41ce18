package proxy

import (
	"crypto/rand"

	"github.com/scoregate/scoregate/telemetry"
)

// Request id headers. Every response carries the id under both names; a valid incoming
// X-Request-Id is kept (so a caller's id follows the request), otherwise the gateway makes one.
// The model receives it as X-Request-Id. A caller's X-Ms-Client-Request-Id is echoed back.
const (
	HeaderRequestID       = "X-Request-Id"
	HeaderMSRequestID     = "X-Ms-Request-Id"
	HeaderClientRequestID = "X-Ms-Client-Request-Id"
)

// requestIDMaxLen bounds an accepted incoming request id.
const requestIDMaxLen = 64

// validRequestID accepts 1 to 64 letters, digits and - _ . : (a UUID, a trace id, a ULID).
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > requestIDMaxLen {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// requestID appends the request's id to dst: incoming, the client's X-Request-Id, when it is
// valid, else a new one. Both listeners choose the id here.
func requestID(incoming, dst []byte) []byte {
	if validRequestID(incoming) {
		return append(dst, incoming...)
	}
	return newRequestID(dst)
}

// idHeader is one request-id header of an answer.
type idHeader struct {
	name  string
	value []byte
}

// answerIDHeaders is the request-id headers an answer carries, on both listeners (the first n
// of ids): the id under both names, the client's X-Ms-Client-Request-Id (clientID) echoed when
// it is valid, and, with telemetry (rec not nil), the trace as a W3C traceresponse, written in
// tp. (An array rather than a callback or an append, so that the HTTP/1.1 path keeps its buffers
// on the stack.)
func answerIDHeaders(tp *[55]byte, id, clientID []byte, rec *telemetry.Record) (ids [4]idHeader, n int) {
	ids[0], ids[1] = idHeader{HeaderRequestID, id}, idHeader{HeaderMSRequestID, id}
	n = 2
	if rec != nil {
		ids[n] = idHeader{headerTraceresponse, rec.AppendTraceparent(tp[:0])}
		n++
	}
	if len(clientID) > 0 && validRequestID(clientID) {
		ids[n] = idHeader{HeaderClientRequestID, clientID}
		n++
	}
	return ids, n
}

// newRequestID appends a random (version 4) UUID to dst.
func newRequestID(dst []byte) []byte {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexDigits = "0123456789abcdef"
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return dst
}

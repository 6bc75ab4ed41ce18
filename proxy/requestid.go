package proxy

import (
	"crypto/rand"
	"sync"

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

// idHeader is one request-id header of an answer: its name, and the name in fasthttp's canonical
// form (headers.go).
type idHeader struct {
	name  string
	key   []byte
	value []byte
}

// answerIDHeaders is the request-id headers an answer carries, on both listeners (the first n
// of ids): the id under both names, the client's X-Ms-Client-Request-Id (clientID) echoed when
// it is valid, and, with telemetry (rec not nil), the trace as a W3C traceresponse, written in
// tp. (An array rather than a callback or an append, so that the HTTP/1.1 path keeps its buffers
// on the stack.)
func answerIDHeaders(tp *[55]byte, id, clientID []byte, rec *telemetry.Record) (ids [4]idHeader, n int) {
	ids[0], ids[1] = idHeader{HeaderRequestID, keyRequestID, id}, idHeader{HeaderMSRequestID, keyMSRequestID, id}
	n = 2
	if rec != nil {
		ids[n] = idHeader{headerTraceresponse, keyTraceresponse, rec.AppendTraceparent(tp[:0])}
		n++
	}
	if len(clientID) > 0 && validRequestID(clientID) {
		ids[n] = idHeader{HeaderClientRequestID, keyClientRequestID, clientID}
		n++
	}
	return ids, n
}

// newRequestID appends a random (version 4) UUID to dst. Its 16 bytes come from crypto/rand, taken
// from a batch (randomBatch) rather than read one id at a time: the same random bytes, fewer reads.
func newRequestID(dst []byte) []byte {
	var b [16]byte
	rb := randomBatches.Get().(*randomBatch) //nolint:forcetypeassert // the pool holds only these
	rb.take(&b)
	randomBatches.Put(rb)
	return appendUUID(dst, &b)
}

// appendUUID appends to dst the version 4 UUID made of b's random bits (b's version and variant
// bits set), in lowercase hex.
func appendUUID(dst []byte, b *[16]byte) []byte {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	id := [36]byte{8: '-', 13: '-', 18: '-', 23: '-'}
	for i, c := range b {
		d := hexPairs[c]
		j := uuidDigits[i]
		id[j], id[j+1] = d[0], d[1]
	}
	return append(dst, id[:]...)
}

// randomBatch is random bytes from crypto/rand, read 4 KB at a time and handed out 16 bytes per
// request id. A batch is used by one goroutine at a time (randomBatches), and the bytes of an id
// are cleared from it once taken, so that no id can be read back from the batch.
type randomBatch struct {
	buf [4096]byte
	off int // the next unused byte; len(buf): used up
}

// randomBatches pools the batches, so that concurrent requests each take from their own.
var randomBatches = sync.Pool{New: func() any { return &randomBatch{off: 4096} }}

// take fills b with the batch's next 16 random bytes, reading a new batch when it is used up.
func (rb *randomBatch) take(b *[16]byte) {
	if rb.off+len(b) > len(rb.buf) {
		rand.Read(rb.buf[:])
		rb.off = 0
	}
	next := rb.buf[rb.off : rb.off+len(b)]
	copy(b[:], next)
	clear(next)
	rb.off += len(b)
}

// hexPairs is each byte's two lowercase hex digits.
var hexPairs = func() (t [256][2]byte) {
	const hexDigits = "0123456789abcdef"
	for i := range t {
		t[i] = [2]byte{hexDigits[i>>4], hexDigits[i&0x0f]}
	}
	return t
}()

// uuidDigits is where each of a UUID's 16 bytes goes in its 36-character form
// (8-4-4-4-12 hex digits, with dashes at 8, 13, 18 and 23).
var uuidDigits = [16]uint8{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/telemetry"
)

// A model's answer is streamed to the client, each piece as soon as it arrives, when the model
// sends it as text/event-stream, chunked, or without a length (until it closes the connection).
// Any other answer is read whole, up to max_response_bytes, before the client sees a byte.
//
// A streamed answer keeps its replica (and its slot of max_concurrent_requests) until it ends.
// scoring_timeout bounds the wait for its headers, stream_idle_timeout each wait for the next
// piece, server.write_timeout the writing of each piece to the client. When the model fails or
// stalls, or the answer grows over max_response_bytes, the client's connection is closed (its
// chunked body is left unfinished, so it sees an error); when the client goes away, the model's
// connection is closed, which cancels the request on the model's side. A stream still open when
// Shutdown's time is up is ended the same way (openStreams).

// exchange is fasthttp's transport for a call to a model: it takes a usable connection, writes
// the request and reads the response headers within the call's timeout (scoring_timeout for a
// scoring call), then reads a body of known length whole (up to max_response_bytes), or, for a
// scoring call (StreamBody set), leaves a streamed one on the connection as a modelStream in the
// response's body stream, for the gateway to adopt.
//
// An answer whose framing is ambiguous (both Content-Length and Transfer-Encoding) or that is
// followed by bytes past its end fails the call, and its connection is closed: what follows
// could otherwise be read as the answer to the next request on it, another client's.
func (t modelTransport) exchange(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	stream := resp.StreamBody
	timeout := req.GetTimeOut()
	if timeout <= 0 {
		timeout = t.headerTimeout
	}
	start := time.Now() // the call's start: its deadline, and the instant a pooled connection is judged at
	deadline := start.Add(timeout)
	connClose := req.ConnectionClose()
	cc, err := hc.AcquireConn(timeout, connClose)
	for err == nil && !t.usable(cc.Conn(), cc.LastUseTime(), start) {
		hc.CloseConn(cc) // idle too long, or the model closed it or wrote on it: nothing was sent
		cc, err = hc.AcquireConn(timeout, connClose)
		start = time.Time{} // the next connection is judged at its own instant
	}
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	resp.ParseNetConn(conn)
	if err := conn.SetDeadline(deadline); err != nil { // writing the request and reading the headers
		hc.CloseConn(cc)
		return true, err
	}
	bw, sized := acquireRequestWriter(hc, conn, req)
	err = req.Write(bw)
	if err == nil {
		// A request that is still whole in the buffer leaves in this one write, and the write
		// returns when the answer begins to arrive (writeAwait).
		mc, _ := conn.(*modelConn)
		if mc != nil {
			mc.awaitAnswer = true
		}
		err = bw.Flush()
		if mc != nil {
			mc.awaitAnswer = false
		}
	}
	releaseRequestWriter(hc, bw, sized)
	if err != nil {
		hc.CloseConn(cc)
		if isTimeout(err) {
			err = fasthttp.ErrTimeout
		}
		return true, err
	}
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	br := hc.AcquireReader(conn)
	if err := readResponseHeader(&resp.Header, br); err != nil {
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		return !errors.Is(err, errAmbiguousFraming), err
	}
	closeConn := connClose || resp.ConnectionClose()
	switch status := resp.StatusCode(); {
	case resp.SkipBody, status == fasthttp.StatusNoContent, status == fasthttp.StatusNotModified:
	case stream && streamed(&resp.Header):
		s := &modelStream{
			br:        br,
			conn:      conn,
			idle:      t.idleTimeout,
			limit:     int64(hc.MaxResponseBodySize),
			connClose: closeConn || resp.Header.ContentLength() == -2, // a body ended by the model's close
			status:    status,
			done: func(reuse bool) {
				hc.ReleaseReader(br)
				if reuse {
					hc.ReleaseConn(cc)
				} else {
					hc.CloseConn(cc)
				}
			},
		}
		s.framing = fasthttp.AcquireResponse()
		s.framing.StreamBody = true
		s.framing.Header.SetContentLength(resp.Header.ContentLength())
		_ = s.framing.ReadBody(br, 0) // with StreamBody it only sets up the body stream
		s.body = s.framing.BodyStream()
		resp.SetBodyStream(s, -1)
		// The client sees the headers before the first piece: at once, unless the first piece has
		// come with them, and then in the same write.
		resp.ImmediateHeaderFlush = !firstPieceBuffered(br, resp.Header.ContentLength())
		return false, nil
	default:
		resp.StreamBody = false // read it whole; a retry of the call still comes back here
		err = resp.ReadBody(br, hc.MaxResponseBodySize)
		if err == nil && resp.Header.ContentLength() == -1 {
			err = skipTrailerSection(br) // fasthttp's ReadBody stops at the last chunk's size line
		}
		resp.StreamBody = stream
	}
	if err == nil && !closeConn && overrun(br, conn) {
		err = errAnswerOverrun
	}
	hc.ReleaseReader(br)
	if err != nil {
		hc.CloseConn(cc)
		return !errors.Is(err, fasthttp.ErrBodyTooLarge) && !errors.Is(err, errAnswerOverrun), err
	}
	if closeConn {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, nil
}

// A request is written to the model through a buffer that holds it whole, header and body,
// when its body is in memory (up to bufferedBodyBytes): it leaves in one write, a segment the
// model reads at once. Through fasthttp's 4 KB write buffer, a body over about 3.5 KB went as
// two (the buffer's first 4 KB, then the rest), each a wake-up and a read for the model. A
// streamed body is written as it arrives, through fasthttp's buffer.
const (
	requestWriterStep   = 8 << 10 // the buffers' sizes are multiples of it
	requestHeaderAllow  = 4 << 10 // room left for the header beside the body
	smallRequestBody    = 2 << 10 // a body this small fits fasthttp's buffer with its header
	requestWriterMaxLen = bufferedBodyBytes + requestHeaderAllow
)

// requestWriters pool the sized buffers, by size: requestWriters[i] holds (i+1)×8 KB ones.
var requestWriters [(requestWriterMaxLen + requestWriterStep - 1) / requestWriterStep]sync.Pool

// acquireRequestWriter returns the writer req is written to conn through: a pooled buffer that
// holds its header and in-memory body whole (sized true), or fasthttp's own.
func acquireRequestWriter(hc *fasthttp.HostClient, conn net.Conn, req *fasthttp.Request) (bw *bufio.Writer, sized bool) {
	if req.IsBodyStream() {
		return hc.AcquireWriter(conn), false
	}
	n := len(req.Body())
	if n <= smallRequestBody || n > bufferedBodyBytes {
		return hc.AcquireWriter(conn), false
	}
	i := (n + requestHeaderAllow - 1) / requestWriterStep
	if v := requestWriters[i].Get(); v != nil {
		bw = v.(*bufio.Writer)
		bw.Reset(conn)
		return bw, true
	}
	return bufio.NewWriterSize(conn, (i+1)*requestWriterStep), true
}

// releaseRequestWriter gives bw back to the pool it came from.
func releaseRequestWriter(hc *fasthttp.HostClient, bw *bufio.Writer, sized bool) {
	if !sized {
		hc.ReleaseWriter(bw)
		return
	}
	bw.Reset(nil) // no reference to the connection is kept in the pool
	requestWriters[bw.Size()/requestWriterStep-1].Put(bw)
}

// firstPieceBuffered reports whether the first read of a streamed answer's body returns without
// waiting for the model: bytes of it are buffered after the headers (for a chunked body, a whole
// chunk-size line of a chunk that is not the last, and a byte of its data).
func firstPieceBuffered(br *bufio.Reader, contentLength int) bool {
	n := br.Buffered()
	if n == 0 {
		return false
	}
	if contentLength != -1 {
		return true
	}
	b, _ := br.Peek(n)
	line, rest, ok := bytes.Cut(b, []byte("\n"))
	if !ok || len(rest) == 0 {
		return false
	}
	size := bytes.TrimLeft(line, "0")
	return len(size) > 0 && isHexDigit(size[0])
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Answers that must not leave their connection in the pool.
var (
	errAmbiguousFraming = errors.New("the model's answer has both Content-Length and Transfer-Encoding")
	errAnswerOverrun    = errors.New("the model sent bytes past the end of its answer")
)

// overrun reports whether bytes follow the end of an answer: read already into br, or, on a
// plain connection, waiting on the socket. (Under TLS only the decrypted bytes in br count: a
// TLS record after an answer may be a close_notify.)
//
// When the read that brought the answer's last bytes came back short, it took everything the
// socket held: that read was the look, and no system call is made for another. It stands for
// recentLook, as a look does (peekConn): bytes or a close that come after it are found by the
// look before a later reuse, as those that come after a look are. Otherwise (the read filled
// what it asked for, as a read straight into a large body does) the socket is looked at.
func overrun(br *bufio.Reader, conn net.Conn) bool {
	if br.Buffered() > 0 {
		return true
	}
	if mc, ok := conn.(*modelConn); ok {
		if mc.drained {
			mc.quietAt = time.Now()
			return false
		}
		return peekConn(conn, time.Time{}) == connPending
	}
	return false
}

// maxTrailerSection bounds the trailer section of a chunked answer read whole.
const maxTrailerSection = 16 << 10

var errTrailerSection = errors.New("the trailer section of the model's chunked answer is malformed or over 16 KiB")

// skipTrailerSection reads the trailer section that ends a chunked body (RFC 9112 7.1.2: field
// lines, then an empty line) and drops it: an answer read whole is sent with its Content-Length,
// and a model's trailer fields are not promoted to header fields.
func skipTrailerSection(br *bufio.Reader) error {
	for n := 0; n <= maxTrailerSection; {
		line, err := br.ReadSlice('\n')
		n += len(line)
		if err != nil {
			return errTrailerSection
		}
		if len(line) == 2 && line[0] == '\r' || len(line) == 1 {
			return nil
		}
	}
	return errTrailerSection
}

// readResponseHeader reads the final response header, past any 1xx interim ones (as fasthttp
// does, at most 100 of them). A header block with both Content-Length and Transfer-Encoding is
// refused with errAmbiguousFraming (fasthttp reads such an answer as chunked and would keep the
// connection; RFC 9112 section 6.3 says it must be closed).
func readResponseHeader(h *fasthttp.ResponseHeader, br *bufio.Reader) error {
	for range 100 {
		ambiguous := ambiguousFraming(br)
		if err := h.Read(br); err != nil {
			return err
		}
		if ambiguous {
			return errAmbiguousFraming
		}
		if s := h.StatusCode(); s < 100 || s > 199 || s == fasthttp.StatusSwitchingProtocols {
			return nil
		}
	}
	return errors.New("too many 1xx informational responses")
}

// ambiguousFraming waits until br holds a whole header block (or the block cannot be had: an
// error, or a block larger than br's buffer, which fasthttp then refuses) and reports whether
// it has both a Content-Length and a Transfer-Encoding field. fasthttp parses the block from the
// same buffered bytes afterwards.
func ambiguousFraming(br *bufio.Reader) bool {
	for n := 1; n <= br.Size(); n = br.Buffered() + 1 {
		if _, err := br.Peek(n); err != nil {
			return false
		}
		b, _ := br.Peek(br.Buffered())
		if block, ok := headerBlock(b); ok {
			cl, te := framingFields(block)
			return cl && te
		}
	}
	return false
}

// headerBlock returns the header fields of the response head at the start of b (the lines after
// the status line, up to the empty line), and whether b holds all of it.
func headerBlock(b []byte) ([]byte, bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, false
	}
	start := i + 1
	for j := start; j < len(b); {
		k := bytes.IndexByte(b[j:], '\n')
		if k < 0 {
			return nil, false
		}
		line := b[j : j+k]
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return b[start:j], true
		}
		j += k + 1
	}
	return nil, false
}

// framingFields reports whether a header block has a Content-Length field and a
// Transfer-Encoding field: a line whose name (before its first ':', without trailing blanks)
// equals the name under bytes.EqualFold. One pass over the block for both.
func framingFields(block []byte) (contentLength, transferEncoding bool) {
	for {
		line, rest, more := bytes.Cut(block, []byte("\n"))
		if key, _, ok := bytes.Cut(line, []byte(":")); ok {
			key = bytes.TrimRight(key, " \t")
			contentLength = contentLength || bytes.EqualFold(key, []byte("content-length"))
			transferEncoding = transferEncoding || bytes.EqualFold(key, []byte("transfer-encoding"))
		}
		if !more || contentLength && transferEncoding {
			return contentLength, transferEncoding
		}
		block = rest
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// streamed reports whether an answer is streamed to the client as it arrives: a text/event-stream,
// or a body without a declared length (chunked, or until the model closes the connection).
func streamed(h *fasthttp.ResponseHeader) bool {
	return h.ContentLength() < 0 || isEventStream(h.ContentType())
}

// isEventStream reports whether a Content-Type is text/event-stream, with or without parameters,
// in any case.
func isEventStream(ct []byte) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !bytes.EqualFold(ct[:len(es)], []byte(es)) {
		return false
	}
	return len(ct) == len(es) || ct[len(es)] == ';' || ct[len(es)] == ' ' || ct[len(es)] == '\t'
}

// modelStream is a model's answer body on its way to the client: fasthttp's server reads it and
// writes each read as one chunk, flushed at once, and closes it when the answer is over, written
// or not. It holds the model's connection, the replica and the request's telemetry record until
// then. Its Read and CloseWithError are called by the one goroutine writing the response.
type modelStream struct {
	body      io.Reader          // the body as fasthttp de-frames it
	framing   *fasthttp.Response // holds body and the framing it reads by
	br        *bufio.Reader      // the model connection's reader
	conn      net.Conn           // the model connection, for the idle deadline
	done      func(reuse bool)   // gives the connection back to its pool, or closes it
	idle      time.Duration      // stream_idle_timeout
	limit     int64              // max_response_bytes
	connClose bool               // the model's connection is not reused afterwards
	status    int                // the model's status
	passed    int64              // bytes passed on so far
	firstByte bool               // a byte of the body has arrived
	eof       bool               // the body ended as its framing says
	err       error              // why reading the model's answer failed, or nil
	closed    bool

	// Shutdown ends the stream from its own goroutine (end): it closes the model's connection,
	// unless CloseWithError has already given the connection back (given, under endMu).
	endMu sync.Mutex
	given bool
	ended atomic.Bool  // Shutdown ended the stream
	open  *openStreams // the gateway's open streams, once adopted

	// Set when the gateway adopts the stream.
	svc          *service
	dep          *deployment
	r            *replica
	client       net.Conn      // the client's connection, for its write deadline
	writeTimeout time.Duration // server.write_timeout, for each piece
	requestID    string
	rec          *telemetry.Record // nil without telemetry
	// meter reads a language-model answer (api: openai services), and ends its call when the
	// stream ends; nil for every other answer.
	meter *answerMeter
}

// errStreamTooLarge ends a streamed answer that grew over max_response_bytes.
var errStreamTooLarge = fmt.Errorf("streamed answer over max_response_bytes: %w", fasthttp.ErrBodyTooLarge)

// errStreamCut is what fasthttp's server is told when the model's side of a stream failed: it
// closes the client's connection, and logs nothing of its own for an unexpected EOF (the stream
// logs the cause once, with the request's id).
var errStreamCut = fmt.Errorf("streamed answer cut: %w", io.ErrUnexpectedEOF)

// adopt makes the stream the holder of the replica r of dep, and one of the gateway's open
// streams: the replica is given back when the stream ends.
func (s *modelStream) adopt(open *openStreams, svc *service, dep *deployment, r *replica, client net.Conn, writeTimeout time.Duration) {
	s.svc, s.dep, s.r = svc, dep, r
	s.client, s.writeTimeout = client, writeTimeout
	open.add(s)
}

// record hands the request's telemetry record (nil without telemetry) and id to the stream,
// which ends the record when the stream ends.
func (s *modelStream) record(rec *telemetry.Record, id []byte) {
	s.rec, s.requestID = rec, string(id)
}

func (s *modelStream) Read(p []byte) (int, error) {
	if s.meter != nil {
		return s.meter.read(s, p) // a language-model answer, read as it passes (openai_answer.go)
	}
	return s.readModel(p)
}

// readModel reads the next piece of the model's answer into p.
func (s *modelStream) readModel(p []byte) (int, error) {
	switch {
	case s.err != nil:
		return 0, errStreamCut
	case s.eof:
		return 0, io.EOF
	case s.closed:
		return 0, io.ErrClosedPipe
	case s.ended.Load():
		s.err = errShuttingDown
		return 0, errStreamCut
	}
	if s.idle > 0 {
		if err := s.conn.SetReadDeadline(time.Now().Add(s.idle)); err != nil {
			s.err = err
			return 0, errStreamCut
		}
	}
	n, err := s.body.Read(p)
	if n > 0 && err == nil && s.endBuffered() {
		// The body's end is buffered behind this piece: read it now (from the buffer), so that
		// the piece goes with the last chunk in one write (third_party/fasthttp).
		_, err = s.body.Read(p[n:n])
	}
	if n > 0 {
		if !s.firstByte {
			s.firstByte = true
			if s.rec != nil {
				s.rec.MarkFirstByte()
			}
		}
		s.passed += int64(n)
		if s.limit > 0 && s.passed > s.limit {
			s.err = errStreamTooLarge
			return 0, errStreamCut
		}
		if s.client != nil && s.writeTimeout > 0 {
			// fasthttp set the deadline once, for the whole answer; each piece gets its own.
			_ = s.client.SetWriteDeadline(time.Now().Add(s.writeTimeout))
		}
		if s.ended.Load() { // end may have set the deadline just before: the piece is not written
			s.err = errShuttingDown
			return 0, errStreamCut
		}
	}
	switch {
	case err == io.EOF && !s.connClose && overrun(s.br, s.conn):
		s.err = errAnswerOverrun // what follows must not be read as the next request's answer
		err = errStreamCut
	case err == io.EOF:
		s.eof = true
	case err != nil:
		s.err = err
		err = errStreamCut
	}
	return n, err
}

// endBuffered reports whether the end of the body is already in the model connection's buffer,
// as fasthttp's chunked stream can tell.
func (s *modelStream) endBuffered() bool {
	e, ok := s.body.(interface{ EndBuffered() bool })
	return ok && e.EndBuffered()
}

// CloseWithError ends the stream: werr is why writing to the client failed (nil when the answer
// was written whole, or never). The model's connection goes back to its pool only after a whole
// answer; otherwise it is closed, which cancels the request on the model's side. The replica is
// given back, the outcome logged when the answer did not get through whole, and the record ended.
// An answer Shutdown ended before it was whole has the outcome shutting_down, whatever failed
// first.
func (s *modelStream) CloseWithError(werr error) error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.endMu.Lock()
	s.given = true
	ended := s.ended.Load() // then end has closed the model's connection
	s.endMu.Unlock()
	whole := s.eof && s.err == nil && werr == nil
	reuse := whole && !s.connClose && !ended
	_ = s.framing.CloseBodyStream()
	fasthttp.ReleaseResponse(s.framing)
	s.framing, s.body = nil, nil
	s.done(reuse)
	if ended && !whole {
		s.err = errShuttingDown // not the model's failure, nor the client's
	}
	defer s.open.remove(s) // last: Shutdown waits for the record to end

	reason := "ok"
	switch {
	case s.err == errShuttingDown: // the outcome of a gRPC call Shutdown ended, too
		reason = errShuttingDown.Reason
	case s.err != nil:
		reason = failureReason(s.err)
	case werr != nil:
		reason = "client_gone"
	case !s.eof:
		reason = "not_written" // the response was dropped before its body was written
	}
	if s.dep != nil {
		if s.err != nil && s.err != errShuttingDown {
			s.svc.observe(s.r, s.err)
		}
		s.dep.release(s.r)
		if reason != "ok" {
			s.log(reason, werr)
		}
	}
	if s.meter != nil {
		s.meter.c.end(s.meter, whole, s.rec)
	}
	if rec := s.rec; rec != nil {
		s.rec = nil
		rec.Stream = true
		rec.UpstreamEnd()
		if reason != "ok" {
			rec.Reason = reason
		}
		rec.End(s.status)
	}
	return nil
}

// log says why a streamed answer did not reach the client whole.
func (s *modelStream) log(reason string, werr error) {
	attrs := []any{"request_id", s.requestID, "deployment", s.r.deployment, "bytes", s.passed}
	switch {
	case s.err == errShuttingDown:
		attrs = append(attrs, "upstream", s.r.url, "reason", reason)
		s.svc.log.Warn("streamed answer cut: the gateway is shutting down; client connection closed, model request cancelled", attrs...)
	case s.err != nil:
		attrs = append(attrs, "upstream", (&upstreamFailure{service: s.svc.name, upstream: s.r.url, reason: reason, err: s.err}).LogValue())
		s.svc.log.Warn("streamed answer cut: the model's stream failed; client connection closed", attrs...)
	case werr != nil:
		attrs = append(attrs, "upstream", s.r.url, "reason", reason, "err", werr)
		s.svc.log.Info("streamed answer cut: the client went away; model request cancelled", attrs...)
	default:
		attrs = append(attrs, "upstream", s.r.url, "reason", reason)
		s.svc.log.Warn("streamed answer dropped before it was written", attrs...)
	}
}

var _ fasthttp.ReadCloserWithError = (*modelStream)(nil)

// streamEndGrace bounds how long Shutdown, once its time is up, waits for the streams it ends to
// close their connections and end their records.
const streamEndGrace = time.Second

// openStreams is the set of streamed answers being written on the HTTP/1.1 listener. When
// Shutdown's time is up, end ends each one that is still open: the model's connection is closed
// (which cancels the request on the model's side), so the stream's next read fails; the client's
// write deadline is moved to now, so a write blocked on a client that does not read fails too.
// Either way fasthttp closes the client's connection without the chunked body's last chunk: the
// client sees a cut answer, as when the model fails mid-stream. Nothing is added to the body (an
// SSE event of the gateway's own could land in the middle of one of the model's), and the status
// line was sent long ago.
type openStreams struct {
	mu    sync.Mutex
	set   map[*modelStream]struct{}
	ended bool // Shutdown's time is up: a stream adopted from now on is ended at once
}

func (o *openStreams) add(s *modelStream) {
	o.mu.Lock()
	if o.set == nil {
		o.set = map[*modelStream]struct{}{}
	}
	o.set[s] = struct{}{}
	s.open = o
	ended := o.ended
	o.mu.Unlock()
	if ended {
		s.end()
	}
}

// remove forgets s; o may be nil (a stream never adopted).
func (o *openStreams) remove(s *modelStream) {
	if o == nil {
		return
	}
	o.mu.Lock()
	delete(o.set, s)
	o.mu.Unlock()
}

func (o *openStreams) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.set)
}

// end ends every open stream, and those adopted afterwards. It returns once they have closed
// their connections and ended their records, or after streamEndGrace.
func (o *openStreams) end() {
	o.mu.Lock()
	o.ended = true
	open := make([]*modelStream, 0, len(o.set))
	for s := range o.set {
		open = append(open, s)
	}
	o.mu.Unlock()
	for _, s := range open {
		s.end()
	}
	for deadline := time.Now().Add(streamEndGrace); o.len() > 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

// end ends the stream from outside the goroutine writing it (see openStreams), unless its
// model connection has already been given back: that connection may carry another request now.
func (s *modelStream) end() {
	s.endMu.Lock()
	defer s.endMu.Unlock()
	if s.given {
		return
	}
	s.ended.Store(true)
	_ = s.conn.Close()
	if s.client != nil {
		_ = s.client.SetWriteDeadline(time.Now())
	}
}

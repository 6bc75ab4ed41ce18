package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/telemetry"
)

// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
const (
	grpcOK                  = 0
	grpcCanceled            = 1
	grpcUnknown             = 2
	grpcInvalidArgument     = 3
	grpcDeadlineExceeded    = 4
	grpcNotFound            = 5
	grpcPermissionDenied    = 7
	grpcResourceExhausted   = 8
	grpcInternal            = 13
	grpcUnavailable         = 14
	grpcUnauthenticated     = 16
	grpcUnimplemented       = 12
	grpcContentType         = "application/grpc"
	headerGRPCStatus        = "Grpc-Status"
	headerGRPCMessage       = "Grpc-Message"
	headerGRPCTimeout       = "Grpc-Timeout"
	headerGRPCRetryPushback = "Grpc-Retry-Pushback-Ms"
)

// Errors of the gRPC path only.
var (
	errNoGRPCService = newError(http.StatusNotFound, "NotFound", "not_found",
		"no gRPC service of that name; name one in the "+config.GRPCServiceHeader+" metadata")
	errGRPCMessageTooLarge = newError(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "payload_too_large",
		"a request message is larger than this service accepts")
	errGRPCAnswerTooLarge = newError(http.StatusBadGateway, "BadGateway", "upstream_too_large",
		"a message of the model's answer is larger than the gateway passes on")
	errGRPCBroken = newError(http.StatusBadGateway, "BadGateway", "upstream_error",
		"the model's answer broke off")
	errNotGRPC = newError(http.StatusUnsupportedMediaType, "UnsupportedMediaType", "unsupported_media_type",
		"this listener serves gRPC only (POST with Content-Type application/grpc)")
	errNotPOST = withAllow(newError(http.StatusMethodNotAllowed, "MethodNotAllowed", "method_not_allowed",
		"this listener serves gRPC only (POST with Content-Type application/grpc)"), http.MethodPost)
	errClientGone   = newError(499, "ClientClosedRequest", "client_closed", "the call was cancelled")
	errShuttingDown = withRetry(newError(http.StatusServiceUnavailable, "ServiceUnavailable", "shutting_down",
		"the gateway is shutting down; retry the call"), 1)
)

// grpcCode maps a gateway error onto the gRPC status the caller gets, by the HTTP status the
// HTTP/1.1 path would have answered: the same rules give the same decision on both paths.
func grpcCode(e *Error) int {
	switch e.Status {
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound:
		if e.Reason == errNoDeployment.Reason {
			return grpcNotFound
		}
		return grpcUnimplemented
	case http.StatusBadRequest:
		if e.Reason == errBadPath.Reason {
			return grpcUnimplemented
		}
		return grpcInvalidArgument
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, http.StatusRequestHeaderFieldsTooLarge:
		return grpcResourceExhausted
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return grpcDeadlineExceeded
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return grpcUnavailable
	case 499:
		return grpcCanceled
	case http.StatusMisdirectedRequest:
		return grpcUnknown // what a gRPC client makes of the HTTP 421 it gets
	}
	return grpcInternal
}

// grpcCall is one gRPC call on the HTTP/2 listener, as it is being answered.
type grpcCall struct {
	w     http.ResponseWriter
	r     *http.Request
	id    []byte
	rec   *telemetry.Record
	wrote bool // the response headers are out: a failure now goes into the trailers
	// status is the HTTP status answered, and grpcStatus the gRPC status (from the model's
	// trailers or the gateway's own).
	status, grpcStatus int
}

// serveGRPC handles one call on the HTTP/2 listener: route, authenticate, admit, forward,
// record, as serve does on the HTTP/1.1 listener. Failures are answered as trailers-only gRPC
// responses (HTTP 200 with grpc-status and grpc-message); a panic becomes INTERNAL for this call
// alone.
func (g *Gateway) serveGRPC(w http.ResponseWriter, r *http.Request) {
	var idBuf [requestIDMaxLen]byte
	id := requestID([]byte(r.Header.Get(HeaderRequestID)), idBuf[:0])
	c := &grpcCall{w: w, r: r, id: id, status: http.StatusOK}
	c.rec = g.beginGRPC(r, id)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			g.panics.Add(1)
			g.log.Error("panic while handling a gRPC call; answered INTERNAL",
				"request_id", string(id), "panic", panicValue(p), "stack", string(debug.Stack()))
			c.fail(g, errPanic)
			g.endGRPC(c, errPanic)
		}
	}()
	err := g.handleGRPC(c)
	if err != nil {
		c.fail(g, err)
	}
	g.endGRPC(c, err)
}

func (g *Gateway) beginGRPC(r *http.Request, id []byte) *telemetry.Record {
	if g.tel == nil {
		return nil
	}
	rec := g.tel.Begin()
	var addr [64]byte
	var ts [maxTracestateBytes]byte
	h := r.Header
	rec.SetRequest([]byte(r.Method), []byte(r.RequestURI), []byte(h.Get("User-Agent")), []byte(r.Host),
		remoteAddr(r).AppendTo(addr[:0]), singleTraceparent(headerValues(h, headerTraceparent)),
		requestTracestate(ts[:0], headerValues(h, headerTracestate)))
	rec.SetRequestID(id)
	rec.TLS = r.TLS != nil
	return rec
}

func (g *Gateway) endGRPC(c *grpcCall, err error) {
	if c.rec == nil {
		return
	}
	rec := c.rec
	c.rec = nil // ended once
	if err != nil {
		rec.Reason = reasonOf(err)
	}
	rec.GRPCStatus = c.grpcStatus
	rec.End(c.status)
}

// remoteAddr is the client's address of a net/http request.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return ap.Addr().Unmap()
}

// handleGRPC is the gRPC adapter of the request core: the checks of this listener (a call made
// for this authority, POST, a gRPC Content-Type), then admit, then the call forwarded.
func (g *Gateway) handleGRPC(c *grpcCall) error {
	r := c.r
	switch {
	case misdirectedH2(r):
		return errMisdirected
	case r.Method != http.MethodPost:
		return errNotPOST // TRACE and every other method: never forwarded
	case !isGRPCContentType(r.Header.Get("Content-Type")):
		return errNotGRPC
	}
	in := inbound{
		grpc:        true,
		method:      []byte(r.Method),
		target:      []byte(r.RequestURI),
		grpcService: r.Header.Get(config.GRPCServiceHeader),
		peer:        remoteAddr(r),
		header:      netHeader(r.Header),
	}
	a, err := g.admit(g.routes.Load(), &in, true)
	if c.rec != nil && a.svc != nil {
		c.rec.Service, c.rec.Auth = a.svc.name, a.svc.auth
		c.rec.RPCService, c.rec.RPCMethod = a.rpcService, a.rpcMethod
	}
	if err != nil {
		return err
	}
	return g.forwardGRPC(c, a.svc)
}

// isGRPCContentType accepts application/grpc and application/grpc+<codec> (and ;params).
func isGRPCContentType(ct string) bool {
	if !strings.HasPrefix(ct, grpcContentType) {
		return false
	}
	rest := ct[len(grpcContentType):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// splitGRPCPath splits a gRPC path, "/package.Service/Method", into its service and method. It
// accepts only what a protobuf name may hold (letters, digits, '_' and '.' in the service,
// letters, digits and '_' in the method), so the path is forwarded unchanged with nothing for a
// model to read differently.
func splitGRPCPath(p string) (service, method string, ok bool) {
	if len(p) < 4 || p[0] != '/' || len(p) > 512 {
		return "", "", false
	}
	service, method, ok = strings.Cut(p[1:], "/")
	if !ok || service == "" || method == "" || service[0] == '.' || service[len(service)-1] == '.' ||
		strings.Contains(service, "..") {
		return "", "", false
	}
	for i := 0; i < len(service); i++ {
		if c := service[i]; !(identChar(c) || c == '.') {
			return "", "", false
		}
	}
	for i := 0; i < len(method); i++ {
		if !identChar(method[i]) {
			return "", "", false
		}
	}
	return service, method, true
}

func identChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// forwardGRPC sends the call to a replica of the chosen deployment (the one the
// azureml-model-deployment metadata pins, if any) and streams the answer back, holding the
// replica's slot of max_concurrent_requests until the call ends.
func (g *Gateway) forwardGRPC(c *grpcCall, svc *service) error {
	dep, err := svc.deploymentFor([]byte(c.r.Header.Get(config.DeploymentHeader)))
	if err != nil {
		return err
	}
	timeout := svc.timeout
	if d, ok := parseGRPCTimeout(c.r.Header.Get(headerGRPCTimeout)); ok && d < timeout {
		timeout = d
	}
	header := g.grpcRequestHeader(c, svc, timeout)
	body := &grpcBody{r: c.r.Body, max: svc.maxBody, tooLarge: errMessageTooLarge}

	r, err := withReplica(dep, c.rec,
		func(r *replica) error { return g.callGRPC(c, svc, dep, r, header, body, timeout) },
		func() bool { return !c.wrote && body.read.Load() == 0 })
	switch {
	case r == nil:
		return err // no replica to be had
	case err == nil:
		return nil
	case g.h2.stopping.Err() != nil:
		return errShuttingDown.withCause(err)
	case body.over.Load():
		return errGRPCMessageTooLarge
	case errors.Is(err, errAnswerTooLarge):
		return errGRPCAnswerTooLarge.withCause(err)
	case c.r.Context().Err() != nil && !errors.Is(err, context.DeadlineExceeded):
		return errClientGone.withCause(c.r.Context().Err())
	case errors.Is(err, context.DeadlineExceeded):
		return errGatewayTimeout.withCause(&upstreamFailure{service: svc.name, upstream: r.url, reason: reasonTimeout, err: err})
	case c.wrote:
		return errGRPCBroken.withCause(&upstreamFailure{service: svc.name, upstream: r.url, reason: reasonTruncated, err: err})
	}
	return upstreamError(r.upstream, err)
}

// grpcRequestHeader is the header of the call as the model gets it, by the core's policy: the
// client's metadata without what droppedRequestHeader names, the credential carriers the service
// does not keep, and the gateway's routing metadata; with the request id, the trace context of
// traceContext, forwardedValues' X-Forwarded-* and the effective grpc-timeout. The client's request trailers never reach
// the model: the outbound request declares none.
func (g *Gateway) grpcRequestHeader(c *grpcCall, svc *service, timeout time.Duration) http.Header {
	in := c.r.Header
	out := make(http.Header, len(in)+4)
	for k, v := range in {
		if listed, underscore := droppedRequestHeader([]byte(k)); listed >= 0 || underscore {
			continue
		}
		out[k] = v
	}
	out.Del(config.GRPCServiceHeader)
	dropCredentialMetadata(out, svc.cfg.ForwardCredentials)
	xff, proto, host := g.forwardedValues(nil, netHeader(in), remoteAddr(c.r), c.r.TLS != nil, []byte(c.r.Host))
	out.Set("Te", "trailers")
	out.Set("X-Forwarded-For", string(xff))
	out.Set("X-Forwarded-Proto", string(proto))
	if len(host) > 0 {
		out.Set("X-Forwarded-Host", string(host))
	}
	out.Set(HeaderRequestID, string(c.id))
	out.Set(headerGRPCTimeout, formatGRPCTimeout(timeout))
	g.setGRPCTraceContext(out, in, c.rec)
	return out
}

// netHeader is a net/http request header as the request core reads it.
type netHeader http.Header

func (h netHeader) values(name string) [][]byte { return headerValues(http.Header(h), name) }

func (h netHeader) value(name string) []byte {
	if v := http.Header(h).Get(name); v != "" {
		return []byte(v)
	}
	return nil
}

// callGRPC makes the call to r, a replica taken from dep, within timeout, and streams the
// model's answer to the client: headers, each message as it arrives, then the trailers
// (grpc-status, grpc-message, grpc-status-details-bin and the rest) unchanged. It notes
// connection failures for passive ejection and gives r back to dep however the call ends.
func (g *Gateway) callGRPC(c *grpcCall, svc *service, dep *deployment, r *replica, header http.Header,
	body *grpcBody, timeout time.Duration) error {
	defer dep.release(r)
	t, err := g.h2.transport(svc, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), timeout)
	defer cancel()
	defer context.AfterFunc(g.h2.stopping, cancel)() // Shutdown's time is up
	// The transport notices the end of ctx only between reads of the request body: a call that
	// ends (its timeout, Shutdown) while the client sends nothing would wait for the client.
	attempt := &grpcAttempt{grpcBody: body}
	defer context.AfterFunc(ctx, func() { attempt.Close() })()
	out := (&http.Request{
		Method:        http.MethodPost,
		URL:           &url.URL{Scheme: r.scheme, Host: r.host, Path: c.r.RequestURI},
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        header,
		Body:          attempt,
		ContentLength: -1,
		Host:          r.host,
	}).WithContext(ctx)
	if c.rec != nil {
		c.rec.Upstream = r.host
		c.rec.UpstreamStart()
		defer c.rec.UpstreamEnd()
	}
	deadline, _ := ctx.Deadline()
	resp, err := t.RoundTrip(out)
	err = pastDeadline(err, deadline)
	svc.observe(r, err)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	h := c.w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	c.setIDHeaders()
	c.status = resp.StatusCode
	if st := resp.Header.Get(headerGRPCStatus); st != "" {
		// A trailers-only answer (an error, mostly): it must reach the client as one HEADERS
		// frame that ends the stream, so nothing is flushed before the handler returns.
		c.w.WriteHeader(resp.StatusCode)
		c.wrote = true
		c.grpcStatus = grpcUnknown
		if n, err := strconv.Atoi(st); err == nil {
			c.grpcStatus = n
		}
		return nil
	}
	c.w.WriteHeader(resp.StatusCode)
	c.wrote = true
	rc := http.NewResponseController(c.w)
	_ = rc.Flush()

	answer := &grpcBody{r: resp.Body, max: svc.cfg.MaxResponseBytes, tooLarge: errAnswerTooLarge}
	buf := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(buf)
	for {
		n, rerr := answer.Read(*buf)
		if n > 0 {
			if _, werr := c.w.Write((*buf)[:n]); werr != nil {
				return werr // the client is gone
			}
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return pastDeadline(rerr, deadline)
		}
	}
	for k, v := range resp.Trailer {
		h[http.TrailerPrefix+k] = v
	}
	c.grpcStatus = grpcUnknown
	if n, err := strconv.Atoi(resp.Trailer.Get(headerGRPCStatus)); err == nil {
		c.grpcStatus = n
	}
	return nil
}

// pastDeadline is err as a deadline error when it came once the call's deadline had passed. The
// model got that deadline as grpc-timeout and may end the stream at it (grpc-go resets it) a moment
// before the gateway's own timer is seen to fire; the client gets DEADLINE_EXCEEDED either way,
// and the replica is not counted as failing.
func pastDeadline(err error, deadline time.Time) error {
	if err == nil || errors.Is(err, context.DeadlineExceeded) || deadline.IsZero() || time.Now().Before(deadline) {
		return err
	}
	return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// setIDHeaders sets the headers every answer carries: the request id under both names, the
// client's request id echoed, and (with telemetry) the trace as a W3C traceresponse.
func (c *grpcCall) setIDHeaders() {
	setIDHeaders(c.w.Header(), c.id, c.r, c.rec)
}

// setIDHeaders sets answerIDHeaders' headers in h, the answer to r on a net/http listener.
func setIDHeaders(h http.Header, id []byte, r *http.Request, rec *telemetry.Record) {
	var tp [55]byte
	ids, n := answerIDHeaders(&tp, id, []byte(r.Header.Get(HeaderClientRequestID)), rec)
	for _, f := range ids[:n] {
		h.Set(f.name, string(f.value))
	}
}

// fail answers a call that the gateway failed: a trailers-only gRPC response (HTTP 200,
// grpc-status and grpc-message in the headers), or, once the model's headers are out, the
// status in the trailers. A request that is not gRPC at all gets the HTTP error of the HTTP/1.1
// path.
func (c *grpcCall) fail(g *Gateway, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = errInternal.withCause(err)
	}
	if e.Cause != nil {
		if e.Status >= 500 {
			g.logFailure("gRPC call failed", e)
		} else {
			g.log.Debug("gRPC call refused", "status", e.Status, "err", e.Cause)
		}
	}
	code := grpcCode(e)
	c.grpcStatus = code
	h := c.w.Header()
	if c.wrote {
		h.Set(http.TrailerPrefix+headerGRPCStatus, strconv.Itoa(code))
		h.Set(http.TrailerPrefix+headerGRPCMessage, encodeGRPCMessage(e.Message))
		return
	}
	clear(h)
	c.setIDHeaders()
	if e == errNotGRPC || e == errNotPOST || e == errMisdirected { // answered in HTTP; 421 is for the connection, not the call
		h.Set("Content-Type", "application/json")
		if e.Allow != "" {
			h.Set("Allow", e.Allow)
		}
		c.status = e.Status
		c.w.WriteHeader(e.Status)
		c.w.Write(e.body)
		return
	}
	h.Set("Content-Type", grpcContentType)
	h.Set(headerGRPCStatus, strconv.Itoa(code))
	h.Set(headerGRPCMessage, encodeGRPCMessage(e.Message))
	if e.RetryAfter > 0 {
		h.Set(headerGRPCRetryPushback, strconv.Itoa(e.RetryAfter*1000))
	}
	if e.WWWAuthenticate != "" {
		h.Set("Www-Authenticate", e.WWWAuthenticate)
	}
	c.status = http.StatusOK
	c.w.WriteHeader(http.StatusOK)
}

// encodeGRPCMessage percent-encodes a grpc-message value as the gRPC wire spec asks.
func encodeGRPCMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// parseGRPCTimeout reads a grpc-timeout value: 1 to 8 digits and a unit (H, M, S, m, u, n).
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// formatGRPCTimeout writes d as a grpc-timeout value, rounded up to the unit that fits 8 digits.
func formatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "0m"
	}
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}, {time.Hour, "H"}} {
		n := d / u.unit
		if d%u.unit != 0 {
			n++
		}
		if n < 1e8 {
			return strconv.FormatInt(int64(n), 10) + u.name
		}
	}
	return "99999999H"
}

var errAnswerTooLarge = errors.New("a message of the model's answer is over the service's max_response_bytes")

// grpcBody is one direction of a call's stream of length-prefixed gRPC messages, passed through
// as it is: it counts the bytes read, refuses a message declared larger than max, and remembers
// why reading failed.
type grpcBody struct {
	r         io.Reader
	max       int64
	tooLarge  error // what Read returns past max
	read      atomic.Int64
	over      atomic.Bool
	closeOnce sync.Once

	hdr  [5]byte
	hdrN int
	left int64 // bytes of the current message still to come
}

var errMessageTooLarge = errors.New("a request message is over the service's max_body_bytes")

func (b *grpcBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read.Add(int64(n))
	if !b.scan(p[:n]) {
		b.over.Store(true)
		return 0, b.tooLarge
	}
	return n, err
}

// scan follows the message framing through p (a 5-byte prefix: a compression flag and the
// length, big-endian), and reports false for a message over max.
func (b *grpcBody) scan(p []byte) bool {
	for len(p) > 0 {
		if b.left > 0 {
			k := min(int64(len(p)), b.left)
			p = p[k:]
			b.left -= k
			continue
		}
		k := copy(b.hdr[b.hdrN:], p)
		b.hdrN += k
		p = p[k:]
		if b.hdrN == len(b.hdr) {
			b.hdrN = 0
			b.left = int64(binary.BigEndian.Uint32(b.hdr[1:]))
			if b.max > 0 && b.left > b.max {
				return false
			}
		}
	}
	return true
}

// grpcAttempt is the request body of one attempt at a call, as the transport to the model reads
// it. Close does nothing until the transport has begun to read, so that a call whose connection
// to a model was never made can be sent again with the same body. From then on Close closes the
// client's request body, ending a Read that waits on the client: the transport closes the body
// when the model's side of the call ends (its status while the client still sends, a reset, its
// connection gone), and the call cannot end before that Read does.
type grpcAttempt struct {
	*grpcBody
	began, closed atomic.Bool
}

func (a *grpcAttempt) Read(p []byte) (int, error) {
	a.began.Store(true)
	if a.closed.Load() {
		a.closeClient()
	}
	return a.grpcBody.Read(p)
}

func (a *grpcAttempt) Close() error {
	a.closed.Store(true)
	if a.began.Load() {
		a.closeClient()
	}
	return nil
}

// closeClient closes the reader of b, once, if it is a closer.
func (b *grpcBody) closeClient() {
	b.closeOnce.Do(func() {
		if c, ok := b.r.(io.Closer); ok {
			c.Close()
		}
	})
}

// headerValues is h's values of the canonical name key as byte slices (nil without any).
func headerValues(h http.Header, key string) [][]byte {
	vs := h[key]
	if len(vs) == 0 {
		return nil
	}
	out := make([][]byte, len(vs))
	for i, v := range vs {
		out[i] = []byte(v)
	}
	return out
}

// setGRPCTraceContext gives a call's outbound metadata (out) the trace context traceContext and
// boundBaggage decide from the client's (in).
func (g *Gateway) setGRPCTraceContext(out, in http.Header, rec *telemetry.Record) {
	var tsBuf [maxTracestateBytes]byte
	var tpBuf [maxTraceparentLineLen]byte
	tp, ts := g.traceContext(tpBuf[:0], tsBuf[:0], rec, netHeader(in))
	out.Del(headerTraceparent)
	if len(tp) > 0 {
		out.Set(headerTraceparent, string(tp))
	}
	out.Del(headerTracestate)
	if len(ts) > 0 {
		out.Set(headerTracestate, string(ts))
	}
	if baggage, cut := g.boundBaggage(headerValues(in, headerBaggage)); cut {
		out.Del(headerBaggage)
		if len(baggage) > 0 {
			out.Set(headerBaggage, string(baggage))
		}
	}
}

// dropCredentialMetadata removes from a call's metadata the credential carriers the service does
// not keep: the metadata of config.CredentialHeaders, and the cookies of config.CredentialParams
// from cookie metadata (the other cookies stay, in their order).
func dropCredentialMetadata(h http.Header, keep []string) {
	for _, name := range config.CredentialHeaders {
		if droppedCredentialHeader([]byte(name), keep) {
			h.Del(name)
		}
	}
	cookies := h["Cookie"]
	if len(cookies) == 0 {
		return
	}
	var kept []string
	changed := false
	for _, line := range cookies {
		var rest []string
		for _, c := range strings.Split(line, ";") {
			c = strings.TrimSpace(c)
			name, _, _ := strings.Cut(c, "=")
			if c == "" || droppedCookie([]byte(name), keep) {
				changed = true
				continue
			}
			rest = append(rest, c)
		}
		if len(rest) > 0 {
			kept = append(kept, strings.Join(rest, "; "))
		}
	}
	switch {
	case !changed:
	case len(kept) == 0:
		h.Del("Cookie")
	default:
		h["Cookie"] = kept
	}
}

package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

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
		return grpcUnknown // what a gRPC client makes of an HTTP 421
	}
	return grpcInternal
}

// grpcCall is one gRPC call on the HTTP/2 listener, as it is being answered.
type grpcCall struct {
	ss   grpc.ServerStream
	ctx  context.Context // the call's, ended when the client cancels or its grpc-timeout passes
	md   metadata.MD     // the client's metadata, names in lower case
	path string          // the :path, /package.Service/Method
	peer netip.Addr
	tls  *tls.ConnectionState // nil on h2c
	id   []byte
	// clientID is the client's x-ms-client-request-id, echoed in the answer.
	clientID []byte
	rec      *telemetry.Record

	// wrote is set once the model's response headers are out: a failure then goes into the
	// trailers.
	wrote bool
	// grpcStatus is the status the client gets (the model's, or the gateway's own), and model the
	// model's status when it sent one.
	grpcStatus int
	model      *status.Status
	// trailers is set when the model's trailers arrived (by grpcTrailerSeen): the status the
	// stream ended with is the model's, not one the transport made up.
	trailers atomic.Bool
	// over is set when a request message was over the service's max_body_bytes, and upload the
	// error that ended reading the client's messages, if not their end.
	over   atomic.Bool
	upload atomic.Pointer[error]
}

// serveGRPC handles one call on the HTTP/2 listener: route, authenticate, admit, forward,
// record, as serve does on the HTTP/1.1 listener. It is the unknown-service handler of the
// listener's gRPC server, so every method reaches it. Failures are answered as trailers-only
// gRPC answers; a panic becomes INTERNAL for this call alone.
func (g *Gateway) serveGRPC(_ any, ss grpc.ServerStream) (answer error) {
	c := &grpcCall{ss: ss, ctx: ss.Context()}
	c.md, _ = metadata.FromIncomingContext(c.ctx)
	c.path, _ = grpc.MethodFromServerStream(ss)
	if p, ok := peer.FromContext(c.ctx); ok {
		c.peer = addrOf(p.Addr)
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			c.tls = &info.State
		}
	}
	var idBuf [requestIDMaxLen]byte
	c.id = requestID(c.value(HeaderRequestID), idBuf[:0])
	c.clientID = c.value(HeaderClientRequestID)
	c.rec = g.beginGRPC(c)
	defer func() {
		if p := recover(); p != nil {
			g.panics.Add(1)
			g.log.Error("panic while handling a gRPC call; answered INTERNAL",
				"request_id", string(c.id), "panic", panicValue(p), "stack", string(debug.Stack()))
			answer = c.fail(g, errPanic)
			g.endGRPC(c, errPanic)
		}
	}()
	err := g.handleGRPC(c)
	if err != nil {
		answer = c.fail(g, err)
	} else if c.model != nil {
		answer = c.model.Err()
	}
	g.endGRPC(c, err)
	return answer
}

// addrOf is the IP address of a connection's peer.
func addrOf(a net.Addr) netip.Addr {
	if tcp, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(tcp.IP); ok {
			return ip.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.IPv4Unspecified()
}

// value is the first value of the metadata of the canonical name (nil without it).
func (c *grpcCall) value(name string) []byte { return mdHeader(c.md).value(name) }

func (g *Gateway) beginGRPC(c *grpcCall) *telemetry.Record {
	if g.tel == nil {
		return nil
	}
	rec := g.tel.Begin()
	var addr [64]byte
	var ts [maxTracestateBytes]byte
	h := mdHeader(c.md)
	rec.SetRequest([]byte(http.MethodPost), []byte(c.path), h.value("User-Agent"), h.value(":authority"),
		c.peer.AppendTo(addr[:0]), singleTraceparent(h.values(headerTraceparent)),
		requestTracestate(ts[:0], h.values(headerTracestate)))
	rec.SetRequestID(c.id)
	rec.TLS = c.tls != nil
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
	rec.End(http.StatusOK) // every call that reaches the handler is answered HTTP 200
}

// handleGRPC is the gRPC adapter of the request core: the check of this listener (a call made
// for this authority), then admit, then the call forwarded. The listener's gRPC server has
// already refused a request that is not POST (HTTP 405) or not application/grpc (HTTP 415).
func (g *Gateway) handleGRPC(c *grpcCall) error {
	if c.tls != nil && otherAuthority(c.tls.ServerName, c.value(":authority")) {
		return errMisdirected
	}
	in := inbound{
		grpc:        true,
		method:      []byte(http.MethodPost),
		target:      []byte(c.path),
		grpcService: string(c.value(config.GRPCServiceHeader)),
		peer:        c.peer,
		header:      mdHeader(c.md),
	}
	a, err := g.admit(g.routes.Load(), &in, true)
	if c.rec != nil && a.svc != nil {
		c.rec.Service, c.rec.Auth, c.rec.Caller = a.svc.name, a.svc.auth, a.caller.Name
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
// replica's slot of max_concurrent_requests until the call ends. A call that could not be
// started on a model is tried once more on another free replica (withReplica's rule): no
// message of the client's has been read by then.
func (g *Gateway) forwardGRPC(c *grpcCall, svc *service) error {
	dep, err := svc.deploymentFor(c.value(config.DeploymentHeader))
	if err != nil {
		return err
	}
	out := g.grpcOutgoing(c, svc)
	r, err := withReplica(dep, c.rec,
		func(r *replica) error { return g.callGRPC(c, svc, dep, r, out) }, nil)
	switch {
	case r == nil:
		return err // no replica to be had
	case err == nil:
		return nil
	case g.h2.stopping.Err() != nil:
		return errShuttingDown.withCause(err)
	case c.over.Load():
		return errGRPCMessageTooLarge
	case c.upload.Load() != nil && status.Code(*c.upload.Load()) == codes.ResourceExhausted:
		return errGRPCMessageTooLarge.withCause(*c.upload.Load()) // over the listener's own cap
	case errors.Is(err, errAnswerTooLarge):
		return errGRPCAnswerTooLarge.withCause(err)
	case errors.Is(c.ctx.Err(), context.Canceled):
		return errClientGone.withCause(c.ctx.Err())
	case errors.Is(err, context.DeadlineExceeded):
		return errGatewayTimeout.withCause(&upstreamFailure{service: svc.name, upstream: r.url, reason: reasonTimeout, err: err})
	case c.wrote:
		return errGRPCBroken.withCause(&upstreamFailure{service: svc.name, upstream: r.url, reason: reasonTruncated, err: err})
	}
	return upstreamError(r.upstream, err)
}

// grpcOutgoing is the metadata of the call as the model gets it, by the core's policy: the
// client's metadata without what droppedRequestHeader names, the credential carriers the service
// does not keep, the gateway's routing metadata and what the gRPC transport sets itself
// (:authority, content-type, user-agent, grpc-accept-encoding); with the request id, the trace
// context of traceContext and forwardedValues' X-Forwarded-*. The effective deadline (the
// scoring_timeout, or the client's grpc-timeout when shorter) goes as the model call's own
// grpc-timeout. It reads c.md first, then edits it into the outbound metadata: c.md is the
// call's own copy, and nothing reads the client's metadata after it.
func (g *Gateway) grpcOutgoing(c *grpcCall, svc *service) metadata.MD {
	h := mdHeader(c.md)
	var buf [256]byte
	xff, proto, host := g.forwardedValues(buf[:0], h, c.peer, c.tls != nil, h.value(":authority"))
	var tsBuf [maxTracestateBytes]byte
	var tpBuf [maxTraceparentLineLen]byte
	tp, ts := g.traceContext(tpBuf[:0], tsBuf[:0], c.rec, h)
	baggage, cutBaggage := g.boundBaggage(h.values(headerBaggage))

	out := c.md
	for k := range out {
		if listed, underscore := droppedRequestHeader([]byte(k)); listed >= 0 || underscore || grpcOwnMetadata(k) {
			delete(out, k)
		}
	}
	dropCredentialMetadata(out, svc.cfg.ForwardCredentials)
	out["x-forwarded-for"] = []string{string(xff)}
	out["x-forwarded-proto"] = []string{string(proto)}
	if len(host) > 0 {
		out["x-forwarded-host"] = []string{string(host)}
	}
	out["x-request-id"] = []string{string(c.id)}
	delete(out, "traceparent")
	if len(tp) > 0 {
		out["traceparent"] = []string{string(tp)}
	}
	delete(out, "tracestate")
	if len(ts) > 0 {
		out["tracestate"] = []string{string(ts)}
	}
	if cutBaggage {
		delete(out, "baggage")
		if len(baggage) > 0 {
			out["baggage"] = []string{string(baggage)}
		}
	}
	return out
}

// grpcOwnMetadata names the metadata that never passes from the client to the model as it is:
// what the gRPC transport to the model sets itself, and the gateway's routing metadata.
func grpcOwnMetadata(k string) bool {
	switch k {
	case ":authority", "content-type", "user-agent", "grpc-accept-encoding", "grpc-encoding", config.GRPCServiceHeader:
		return true
	}
	return false
}

// passthrough is the shape of every call to a model: messages may flow both ways, as many as
// the caller and the model send.
var passthrough = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// errModelNotReached marks a call that could not be started on a model (its connection could
// not be made or is failing): nothing of it reached the model, and it counts towards passive
// ejection.
var errModelNotReached = errors.New("the call could not be started on the model")

var errAnswerTooLarge = errors.New("a message of the model's answer is over the service's max_response_bytes")

// callGRPC makes the call to r, a replica taken from dep, within the service's scoring_timeout
// (or the client's shorter deadline), and streams it both ways: the client's messages to the
// model as they come (each checked against max_body_bytes), the model's headers, each message
// of its answer (checked against max_response_bytes) and its status and trailers to the client.
// It notes a call that could not be started for passive ejection and gives r back to dep
// however the call ends.
func (g *Gateway) callGRPC(c *grpcCall, svc *service, dep *deployment, r *replica, out metadata.MD) error {
	defer dep.release(r)
	cc, err := g.h2.conn(svc, r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.ctx, svc.timeout)
	defer cancel()
	defer context.AfterFunc(g.h2.stopping, cancel)() // Shutdown's time is up
	deadline, _ := ctx.Deadline()
	ctx = metadata.NewOutgoingContext(context.WithValue(ctx, grpcCallKey{}, c), out)
	if c.rec != nil {
		c.rec.Upstream = r.host
		c.rec.UpstreamStart()
		defer c.rec.UpstreamEnd()
	}
	cs, err := cc.NewStream(ctx, &passthrough, c.path, grpc.MaxCallRecvMsgSize(int(min(svc.cfg.MaxResponseBytes, maxInt32))))
	if err != nil {
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			err = fmt.Errorf("%w: %w", errModelNotReached, err)
		}
		err = pastDeadline(err, deadline)
		svc.observe(r, err)
		return err
	}
	svc.observe(r, nil)
	go c.forwardMessages(cs, svc.maxBody, cancel)

	err = c.answer(cs)
	return pastDeadline(err, deadline)
}

const maxInt32 = 1<<31 - 1

// forwardMessages passes the client's messages to the model as they come, each no larger than
// max, and half-closes the model's side after the client's last one. A message over max, or
// reading the client failing, ends the model call (cancel).
func (c *grpcCall) forwardMessages(cs grpc.ClientStream, max int64, cancel context.CancelFunc) {
	for {
		var m mem.BufferSlice
		err := c.ss.RecvMsg(&m)
		if err == io.EOF {
			cs.CloseSend()
			return
		}
		if err != nil {
			c.upload.Store(&err)
			cancel()
			return
		}
		if int64(m.Len()) > max {
			m.Free()
			c.over.Store(true)
			cancel()
			return
		}
		if cs.SendMsg(&m) != nil {
			return // the model's side has ended: answer learns how from the model's stream
		}
	}
}

// answer passes the model's answer to the client: its headers as they come, each message, and
// its status with its trailers. It returns nil when the model ended the call with a status of
// its own (kept in c.model), else why the answer failed.
func (c *grpcCall) answer(cs grpc.ClientStream) error {
	hdr, err := cs.Header()
	if err != nil {
		return err
	}
	if hdr != nil { // not a trailers-only answer: the headers go out now, as the model sent them
		c.setIDHeaders(hdr)
		if err := c.ss.SendHeader(hdr); err != nil {
			return err // the client is gone
		}
		c.wrote = true
	}
	for {
		var m mem.BufferSlice
		err = cs.RecvMsg(&m)
		if err != nil {
			break
		}
		if err := c.ss.SendMsg(&m); err != nil {
			return err // the client is gone
		}
	}
	if err != io.EOF && !c.trailers.Load() {
		if status.Code(err) == codes.ResourceExhausted && c.ctx.Err() == nil {
			return fmt.Errorf("%w: %w", errAnswerTooLarge, err)
		}
		return err // no status from the model: the transport's verdict
	}
	trailer := cs.Trailer()
	if !c.wrote {
		c.setIDHeaders(trailer) // a trailers-only answer carries the ids
	}
	c.ss.SetTrailer(trailer)
	c.model = status.Convert(err)
	if err == io.EOF {
		c.model = nil
	}
	c.grpcStatus = int(status.Code(err))
	if err == io.EOF {
		c.grpcStatus = grpcOK
	}
	return nil
}

// pastDeadline is err as a deadline error when it came once the call's deadline had passed. The
// model got that deadline as grpc-timeout and may end the stream at it a moment before the
// gateway's own timer is seen to fire; the client gets DEADLINE_EXCEEDED either way, and the
// replica is not counted as failing.
func pastDeadline(err error, deadline time.Time) error {
	if err == nil || errors.Is(err, context.DeadlineExceeded) || deadline.IsZero() || time.Now().Before(deadline) {
		return err
	}
	return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
}

// setIDHeaders sets answerIDHeaders' headers in md, the answer's metadata.
func (c *grpcCall) setIDHeaders(md metadata.MD) {
	var tp [55]byte
	ids, n := answerIDHeaders(&tp, c.id, c.clientID, c.rec)
	id := string(c.id) // one string for both names
	for _, f := range ids[:n] {
		switch f.name {
		case HeaderRequestID:
			md["x-request-id"] = []string{id}
		case HeaderMSRequestID:
			md["x-ms-request-id"] = []string{id}
		default:
			md[strings.ToLower(f.name)] = []string{string(f.value)}
		}
	}
}

// setIDHeaders sets answerIDHeaders' headers in h, the answer to r on a net/http listener.
func setIDHeaders(h http.Header, id []byte, r *http.Request, rec *telemetry.Record) {
	var tp [55]byte
	ids, n := answerIDHeaders(&tp, id, []byte(r.Header.Get(HeaderClientRequestID)), rec)
	for _, f := range ids[:n] {
		h.Set(f.name, string(f.value))
	}
}

// fail is the status the client gets for a call that the gateway failed: a trailers-only
// answer (grpc-status and grpc-message, with the request ids, and grpc-retry-pushback-ms and
// www-authenticate where the HTTP/1.1 path sends Retry-After and WWW-Authenticate), or, once the
// model's headers are out, the status in the trailers.
func (c *grpcCall) fail(g *Gateway, err error) error {
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
	if !c.wrote {
		md := metadata.MD{}
		c.setIDHeaders(md)
		if e.RetryAfter > 0 {
			md["grpc-retry-pushback-ms"] = []string{strconv.Itoa(e.RetryAfter * 1000)}
		}
		if e.WWWAuthenticate != "" {
			md["www-authenticate"] = []string{e.WWWAuthenticate}
		}
		c.ss.SetTrailer(md)
	}
	return status.Error(codes.Code(code), e.Message)
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

// mdHeader is a call's metadata as the request core reads it.
type mdHeader metadata.MD

func (h mdHeader) values(name string) [][]byte {
	var lower [64]byte
	vs := h[string(lowerName(lower[:0], name))]
	if len(vs) == 0 {
		return nil
	}
	out := make([][]byte, len(vs))
	for i, v := range vs {
		out[i] = []byte(v)
	}
	return out
}

func (h mdHeader) value(name string) []byte {
	var lower [64]byte
	if vs := h[string(lowerName(lower[:0], name))]; len(vs) > 0 && vs[0] != "" {
		return []byte(vs[0])
	}
	return nil
}

// lowerName appends name in lower case to dst.
func lowerName(dst []byte, name string) []byte {
	for i := 0; i < len(name); i++ {
		dst = append(dst, lower(name[i]))
	}
	return dst
}

// dropCredentialMetadata removes from a call's metadata the credential carriers the service does
// not keep: the metadata of config.CredentialHeaders, and the cookies of config.CredentialParams
// from cookie metadata (the other cookies stay, in their order).
func dropCredentialMetadata(md metadata.MD, keep []string) {
	for _, name := range config.CredentialHeaders {
		if droppedCredentialHeader([]byte(name), keep) {
			delete(md, strings.ToLower(name))
		}
	}
	cookies := md["cookie"]
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
		delete(md, "cookie")
	default:
		md["cookie"] = kept
	}
}

// Package proxy is scoregate's data plane: the fasthttp server, routing of
// /api/v1/service/{name}/{rest} to the service's model, pooled upstream connections, header
// hygiene, request ids, error bodies, the atomic swap of the services on a configuration reload,
// and graceful shutdown. It asks authn whether a credential is good and never inspects
// credentials itself.
package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/telemetry"
)

// Authenticator decides whether a request's credential is good for a service, and mints tokens
// for principals. *authn.Authenticator satisfies it.
type Authenticator interface {
	Authenticate(service, mode string, authorization [][]byte) (authn.Caller, error)
	MintToken(ctx context.Context, service string, authorization [][]byte) (authn.TokenResponse, error)
}

// Gateway is the data-plane server.
type Gateway struct {
	// routes is the current routing table. Each request reads it once and keeps that table to
	// the end, so a reload never changes a service under a request.
	routes         atomic.Pointer[routes]
	auth           Authenticator
	log            *slog.Logger
	trustedProxies []netip.Prefix
	server         *fasthttp.Server
	draining       atomic.Bool
	tel            *telemetry.Telemetry
	challenge      fasthttp.RequestHandler // ACME HTTP-01 answers, or nil
	limiter        ratelimit.Limiter       // per-key and per-principal rates, or nil
	authFail       *authFailures           // the brake on guessing credentials, or nil
	panics         atomic.Int64            // requests answered 500 after a panic
	failures       failureLog              // the budget of "request failed" lines
	h2             *h2Plane                // the HTTP/2 listener for gRPC services
	maxConns       int                     // server.max_conns, for each listener Serve serves
	maxConnsPerIP  int                     // server.max_conns_per_ip
	streams        openStreams             // streamed answers being written, for Shutdown to end
	publicEndpoint bool                    // telemetry.public_endpoint: the client's trace context is not passed on

	mu         sync.Mutex
	redirector *fasthttp.Server // the plain listener's redirect server, when TLS is on

	reloadMu sync.Mutex     // serialises Reload and Shutdown
	closed   bool           // Shutdown has run; under reloadMu
	quit     chan struct{}  // closed by Shutdown: replaced backends stop at once
	retiring sync.WaitGroup // replaced backends waiting for their last requests
}

// Option adds to a Gateway.
type Option func(*Gateway)

// WithRateLimiter enforces the services' rate_limit settings through l (shared through Redis, or
// local). Without it no rate limit applies.
func WithRateLimiter(l ratelimit.Limiter) Option { return func(g *Gateway) { g.limiter = l } }

// WithTelemetry records every request with t: a span, metrics and an access-log line, and W3C
// trace context passed on to the model. Without it the gateway records nothing and forwards
// trace headers untouched.
func WithTelemetry(t *telemetry.Telemetry) Option { return func(g *Gateway) { g.tel = t } }

// New builds a Gateway for cfg, with one connection pool per upstream. cfg must be valid.
func New(cfg *config.Config, auth Authenticator, log *slog.Logger, opts ...Option) (*Gateway, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		auth: auth,
		log:  log,
		quit: make(chan struct{}),
	}
	for _, o := range opts {
		o(g)
	}
	for _, p := range cfg.Server.TrustedProxies {
		prefix, err := config.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("server.trusted_proxies: %w", err)
		}
		g.trustedProxies = append(g.trustedProxies, prefix)
	}
	rt := &routes{services: make(map[string]*service, len(cfg.Services))}
	for _, sc := range cfg.Services {
		svc, err := newService(sc, nil, g.log)
		if err != nil {
			rt.stop()
			return nil, fmt.Errorf("service %s: %w", sc.Name, err)
		}
		rt.add(svc)
	}
	g.routes.Store(rt)
	s := cfg.Server
	g.h2 = newH2Plane(g, s)
	g.maxConns, g.maxConnsPerIP = s.MaxConns, s.MaxConnsPerIP
	g.publicEndpoint = cfg.Telemetry.PublicEndpoint
	g.server = &fasthttp.Server{
		Handler:            g.serve,
		ErrorHandler:       g.serveParseError,
		HeaderReceived:     g.headerReceived,
		ExpectHandler:      g.expect,
		ReadTimeout:        s.ReadTimeout,
		WriteTimeout:       s.WriteTimeout,
		IdleTimeout:        s.IdleTimeout,
		ReadBufferSize:     s.MaxHeaderBytes,
		MaxRequestBodySize: bufferedBodyBytes,
		StreamRequestBody:  true,
		// Serve's refusingListener caps connections, and answers one over a cap as the contract
		// says. fasthttp counts a connection until its worker is done with it, a moment after the
		// listener's count let it go, so its own cap (plain-text refusals) stays above.
		Concurrency:                  2 * s.MaxConns,
		MaxRequestsPerConn:           s.MaxRequestsPerConn,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		SecureErrorLogMessage:        true,
		CloseOnShutdown:              true,
		TCPKeepalive:                 true,
		Logger:                       fasthttpLogger{log},
	}
	return g, nil
}

// Serve accepts data-plane connections on ln until Shutdown.
func (g *Gateway) Serve(ln net.Listener) error {
	return g.server.Serve(newRefusingListener(ln, g.maxConns, g.maxConnsPerIP))
}

// Shutdown stops accepting connections, lets in-flight requests finish until ctx ends, then
// closes what is left.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.draining.Store(true)
	g.mu.Lock()
	redirector := g.redirector
	g.mu.Unlock()
	if redirector != nil {
		go redirector.ShutdownWithContext(ctx) // it holds no request worth waiting for
	}
	h2done := make(chan error, 1)
	go func() { h2done <- g.h2.shutdown(ctx) }()
	err := g.server.ShutdownWithContext(ctx)
	if ctx.Err() != nil {
		g.streams.end() // its time is up: streamed answers still open are cut (stream.go)
	}
	err = errors.Join(err, <-h2done)
	g.reloadMu.Lock()
	if !g.closed {
		g.closed = true
		close(g.quit)
		g.retiring.Wait()
		g.routes.Load().stop()
	}
	g.reloadMu.Unlock()
	return err
}

// Handler returns the data-plane request handler, for tests and embedding.
func (g *Gateway) Handler() fasthttp.RequestHandler { return g.serve }

// serve handles one data-plane request: route, authenticate, forward; then the response gets its
// request id headers, whatever happened. A panic becomes a 500 for this request alone.
func (g *Gateway) serve(ctx *fasthttp.RequestCtx) {
	var idBuf [requestIDMaxLen]byte
	var id []byte
	var rec *telemetry.Record // nil without telemetry, and once ended
	defer func() {
		if p := recover(); p != nil {
			g.recovered(ctx, p, id, rec)
		}
	}()
	if g.challenge != nil && g.isACMEChallenge(ctx) {
		g.challenge(ctx)
		return
	}
	id = requestID(&ctx.Request.Header, idBuf[:0])
	rec = g.begin(ctx, id)
	err := misdirected(ctx) // a Host the TLS connection was not opened for: 421, first
	if err == nil {
		err = g.handle(ctx, id, rec)
	}
	if err != nil {
		g.writeError(ctx, err)
		if rec != nil {
			rec.Reason = reasonOf(err)
		}
	}
	g.finish(ctx, id, rec)
	r := rec
	rec = nil // a panic from here on must not end it twice
	if s, ok := ctx.Response.BodyStream().(*modelStream); ok {
		s.record(r, id) // a streamed answer ends the record when it ends
		return
	}
	if r != nil {
		r.End(ctx.Response.StatusCode())
	}
}

// recovered answers a request whose handling panicked: 500 with the generic error body, the
// connection closed (its framing may be half read), and the panic logged at error level with its
// stack, counted and recorded. The log carries no request header: only the request id, and of
// the panic's value a runtime error's message (types and indexes) or else only its type, since a
// value made from the request could hold its credential.
func (g *Gateway) recovered(ctx *fasthttp.RequestCtx, p any, id []byte, rec *telemetry.Record) {
	g.panics.Add(1)
	if id == nil {
		var idBuf [requestIDMaxLen]byte
		id = newRequestID(idBuf[:0])
	}
	g.log.Error("panic while handling a request; answered 500",
		"request_id", string(id), "panic", panicValue(p), "stack", string(debug.Stack()))
	g.writeError(ctx, errPanic)
	g.finish(ctx, id, rec)
	if rec != nil {
		rec.Reason = errPanic.Reason
		rec.End(ctx.Response.StatusCode())
	}
}

// panicValue is what the log says of a recovered panic's value.
func panicValue(p any) string {
	if err, ok := p.(runtime.Error); ok {
		return err.Error()
	}
	return fmt.Sprintf("%T", p)
}

// Panics returns how many requests were answered 500 after a panic since the gateway started.
func (g *Gateway) Panics() int64 { return g.panics.Load() }

// begin opens the request's telemetry record (nil without telemetry), before anything changes
// the request.
func (g *Gateway) begin(ctx *fasthttp.RequestCtx, id []byte) *telemetry.Record {
	if g.tel == nil {
		return nil
	}
	rec := g.tel.Begin()
	h := &ctx.Request.Header
	var addr [64]byte
	var ts [maxTracestateBytes]byte
	rec.SetRequest(h.Method(), h.RequestURI(), h.UserAgent(), h.Host(), peerAddr(ctx).AppendTo(addr[:0]),
		singleTraceparent(h.PeekAll(headerTraceparent)), requestTracestate(ts[:0], h.PeekAll(headerTracestate)))
	rec.SetRequestID(id)
	rec.TLS = ctx.IsTLS()
	return rec
}

// W3C trace context headers.
const (
	headerTraceparent   = "Traceparent"
	headerTracestate    = "Tracestate"
	headerTraceresponse = "Traceresponse"
)

func reasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	return "internal"
}

func (g *Gateway) handle(ctx *fasthttp.RequestCtx, id []byte, rec *telemetry.Record) error {
	if err := checkRequestHeader(&ctx.Request.Header); err != nil {
		return err
	}
	svc, forward, err := g.route(ctx, g.routes.Load())
	if err != nil {
		return err
	}
	if rec != nil {
		rec.Service, rec.Auth = svc.name, svc.auth
	}
	if done, err := g.cors(ctx, svc); done {
		return err // a preflight, answered by the gateway
	}
	if svc.auth == config.AuthToken && ctx.IsPost() && isTokenPath(forward) {
		return g.mintToken(ctx, svc)
	}
	if svc.cfg.Protocol == config.ProtocolGRPC {
		return errNotFound // a gRPC service is reached through the HTTP/2 listener only
	}
	if int64(ctx.Request.Header.ContentLength()) > svc.maxBody {
		return errBodyTooLarge // the body is left unread
	}
	if svc.blocked(forward) {
		return errNotFound
	}
	caller, err := g.authenticate(ctx, svc)
	if err != nil {
		return err
	}
	if err := checkContentType(&ctx.Request.Header, svc.cfg.ContentTypes); err != nil {
		return err
	}
	if err := g.rateLimit(svc, caller); err != nil {
		return err
	}
	return g.forward(ctx, svc, forward, id, rec)
}

// route finds the service of the request in rt and the target to forward to the model. CONNECT
// (400) and TRACE and TRACK (405) are refused first, in any case, before a credential is read.
func (g *Gateway) route(ctx *fasthttp.RequestCtx, rt *routes) (*service, []byte, error) {
	switch m := ctx.Method(); {
	case bytes.EqualFold(m, []byte(fasthttp.MethodConnect)):
		return nil, nil, errMethodNotAllowed
	case bytes.EqualFold(m, []byte(fasthttp.MethodTrace)), bytes.EqualFold(m, []byte("TRACK")):
		// A model answering TRACE echoes the request, cookies and all, back to the caller.
		return nil, nil, errTraceRefused
	}
	name, forward, ok, valid := splitTarget(ctx.Request.Header.RequestURI())
	switch {
	case !valid:
		return nil, nil, errBadPath
	case !ok:
		return nil, nil, errNotFound
	}
	svc := rt.services[string(name)]
	if svc == nil {
		return nil, nil, errNotFound
	}
	return svc, forward, nil
}

// authenticate asks authn about the request's credential. Only the Authorization header is read:
// a credential anywhere else (query string, body, cookie) counts for nothing. A client address
// that has failed too often is refused before its credential is looked at, and a wrong
// credential counts against its address.
func (g *Gateway) authenticate(ctx *fasthttp.RequestCtx, svc *service) (authn.Caller, error) {
	client := func() netip.Addr { return fasthttpClient(g, ctx) }
	if err := g.authFail.scoringBlocked(svc, client); err != nil {
		return authn.Caller{}, err
	}
	c, err := g.auth.Authenticate(svc.name, svc.auth, ctx.Request.Header.PeekAll(fasthttp.HeaderAuthorization))
	if err != nil {
		return c, g.authFail.scoringFailed(g, svc, client, err)
	}
	return c, nil
}

// authError maps authn's answer onto the client's error: 401 without or with a bad credential,
// 400 for two, 403 for a role without the permission, 503 when the gateway cannot decide.
func authError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, authn.ErrNoCredential):
		return errMissingCred
	case errors.Is(err, authn.ErrMultipleCredentials):
		return errMultipleCreds
	case errors.Is(err, authn.ErrInvalidCredential):
		return errInvalidCred
	case errors.Is(err, authn.ErrForbidden):
		return errForbidden
	case errors.Is(err, authn.ErrUnavailable):
		return errUndecidable
	default:
		return errInternal.withCause(err)
	}
}

// isTokenPath reports whether the forward target is /token (with or without a query).
func isTokenPath(target []byte) bool {
	return string(target) == "/token" || bytes.HasPrefix(target, []byte("/token?"))
}

// mintToken answers POST /api/v1/service/{name}/token for a token-mode service: the caller's
// principal key buys a token for this service (Azure ML's token endpoint). It never reaches the
// model.
func (g *Gateway) mintToken(ctx *fasthttp.RequestCtx, svc *service) error {
	client := fasthttpClient(g, ctx)
	if err := g.authFail.blockedForPrincipals(client); err != nil {
		return err
	}
	resp, err := g.auth.MintToken(context.Background(), svc.name, ctx.Request.Header.PeekAll(fasthttp.HeaderAuthorization))
	if err != nil {
		return g.authFail.principalFailed(g, client, err)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return errInternal.withCause(err)
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.Response.SetBody(body)
	return nil
}

// forward sends the request to a replica of the chosen deployment and puts the model's answer in
// the response. The client's request is reused as the outbound one (no copy of the body; a body
// over bufferedBodyBytes streams through).
func (g *Gateway) forward(ctx *fasthttp.RequestCtx, svc *service, target, id []byte, rec *telemetry.Record) error {
	dep := svc.chooseDeployment()
	if pin := ctx.Request.Header.Peek(config.DeploymentHeader); len(pin) > 0 {
		if dep = svc.byName[string(pin)]; dep == nil {
			return errNoDeployment
		}
	}
	req := &ctx.Request
	g.setTraceContext(&req.Header, rec)
	var xffBuf [128]byte
	if !g.cleanRequest(&req.Header, peerAddr(ctx), ctx.IsTLS(), xffBuf[:0]) {
		return errBadRequest
	}
	dropCredentials(&req.Header, svc.cfg.ForwardCredentials)
	req.Header.Del(HeaderRequestID)
	req.Header.SetBytesV(HeaderRequestID, id)
	var targetBuf [256]byte
	req.SetRequestURIBytes(dropCredentialParams(targetBuf[:0], target, svc.cfg.ForwardCredentials))
	if !req.Header.IsHTTP11() {
		// The gateway speaks HTTP/1.1 to the model whatever the client spoke; the client's
		// version is put back for fasthttp, which answers the client by it.
		var protoBuf [16]byte
		proto := append(protoBuf[:0], req.Header.Protocol()...)
		req.Header.SetProtocol("HTTP/1.1")
		defer req.Header.SetProtocolBytes(proto)
	}
	var body *streamedBody
	if req.IsBodyStream() {
		var err error
		if body, err = prepareBody(req, svc.maxBody); err != nil {
			return err
		}
		defer body.release()
		dropTrailers(&req.Header)
		if body != nil && req.Header.ContentLength() == -1 {
			// A chunked body that streams through: its trailers come at its end.
			req.SetBodyStream(trailerDropper{r: body, h: &req.Header}, -1)
		}
	}
	if svc.mirror != nil {
		svc.maybeMirror(req)
	}

	r, waited, err := dep.acquire(nil)
	if rec != nil {
		rec.Deployment, rec.QueueWait = dep.name, waited
	}
	if err != nil {
		return admissionError(err)
	}
	err = g.call(ctx, svc, dep, r, rec)
	if err != nil && neverSent(err) {
		// Nothing reached the model: one more try, on another replica, if one is free now.
		if r2 := dep.tryAcquire(r); r2 != nil {
			r = r2 // a failure now is this replica's
			err = g.call(ctx, svc, dep, r2, rec)
		}
	}
	if err != nil {
		if cerr := body.clientError(); cerr != nil {
			return cerr
		}
		return upstreamError(r.upstream, err)
	}
	cleanResponse(&ctx.Response.Header)
	return nil
}

// call sends the request to r, a replica taken from dep, within the scoring timeout, notes
// connection failures for passive ejection, and gives r back to dep however the call ends (a
// panic included, so that a slot of max_concurrent_requests is never kept for good). An answer
// of known length is read whole before call returns, so the slot is free before the client reads
// a byte. A streamed answer (stream.go) is left in the response as a modelStream, which holds r
// until the stream ends.
func (g *Gateway) call(ctx *fasthttp.RequestCtx, svc *service, dep *deployment, r *replica, rec *telemetry.Record) error {
	held := true
	defer func() {
		if held {
			dep.release(r)
		}
	}()
	req := &ctx.Request
	req.Header.SetHost(r.host)
	req.URI().SetScheme(r.scheme)
	if rec != nil {
		rec.Upstream = r.host
		rec.UpstreamStart()
	}
	ctx.Response.StreamBody = true // modelTransport decides from the answer's headers
	err := r.client.DoTimeout(req, &ctx.Response, svc.timeout)
	ctx.Response.StreamBody = false
	svc.observe(r, err)
	if s, ok := ctx.Response.BodyStream().(*modelStream); ok && err == nil {
		s.adopt(&g.streams, svc, dep, r, ctx.Conn(), g.server.WriteTimeout)
		held = false
		return nil
	}
	if rec != nil {
		rec.UpstreamEnd()
	}
	return err
}

// finish sets the headers every response carries: the request id under both names, the client's
// request id echoed, and (with telemetry) the trace as a W3C traceresponse.
func (g *Gateway) finish(ctx *fasthttp.RequestCtx, id []byte, rec *telemetry.Record) {
	h := &ctx.Response.Header
	h.SetBytesV(HeaderRequestID, id)
	h.SetBytesV(HeaderMSRequestID, id)
	if rec != nil {
		var tp [55]byte
		h.SetBytesV(headerTraceresponse, rec.AppendTraceparent(tp[:0]))
	}
	if v := ctx.Request.Header.Peek(HeaderClientRequestID); len(v) > 0 && validRequestID(v) {
		h.SetBytesV(HeaderClientRequestID, v)
	}
	if g.draining.Load() {
		h.SetConnectionClose()
	}
	if p, ok := ctx.UserValue(corsMark{}).(*corsPolicy); ok {
		p.decorate(ctx)
	}
}

// expect answers "Expect: 100-continue" before the body is read. A request that would be
// refused anyway (bad path, unknown service, a body over the limit, a bad credential, a
// Content-Type the service does not accept) gets its error at once and the connection is closed,
// so the body is never read; anything else gets 100 Continue and is then handled as usual. A
// panic becomes a 500, as in serve.
func (g *Gateway) expect(ctx *fasthttp.RequestCtx) (status int) {
	var rec *telemetry.Record // nil without telemetry, and once ended
	defer func() {
		if p := recover(); p != nil {
			g.recovered(ctx, p, nil, rec)
			status = ctx.Response.StatusCode()
		}
	}()
	err := checkRequestHeader(&ctx.Request.Header)
	var svc *service
	var forward []byte
	if err == nil {
		svc, forward, err = g.route(ctx, g.routes.Load())
	}
	switch {
	case err != nil:
	case int64(ctx.Request.Header.ContentLength()) > svc.maxBody:
		err = errBodyTooLarge
	case svc.blocked(forward):
		err = errNotFound
	case svc.auth == config.AuthToken && ctx.IsPost() && isTokenPath(forward):
		// the token endpoint checks the principal's key itself, once
	case svc.cfg.Protocol == config.ProtocolGRPC:
		err = errNotFound
	default:
		if _, err = g.authenticate(ctx, svc); err == nil {
			err = checkContentType(&ctx.Request.Header, svc.cfg.ContentTypes)
		}
	}
	if err == nil {
		return fasthttp.StatusContinue
	}
	var idBuf [requestIDMaxLen]byte
	id := requestID(&ctx.Request.Header, idBuf[:0])
	rec = g.begin(ctx, id)
	if rec != nil && svc != nil {
		rec.Service, rec.Auth = svc.name, svc.auth
	}
	g.writeError(ctx, err)
	g.finish(ctx, id, rec)
	status = ctx.Response.StatusCode()
	if r := rec; r != nil {
		rec = nil // a panic from here on must not end it twice
		r.Reason = reasonOf(err)
		r.End(status)
	}
	return status
}

// bufferedBodyBytes is the largest request body read into memory before the handler runs; a
// larger one is streamed to the model as it arrives.
const bufferedBodyBytes = config.StreamedBodyThresholdBytes

// headerReceived decides how much of a body fasthttp reads before the handler runs (bodies
// over that stream). A request whose declared body is over its service's limit gets a single
// byte read, so that the handler refuses it with 413 at once; a service with a limit under
// bufferedBodyBytes never has more than its limit read.
func (g *Gateway) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	name, _, ok, valid := splitTarget(h.RequestURI())
	if !ok || !valid {
		return fasthttp.RequestConfig{}
	}
	svc := g.routes.Load().services[string(name)]
	switch {
	case svc == nil:
	case int64(h.ContentLength()) > svc.maxBody:
		return fasthttp.RequestConfig{MaxRequestBodySize: 1}
	case svc.maxBody < bufferedBodyBytes:
		return fasthttp.RequestConfig{MaxRequestBodySize: int(svc.maxBody)}
	}
	return fasthttp.RequestConfig{}
}

// serveParseError answers a request fasthttp could not read, before any handler ran, and records
// it with whatever of the request was read.
func (g *Gateway) serveParseError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	var e *Error
	switch {
	case errors.As(err, &small):
		e = errHeadersTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = errBodyTooLarge
	case errors.As(err, &netErr) && netErr.Timeout():
		e = errRequestTimeout
	default:
		// fasthttp's parse errors may quote the request's bytes.
		e = errBadRequest.withCause(errors.New(redactQuoted(err.Error())))
	}
	g.writeError(ctx, e)
	var idBuf [requestIDMaxLen]byte
	id := newRequestID(idBuf[:0])
	h := &ctx.Response.Header
	h.SetBytesV(HeaderRequestID, id)
	h.SetBytesV(HeaderMSRequestID, id)
	if g.tel != nil {
		rec := g.begin(ctx, id)
		rec.Reason = e.Reason
		rec.End(ctx.Response.StatusCode())
	}
}

// fasthttpLogger sends fasthttp's own messages to the gateway's log. Even with
// SecureErrorLogMessage some of fasthttp's parse errors quote request bytes (a header line, a
// header value, the whole head when the request line has no version), which may hold a
// credential: what errors say in quotes is left out.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	for i, a := range args {
		if err, ok := a.(error); ok {
			args[i] = redactQuoted(err.Error())
		}
	}
	l.log.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// redactQuoted replaces every Go-quoted string ("…", as %q writes it) in s with "[redacted]".
func redactQuoted(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteString(`"[redacted]"`)
		j := i + 1
		for j < len(s) && s[j] != '"' {
			if s[j] == '\\' {
				j++
			}
			j++
		}
		if j >= len(s) {
			return b.String() // an unterminated quote: the rest is left out too
		}
		s = s[j+1:]
	}
}

// Package proxy is scoregate's data plane: the fasthttp server, routing of
// /api/v1/service/{name}/{rest} to the service's model, pooled upstream connections, header
// hygiene, request ids, error bodies, the atomic swap of the services on a configuration reload,
// and graceful shutdown. It asks authn whether a credential is good and never inspects
// credentials itself.
package proxy

import (
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
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/internal/usage"
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
	tokenLimiter   *ratelimit.TokenLimiter // token limits of api: openai services (openai_tokens.go)
	usageSink      usage.Sink              // language-model usage (openai.go), or nil
	llmObserver    func(*llmCall)          // tests: sees every language-model call end (export_test.go)
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
	if g.tokenLimiter == nil {
		g.tokenLimiter = ratelimit.NewLocalTokenLimiter()
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
		ReduceMemoryUsage:  true,
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
	id = requestID(ctx.Request.Header.PeekCanonical(keyRequestID), idBuf[:0])
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
		singleTraceparent(h.PeekAllCanonical(keyTraceparent)), requestTracestate(ts[:0], h.PeekAllCanonical(keyTracestate)))
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

// handle is the HTTP/1.1 adapter of the request core: the header checks of this listener, then
// admit, then the answer admit chose (the model's, a CORS preflight's or a token).
func (g *Gateway) handle(ctx *fasthttp.RequestCtx, id []byte, rec *telemetry.Record) error {
	if err := checkRequestHeader(&ctx.Request.Header); err != nil {
		return err
	}
	in := inboundOf(ctx)
	a, err := g.admitHTTP(ctx, &in, true)
	if rec != nil && a.svc != nil {
		rec.Service, rec.Auth, rec.Caller = a.svc.name, a.svc.auth, a.caller.Name
	}
	if err != nil {
		return err
	}
	switch a.answer {
	case answerPreflight:
		return a.svc.cors.preflight(ctx)
	case answerToken:
		return g.mintToken(ctx, a.svc, &in)
	}
	return g.forward(ctx, a.svc, a.forward, &a.caller, id, rec)
}

// inboundOf reads a fasthttp request into the core's terms, without copying.
func inboundOf(ctx *fasthttp.RequestCtx) inbound {
	h := &ctx.Request.Header
	return inbound{
		method:        h.Method(),
		target:        h.RequestURI(),
		contentLength: int64(h.ContentLength()),
		contentType:   h.ContentType(),
		preflight:     ctx.IsOptions() && len(h.Peek(headerOrigin)) > 0 && len(h.Peek(headerACRequestMethod)) > 0,
		peer:          peerAddr(ctx),
		header:        (*fastHeader)(h),
	}
}

// admitHTTP is admit for a fasthttp request; a service with cors gets its policy left for
// finish, which gives the answer (the model's or an error) the CORS response headers.
func (g *Gateway) admitHTTP(ctx *fasthttp.RequestCtx, in *inbound, full bool) (admission, error) {
	a, err := g.admit(g.routes.Load(), in, full)
	if a.svc != nil && a.svc.cors != nil && a.answer != answerPreflight {
		ctx.SetUserValue(corsMark{}, a.svc.cors)
	}
	return a, err
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

// mintToken answers POST /api/v1/service/{name}/token for a token-mode service: the caller's
// principal key buys a token for this service (Azure ML's token endpoint). It never reaches the
// model.
func (g *Gateway) mintToken(ctx *fasthttp.RequestCtx, svc *service, in *inbound) error {
	client := g.clientOf(in)
	if err := g.authFail.blockedForPrincipals(client); err != nil {
		return err
	}
	resp, err := g.auth.MintToken(context.Background(), svc.name, in.header.values("Authorization"))
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
// over bufferedBodyBytes streams through). A language-model call of an api: openai service
// (openai.go) is read on its way: its request before it goes, its answer as it comes back.
func (g *Gateway) forward(ctx *fasthttp.RequestCtx, svc *service, target []byte, caller *authn.Caller, id []byte, rec *telemetry.Record) error {
	dep, err := svc.deploymentFor(ctx.Request.Header.PeekCanonical(keyDeployment))
	if err != nil {
		return err
	}
	req := &ctx.Request
	var ai *llmCall // nil but for a language-model call
	if svc.openai {
		ai = g.newLLMCall(svc, operationOf(req.Header.Method(), target), caller)
	}
	g.setTraceContext(&req.Header, rec)
	var fwdBuf [256]byte
	if !g.cleanRequest(&req.Header, peerAddr(ctx), ctx.IsTLS(), fwdBuf[:0]) {
		return errBadRequest
	}
	dropCredentials(&req.Header, svc.cfg.ForwardCredentials)
	req.Header.SetCanonical(keyRequestID, id)
	var targetBuf [256]byte
	req.SetRequestURIBytes(dropCredentialParams(targetBuf[:0], target, svc.cfg.ForwardCredentials))
	// An answer streams to the client only over HTTP/1.1: chunked framing is all fasthttp writes
	// for a body of unknown length, and an HTTP/1.0 client cannot read it. Such a client gets the
	// answer read whole (within max_response_bytes), with its Content-Length.
	stream := req.Header.IsHTTP11()
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
		if ai != nil {
			body, err = prepareLLMBody(req, svc.maxBody)
		} else {
			body, err = prepareBody(req, svc.maxBody)
		}
		if err != nil {
			return err
		}
		defer body.release()
		dropTrailers(&req.Header)
		if body != nil && req.Header.ContentLength() == -1 {
			// A chunked body that streams through: its trailers come at its end.
			req.SetBodyStream(trailerDropper{r: body, h: &req.Header, body: body}, -1)
		}
	}
	if ai != nil {
		ai.dep = dep
		ai.readRequest(req)
		if err := g.reserveTokens(ai); err != nil {
			return err // refused by a token limit: the model never sees it
		}
		// From here on the call ends in usageKnown, exactly once (llmCall.end): below, or when
		// its streamed answer ends.
	}
	if svc.mirror != nil {
		svc.maybeMirror(req)
	}

	r, err := withReplica(dep, rec, func(r *replica) error { return g.call(ctx, svc, dep, r, rec, stream, ai) }, nil)
	if ai != nil && !ai.streamed {
		ai.unsent = err != nil && unsentError(r, err)
		g.endLLMCall(ai, &ctx.Response, err, rec)
	}
	if r == nil {
		return err // no replica to be had
	}
	if err != nil {
		if cerr := body.clientError(); cerr != nil {
			return cerr
		}
		return upstreamError(r.upstream, err)
	}
	cleanResponse(&ctx.Response.Header)
	if ai != nil {
		setTokenHeaders(&ctx.Response.Header, &ai.tokens)
	}
	return nil
}

// call sends the request to r, a replica taken from dep, within the scoring timeout, notes
// connection failures for passive ejection, and gives r back to dep however the call ends (a
// panic included, so that a slot of max_concurrent_requests is never kept for good). An answer
// of known length is read whole before call returns, so the slot is free before the client reads
// a byte. A streamed answer (stream.go) is left in the response as a modelStream, which holds r
// until the stream ends.
func (g *Gateway) call(ctx *fasthttp.RequestCtx, svc *service, dep *deployment, r *replica, rec *telemetry.Record, stream bool, ai *llmCall) error {
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
	if ai != nil {
		ai.start = time.Now()
	}
	ctx.Response.StreamBody = stream // modelTransport decides from the answer's headers
	err := r.client.DoTimeout(req, &ctx.Response, svc.timeout)
	ctx.Response.StreamBody = false
	svc.observe(r, err)
	if ai != nil && err == nil {
		ai.status = ctx.Response.StatusCode()
	}
	if s, ok := ctx.Response.BodyStream().(*modelStream); ok && err == nil {
		s.adopt(&g.streams, svc, dep, r, ctx.Conn(), g.server.WriteTimeout)
		if s.ended.Load() {
			// Shutdown's time was up before the answer came, and the stream is cut at its first
			// read: the client still gets the status line first, not a piece held with it.
			ctx.Response.ImmediateHeaderFlush = true
		}
		if ai != nil {
			s.meter, ai.streamed = newAnswerMeter(ai, &ctx.Response.Header, true), true
			if s.meter.strip {
				// What the client gets of a piece is known only once the meter has read it, which
				// may take more than one read: the headers are not held for it.
				ctx.Response.ImmediateHeaderFlush = true
			}
		}
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
	var tp [55]byte
	ids, n := answerIDHeaders(&tp, id, ctx.Request.Header.PeekCanonical(keyClientRequestID), rec)
	for _, f := range ids[:n] {
		h.SetCanonical(f.key, f.value)
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
	var caller string
	if err == nil {
		// admit's steps up to the body; a preflight or a token request is answered after it
		in := inboundOf(ctx)
		var a admission
		a, err = g.admitHTTP(ctx, &in, false)
		svc, caller = a.svc, a.caller.Name
	}
	if err == nil {
		return fasthttp.StatusContinue
	}
	var idBuf [requestIDMaxLen]byte
	id := requestID(ctx.Request.Header.PeekCanonical(keyRequestID), idBuf[:0])
	rec = g.begin(ctx, id)
	if rec != nil && svc != nil {
		rec.Service, rec.Auth, rec.Caller = svc.name, svc.auth, caller
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
	svc, _, err := routeTarget(g.routes.Load(), h.RequestURI())
	switch {
	case err != nil:
	case svc.overBodyLimit(int64(h.ContentLength())):
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
	ids, n := answerIDHeaders(nil, id, nil, nil) // what fasthttp read is not trusted
	for _, f := range ids[:n] {
		ctx.Response.Header.SetCanonical(f.key, f.value)
	}
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

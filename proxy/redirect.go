package proxy

import (
	"bytes"
	"net"
	"net/http"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// acmeChallengePrefix starts the path of every ACME HTTP-01 challenge request.
var acmeChallengePrefix = []byte("/.well-known/acme-challenge/")

// WithACMEChallenge answers ACME HTTP-01 challenges (GET /.well-known/acme-challenge/…) with h,
// on the plain listener, whether it serves the data plane or redirects to HTTPS. Such requests
// are not data-plane requests: they carry no credential and reach no model.
func WithACMEChallenge(h http.Handler) Option {
	return func(g *Gateway) { g.challenge = fasthttpadaptor.NewFastHTTPHandler(h) }
}

// isACMEChallenge reports whether the plain listener should hand the request to the challenge
// handler.
func (g *Gateway) isACMEChallenge(ctx *fasthttp.RequestCtx) bool {
	return g.challenge != nil && !ctx.IsTLS() && bytes.HasPrefix(ctx.Request.Header.RequestURI(), acmeChallengePrefix)
}

// ServeRedirect serves the plain listener when the data plane is on HTTPS: ACME HTTP-01
// challenges are answered, and every other request gets a 308 redirect to the same host and
// target on httpsPort (308 keeps the method and body; a client that sent a credential over plain
// HTTP should still be fixed, since the credential has crossed the network in the clear).
//
// hosts, when not nil, says which hosts the HTTPS listener serves (given lowercase, without port
// or final dot): a request for any other host gets 421 Misdirected Request and no Location, so
// that a client's Host is never copied into a redirect to a host the gateway does not serve.
// With nil every well-formed host is redirected.
func (g *Gateway) ServeRedirect(ln net.Listener, httpsPort string, hosts func(string) bool) error {
	s := &fasthttp.Server{
		Handler:               func(ctx *fasthttp.RequestCtx) { g.redirect(ctx, httpsPort, hosts) },
		ReadTimeout:           g.server.ReadTimeout,
		WriteTimeout:          g.server.WriteTimeout,
		IdleTimeout:           g.server.IdleTimeout,
		ReadBufferSize:        g.server.ReadBufferSize,
		MaxRequestBodySize:    4096, // a redirect needs no body; a larger one closes the connection
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		SecureErrorLogMessage: true,
		CloseOnShutdown:       true,
		Logger:                g.server.Logger,
	}
	g.mu.Lock()
	g.redirector = s
	g.mu.Unlock()
	return s.Serve(ln)
}

func (g *Gateway) redirect(ctx *fasthttp.RequestCtx, httpsPort string, hosts func(string) bool) {
	if g.isACMEChallenge(ctx) {
		g.challenge(ctx)
		return
	}
	host := ctx.Request.Header.Host()
	if h, _, err := net.SplitHostPort(string(host)); err == nil {
		host = []byte(h)
	} else if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	if len(host) == 0 || !validRedirectHost(host) {
		g.refuseRedirect(ctx, errBadRequest)
		return
	}
	if hosts != nil {
		host = trimDot(bytes.ToLower(host))
		if !hosts(string(host)) {
			g.refuseRedirect(ctx, errMisdirected)
			return
		}
	}
	var loc []byte
	loc = append(loc, "https://"...)
	if bytes.IndexByte(host, ':') >= 0 {
		loc = append(append(append(loc, '['), host...), ']')
	} else {
		loc = append(loc, host...)
	}
	if httpsPort != "443" {
		loc = append(append(loc, ':'), httpsPort...)
	}
	target := ctx.Request.Header.RequestURI()
	if len(target) == 0 || target[0] != '/' {
		target = []byte("/")
	}
	loc = append(loc, target...)
	ctx.Response.Header.SetBytesV("Location", loc)
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
}

// refuseRedirect answers a request the plain listener does not redirect with err, carrying the
// request id headers as every data-plane error does.
func (g *Gateway) refuseRedirect(ctx *fasthttp.RequestCtx, err error) {
	var idBuf [requestIDMaxLen]byte
	g.writeError(ctx, err)
	g.finish(ctx, requestID(ctx.Request.Header.PeekCanonical(keyRequestID), idBuf[:0]), nil)
}

// validRedirectHost allows the characters of a DNS name or an IP address, so that a Host header
// cannot turn the Location header into something else.
func validRedirectHost(h []byte) bool {
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/config"
)

// corsPolicy is a service's services[].cors, ready for requests. The gateway answers a preflight
// itself and never forwards it; an actual request is handled as any other (credential and all),
// and its answer gets the CORS response headers in finish.
type corsPolicy struct {
	anyOrigin bool
	origins   map[string]struct{}

	anyMethod    bool
	methods      []string
	allowMethods string // Access-Control-Allow-Methods, unless anyMethod

	anyHeader    bool
	headers      map[string]struct{} // lower case
	allowHeaders string              // Access-Control-Allow-Headers, unless anyHeader

	maxAge string // Access-Control-Max-Age, or "" for none
}

// newCORSPolicy returns the policy of c, or nil when CORS is off.
func newCORSPolicy(c config.CORS) *corsPolicy {
	if !c.Enabled() {
		return nil
	}
	p := &corsPolicy{origins: map[string]struct{}{}, headers: map[string]struct{}{}}
	for _, o := range c.AllowedOrigins {
		p.anyOrigin = p.anyOrigin || o == "*"
		p.origins[o] = struct{}{}
	}
	p.anyMethod = len(c.AllowedMethods) == 1 && c.AllowedMethods[0] == "*"
	p.methods = c.AllowedMethods
	p.allowMethods = strings.Join(c.AllowedMethods, ", ")
	p.anyHeader = len(c.AllowedHeaders) == 1 && c.AllowedHeaders[0] == "*"
	for _, h := range c.AllowedHeaders {
		p.headers[strings.ToLower(h)] = struct{}{}
	}
	p.allowHeaders = strings.Join(c.AllowedHeaders, ", ")
	if s := int64(c.MaxAge.Seconds()); s > 0 {
		p.maxAge = strconv.FormatInt(s, 10)
	}
	return p
}

// CORS request and response headers (the Fetch standard, §3.2).
const (
	headerOrigin             = "Origin"
	headerACRequestMethod    = "Access-Control-Request-Method"
	headerACRequestHeaders   = "Access-Control-Request-Headers"
	headerACAllowOrigin      = "Access-Control-Allow-Origin"
	headerACAllowMethods     = "Access-Control-Allow-Methods"
	headerACAllowHeaders     = "Access-Control-Allow-Headers"
	headerACAllowCredentials = "Access-Control-Allow-Credentials"
	headerACExposeHeaders    = "Access-Control-Expose-Headers"
	headerACMaxAge           = "Access-Control-Max-Age"
	corsExposedHeaders       = HeaderRequestID + ", " + HeaderMSRequestID + ", " + HeaderClientRequestID + ", Retry-After"
	corsPreflightVary        = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
)

// errCORSRefused answers a preflight whose origin, method or headers the service does not allow.
// A 204 without the allow headers would fail in the browser just the same; a 403 also says so in
// the access log, the metrics and to a developer reading the answer.
var errCORSRefused = newError(fasthttp.StatusForbidden, "Forbidden", "cors_refused",
	"this origin, method or header is not allowed by the service's CORS policy")

// corsMark is the user-value key under which admitHTTP leaves a service's policy for finish. A
// service without cors has no CORS step: its preflights are ordinary requests.
type corsMark struct{}

// preflight answers a CORS preflight: 204 with the allow headers, or errCORSRefused.
func (p *corsPolicy) preflight(ctx *fasthttp.RequestCtx) error {
	h := &ctx.Request.Header
	origin := h.Peek(headerOrigin)
	method := h.Peek(headerACRequestMethod)
	if !p.allowsOrigin(origin) || !p.allowsMethod(method) {
		return errCORSRefused
	}
	var requested []byte
	for _, v := range h.PeekAll(headerACRequestHeaders) {
		if !p.allowsHeaders(v) {
			return errCORSRefused
		}
		if len(requested) > 0 {
			requested = append(requested, ',')
		}
		requested = append(requested, v...)
	}
	resp := &ctx.Response
	resp.SetStatusCode(fasthttp.StatusNoContent)
	rh := &resp.Header
	if p.anyOrigin {
		rh.Set(headerACAllowOrigin, "*")
	} else {
		rh.SetBytesV(headerACAllowOrigin, origin)
	}
	rh.Set("Vary", corsPreflightVary)
	if p.anyMethod {
		rh.SetBytesV(headerACAllowMethods, method)
	} else {
		rh.Set(headerACAllowMethods, p.allowMethods)
	}
	switch {
	case !p.anyHeader:
		rh.Set(headerACAllowHeaders, p.allowHeaders)
	case len(requested) > 0:
		rh.SetBytesV(headerACAllowHeaders, requested)
	}
	if p.maxAge != "" {
		rh.Set(headerACMaxAge, p.maxAge)
	}
	return nil
}

func (p *corsPolicy) allowsOrigin(origin []byte) bool {
	if p.anyOrigin {
		return true
	}
	_, ok := p.origins[string(origin)]
	return ok
}

// allowsMethod reports whether a preflight may ask for method: a token among the allowed
// methods, compared exactly, and never one the gateway refuses.
func (p *corsPolicy) allowsMethod(method []byte) bool {
	if len(method) == 0 || !isToken(method) || bytes.EqualFold(method, []byte(fasthttp.MethodTrace)) ||
		bytes.EqualFold(method, []byte("TRACK")) || bytes.EqualFold(method, []byte(fasthttp.MethodConnect)) {
		return false
	}
	if p.anyMethod {
		return true
	}
	for _, m := range p.methods {
		if m == string(method) {
			return true
		}
	}
	return false
}

// allowsHeaders reports whether every name of an Access-Control-Request-Headers value (a comma
// list of header names) is allowed.
func (p *corsPolicy) allowsHeaders(list []byte) bool {
	var lower [64]byte
	for name := range bytes.SplitSeq(list, []byte(",")) {
		name = bytes.Trim(name, " \t")
		if len(name) == 0 {
			continue
		}
		if !isToken(name) {
			return false
		}
		if p.anyHeader {
			continue
		}
		if len(name) > len(lower) {
			return false // longer than any header name worth allowing
		}
		l := lower[:len(name)]
		for i, c := range name {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			l[i] = c
		}
		if _, ok := p.headers[string(l)]; !ok {
			return false
		}
	}
	return true
}

// decorate gives the answer to an actual request (the model's, or the gateway's error) the
// service's CORS response headers: the model's own Access-Control-* headers are dropped (the
// policy is the gateway's; a model's Access-Control-Allow-Credentials must never reach a
// browser), and an allowed origin gets Access-Control-Allow-Origin and the gateway's request-id
// headers exposed. Unless any origin is allowed, the answer varies by Origin.
func (p *corsPolicy) decorate(ctx *fasthttp.RequestCtx) {
	rh := &ctx.Response.Header
	for _, name := range []string{headerACAllowOrigin, headerACAllowCredentials, headerACAllowMethods,
		headerACAllowHeaders, headerACExposeHeaders, headerACMaxAge} {
		rh.Del(name)
	}
	if !p.anyOrigin {
		rh.Add("Vary", headerOrigin)
	}
	origin := ctx.Request.Header.Peek(headerOrigin)
	if len(origin) == 0 || !p.allowsOrigin(origin) {
		return
	}
	if p.anyOrigin {
		rh.Set(headerACAllowOrigin, "*")
	} else {
		rh.SetBytesV(headerACAllowOrigin, origin)
	}
	rh.Set(headerACExposeHeaders, corsExposedHeaders)
}

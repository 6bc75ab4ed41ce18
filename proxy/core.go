package proxy

import (
	"bytes"
	"net/http"
	"net/netip"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

// The request core: the steps every request takes whichever listener it came on, written once
// over plain values. The listeners' files are adapters: gateway.go and headers.go read a
// fasthttp request into an inbound and write the core's answer out; grpc.go does the same for
// a gRPC call on the HTTP/2 listener. core.go admits a request; core_forward.go chooses the
// deployment and takes a replica with the retry rule; core_headers.go is the header policy;
// requestid.go the request ids.

// inbound is a request as admission reads it, filled by each listener's adapter without
// copying (on the HTTP/1.1 listener, slices into the request's header, good until the handler
// returns).
type inbound struct {
	grpc   bool   // the call came on the HTTP/2 (gRPC) listener
	method []byte // the request method
	// target is the request target (HTTP/1.1: /api/v1/service/{name}/{rest}; gRPC: the :path,
	// /package.Service/Method).
	target []byte
	// grpcService is the scoregate-service metadata of a gRPC call (empty: the only gRPC service).
	grpcService string
	// contentLength is the declared body length (HTTP/1.1; -1 for chunked, -2 for a body read
	// until the connection closes), and contentType the Content-Type.
	contentLength int64
	contentType   []byte
	// preflight is a CORS preflight: OPTIONS with Origin and Access-Control-Request-Method.
	preflight bool
	peer      netip.Addr    // the connection's peer
	header    requestHeader // the rest, read only when a step needs it
}

// answerKind says who answers an admitted request.
type answerKind uint8

const (
	answerModel     answerKind = iota // forwarded to the model
	answerPreflight                   // a CORS preflight, answered by the gateway from the service's policy
	answerToken                       // POST /token of a token-mode service: the gateway mints a token
)

// admission is admit's verdict on a request.
type admission struct {
	// svc is the service routed to: set once routing found it, even when a later step refuses.
	svc *service
	// forward is the target the model gets (HTTP/1.1: the part after the service's name; gRPC:
	// the :path unchanged), and rpcService and rpcMethod a gRPC call's names.
	forward               []byte
	rpcService, rpcMethod string
	caller                authn.Caller
	answer                answerKind
}

// admit decides whether a request goes on, on both listeners, in the contract's order: the
// method (CONNECT, TRACE and TRACK refused), the route (the service, and the target for the
// model), a CORS preflight or a token request (answered by the gateway, without the steps after
// them), a service reached through the other listener's protocol (404), the declared body over
// max_body_bytes, a blocked path, the credential (with the brake on failed authentications),
// the Content-Type, and last the rate limit. A refusal is the contract's *Error.
//
// With full false, admit stops before the rate limit: the steps that can refuse a request
// before its body is read ("Expect: 100-continue"), without taking from the caller's rate.
func (g *Gateway) admit(rt *routes, in *inbound, full bool) (a admission, err error) {
	if err := methodRefused(in.method); err != nil {
		return a, err
	}
	if in.grpc {
		if a.svc = g.h2.grpcServiceOf(rt, in.grpcService); a.svc == nil {
			return a, errNoGRPCService
		}
		var ok bool
		if a.rpcService, a.rpcMethod, ok = splitGRPCPath(string(in.target)); !ok {
			return a, errBadPath
		}
		a.forward = in.target
	} else if a.svc, a.forward, err = routeTarget(rt, in.target); err != nil {
		return a, err
	}
	svc := a.svc
	switch {
	case in.preflight && svc.cors != nil:
		a.answer = answerPreflight
		return a, nil
	case !in.grpc && svc.auth == config.AuthToken && string(in.method) == http.MethodPost && isTokenPath(a.forward):
		a.answer = answerToken // the token endpoint checks the principal's key itself
		return a, nil
	case (svc.cfg.Protocol == config.ProtocolGRPC) != in.grpc:
		return a, errNotFound // a service is reached through its protocol's listener only
	case !in.grpc && svc.overBodyLimit(in.contentLength):
		// the body is left unread; a gRPC call's limit is on each message, as it streams (grpcBody)
		return a, errBodyTooLarge
	case svc.blocked(a.forward):
		return a, errNotFound
	}
	if a.caller, err = g.authenticate(svc, in); err != nil {
		return a, err
	}
	if !in.grpc { // a gRPC call's type is application/grpc, checked by its listener
		if err := checkContentType(in.contentType, in.contentLength, svc.cfg.ContentTypes); err != nil {
			return a, err
		}
	}
	if !full {
		return a, nil
	}
	return a, g.rateLimit(svc, a.caller)
}

// methodRefused refuses CONNECT (400) and TRACE and TRACK (405), in any case, before a
// credential is read.
func methodRefused(m []byte) error {
	switch {
	case bytes.EqualFold(m, []byte(http.MethodConnect)):
		return errMethodNotAllowed
	case bytes.EqualFold(m, []byte(http.MethodTrace)), bytes.EqualFold(m, []byte("TRACK")):
		// A model answering TRACE echoes the request, cookies and all, back to the caller.
		return errTraceRefused
	}
	return nil
}

// routeTarget finds the service of an HTTP/1.1 request target (/api/v1/service/{name}/{rest})
// in rt, and the target to forward to the model.
func routeTarget(rt *routes, target []byte) (*service, []byte, error) {
	name, forward, ok, valid := splitTarget(target)
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

// overBodyLimit reports whether a declared body length is over the service's max_body_bytes.
func (s *service) overBodyLimit(contentLength int64) bool { return contentLength > s.maxBody }

// isTokenPath reports whether the forward target is /token (with or without a query).
func isTokenPath(target []byte) bool {
	return string(target) == "/token" || bytes.HasPrefix(target, []byte("/token?"))
}

// authenticate asks authn about the request's credential. Only the Authorization header (the
// authorization metadata of a gRPC call) is read: a credential anywhere else (query string,
// body, cookie) counts for nothing. A client address that has failed too often is refused
// before its credential is looked at, and a wrong credential counts against its address.
func (g *Gateway) authenticate(svc *service, in *inbound) (authn.Caller, error) {
	client := func() netip.Addr { return g.clientOf(in) }
	if err := g.authFail.scoringBlocked(svc, client); err != nil {
		return authn.Caller{}, err
	}
	c, err := g.auth.Authenticate(svc.name, svc.auth, in.header.values("Authorization"))
	if err != nil {
		return c, g.authFail.scoringFailed(g, svc, client, err)
	}
	return c, nil
}

// clientOf is the request's client address for counting failures: the peer, or the
// X-Forwarded-For client when the peer is a trusted proxy.
func (g *Gateway) clientOf(in *inbound) netip.Addr {
	return g.clientAddr(in.peer, func() []string {
		var out []string
		for _, v := range in.header.values("X-Forwarded-For") {
			out = append(out, string(v))
		}
		return out
	})
}

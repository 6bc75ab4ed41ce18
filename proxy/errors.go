package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/internal/ratelimit"
)

// Error is a request failure as the client sees it: a status, a stable code and a client-safe
// message, rendered once into the JSON body of the contract. Cause holds the detail that is only
// logged, never sent.
type Error struct {
	Status int
	Code   string
	// Reason is the low-cardinality outcome code recorded in telemetry ("invalid_credential").
	Reason  string
	Message string
	// WWWAuthenticate, when set, is sent as the WWW-Authenticate header.
	WWWAuthenticate string
	// RetryAfter, when set, is sent as the Retry-After header, in seconds.
	RetryAfter int
	// Allow, when set, is sent as the Allow header (with 405).
	Allow string
	// Close, when set, closes the client's connection after the response.
	Close bool
	// Cause is the internal detail, for the log only.
	Cause error

	// tokenLimit, when set, is a token limit's refusal: its x-ratelimit-*-tokens headers are sent.
	tokenLimit *ratelimit.TokenReservation

	body []byte
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%d %s: %v", e.Status, e.Code, e.Cause)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Code)
}

func (e *Error) Unwrap() error { return e.Cause }

// withCause returns a copy of e that carries cause for the log.
func (e *Error) withCause(cause error) *Error {
	c := *e
	c.Cause = cause
	return &c
}

func newError(status int, code, reason, message string) *Error {
	e := &Error{Status: status, Code: code, Reason: reason, Message: message}
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	e.body, _ = json.Marshal(struct {
		Error body `json:"error"`
	}{body{code, message}})
	return e
}

const bearerRealm = `Bearer realm="scoregate"`

// The errors of the data plane. Messages never say which part of a credential failed.
var (
	errBadRequest         = newError(fasthttp.StatusBadRequest, "BadRequest", "bad_request", "the request could not be parsed")
	errBadFraming         = withClose(newError(fasthttp.StatusBadRequest, "BadRequest", "bad_request", "the request could not be parsed"))
	errBadPath            = newError(fasthttp.StatusBadRequest, "BadRequest", "bad_path", "the request path is not valid")
	errMultipleCreds      = newError(fasthttp.StatusBadRequest, "BadRequest", "multiple_credentials", "send exactly one credential, in one Authorization header")
	errMissingCred        = withAuth(newError(fasthttp.StatusUnauthorized, "Unauthorized", "missing_credential", "a valid credential is required"), bearerRealm)
	errInvalidCred        = withAuth(newError(fasthttp.StatusUnauthorized, "Unauthorized", "invalid_credential", "a valid credential is required"), bearerRealm+`, error="invalid_token"`)
	errForbidden          = newError(fasthttp.StatusForbidden, "Forbidden", "forbidden", "the caller's role does not allow this")
	errNotFound           = newError(fasthttp.StatusNotFound, "NotFound", "not_found", "no service is published at this path")
	errRequestTimeout     = newError(fasthttp.StatusRequestTimeout, "RequestTimeout", "request_timeout", "the request was not received in time")
	errBodyTooLarge       = newError(fasthttp.StatusRequestEntityTooLarge, "PayloadTooLarge", "payload_too_large", "the request body is larger than this service accepts")
	errUnsupportedType    = newError(fasthttp.StatusUnsupportedMediaType, "UnsupportedMediaType", "unsupported_media_type", "this service does not accept the request's Content-Type")
	errHeadersTooLarge    = newError(fasthttp.StatusRequestHeaderFieldsTooLarge, "RequestHeaderFieldsTooLarge", "headers_too_large", "the request headers are too large")
	errInternal           = newError(fasthttp.StatusInternalServerError, "InternalError", "internal", "the gateway failed to handle the request")
	errPanic              = withClose(newError(fasthttp.StatusInternalServerError, "InternalError", "panic", "the gateway failed to handle the request"))
	errBadGateway         = newError(fasthttp.StatusBadGateway, "BadGateway", "upstream_error", "the model could not be reached or gave an invalid answer")
	errUpstreamBusy       = withRetry(newError(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "upstream_busy", "the model is at capacity; retry later"), 1)
	errUndecidable        = withRetry(newError(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "undecidable", "the gateway cannot check credentials right now; retry later"), 2)
	errRateLimited        = newError(fasthttp.StatusTooManyRequests, "TooManyRequests", "rate_limited", "the caller's request rate is over its limit; retry later")
	errShed               = withRetry(newError(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "shed", "every replica of the model is busy; retry later"), 1)
	errTooManyConns       = withRetry(newError(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "too_many_connections", "the gateway has server.max_conns connections open; retry later"), 1)
	errTooManyConnsFromIP = withRetry(newError(fasthttp.StatusTooManyRequests, "TooManyRequests", "too_many_connections_from_client", "this client address has server.max_conns_per_ip connections open; retry later"), 1)
	errNoReplica          = withRetry(newError(fasthttp.StatusServiceUnavailable, "ServiceUnavailable", "no_healthy_upstream", "no replica of the model is healthy; retry later"), 5)
	errNoDeployment       = newError(fasthttp.StatusNotFound, "NotFound", "unknown_deployment", "this service has no deployment of the name in azureml-model-deployment")
	errGatewayTimeout     = newError(fasthttp.StatusGatewayTimeout, "GatewayTimeout", "upstream_timeout", "the model did not answer in time")
	errMethodNotAllowed   = newError(fasthttp.StatusBadRequest, "BadRequest", "bad_request", "the request method is not supported")
	errTraceRefused       = withAllow(newError(fasthttp.StatusMethodNotAllowed, "MethodNotAllowed", "method_not_allowed", "the gateway does not forward this method"), forwardedMethods)
)

// forwardedMethods is the Allow header of a 405 for TRACE or TRACK: the standard methods the
// gateway forwards (any other method but CONNECT, TRACE and TRACK is forwarded too).
const forwardedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

func withAllow(e *Error, methods string) *Error {
	e.Allow = methods
	return e
}

func withAuth(e *Error, challenge string) *Error {
	e.WWWAuthenticate = challenge
	return e
}

func withClose(e *Error) *Error {
	e.Close = true
	return e
}

func withRetry(e *Error, seconds int) *Error {
	e.RetryAfter = seconds
	return e
}

// writeError renders err into the response. Anything that is not an *Error is a 500 whose detail
// is logged.
func (g *Gateway) writeError(ctx *fasthttp.RequestCtx, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = errInternal.withCause(err)
	}
	resp := &ctx.Response
	resp.Reset()
	resp.SetStatusCode(e.Status)
	resp.Header.SetContentType("application/json")
	resp.Header.Set("Cache-Control", "no-store")
	if e.WWWAuthenticate != "" {
		resp.Header.Set("WWW-Authenticate", e.WWWAuthenticate)
	}
	if e.RetryAfter > 0 {
		resp.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	if e.Allow != "" {
		resp.Header.Set("Allow", e.Allow)
	}
	if e.tokenLimit != nil {
		setTokenHeaders(&resp.Header, e.tokenLimit)
	}
	if e.Close {
		resp.SetConnectionClose()
	}
	body := e.body
	if body == nil { // an *Error built outside this file
		body = newError(e.Status, e.Code, e.Reason, e.Message).body
	}
	resp.SetBodyRaw(body)
	if e.Status >= 500 && e.Cause != nil {
		g.logFailure("request failed", e)
	} else if e.Cause != nil {
		g.log.Debug("request refused", "status", e.Status, "err", e.Cause)
	}
}

// failureLog lets one failure line a second through for each 5xx status and counts the ones it
// holds back, so that a model outage, which fails every request, does not flood the log: the next
// line that gets through says how many were left out. Metrics and spans still count every one.
type failureLog struct {
	next       [12]atomic.Int64 // by status - 500: the Unix time in ns before which lines wait
	suppressed [12]atomic.Int64
}

// logFailure logs a failed request's cause at warn level, within failureLog's budget.
func (g *Gateway) logFailure(msg string, e *Error) {
	i := e.Status - 500
	if i < 0 || i >= len(g.failures.next) {
		g.log.Warn(msg, "status", e.Status, "err", e.Cause)
		return
	}
	now := time.Now().UnixNano()
	next := g.failures.next[i].Load()
	if now < next || !g.failures.next[i].CompareAndSwap(next, now+int64(time.Second)) {
		g.failures.suppressed[i].Add(1)
		return
	}
	if n := g.failures.suppressed[i].Swap(0); n > 0 {
		g.log.Warn(msg, "status", e.Status, "err", e.Cause, "suppressed_since_last", n)
		return
	}
	g.log.Warn(msg, "status", e.Status, "err", e.Cause)
}

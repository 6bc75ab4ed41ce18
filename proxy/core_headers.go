package proxy

import (
	"bytes"
	"net/netip"
	"slices"

	"github.com/scoregate/scoregate/telemetry"
)

// This file is the header policy of the request core that both listeners share: which of the
// client's header fields never reach the model, the X-Forwarded-* values the model gets, which
// credential carriers a service keeps, and the W3C trace context passed on. The adapters read
// the client's fields through requestHeader and write the outbound request's in their own
// header type (cleanRequest and setTraceContext for HTTP/1.1, grpcRequestHeader and
// setGRPCTraceContext for gRPC).

// requestHeader is a client's request header as the core reads it, whichever listener it came
// on: fastHeader (HTTP/1.1) or netHeader (gRPC). Names are given in canonical form.
type requestHeader interface {
	// values is every field line of name, or nil. fasthttp reuses one buffer for every such
	// list: a result is good only until the next call.
	values(name string) [][]byte
	// value is the first field line of name, or nil.
	value(name string) []byte
}

// hopHeaders are the hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy Proxy-Connection and
// Keep-Alive and the h2c upgrade's HTTP2-Settings), removed in both directions.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
	"Http2-Settings",
}

// requestOnlyHeaders are removed from every request before it reaches the model: the credential,
// the forwarding headers the gateway sets itself, and headers some servers honour to rewrite the
// URL or method behind the gateway's back.
var requestOnlyHeaders = []string{
	"Authorization",
	"Forwarded",
	"X-Real-Ip",
	"X-Original-Url",
	"X-Rewrite-Url",
	"X-Http-Method-Override",
	"X-Http-Method",
	"X-Method-Override",
}

var forwardedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}

// removedRequestHeaders is every request header the gateway removes by name: hopHeaders,
// requestOnlyHeaders, forwardedHeaders and X-Request-Id. cleanRequest notes which of them a request has while
// it visits the headers, and deletes only those, instead of looking each one up.
var removedRequestHeaders = slices.Concat(hopHeaders, requestOnlyHeaders, forwardedHeaders, []string{HeaderRequestID})

// removedByLength indexes removedRequestHeaders by the names' lengths, for removedIndex.
var removedByLength = func() (by [32][]uint8) {
	if len(removedRequestHeaders) > 64 {
		panic("removedRequestHeaders no longer fits cleanRequest's bit set")
	}
	for i, name := range removedRequestHeaders {
		by[len(name)] = append(by[len(name)], uint8(i))
	}
	return by
}()

// removedIndex is the index of name in removedRequestHeaders, whatever its case, or -1.
func removedIndex(name []byte) int {
	if len(name) >= len(removedByLength) {
		return -1
	}
	for _, i := range removedByLength[len(name)] {
		if bytes.EqualFold(name, []byte(removedRequestHeaders[i])) {
			return int(i)
		}
	}
	return -1
}

// droppedRequestHeader tells whether a client's request header field is removed before the
// request reaches the model, on both listeners: listed is its index in removedRequestHeaders
// (hop-by-hop, Authorization and the other requestOnlyHeaders, the client's X-Forwarded-* and
// X-Request-Id, which the gateway sets itself), or -1; underscore is true for a name with '_',
// which CGI-style servers fold into a '-' name the gateway never saw.
func droppedRequestHeader(name []byte) (listed int, underscore bool) {
	return removedIndex(name), bytes.IndexByte(name, '_') >= 0
}

// droppedCredentialHeader reports whether a request header is a credential carrier
// (config.CredentialHeaders) that the service does not keep (its forward_credentials).
func droppedCredentialHeader(name []byte, keep []string) bool {
	return isCredentialHeader(name) && !keeps(keep, name)
}

// droppedCookie reports whether a request cookie is a credential carrier (config.CredentialParams)
// that the service does not keep. The other cookies reach the model, in their order.
func droppedCookie(name []byte, keep []string) bool {
	return credentialParamIndex(name) >= 0 && !keeps(keep, name)
}

// forwardedValues is the X-Forwarded-For, -Proto and -Host the model gets, on both listeners:
//   - X-Forwarded-For: the client's lines joined (only from a trusted proxy, server.trusted_proxies),
//     then peer;
//   - X-Forwarded-Proto: the client's (only from a trusted proxy), else the listener's scheme;
//   - X-Forwarded-Host: the client's (only from a trusted proxy), else host, the request's Host
//     (empty: none is set).
//
// The values are appended to buf, so that they outlive the client's fields, which the adapter
// deletes before it sets these.
func (g *Gateway) forwardedValues(buf []byte, h requestHeader, peer netip.Addr, overTLS bool, host []byte) (xff, proto, fwdHost []byte) {
	trusted := g.trusted(peer)
	buf = buf[:0]
	if trusted {
		for _, v := range h.values("X-Forwarded-For") {
			if len(buf) > 0 {
				buf = append(buf, ", "...)
			}
			buf = append(buf, v...)
		}
	}
	if len(buf) > 0 {
		buf = append(buf, ", "...)
	}
	buf = peer.AppendTo(buf)
	forEnd := len(buf)
	var p []byte
	if trusted {
		p = h.value("X-Forwarded-Proto")
	}
	switch {
	case len(p) > 0:
		buf = append(buf, p...)
	case overTLS:
		buf = append(buf, "https"...)
	default:
		buf = append(buf, "http"...)
	}
	protoEnd := len(buf)
	if trusted {
		if v := h.value("X-Forwarded-Host"); len(v) > 0 {
			host = v
		}
	}
	buf = append(buf, host...)
	return buf[:forEnd], buf[forEnd:protoEnd], buf[protoEnd:]
}

// traceContext decides the W3C trace context the model gets, on both listeners, appending the
// traceparent to tpBuf and the tracestate to tsBuf (empty: none is sent):
//   - with telemetry (rec not nil), one traceparent, the gateway's span's; the client's
//     tracestate (cut to W3C's limits) only when its traceparent became the span's parent;
//   - without telemetry, the client's traceparent only when there was exactly one and it is
//     valid, with its tracestate cut to W3C's limits, else neither;
//   - under telemetry.public_endpoint, nothing of the client's: only the gateway's
//     traceparent, when there is telemetry.
//
// Baggage is boundBaggage's.
func (g *Gateway) traceContext(tpBuf, tsBuf []byte, rec *telemetry.Record, h requestHeader) (tp, ts []byte) {
	switch {
	case g.publicEndpoint:
	case rec != nil:
		ts = append(tsBuf, rec.Tracestate()...)
	default:
		if v := singleTraceparent(h.values(headerTraceparent)); v != nil && telemetry.ValidTraceparent(v) {
			tp = append(tpBuf, v...)
			ts = requestTracestate(tsBuf, h.values(headerTracestate))
		}
	}
	if rec != nil {
		tp = rec.AppendTraceparent(tpBuf)
	}
	return tp, ts
}

// boundBaggage is the client's baggage lines (values) cut to W3C's limits (8192 bytes, 180
// members, whole members kept), and whether it must replace the client's: when it was over them,
// and under telemetry.public_endpoint, where it is nothing.
func (g *Gateway) boundBaggage(values [][]byte) ([]byte, bool) {
	switch {
	case len(values) == 0:
		return nil, false
	case g.publicEndpoint:
		return nil, true
	case len(values) == 1 && len(values[0]) <= maxBaggageBytes && bytes.Count(values[0], []byte(",")) < maxBaggageMembers:
		return nil, false // within the limits as it is
	}
	return boundList(make([]byte, 0, maxBaggageBytes), values, maxBaggageBytes, maxBaggageMembers, 0, nil), true
}

package proxy

import (
	"bytes"
	"net"
	"net/netip"
	"slices"

	"github.com/valyala/fasthttp"
)

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
// requestOnlyHeaders and forwardedHeaders. cleanRequest notes which of them a request has while
// it visits the headers, and deletes only those, instead of looking each one up.
var removedRequestHeaders = slices.Concat(hopHeaders, requestOnlyHeaders, forwardedHeaders)

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

// alwaysDeleted says whether cleanRequest deletes a removed header even when the visit did not
// show it: fasthttp keeps Connection, Transfer-Encoding and Trailer apart from the other headers.
func alwaysDeleted(name string) bool {
	return name == "Connection" || name == "Transfer-Encoding" || name == "Trailer"
}

// framing headers are never removed because a Connection header names them: fasthttp sets them
// from the body it forwards.
func isFraming(name []byte) bool {
	return bytes.EqualFold(name, []byte("Host")) || bytes.EqualFold(name, []byte("Content-Length")) ||
		bytes.EqualFold(name, []byte("Content-Type"))
}

// maxNominated bounds how many names a Connection header may nominate for removal; beyond that the
// request is refused rather than parsed without limit.
const maxNominated = 32

// headerNames collects header names to delete after a visit (deleting while visiting is unsafe).
// It keeps offsets into its own buffer, not slices of it, so that it can live on the stack.
type headerNames struct {
	n    int
	ends [maxNominated]uint16
	buf  [512]byte
	used int
}

func (h *headerNames) add(name []byte) bool {
	if h.n == maxNominated || h.used+len(name) > len(h.buf) {
		return false
	}
	h.used += copy(h.buf[h.used:], name)
	h.ends[h.n] = uint16(h.used)
	h.n++
	return true
}

// name returns the i-th name collected.
func (h *headerNames) name(i int) []byte {
	start := uint16(0)
	if i > 0 {
		start = h.ends[i-1]
	}
	return h.buf[start:h.ends[i]]
}

// connectionNominated gathers the names listed in every Connection header value.
func connectionNominated(values [][]byte, out *headerNames) bool {
	for _, v := range values {
		for len(v) > 0 {
			var tok []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, nil
			}
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) || isFraming(tok) {
				continue
			}
			if !out.add(tok) {
				return false
			}
		}
	}
	return true
}

// cleanRequest readies the client's request headers for the model: hop-by-hop headers and the
// ones the Connection header names, the credential, and header names with '_' (which CGI-style
// servers fold into '-' names) are removed; X-Forwarded-* are set by the gateway, kept from the
// client only when peer is a trusted proxy. It returns false when the headers cannot be cleaned
// (too many nominated names, or a name with '_' beyond the bound).
func (g *Gateway) cleanRequest(h *fasthttp.RequestHeader, peer netip.Addr, overTLS bool, xffBuf []byte) bool {
	var drop headerNames
	if !connectionNominated(h.PeekAll("Connection"), &drop) {
		return false
	}
	var present uint64 // bit i: the request has removedRequestHeaders[i]
	for k := range h.All() {
		if bytes.IndexByte(k, '_') >= 0 && !drop.add(k) {
			return false
		}
		if i := removedIndex(k); i >= 0 {
			present |= 1 << i
		}
	}
	trusted := g.trusted(peer)
	// Keep the client's forwarding headers from a trusted proxy, gathered before removal.
	xff := xffBuf[:0]
	var proto, host []byte
	if trusted {
		for _, v := range h.PeekAll("X-Forwarded-For") {
			if len(xff) > 0 {
				xff = append(xff, ", "...)
			}
			xff = append(xff, v...)
		}
		proto = append(proto, h.Peek("X-Forwarded-Proto")...)
		host = append(host, h.Peek("X-Forwarded-Host")...)
	}
	for i := 0; i < drop.n; i++ {
		h.DelBytes(drop.name(i))
	}
	for i, name := range removedRequestHeaders {
		if present&(1<<i) != 0 || alwaysDeleted(name) {
			h.Del(name)
		}
	}
	h.ResetConnectionClose()

	if len(xff) > 0 {
		xff = append(xff, ", "...)
	}
	xff = peer.AppendTo(xff)
	h.SetBytesV("X-Forwarded-For", xff)
	switch {
	case len(proto) > 0:
		h.SetBytesV("X-Forwarded-Proto", proto)
	case overTLS:
		h.Set("X-Forwarded-Proto", "https")
	default:
		h.Set("X-Forwarded-Proto", "http")
	}
	if len(host) == 0 {
		host = h.Host()
	}
	if len(host) > 0 {
		h.SetBytesV("X-Forwarded-Host", host)
	}
	return true
}

// cleanResponse removes hop-by-hop headers, and the ones the model's Connection header names, from
// the model's response before it reaches the client.
func cleanResponse(h *fasthttp.ResponseHeader) {
	var drop headerNames
	connectionNominated(h.PeekAll("Connection"), &drop) // past the bound, the rest stay; none are the gateway's
	for i := 0; i < drop.n; i++ {
		h.DelBytes(drop.name(i))
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	// The model closing its connection says nothing about the client's.
	h.ResetConnectionClose()
}

func (g *Gateway) trusted(peer netip.Addr) bool {
	for _, p := range g.trustedProxies {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// peerAddr is the client's address, without allocating.
func peerAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.IPv4Unspecified()
}

// checkRequestHeader refuses what fasthttp lets through but the gateway must not forward:
//   - a Host that is not host[:port] (RFC 9112 §3.2, HTTP-23): fasthttp checks ports and
//     brackets but passes bytes such as '@', ',' or non-ASCII, which would reach the model as
//     X-Forwarded-Host;
//   - anything checkRawHeader finds in the header block as it came on the wire.
func checkRequestHeader(h *fasthttp.RequestHeader) error {
	if !validHost(h.Host()) {
		return errBadRequest
	}
	return checkRawHeader(h.RawHeaders())
}

// checkRawHeader checks a raw header block line by line and refuses, closing the connection
// since the request's framing cannot be trusted:
//   - a field name that is not a token (RFC 9110 §5.1): fasthttp keeps a name with a space
//     inside ("X Foo") and would forward it to a model whose parser refuses it or reads it
//     otherwise (HTTP-19, HTTP-52);
//   - a folded line (obs-fold, RFC 9112 §5.2, which allows refusing it): fasthttp joins it to the
//     line above, a model's parser may not (HTTP-04, HTTP-52);
//   - a Transfer-Encoding other than exactly chunked: fasthttp accepts "identity" and then drops
//     the header, so a proxy in front could frame the body differently (HTTP-05).
func checkRawHeader(raw []byte) error {
	const te = "Transfer-Encoding"
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			continue // the blank line that ends the block
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return errBadFraming
		}
		if colon == len(te) && bytes.EqualFold(line[:colon], []byte(te)) &&
			!bytes.EqualFold(bytes.Trim(line[colon+1:], " \t"), []byte("chunked")) {
			return errBadFraming
		}
	}
	return nil
}

// isToken reports whether b is made of RFC 9110 token characters only.
func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenChar[c] {
			return false
		}
	}
	return true
}

// tokenChar marks RFC 9110 tchar bytes: letters, digits and !#$%&'*+-.^_`|~.
var tokenChar = alnumAnd("!#$%&'*+-.^_`|~")

// validHost reports whether a Host value (possibly empty, for HTTP/1.0) has only the bytes of
// RFC 3986 host[:port]: unreserved, sub-delims except ',', '%', ':', '[' and ']'.
func validHost(host []byte) bool {
	for _, c := range host {
		if !hostChar[c] {
			return false
		}
	}
	return true
}

// hostChar is pathChar without ',' and '@', with '%', '[' and ']'.
var hostChar = func() (t [256]bool) {
	t = pathChar
	t[','], t['@'] = false, false
	t['%'], t['['], t[']'] = true, true, true
	return t
}()

// checkContentType enforces a service's content_types (none: any type passes). The media type
// is the Content-Type value before any ';' parameters, without surrounding whitespace, matched
// without regard to case. A request without a Content-Type passes only when it has no body
// (GET /swagger.json); a body of unknown type is refused. fasthttp keeps the last of several
// Content-Type lines and forwards only that one, so the model reads the type checked here.
func checkContentType(h *fasthttp.RequestHeader, allowed []string) error {
	if len(allowed) == 0 {
		return nil
	}
	ct := h.ContentType()
	if len(ct) == 0 {
		if cl := h.ContentLength(); cl > 0 || cl == -1 { // -1: chunked
			return errUnsupportedType
		}
		return nil
	}
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.Trim(ct, " \t")
	for _, a := range allowed {
		if equalFoldASCII(ct, a) {
			return nil
		}
	}
	return errUnsupportedType
}

// equalFoldASCII reports whether b and s are equal with ASCII letters compared without regard
// to case (media types are ASCII tokens; any other byte must match exactly).
func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

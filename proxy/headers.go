package proxy

import (
	"bytes"
	"io"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/telemetry"
)

// Header names in fasthttp's canonical form, for its methods that take a name as it is stored
// (PeekCanonical, PeekAllCanonical, SetCanonical, DelCanonical): the same lookups as Peek, PeekAll,
// Set and Del with the name (the gateway never turns fasthttp's name normalising off), without
// copying and normalising the name on every call of every request.
var (
	keyConnection      = canonicalKey("Connection")
	keyRequestID       = canonicalKey(HeaderRequestID)
	keyMSRequestID     = canonicalKey(HeaderMSRequestID)
	keyClientRequestID = canonicalKey(HeaderClientRequestID)
	keyTraceresponse   = canonicalKey(headerTraceresponse)
	keyDeployment      = canonicalKey(config.DeploymentHeader)
	keyXForwardedFor   = canonicalKey("X-Forwarded-For")
	keyXForwardedProto = canonicalKey("X-Forwarded-Proto")
	keyXForwardedHost  = canonicalKey("X-Forwarded-Host")
	keyTraceparent     = canonicalKey(headerTraceparent)
	keyTracestate      = canonicalKey(headerTracestate)
	keyBaggage         = canonicalKey(headerBaggage)
	hopHeaderKeys      = canonicalKeys(hopHeaders)
	removedRequestKeys = canonicalKeys(removedRequestHeaders)
)

// canonicalKey is name in fasthttp's canonical form.
func canonicalKey(name string) []byte { return fasthttp.AppendNormalizedHeaderKey(nil, name) }

func canonicalKeys(names []string) [][]byte {
	keys := make([][]byte, len(names))
	for i, n := range names {
		keys[i] = canonicalKey(n)
	}
	return keys
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

// cleanRequest readies the client's request headers for the model by the core's policy: the
// headers droppedRequestHeader names and the ones the Connection header names are removed, and
// X-Forwarded-* set to forwardedValues' (appended to buf). It returns false when the headers
// cannot be cleaned (too many nominated names, or a name with '_' beyond the bound).
func (g *Gateway) cleanRequest(h *fasthttp.RequestHeader, peer netip.Addr, overTLS bool, buf []byte) bool {
	var drop headerNames
	if !connectionNominated(h.PeekAllCanonical(keyConnection), &drop) {
		return false
	}
	var present uint64 // bit i: the request has removedRequestHeaders[i]
	for k := range h.All() {
		listed, underscore := droppedRequestHeader(k)
		if underscore && !drop.add(k) {
			return false
		}
		if listed >= 0 {
			present |= 1 << listed
		}
	}
	xff, proto, host := g.forwardedValues(buf, (*fastHeader)(h), peer, overTLS, h.Host())
	for i := 0; i < drop.n; i++ {
		h.DelBytes(drop.name(i))
	}
	for i, name := range removedRequestHeaders {
		if present&(1<<i) != 0 || alwaysDeleted(name) {
			h.DelCanonical(removedRequestKeys[i])
		}
	}
	h.ResetConnectionClose()
	h.SetCanonical(keyXForwardedFor, xff)
	h.SetCanonical(keyXForwardedProto, proto)
	if len(host) > 0 {
		h.SetCanonical(keyXForwardedHost, host)
	}
	return true
}

// fastHeader is a fasthttp request header as the request core reads it. The core gives names in
// canonical form, which is fasthttp's for every name it asks.
type fastHeader fasthttp.RequestHeader

func (h *fastHeader) values(name string) [][]byte {
	return (*fasthttp.RequestHeader)(h).PeekAllCanonical([]byte(name))
}

func (h *fastHeader) value(name string) []byte {
	return (*fasthttp.RequestHeader)(h).PeekCanonical([]byte(name))
}

// cleanResponse removes hop-by-hop headers, and the ones the model's Connection header names, from
// the model's response before it reaches the client.
func cleanResponse(h *fasthttp.ResponseHeader) {
	var drop headerNames
	connectionNominated(h.PeekAllCanonical(keyConnection), &drop) // past the bound, the rest stay; none are the gateway's
	for i := 0; i < drop.n; i++ {
		h.DelBytes(drop.name(i))
	}
	for _, key := range hopHeaderKeys {
		h.DelCanonical(key)
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
//     the header, so a proxy in front could frame the body differently (HTTP-05);
//   - both Transfer-Encoding and Content-Length (RFC 9112 §6.3 lets a server refuse it, and a
//     proxy in front may have framed the body by the other one): fasthttp reads it as chunked;
//   - a line ended by a bare LF, without CR (RFC 9112 §2.2): fasthttp ends the line there, so
//     "a: b\nX-Inj: 1" becomes two fields, where a proxy in front saw one.
func checkRawHeader(raw []byte) error {
	const te, cl = "Transfer-Encoding", "Content-Length"
	var hasTE, hasCL bool
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
			if i == 0 || line[i-1] != '\r' {
				return errBadFraming
			}
			line = line[:i-1]
		} else {
			raw = nil
		}
		if len(line) == 0 {
			continue // the blank line that ends the block
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return errBadFraming
		}
		name := line[:colon]
		switch {
		case len(name) == len(te) && bytes.EqualFold(name, []byte(te)):
			if !bytes.EqualFold(bytes.Trim(line[colon+1:], " \t"), []byte("chunked")) {
				return errBadFraming
			}
			hasTE = true
		case len(name) == len(cl) && bytes.EqualFold(name, []byte(cl)):
			hasCL = true
		}
	}
	if hasTE && hasCL {
		return errBadFraming
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
func checkContentType(ct []byte, contentLength int64, allowed []string) error {
	if len(allowed) == 0 {
		return nil
	}
	if len(ct) == 0 {
		if cl := contentLength; cl > 0 || cl == -1 { // -1: chunked
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

// keeps reports whether the service's forward_credentials names the carrier name.
func keeps(keep []string, name []byte) bool {
	for _, k := range keep {
		if equalFoldASCII(name, k) {
			return true
		}
	}
	return false
}

// credentialParamIndex is the index of name in config.CredentialParams, whatever its case, or -1.
func credentialParamIndex(name []byte) int {
	for i, p := range config.CredentialParams {
		if equalFoldASCII(name, p) {
			return i
		}
	}
	return -1
}

// isCredentialHeader reports whether name is one of config.CredentialHeaders, whatever its case.
func isCredentialHeader(name []byte) bool {
	for _, h := range config.CredentialHeaders {
		if equalFoldASCII(name, h) {
			return true
		}
	}
	return false
}

// dropCredentials removes from h the credential carriers the service does not keep (its
// forward_credentials): the headers of config.CredentialHeaders and the cookies named in
// config.CredentialParams. Other cookies stay. The gateway's own credential, Authorization, is
// removed by cleanRequest whatever the service says.
func dropCredentials(h *fasthttp.RequestHeader, keep []string) {
	var found, cookies bool
	for k := range h.All() {
		if isCredentialHeader(k) {
			found = true
		} else if equalFoldASCII(k, fasthttp.HeaderCookie) {
			cookies = true
		}
	}
	if found {
		for _, name := range config.CredentialHeaders {
			if droppedCredentialHeader([]byte(name), keep) {
				h.Del(name)
			}
		}
	}
	if !cookies {
		return
	}
	found = false
	for name := range h.Cookies() {
		found = found || droppedCookie(name, keep)
	}
	if !found {
		return
	}
	// Rare: the Cookie header is written again without them, the other cookies in their order
	// (fasthttp's DelCookie would move the last one into the gap).
	var rest []byte
	for name, value := range h.Cookies() {
		if droppedCookie(name, keep) {
			continue
		}
		if len(rest) > 0 {
			rest = append(rest, "; "...)
		}
		if len(name) > 0 {
			rest = append(append(rest, name...), '=')
		}
		rest = append(rest, value...)
	}
	h.Del(fasthttp.HeaderCookie)
	if len(rest) > 0 {
		h.SetBytesV(fasthttp.HeaderCookie, rest)
	}
}

// dropCredentialParams returns target (path and query, as forwarded to the model) without the
// query parameters named in config.CredentialParams that keep does not name. A name is matched
// after percent-decoding, without regard to case ("KEY", "ke%79"), so the model's decoder cannot
// read one in that the gateway did not see. The rest of the target is kept byte for byte: the
// other parameters, in order, with their separators. target itself is returned when nothing is
// removed; otherwise the new target is appended to dst.
func dropCredentialParams(dst, target []byte, keep []string) []byte {
	q := bytes.IndexByte(target, '?')
	if q < 0 {
		return target
	}
	query := target[q+1:]
	if !hasCredentialParam(query, keep) {
		return target
	}
	dst = append(dst, target[:q+1]...)
	first := true
	for len(query) > 0 {
		var pair []byte
		if i := bytes.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			pair, query = query, nil
		}
		if isCredentialPair(pair, keep) {
			continue
		}
		if !first {
			dst = append(dst, '&')
		}
		first = false
		dst = append(dst, pair...)
	}
	if first {
		dst = dst[:len(dst)-1] // nothing left: no '?' either
	}
	return dst
}

func hasCredentialParam(query []byte, keep []string) bool {
	for len(query) > 0 {
		pair := query
		if i := bytes.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			query = nil
		}
		if isCredentialPair(pair, keep) {
			return true
		}
	}
	return false
}

// isCredentialPair reports whether a query string's name[=value] pair is a credential carrier
// the service does not keep.
func isCredentialPair(pair []byte, keep []string) bool {
	name := pair
	if i := bytes.IndexByte(pair, '='); i >= 0 {
		name = pair[:i]
	}
	if len(name) > 64 {
		return false // longer than any carrier, even percent-encoded
	}
	var buf [64]byte
	decoded := buf[:0]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '%' && i+2 < len(name) && isHex(name[i+1]) && isHex(name[i+2]) {
			c = unhex(name[i+1])<<4 | unhex(name[i+2])
			i += 2
		} else if c == '+' {
			c = ' '
		}
		decoded = append(decoded, c)
	}
	return credentialParamIndex(decoded) >= 0 && !keeps(keep, decoded)
}

// W3C limits on the trace context the gateway passes on (Trace Context §3.3.1.1, Baggage §3.3.2).
const (
	maxTracestateBytes    = 512
	maxTracestateMembers  = 32
	longTracestateMember  = 128 // truncation drops members longer than this first (§3.3.1.5)
	maxBaggageBytes       = 8192
	maxBaggageMembers     = 180
	headerBaggage         = "Baggage"
	maxTraceparentLineLen = 55 + 200 // a later version may add fields; beyond this it is not one
)

// boundList appends to dst the comma-separated list header (tracestate, baggage) made of values,
// the field lines a client sent, as the model gets it: the lines joined, empty members and (for
// tracestate) malformed ones left out, and whole members dropped until at most maxMembers
// remain within maxBytes. Members longer than long (when long > 0) go first, then members from
// the end, as W3C Trace Context §3.3.1.5 says; a member is never cut.
func boundList(dst []byte, values [][]byte, maxBytes, maxMembers, long int, valid func([]byte) bool) []byte {
	start := len(dst)
	total := -1 // the whole list's length, commas included
	eachMember(values, valid, func(m []byte) bool { total += len(m) + 1; return true })
	dropLong := long > 0 && total > maxBytes
	n := 0
	eachMember(values, valid, func(m []byte) bool {
		if dropLong && len(m) > long {
			return true
		}
		size := len(dst) - start + len(m)
		if n > 0 {
			size++
		}
		if n == maxMembers || size > maxBytes {
			return false // this member and every later one are dropped
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, m...)
		n++
		return true
	})
	return dst
}

// eachMember calls f with each non-empty member of the comma-separated lists in values, without
// surrounding whitespace, that valid accepts (every one when valid is nil), until f returns false.
func eachMember(values [][]byte, valid func([]byte) bool, f func(m []byte) bool) {
	for _, v := range values {
		for len(v) > 0 {
			m := v
			if i := bytes.IndexByte(v, ','); i >= 0 {
				m, v = v[:i], v[i+1:]
			} else {
				v = nil
			}
			m = bytes.Trim(m, " \t")
			if len(m) > 0 && (valid == nil || valid(m)) && !f(m) {
				return
			}
		}
	}
}

// validTracestateMember reports whether m is a W3C list-member: key "=" value, the key made of
// lowercase letters, digits and _-*/ with at most one '@' (tenant@system), the value of printable
// ASCII without ',' and '=', not ending in a space (Trace Context §3.3.1.3). A malformed member
// is left out rather than passed on.
func validTracestateMember(m []byte) bool {
	eq := bytes.IndexByte(m, '=')
	if eq <= 0 || eq > 256 || len(m)-eq-1 > 256 || len(m) == eq+1 {
		return false
	}
	key, value := m[:eq], m[eq+1:]
	at := false
	for i, c := range key {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '_' || c == '-' || c == '*' || c == '/':
			if i == 0 {
				return false
			}
		case c == '@' && !at && i > 0 && i < len(key)-1:
			at = true
		default:
			return false
		}
	}
	for _, c := range value {
		if c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return value[len(value)-1] != ' '
}

// singleTraceparent is the request's traceparent when it has exactly one traceparent line, else
// nil: two lines cannot both be the parent, and joining them makes an invalid value.
func singleTraceparent(values [][]byte) []byte {
	if len(values) != 1 || len(values[0]) > maxTraceparentLineLen {
		return nil
	}
	return values[0]
}

// setTraceContext gives the model the trace context traceContext and boundBaggage decide. It
// must run before anything deletes a header: fasthttp's Del moves the last field into the gap,
// which changes the order of a header's lines, and so of the members of a list.
func (g *Gateway) setTraceContext(h *fasthttp.RequestHeader, rec *telemetry.Record) {
	var tsBuf [maxTracestateBytes]byte
	var tpBuf [maxTraceparentLineLen]byte
	tp, ts := g.traceContext(tpBuf[:0], tsBuf[:0], rec, (*fastHeader)(h))
	baggage, cut := g.boundBaggage(h.PeekAllCanonical(keyBaggage))
	h.DelCanonical(keyTraceparent)
	if len(tp) > 0 {
		h.SetCanonical(keyTraceparent, tp)
	}
	h.DelCanonical(keyTracestate)
	if len(ts) > 0 {
		h.SetCanonical(keyTracestate, ts)
	}
	if cut {
		h.DelCanonical(keyBaggage)
		if len(baggage) > 0 {
			h.SetCanonical(keyBaggage, baggage)
		}
	}
}

// requestTracestate is the client's tracestate for the record, cut to W3C's limits, in buf.
func requestTracestate(buf []byte, values [][]byte) []byte {
	if len(values) == 0 {
		return nil
	}
	return boundList(buf, values, maxTracestateBytes, maxTracestateMembers, longTracestateMember, validTracestateMember)
}

// dropTrailers removes the trailer fields of a chunked request body (RFC 9110 §6.5), which
// fasthttp reads into the request's header once the body has been read, and would send on to the
// model as trailers. None of them reaches the model: a trailer could carry what the gateway
// removes or sets from the header section (a credential, X-Forwarded-*, X-Request-Id, a
// traceparent, X-HTTP-Method-Override, a name with '_') past its checks, and RFC 9110 §6.5.1 lets
// a recipient discard them. Refusing the request instead would be possible only after its body
// had been read, or for a streamed body sent. The header section is left as it was.
func dropTrailers(h *fasthttp.RequestHeader) {
	names := h.PeekTrailerKeys()
	if len(names) == 0 {
		return
	}
	// Rare: copies. fasthttp keeps a field of a trailer's name in its trailer section, and
	// deletes by name from both sections, so the header section's fields of those names are
	// noted and put back.
	type field struct{ k, v []byte }
	var drop [][]byte
	var kept []field
	for _, n := range names {
		drop = append(drop, bytes.Clone(n))
	}
	for k, v := range h.All() {
		for _, n := range drop {
			if bytes.EqualFold(k, n) {
				kept = append(kept, field{bytes.Clone(k), bytes.Clone(v)})
			}
		}
	}
	for _, n := range drop {
		h.DelBytes(n)
	}
	h.Del(fasthttp.HeaderTrailer) // forgets the announced names, now without values
	for _, f := range kept {
		h.AddBytesKV(f.k, f.v)
	}
}

// trailerDropper passes a streamed chunked body on, and drops its trailers (dropTrailers) when
// the body ends, before fasthttp would write them after the last chunk.
type trailerDropper struct {
	r    io.Reader
	h    *fasthttp.RequestHeader
	body *streamedBody // r, or what r reads
}

// WriteTo sends the body on as it arrives (copyBody), each read a chunk of its own.
func (d trailerDropper) WriteTo(w io.Writer) (int64, error) { return copyBody(w, d, d.body) }

// SupportsBodyWriteTo tells fasthttp to send the body with WriteTo.
func (trailerDropper) SupportsBodyWriteTo() bool { return true }

func (d trailerDropper) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err == io.EOF {
		dropTrailers(d.h)
	}
	return n, err
}

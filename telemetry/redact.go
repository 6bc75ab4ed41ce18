package telemetry

import (
	"bytes"
	"unicode/utf8"
)

// redacted replaces whatever held a credential.
const redacted = "REDACTED"

// appendRedactedTarget appends a request target to dst with every piece that holds a credential
// (see holdsCredential) replaced by REDACTED: a path segment, whole; a query parameter's value,
// or the whole parameter when its name holds one. A fragment belongs to the segment or value it
// ends. The rest is kept as sent. A target with no credential marker in it, even
// percent-encoded, is copied after a scan and nothing else; nothing allocates but dst's growth.
func appendRedactedTarget(dst, target []byte) []byte {
	if !mayHoldCredential(target) {
		return append(dst, target...)
	}
	path, query, hasQuery := bytes.Cut(target, []byte("?"))
	for i := 0; ; i++ {
		seg, rest, more := bytes.Cut(path, []byte("/"))
		if i > 0 {
			dst = append(dst, '/')
		}
		if holdsCredential(seg) {
			dst = append(dst, redacted...)
		} else {
			dst = append(dst, seg...)
		}
		if !more {
			break
		}
		path = rest
	}
	if !hasQuery {
		return dst
	}
	dst = append(dst, '?')
	for i := 0; ; i++ {
		p, rest, more := bytes.Cut(query, []byte("&"))
		if i > 0 {
			dst = append(dst, '&')
		}
		name, value, hasValue := bytes.Cut(p, []byte("="))
		switch {
		case holdsCredential(name):
			dst = append(dst, redacted...)
		case hasValue && holdsCredential(value):
			dst = append(dst, name...)
			dst = append(dst, '=')
			dst = append(dst, redacted...)
		default:
			dst = append(dst, p...)
		}
		if !more {
			return dst
		}
		query = rest
	}
}

// appendRedacted appends v to dst, or REDACTED when v holds a credential.
func appendRedacted(dst, v []byte) []byte {
	if mayHoldCredential(v) && holdsCredential(v) {
		return append(dst, redacted...)
	}
	return append(dst, v...)
}

// redactedString is s, or REDACTED when s holds a credential.
func redactedString(s string) string {
	if holdsCredential(s) {
		return redacted
	}
	return s
}

// mayHoldCredential is the fast test before holdsCredential: false when b cannot hold a
// credential marker, having neither a marker's last byte ('_' of sgk_ and sgp_, 'J' of eyJ) nor
// a percent-encoding that could spell one.
func mayHoldCredential(b []byte) bool {
	return bytes.IndexByte(b, '_') >= 0 || bytes.IndexByte(b, 'J') >= 0 || bytes.IndexByte(b, '%') >= 0
}

// The credential markers as holdsCredential's window sees them: the prefixes of service and
// principal keys (authn.ServiceKeyPrefix, authn.PrincipalKeyPrefix), and the start of a JWT,
// whose first segment is the base64url of `{"`.
const (
	markerServiceKey   = 's'<<24 | 'g'<<16 | 'k'<<8 | '_'
	markerPrincipalKey = 's'<<24 | 'g'<<16 | 'p'<<8 | '_'
	markerJWT          = 'e'<<16 | 'y'<<8 | 'J'
)

// holdsCredential says whether s, as sent or percent-decoded once (as a model's framework reads
// it), holds a scoregate key's prefix (sgk_, sgp_) or the start of a JWT (eyJ where a base64url
// run begins, so that words such as "surveyJob" or "keyJson" are not taken for one). It looks at
// each byte once and allocates nothing.
func holdsCredential[T string | []byte](s T) bool {
	var w uint32 // the last four bytes, decoded, the latest lowest
	n := 0       // bytes decoded so far
	for i := 0; i < len(s); i, n = i+1, n+1 {
		c := s[i]
		if c == '%' && i+2 < len(s) {
			if hi, ok := unhex(s[i+1]); ok {
				if lo, ok := unhex(s[i+2]); ok {
					c = hi<<4 | lo
					i += 2
				}
			}
		}
		w = w<<8 | uint32(c)
		if w == markerServiceKey || w == markerPrincipalKey {
			return true
		}
		if w&0xffffff == markerJWT && (n == 2 || !base64URL[byte(w>>24)]) {
			return true
		}
	}
	return false
}

// unhex is the value of a hex digit of either case.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// base64URL tells the bytes of base64url's alphabet.
var base64URL = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	return t
}()

// maxValueLen bounds a value a client or a model chose (a model name, the caller) in a span, a
// metric label or an access-log line.
const maxValueLen = 256

// boundedString is s as telemetry records a value a client or a model chose: REDACTED when s
// holds a credential (see holdsCredential), otherwise with each run of invalid UTF-8 replaced by
// U+FFFD and cut to at most maxValueLen bytes, at a rune boundary, so that every exporter can
// carry it. It allocates only for invalid UTF-8.
func boundedString(s string) string {
	if s == "" {
		return s
	}
	if holdsCredential(s) {
		return redacted
	}
	s = validUTF8(cutRunes(s, maxValueLen)) // replacements may make it longer again
	return cutRunes(s, maxValueLen)
}

// cutRunes is s cut to at most n bytes, before the rune that would be cut in two, if any.
func cutRunes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := n; i > n-utf8.UTFMax && i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i]
		}
	}
	return s[:n] // no rune starts there: invalid bytes, which validUTF8 replaces
}

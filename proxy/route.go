package proxy

import "bytes"

// ServicePrefix starts every scoring URL: /api/v1/service/{name}/{rest}.
const ServicePrefix = "/api/v1/service/"

// splitTarget splits a raw origin-form request target into the service name and what is
// forwarded to the model ("/" + rest, with the query string unchanged). It works on the raw bytes,
// before any decoding, and refuses what upstreams could read differently from the gateway:
// ok is false for a target that is not under ServicePrefix, and valid is false for one whose path
// has a bad percent-encoding, an encoded '/', '\', '.' or NUL, a dot segment, an empty segment,
// a fragment or a byte outside RFC 3986's path characters.
func splitTarget(target []byte) (name, forward []byte, ok, valid bool) {
	if len(target) < len(ServicePrefix) || string(target[:len(ServicePrefix)]) != ServicePrefix {
		return nil, nil, false, validTarget(target)
	}
	if !validTarget(target) {
		return nil, nil, true, false
	}
	rest := target[len(ServicePrefix):]
	end := len(rest)
	if q := bytes.IndexByte(rest, '?'); q >= 0 {
		end = q
	}
	slash := bytes.IndexByte(rest[:end], '/')
	if slash < 0 {
		// /api/v1/service/{name} and /api/v1/service/{name}?q reach the model at / and /?q.
		name = rest[:end]
		forward = append([]byte{'/'}, rest[end:]...)
	} else {
		name = rest[:slash]
		forward = rest[slash:]
	}
	if len(name) == 0 {
		return nil, nil, false, true
	}
	return name, forward, true, true
}

// validTarget checks a raw request target: origin form, well-formed percent-encoding, only path
// characters in the path, no dot or empty segments, nothing encoded that changes the path's
// structure, and no fragment.
func validTarget(target []byte) bool {
	if len(target) == 0 || target[0] != '/' {
		return false
	}
	path, query := target, []byte(nil)
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		path, query = target[:q], target[q+1:]
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return false
			}
			switch v := unhex(path[i+1])<<4 | unhex(path[i+2]); v {
			case '/', '\\', '.', 0, '%':
				return false
			default:
				if v < 0x20 || v == 0x7f || v >= 0x80 {
					// control bytes and non-ASCII (overlong UTF-8, fullwidth solidus) are refused
					return false
				}
			}
			i += 2
		case c == '/':
			seg := path[i+1:]
			if n := bytes.IndexByte(seg, '/'); n >= 0 {
				seg = seg[:n]
			}
			if isDotSegment(seg) || (len(seg) == 0 && i+1 < len(path)) {
				return false
			}
		case !pathChar[c]:
			return false
		}
	}
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '%':
			if i+2 >= len(query) || !isHex(query[i+1]) || !isHex(query[i+2]) {
				return false
			}
			i += 2
		case c == '/' || c == '?':
		case !pathChar[c]:
			return false
		}
	}
	return true
}

// isDotSegment reports "." and ".." segments, also with ";params" after them (which some servers
// strip before resolving the path).
func isDotSegment(seg []byte) bool {
	if semi := bytes.IndexByte(seg, ';'); semi >= 0 {
		seg = seg[:semi]
	}
	return string(seg) == "." || string(seg) == ".."
}

// pathChar marks RFC 3986 pchar bytes other than '%': unreserved, sub-delims, ':' and '@'.
var pathChar = alnumAnd("-._~!$&'()*+,;=:@")

// alnumAnd is a byte table marking ASCII letters, digits and the bytes of extra.
func alnumAnd(extra string) (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for i := 0; i < len(extra); i++ {
		t[extra[i]] = true
	}
	return t
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

package proxy

import (
	"crypto/tls"
	"net/http"

	"github.com/valyala/fasthttp"
)

// errMisdirected answers a request over TLS whose Host names another host than the server name
// its connection was opened for (RFC 9110 15.5.20). The client may retry on a connection opened
// for that host.
var errMisdirected = newError(http.StatusMisdirectedRequest, "MisdirectedRequest", "misdirected",
	"the request's host is not the server name this TLS connection was opened for")

// misdirected checks a request on the HTTPS listener: when the client sent a server name (SNI),
// the Host header must name that same host. Any other Host is answered 421, even a name the
// certificate also covers: the gateway's HTTPS listener speaks HTTP/1.1, where no client reuses
// a connection for another name, so a difference is a mistake or a probe (a Host chosen to reach
// what the name on the certificate does not). A request without SNI or without Host has nothing
// to compare and passes.
func misdirected(ctx *fasthttp.RequestCtx) error {
	if !ctx.IsTLS() {
		return nil
	}
	cs, ok := ctx.Conn().(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	if otherAuthority(cs.ConnectionState().ServerName, ctx.Request.Header.Host()) {
		return errMisdirected
	}
	return nil
}

// otherAuthority reports whether host (a Host header or :authority, with or without a port)
// names another host than serverName, ignoring case and a final dot; false when either is empty.
func otherAuthority(serverName string, host []byte) bool {
	if serverName == "" || len(host) == 0 {
		return false
	}
	h := hostOfAuthority(host)
	h = trimDot(h)
	sn := trimDot([]byte(serverName))
	if len(h) != len(sn) {
		return true
	}
	for i := range h {
		if lower(h[i]) != lower(sn[i]) {
			return true
		}
	}
	return false
}

// hostOfAuthority strips the port of host:port, and the brackets of [v6]:port.
func hostOfAuthority(a []byte) []byte {
	if len(a) > 0 && a[0] == '[' {
		for i := 1; i < len(a); i++ {
			if a[i] == ']' {
				return a[1:i]
			}
		}
		return a
	}
	colon := -1
	for i, c := range a {
		if c == ':' {
			if colon >= 0 {
				return a // a bare IPv6 address: no port
			}
			colon = i
		}
	}
	if colon >= 0 {
		return a[:colon]
	}
	return a
}

func trimDot(b []byte) []byte {
	if n := len(b); n > 1 && b[n-1] == '.' {
		return b[:n-1]
	}
	return b
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

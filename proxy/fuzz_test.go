package proxy_test

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/scoregate/scoregate/config"
)

// keyPlaceholder in a fuzz input stands for the valid key of service iris, which is random per
// run, so that seeds (and their mutations) can reach the model.
const keyPlaceholder = "$KEY"

// FuzzGatewayRawRequest feeds arbitrary bytes to the gateway as what a client sends on one
// connection. Invariants: no panic; the model receives a request only if the input carried the
// valid key; the model never receives both Content-Length and Transfer-Encoding, nor any
// credential (Authorization, or a key header), nor request trailers, nor two traceparents, and
// always in HTTP/1.1.
func FuzzGatewayRawRequest(f *testing.F) {
	const score = "/api/v1/service/iris/score"
	seeds := []string{
		request("GET", score+"?x=1&y=2", bearer(keyPlaceholder)),
		request("GET", score),
		request("GET", score, bearer("sgk_notakey")),
		request("POST", score, bearer(keyPlaceholder), "Content-Type: application/json", "Content-Length: 7") + `{"a":1}`,
		request("POST", score, bearer(keyPlaceholder), "Transfer-Encoding: chunked") + "7\r\n{\"a\":1}\r\n0\r\n\r\n",
		// HTTP-01/02 smuggling.
		request("POST", score, bearer(keyPlaceholder), "Content-Length: 4", "Transfer-Encoding: chunked") +
			"0\r\n\r\nGET /api/v1/service/iris/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		request("POST", score, "Transfer-Encoding: chunked", "Content-Length: 50") +
			"0\r\n\r\n" + request("GET", score, bearer(keyPlaceholder)),
		request("POST", score, bearer(keyPlaceholder), "Transfer-Encoding: identity", "Content-Length: 2") + "{}",
		// HTTP-10 and HTTP-11: a keyed request in the body or behind an unkeyed one.
		request("POST", score, "Content-Length: 68") + request("GET", score, bearer(keyPlaceholder)),
		request("GET", score, bearer(keyPlaceholder)) + request("GET", score),
		request("GET", score) + request("GET", score, bearer(keyPlaceholder)),
		// KEY-07, KEY-12, JWT-46.
		request("GET", score, bearer(keyPlaceholder), bearer(keyPlaceholder)),
		request("GET", score, "Authorization: bearer "+keyPlaceholder+" "),
		request("GET", score, "Authorization: Bearer  "+keyPlaceholder),
		request("GET", score+"?key="+keyPlaceholder),
		// Header hygiene.
		request("GET", score, bearer(keyPlaceholder), "Connection: close, X-Forwarded-For, Authorization", "X-Forwarded-For: 1.2.3.4"),
		request("GET", score, bearer(keyPlaceholder), "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
		request("GET", score, bearer(keyPlaceholder), "X_Api_Key: x", "Proxy-Authorization: Basic eA=="),
		// Targets and framing oddities.
		"GET http://127.0.0.1:1/api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\n" + bearer(keyPlaceholder) + "\r\n\r\n",
		"GET /api/v1/service/iris/../iris/score HTTP/1.1\r\nHost: x\r\n" + bearer(keyPlaceholder) + "\r\n\r\n",
		"GET /api/v1/service/iris/%2e%2e/x HTTP/1.1\r\nHost: x\r\n" + bearer(keyPlaceholder) + "\r\n\r\n",
		"GET /api/v1/service/iris HTTP/1.0\r\n" + bearer(keyPlaceholder) + "\r\n\r\n",
		"GET  /api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
		"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"POST /api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		// Issue 17, findings 8 and 9: request trailers, bare LF, both framing headers, other
		// versions, second credentials and trace context.
		request("POST", score, bearer(keyPlaceholder), "Transfer-Encoding: chunked", "Trailer: X-Checksum") +
			"7\r\n{\"a\":1}\r\n0\r\nX-Checksum: 1\r\nX-Api-Key: sgk_x\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nX_Under: 1\r\n\r\n",
		request("POST", score, bearer(keyPlaceholder), "Transfer-Encoding: chunked") +
			"2\r\n{}\r\n0\r\nX-Fold: a\r\n b\r\nForwarded: for=1.2.3.4\r\n\r\n",
		request("POST", score, bearer(keyPlaceholder), "Transfer-Encoding: chunked") + "2\r\n{}\r\n0\r\nX-Request-Id: x\n\r\n",
		"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\n" + bearer(keyPlaceholder) + "\r\na: b\nX-Inj: 1\r\n\r\n",
		"GET /api/v1/service/iris/score HTTP/1.1\nHost: x\n" + bearer(keyPlaceholder) + "\n\n",
		request("POST", score, bearer(keyPlaceholder), "Content-Length: 2", "Transfer-Encoding: chunked") + "2\r\n{}\r\n0\r\n\r\n",
		"GET /api/v1/service/iris/score HTTP/1.0\r\n" + bearer(keyPlaceholder) + "\r\n\r\n",
		"GET /api/v1/service/iris/score HTTP/2.0\r\nHost: x\r\n" + bearer(keyPlaceholder) + "\r\n\r\n",
		request("GET", score+"?a=1&key=k&ke%79=k&b", bearer(keyPlaceholder), "X-API-Key: k", "Cookie: a=1; access_token=t"),
		request("GET", score, bearer(keyPlaceholder), "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			"Traceparent: 00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Tracestate: a=1,,b=2", "Baggage: k=v,,"),
		"",
		"\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}

	ln := &notifyListener{InmemoryListener: fasthttputil.NewInmemoryListener(), accepted: make(chan *notifyConn, 1)}
	e := newEnv(f, envOptions{
		listener: ln,
		respond:  respondOK, // no slow or misbehaving paths: every input must finish quickly
		config: func(c *config.Config) {
			for i := range c.Services {
				c.Services[i].ScoringTimeout = 5 * time.Second // only ever hit if the model hangs: a bug
			}
			// Only key-mode services, so that nothing but the key lets a request through.
			var keyed []config.Service
			for _, s := range c.Services {
				if s.Auth == config.AuthKey {
					keyed = append(keyed, s)
				}
			}
			c.Services = keyed
		},
	})
	key := []byte(e.primary)

	f.Fuzz(func(t *testing.T, in []byte) {
		in = bytes.ReplaceAll(in, []byte(keyPlaceholder), key)
		e.up.reset()
		c, err := ln.DialWithLocalAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000})
		if err != nil {
			t.Fatal(err)
		}
		server := <-ln.accepted
		// The in-memory pipe delivers what was written before Close, then EOF: the gateway
		// reads the whole input, handles every request in it, and closes its side.
		if _, err := c.Write(in); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case <-server.closed:
		case <-time.After(ioDeadline):
			t.Fatalf("the gateway did not finish with the connection")
		}

		reqs := e.up.requests()
		if len(reqs) > 0 && !bytes.Contains(in, key) {
			t.Fatalf("the model received %d requests (first %s %s) from an input without the key", len(reqs), reqs[0].Method, reqs[0].Target)
		}
		for _, seen := range reqs {
			if seen.has("Content-Length") && seen.has("Transfer-Encoding") {
				t.Fatalf("the model received both Content-Length and Transfer-Encoding: %q", seen.Header)
			}
			if seen.has("Authorization") || seen.has("Proxy-Authorization") {
				t.Fatalf("the model received a credential: %q", seen.Header)
			}
			if len(seen.Trailer) != 0 {
				t.Fatalf("the model received request trailers: %q", seen.Trailer)
			}
			if seen.Proto != "HTTP/1.1" || len(seen.values("Traceparent")) > 1 {
				t.Fatalf("the model received %s with traceparent %q", seen.Proto, seen.values("Traceparent"))
			}
			for _, name := range []string{"X-Api-Key", "Api-Key", "Ocp-Apim-Subscription-Key"} {
				if seen.has(name) {
					t.Fatalf("the model received the credential carrier %s", name)
				}
			}
			if seen.Err != nil {
				t.Fatalf("the model received a request it could not parse (%v): %s %s %q", seen.Err, seen.Method, seen.Target, seen.Header)
			}
		}
	})
}

// notifyListener hands each accepted connection to the test, which learns from it when the
// gateway has finished with the connection (fasthttp closes it after its last handler returned).
type notifyListener struct {
	*fasthttputil.InmemoryListener
	accepted chan *notifyConn
}

func (l *notifyListener) Accept() (net.Conn, error) {
	c, err := l.InmemoryListener.Accept()
	if err != nil {
		return nil, err
	}
	nc := &notifyConn{Conn: c, closed: make(chan struct{})}
	l.accepted <- nc
	return nc, nil
}

type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

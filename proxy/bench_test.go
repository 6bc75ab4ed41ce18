package proxy_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// benchUpstream is a fasthttp model on a loopback port (the gateway dials its upstreams by
// address) that answers every request with a small JSON body.
func benchUpstream(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"result":[0]}`)
	}}
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.ShutdownWithContext(ctx)
		<-done
	})
	return "http://" + ln.Addr().String()
}

// benchClient sends requests to a gateway served on an in-memory listener, over one reused
// connection.
func benchClient(b *testing.B) (*env, *fasthttp.HostClient) {
	b.Helper()
	ln := fasthttputil.NewInmemoryListener()
	e := newEnv(b, envOptions{listener: ln, upstreamURL: benchUpstream(b)})
	c := &fasthttp.HostClient{
		Addr: "gw.test",
		Dial: func(string) (net.Conn, error) {
			return ln.DialWithLocalAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000})
		},
		MaxConns: 1,
	}
	b.Cleanup(c.CloseIdleConnections)
	return e, c
}

func benchRequest(b *testing.B, c *fasthttp.HostClient, req *fasthttp.Request, status int) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	// One request first, so that both connections (client to gateway, gateway to model) exist.
	if err := c.Do(req, resp); err != nil || resp.StatusCode() != status {
		b.Fatalf("status %d, err %v, want %d", resp.StatusCode(), err, status)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil || resp.StatusCode() != status {
			b.Fatalf("status %d, err %v, want %d", resp.StatusCode(), err, status)
		}
	}
}

// BenchmarkProxyKeyRequest is one scoring request through the whole gateway: parse, route,
// authenticate a key, clean headers, forward to the model, answer.
func BenchmarkProxyKeyRequest(b *testing.B) {
	e, c := benchClient(b)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/api/v1/service/iris/score?version=2")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+e.primary)
	req.SetBodyString(`{"data":[[5.1,3.5,1.4,0.2]]}`)
	benchRequest(b, c, req, fasthttp.StatusOK)
}

// BenchmarkReject401 is a scoring request without a credential, refused before the model.
func BenchmarkReject401(b *testing.B) {
	_, c := benchClient(b)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/api/v1/service/iris/score?version=2")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyString(`{"data":[[5.1,3.5,1.4,0.2]]}`)
	benchRequest(b, c, req, fasthttp.StatusUnauthorized)
}

package proxy

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkHeaderPolicy is the header work of one forwarded HTTP/1.1 request, without telemetry:
// the request id read, the trace context, cleanRequest, dropCredentials, the request id and
// deployment pin on the way to the model, cleanResponse and the answer's id headers (with a copy
// of the request's and the answer's headers, parsed once, to work on).
func BenchmarkHeaderPolicy(b *testing.B) {
	const rawReq = "POST /api/v1/service/iris/score?version=2 HTTP/1.1\r\nHost: gw.test\r\n" +
		"Content-Type: application/json\r\nContent-Length: 28\r\nAuthorization: Bearer k\r\n" +
		"User-Agent: wrk\r\nAccept: */*\r\n\r\n"
	const rawResp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n" +
		"Date: Mon, 07 Dec 2026 11:00:00 GMT\r\nServer: model\r\n\r\n"
	var tmplReq, req fasthttp.RequestHeader
	var tmplResp, resp fasthttp.ResponseHeader
	if err := tmplReq.Read(bufio.NewReader(strings.NewReader(rawReq))); err != nil {
		b.Fatal(err)
	}
	if err := tmplResp.Read(bufio.NewReader(strings.NewReader(rawResp))); err != nil {
		b.Fatal(err)
	}
	g := &Gateway{}
	peer := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		tmplReq.CopyTo(&req) // the copies are part of the time measured
		tmplResp.CopyTo(&resp)
		headerPolicyOnce(g, &req, &resp, peer)
	}
}

// headerPolicyOnce is the header work forward, serve and finish do for one request.
func headerPolicyOnce(g *Gateway, req *fasthttp.RequestHeader, resp *fasthttp.ResponseHeader, peer netip.Addr) {
	var idBuf [requestIDMaxLen]byte
	id := requestID(req.PeekCanonical(keyRequestID), idBuf[:0])
	_ = req.PeekCanonical(keyDeployment)
	g.setTraceContext(req, nil)
	var fwdBuf [256]byte
	g.cleanRequest(req, peer, false, fwdBuf[:0])
	dropCredentials(req, nil)
	req.SetCanonical(keyRequestID, id)
	cleanResponse(resp)
	var tp [55]byte
	ids, n := answerIDHeaders(&tp, id, req.PeekCanonical(keyClientRequestID), nil)
	for _, f := range ids[:n] {
		resp.SetCanonical(f.key, f.value)
	}
}

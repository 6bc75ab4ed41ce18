package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Forwarded is one request as an upstream parsed it: what the gateway meant to send.
type Forwarded struct {
	Method string `json:"method"`
	Target string `json:"target"`
	Body   string `json:"body"`
}

// parsedRequest is what the net/http model read of one request.
type parsedRequest struct {
	Forwarded
	Proto            string   `json:"proto"`
	TransferEncoding []string `json:"transferEncoding"`
	ContentLength    int64    `json:"contentLength"`
	Err              string   `json:"err"`
}

// netHTTPModel is a model behind the gateway that parses requests with net/http, a parser other
// than fasthttp's, and records what it parsed; its answer echoes that, marked X-Parsed-By.
type netHTTPModel struct {
	srv *httptest.Server

	mu   sync.Mutex
	seen []parsedRequest
}

const parsedByHeader = "X-Parsed-By"

func newNetHTTPModel(t *testing.T) *netHTTPModel {
	t.Helper()
	m := &netHTTPModel{}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		p := parsedRequest{
			Forwarded:        Forwarded{Method: r.Method, Target: r.RequestURI, Body: string(body)},
			Proto:            r.Proto,
			TransferEncoding: r.TransferEncoding,
			ContentLength:    r.ContentLength,
		}
		if err != nil {
			p.Err = err.Error()
		}
		m.mu.Lock()
		m.seen = append(m.seen, p)
		m.mu.Unlock()
		w.Header().Set(parsedByHeader, "net/http")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	}))
	m.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	m.srv.Start()
	t.Cleanup(m.srv.Close)
	return m
}

// take returns what the model parsed since the last take.
func (m *netHTTPModel) take() []parsedRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.seen
	m.seen = nil
	return out
}

// TestDifferentialParsing is HTTP-52: a corpus of smuggling gadgets goes through the gateway to a
// model that parses with net/http. For every request the gateway accepts, the model parses
// exactly one request, with the method, target and body the gateway meant (one of the outcomes
// the case allows); a request the gateway refuses reaches the model not at all. Nothing the model
// parses is unanswered (a smuggled request) and no answer belongs to another request.
func TestDifferentialParsing(t *testing.T) {
	model := newNetHTTPModel(t)
	e := newEnv(t, envOptions{upstreamURL: model.srv.URL})

	const (
		svc      = "/api/v1/service/open"
		smuggled = "GET " + svc + "/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n"
	)
	line := func(method, path, proto string) string { return method + " " + svc + path + " " + proto + "\r\n" }
	head := func(method, path string, lines ...string) string {
		return line(method, path, "HTTP/1.1") + "Host: gw.test\r\n" + strings.Join(lines, "") + "\r\n"
	}
	h := func(name, value string) string { return name + ": " + value + "\r\n" }
	cl := func(body string) string { return h("Content-Length", strconv.Itoa(len(body))) }
	chunked := h("Transfer-Encoding", "chunked")
	const helloChunked = "5\r\nhello\r\n0\r\n\r\n"
	smuggleChunked := "0\r\n\r\n" + smuggled // empty chunked body, then a hidden request

	fwd := func(method, target, body string) Forwarded { return Forwarded{method, target, body} }
	one := func(f ...Forwarded) []Forwarded { return f }
	refused := [][]Forwarded{nil}
	either := func(outcomes ...[]Forwarded) [][]Forwarded { return outcomes }
	helloPost := one(fwd("POST", "/d", "hello"))

	tests := []struct {
		name string
		raw  string
		// want lists the outcomes allowed: what the model parses, in order. nil is "refused,
		// nothing reaches the model".
		want [][]Forwarded
	}{
		// Plain requests: Forwarded exactly.
		{"HTTP-52 GET", head("GET", "/d?a=1&b=%20"), either(one(fwd("GET", "/d?a=1&b=%20", "")))},
		{"HTTP-52 POST with Content-Length", head("POST", "/d", cl("hello")) + "hello", either(helloPost)},
		{"HTTP-52 POST chunked", head("POST", "/d", chunked) + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", either(one(fwd("POST", "/d", "hello world")))},
		{"HTTP-52 chunk size in upper-case hex", head("POST", "/d", chunked) + "A\r\n0123456789\r\n0\r\n\r\n", either(one(fwd("POST", "/d", "0123456789")))},
		{"HTTP-52 chunked with a trailer", head("POST", "/d", chunked, h("Trailer", "X-T")) + "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", either(helloPost, nil)},
		{"HTTP-52 chunk extension", head("POST", "/d", chunked) + "5;name=value\r\nhello\r\n0\r\n\r\n", either(helloPost, nil)},
		{"HTTP-52 GET with a body", head("GET", "/d", cl("hello")) + "hello", either(one(fwd("GET", "/d", "hello")), nil)},
		{"HTTP-52 body that looks like a request", head("POST", "/d", cl(smuggled)) + smuggled, either(one(fwd("POST", "/d", smuggled)))},
		{"HTTP-52 chunk that looks like a request", head("POST", "/d", chunked) + strconv.FormatInt(int64(len(smuggled)), 16) + "\r\n" + smuggled + "\r\n0\r\n\r\n",
			either(one(fwd("POST", "/d", smuggled)))},
		{"HTTP-52 HTTP/1.0 GET", line("GET", "/d", "HTTP/1.0") + "\r\n", either(one(fwd("GET", "/d", "")))},
		{"HTTP-52 HTTP/1.0 POST with Content-Length", line("POST", "/d", "HTTP/1.0") + cl("hello") + "\r\nhello", either(helloPost)},
		{"HTTP-52 OWS around Content-Length", head("POST", "/d", "Content-Length: \t5 \r\n") + "hello", either(helloPost)},
		{"HTTP-52 Content-Length with leading zeros", head("POST", "/d", h("Content-Length", "005")) + "hello", either(helloPost, nil)},
		{"HTTP-52 TE value in upper case", head("POST", "/d", h("Transfer-Encoding", "CHUNKED")) + helloChunked, either(helloPost, nil)},
		{"HTTP-52 TE value after two spaces", head("POST", "/d", "Transfer-Encoding:  chunked\r\n") + helloChunked, either(helloPost, nil)},
		{"HTTP-52 TE value after a tab", head("POST", "/d", "Transfer-Encoding:\tchunked\r\n") + helloChunked, either(helloPost, nil)},
		{"HTTP-52 bare LF line ends in the head", "GET " + svc + "/d HTTP/1.1\nHost: gw.test\n\n", either(one(fwd("GET", "/d", "")), nil)},
		{"HTTP-52 empty line before the request line", "\r\n" + head("GET", "/d"), either(one(fwd("GET", "/d", "")), nil)},
		{"HTTP-52 obs-text in a header value", head("GET", "/d", "X-Note: caf\xe9\r\n"), either(one(fwd("GET", "/d", "")), nil)},
		{"HTTP-52 Expect: 100-continue", head("POST", "/d", cl("hello"), h("Expect", "100-continue")) + "hello", either(helloPost)},

		// Pipelining: each request on its own, in order.
		{"HTTP-52 pipelined GET then POST", head("GET", "/p1") + head("POST", "/p2", cl("hi")) + "hi",
			either(one(fwd("GET", "/p1", ""), fwd("POST", "/p2", "hi")))},
		{"HTTP-52 pipelined GET with Content-Length: 0 then GET", head("GET", "/p1", h("Content-Length", "0")) + head("GET", "/p2"),
			either(one(fwd("GET", "/p1", ""), fwd("GET", "/p2", "")))},
		{"HTTP-52 pipelined chunked then GET", head("POST", "/p1", chunked) + helloChunked + head("GET", "/p2"),
			either(one(fwd("POST", "/p1", "hello"), fwd("GET", "/p2", "")))},
		{"HTTP-52 pipelined: Content-Length shorter than the body", head("POST", "/p1", h("Content-Length", "3")) + "hello",
			either(one(fwd("POST", "/p1", "hel")))},
		{"HTTP-52 pipelined: good request then bad framing", head("GET", "/p1") + head("POST", "/p2", h("Transfer-Encoding", "chunked, identity")) + helloChunked,
			either(one(fwd("GET", "/p1", "")))},

		// CL and TE together: refused, or read as chunked with the connection closed; the hidden
		// request never reaches the model.
		{"HTTP-52 CL.TE", head("POST", "/d", cl(smuggleChunked), chunked) + smuggleChunked, either(nil, one(fwd("POST", "/d", "")))},
		{"HTTP-52 TE.CL", head("POST", "/d", chunked, cl(smuggleChunked)) + smuggleChunked, either(nil, one(fwd("POST", "/d", "")))},
		{"HTTP-52 CL.TE with TE after a bare LF", head("POST", "/d", cl(smuggleChunked), "X: X\nTransfer-Encoding: chunked\r\n") + smuggleChunked,
			either(nil, one(fwd("POST", "/d", "")))},
		{"HTTP-52 CL.TE with TE in mixed case", head("POST", "/d", cl(smuggleChunked), h("tRANSFER-eNCODING", "cHUNKED")) + smuggleChunked,
			either(nil, one(fwd("POST", "/d", "")))},

		// TE obfuscations and values other than chunked: refused.
		{"HTTP-52 TE chunked, identity", head("POST", "/d", h("Transfer-Encoding", "chunked, identity")) + helloChunked, refused},
		{"HTTP-52 TE identity, chunked", head("POST", "/d", h("Transfer-Encoding", "identity, chunked")) + helloChunked, refused},
		{"HTTP-52 TE chunked, chunked", head("POST", "/d", h("Transfer-Encoding", "chunked, chunked")) + helloChunked, refused},
		{"HTTP-52 TE xchunked", head("POST", "/d", cl(helloChunked), h("Transfer-Encoding", "xchunked")) + helloChunked, refused},
		{"HTTP-52 TE chunkedx", head("POST", "/d", cl(helloChunked), h("Transfer-Encoding", "chunkedx")) + helloChunked, refused},
		{"HTTP-52 TE chunked with a trailing comma", head("POST", "/d", h("Transfer-Encoding", "chunked,")) + helloChunked, refused},
		{"HTTP-52 TE identity with Content-Length", head("POST", "/d", cl("hello"), h("Transfer-Encoding", "identity")) + "hello", refused},
		{"HTTP-52 TE gzip", head("POST", "/d", h("Transfer-Encoding", "gzip")) + helloChunked, refused},
		{"HTTP-52 two TE lines", head("POST", "/d", chunked, chunked) + helloChunked, refused},
		{"HTTP-52 TE name with a space before the colon", head("POST", "/d", cl(smuggleChunked), "Transfer-Encoding : chunked\r\n") + smuggleChunked, refused},
		{"HTTP-52 TE name after a leading space (obs-fold)", head("POST", "/d", cl(smuggleChunked), " Transfer-Encoding: chunked\r\n") + smuggleChunked, refused},
		{"HTTP-52 TE value on a folded line", head("POST", "/d", cl(smuggleChunked), "Transfer-Encoding:\r\n chunked\r\n") + smuggleChunked, refused},
		{"HTTP-52 TE value with a vertical tab", head("POST", "/d", cl(smuggleChunked), "Transfer-Encoding: chunked\x0b\r\n") + smuggleChunked, refused},
		{"HTTP-52 TE value with a NUL", head("POST", "/d", cl(smuggleChunked), "Transfer-Encoding: chunked\x00\r\n") + smuggleChunked, refused},
		{"HTTP-52 TE on HTTP/1.0", line("POST", "/d", "HTTP/1.0") + chunked + "\r\n" + helloChunked, refused},

		// Content-Length syntax.
		{"HTTP-52 two equal Content-Length lines", head("POST", "/d", cl("hello"), cl("hello")) + "hello", refused},
		{"HTTP-52 two different Content-Length lines", head("POST", "/d", h("Content-Length", "5"), h("Content-Length", "4")) + "hello", refused},
		{"HTTP-52 Content-Length list", head("POST", "/d", h("Content-Length", "5, 5")) + "hello", refused},
		{"HTTP-52 Content-Length +5", head("POST", "/d", h("Content-Length", "+5")) + "hello", refused},
		{"HTTP-52 Content-Length -1", head("POST", "/d", h("Content-Length", "-1")) + "hello", refused},
		{"HTTP-52 Content-Length in hex", head("POST", "/d", h("Content-Length", "0x5")) + "hello", refused},
		{"HTTP-52 Content-Length over 2^64", head("POST", "/d", h("Content-Length", "18446744073709551621")) + "hello", refused},

		// Chunk framing.
		{"HTTP-52 chunk size 0x5", head("POST", "/d", chunked) + "0x5\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 chunk size +5", head("POST", "/d", chunked) + "+5\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 chunk size -5", head("POST", "/d", chunked) + "-5\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 chunk size with a leading space", head("POST", "/d", chunked) + " 5\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 chunk size of 17 hex digits", head("POST", "/d", chunked) + "00000000000000005\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 chunk size overflowing 64 bits", head("POST", "/d", chunked) + "10000000000000005\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 empty chunk size line", head("POST", "/d", chunked) + "\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 LF inside a chunk extension", head("POST", "/d", chunked) + "5;\nX\r\nhello\r\n0\r\n\r\n", refused},
		{"HTTP-52 chunk data longer than its size", head("POST", "/d", chunked) + "5\r\nhelloX\r\n0\r\n\r\n", refused},
		{"HTTP-52 bare LF chunk framing", head("POST", "/d", chunked) + "5\nhello\n0\n\n", refused},
		{"HTTP-52 chunked body cut short", head("POST", "/d", chunked) + "5\r\nhel", refused},

		// Heads a parser could read two ways.
		{"HTTP-52 obs-fold in an ordinary header", head("GET", "/d", "X-Foo: a\r\n b\r\n"), refused},
		{"HTTP-52 NUL in a header value", head("GET", "/d", "X-Foo: a\x00b\r\n"), refused},
		{"HTTP-52 bare CR in a header value", head("GET", "/d", "X-Foo: a\rb\r\n"), refused},
		{"HTTP-52 two Host lines", head("GET", "/d", h("Host", "other.test")), refused},
		{"HTTP-52 absolute-form target", "GET http://gw.test" + svc + "/d HTTP/1.1\r\nHost: gw.test\r\n\r\n", refused},
		{"HTTP-52 absolute-form naming another host", "GET http://169.254.169.254" + svc + "/d HTTP/1.1\r\nHost: gw.test\r\n\r\n", refused},
		{"HTTP-52 two spaces in the request line", "GET  " + svc + "/d HTTP/1.1\r\nHost: gw.test\r\n\r\n", refused},
		{"HTTP-52 encoded slash in the path", head("GET", "/a%2f..%2fd"), refused},
		{"HTTP-52 NUL in the path", "GET " + svc + "/d\x00 HTTP/1.1\r\nHost: gw.test\r\n\r\n", refused},
		{"HTTP-52 header name with a space", head("GET", "/d", "X Foo: a\r\n"), refused},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			model.take()
			resps := e.exchange(t, tc.raw)
			seen := model.take()

			// Answers that came from the model echo what it parsed, in order; every other answer is
			// the gateway's own error, never a parser error of the model's passed on.
			var echoed []parsedRequest
			for i, r := range resps {
				switch {
				case r.get(parsedByHeader) != "":
					var p parsedRequest
					if err := json.Unmarshal(r.Body, &p); err != nil || r.Status != 200 {
						t.Fatalf("answer %d from the model: %d %s (%v)", i, r.Status, r.Body, err)
					}
					echoed = append(echoed, p)
				case r.Status == 100:
				case r.Status >= 400:
					checkError(t, r, r.Status, errorBodyCode(t, r), "")
				default:
					t.Errorf("answer %d is %d %s, neither the model's nor a gateway error", i, r.Status, r.Body)
				}
			}
			var got []Forwarded
			for _, p := range seen {
				if p.Err != "" {
					t.Errorf("the model could not read the body of %s %s: %s", p.Method, p.Target, p.Err)
				}
				got = append(got, p.Forwarded)
			}
			if len(seen) != len(echoed) {
				t.Errorf("the model parsed %d requests, the client got %d of its answers: %+v", len(seen), len(echoed), seen)
			} else {
				checkEqual(t, "the model's answers, in order, against what it parsed", seen, echoed)
			}
			t.Logf("answers: %s; the model parsed %+v", describe(resps), got)
			if !slices.ContainsFunc(tc.want, func(w []Forwarded) bool { return slices.Equal(w, got) }) {
				t.Errorf("the model parsed %+v (answers %s), want one of %+v", got, describe(resps), tc.want)
			}
			for _, f := range got {
				if strings.Contains(f.Target, "smuggled") {
					t.Errorf("the hidden request reached the model: %s %s", f.Method, f.Target)
				}
			}
		})
	}
}

// errorBodyCode reads the code of a gateway error body (checkError then checks the whole shape).
func errorBodyCode(t *testing.T, r *response) string {
	t.Helper()
	var b errorBody
	if err := json.NewDecoder(bytes.NewReader(r.Body)).Decode(&b); err != nil {
		t.Fatalf("answer %d %q is not a gateway error body: %v", r.Status, r.Body, err)
	}
	return b.Error.Code
}

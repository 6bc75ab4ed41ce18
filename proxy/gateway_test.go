package proxy_test

import (
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestForwardTarget checks CONTRACT §3: /api/v1/service/{name}/{rest} reaches the model as /{rest}
// with the query string unchanged, raw.
func TestForwardTarget(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct {
		name   string
		target string
		want   string
	}{
		{"contract: score with its query unchanged", "/api/v1/service/iris/score?x=1&y=2", "/score?x=1&y=2"},
		{"contract: swagger.json", "/api/v1/service/iris/swagger.json", "/swagger.json"},
		{"deeper path", "/api/v1/service/iris/v2/models/iris/infer", "/v2/models/iris/infer"},
		{"trailing slash kept", "/api/v1/service/iris/score/", "/score/"},
		{"service root with slash", "/api/v1/service/iris/", "/"},
		{"service root without slash reaches /", "/api/v1/service/iris", "/"},
		{"service root without slash keeps the query", "/api/v1/service/iris?x=1", "/?x=1"},
		{"HTTP-32 repeated parameters forwarded as sent", "/api/v1/service/iris/score?model=a&model=b", "/score?model=a&model=b"},
		{"HTTP-32 semicolon in the query forwarded as sent", "/api/v1/service/iris/score?model=a;model=b", "/score?model=a;model=b"},
		{"query bytes not decoded or re-encoded", "/api/v1/service/iris/score?q=a%20b&r=c+d&s=&t=%2F/x?y&u=%e2%82%ac", "/score?q=a%20b&r=c+d&s=&t=%2F/x?y&u=%e2%82%ac"},
		{"path sub-delims, colon and at forwarded raw", "/api/v1/service/iris/a;v=1/b:c@d!$&'()*+,=~", "/a;v=1/b:c@d!$&'()*+,=~"},
		{"HTTP-28 matrix parameter forwarded as sent", "/api/v1/service/iris/score;jsessionid=1", "/score;jsessionid=1"},
		{"HTTP-29 encoded '#' forwarded as sent, not decoded", "/api/v1/service/iris/admin%23foo", "/admin%23foo"},
		{"encoded letters forwarded as sent, not decoded", "/api/v1/service/iris/sc%6Fre", "/sc%6Fre"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, request("GET", tc.target, bearer(e.primary)))
			if r.Status != 200 || string(r.Body) != okBody {
				t.Fatalf("got %d %s, want 200 from the model", r.Status, r.Body)
			}
			seen := e.up.requireOne(t)
			if seen.Target != tc.want || seen.Method != "GET" || seen.Proto != "HTTP/1.1" {
				t.Errorf("the model saw %s %s %s, want GET %s HTTP/1.1", seen.Method, seen.Target, seen.Proto, tc.want)
			}
		})
	}
}

// TestForwardRequest checks what the model receives besides the target, and what the client
// gets back, for an accepted request.
func TestForwardRequest(t *testing.T) {
	e := newEnv(t, envOptions{})

	t.Run("body, method and content type reach the model", func(t *testing.T) {
		e.up.reset()
		body := `{"data":[[5.1,3.5,1.4,0.2]]}`
		r := e.do(t, request("POST", "/api/v1/service/iris/score", bearer(e.primary),
			"Content-Type: application/json", "Content-Length: "+strconv.Itoa(len(body)))+body)
		if r.Status != 200 {
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
		seen := e.up.requireOne(t)
		type view struct {
			Method, Body               string
			ContentType, ContentLength []string
		}
		checkEqual(t, "the model's request",
			view{"POST", body, []string{"application/json"}, []string{strconv.Itoa(len(body))}},
			view{seen.Method, string(seen.Body), seen.values("Content-Type"), seen.values("Content-Length")})
	})

	t.Run("chunked body reaches the model de-chunked with a Content-Length", func(t *testing.T) {
		e.up.reset()
		r := e.do(t, request("POST", "/api/v1/service/iris/score", bearer(e.primary), "Transfer-Encoding: chunked")+
			"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		if r.Status != 200 {
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
		seen := e.up.requireOne(t)
		if string(seen.Body) != "hello world" || seen.has("Transfer-Encoding") || seen.get("Content-Length") != "11" {
			t.Errorf("the model saw body %q, Transfer-Encoding %q, Content-Length %q", seen.Body,
				seen.values("Transfer-Encoding"), seen.values("Content-Length"))
		}
	})

	t.Run("KEY-09 the model sees no credential, a request id, and its own Host", func(t *testing.T) {
		e.up.reset()
		r := e.do(t, request("GET", "/api/v1/service/iris/score", bearer(e.primary), "X-Custom: kept"))
		if r.Status != 200 {
			t.Fatalf("status %d %s", r.Status, r.Body)
		}
		id := checkRequestIDs(t, r)
		if !uuidV4.MatchString(id) {
			t.Errorf("generated request id %q is not a UUIDv4", id)
		}
		seen := e.up.requireOne(t)
		if seen.has("Authorization") || seen.has("Proxy-Authorization") {
			t.Errorf("the model saw a credential: %q", seen.Header)
		}
		checkEqual(t, "the model's X-Request-Id", []string{id}, seen.values("X-Request-Id"))
		checkEqual(t, "the model's Host", []string{e.up.addr}, seen.values("Host"))
		if got := seen.get("X-Custom"); got != "kept" {
			t.Errorf("end-to-end header X-Custom = %q, want kept", got)
		}
		if r.get("X-Upstream") != "recorder" || r.get("Content-Type") != "application/json" {
			t.Errorf("the model's response headers did not reach the client: %q", r.Header)
		}
	})

	t.Run("a valid incoming x-request-id is kept end to end", func(t *testing.T) {
		for _, id := range []string{"abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:01HZX.span_9", strings.Repeat("a", 64)} {
			e.up.reset()
			r := e.do(t, request("GET", "/api/v1/service/iris/score", bearer(e.primary), "x-request-id: "+id))
			if got := checkRequestIDs(t, r); got != id {
				t.Errorf("response id %q, want %q", got, id)
			}
			checkEqual(t, "the model's X-Request-Id", []string{id}, e.up.requireOne(t).values("X-Request-Id"))
		}
	})

	t.Run("an invalid incoming x-request-id is replaced", func(t *testing.T) {
		for _, id := range []string{strings.Repeat("a", 65), "bad id", "a/b", "<script>", "id\"quote", "caf\xc3\xa9"} {
			e.up.reset()
			r := e.do(t, request("GET", "/api/v1/service/iris/score", bearer(e.primary), "X-Request-Id: "+id))
			got := checkRequestIDs(t, r)
			if got == id || !uuidV4.MatchString(got) {
				t.Errorf("incoming %q: response id %q, want a new UUIDv4", id, got)
			}
			checkEqual(t, "the model's X-Request-Id for incoming "+strconv.Quote(id), []string{got}, e.up.requireOne(t).values("X-Request-Id"))
		}
	})

	t.Run("two incoming x-request-id lines reach the model as one", func(t *testing.T) {
		e.up.reset()
		r := e.do(t, request("GET", "/api/v1/service/iris/score", bearer(e.primary), "X-Request-Id: first", "X-Request-Id: second"))
		id := checkRequestIDs(t, r)
		checkEqual(t, "the model's X-Request-Id", []string{id}, e.up.requireOne(t).values("X-Request-Id"))
	})

	t.Run("x-ms-client-request-id is echoed", func(t *testing.T) {
		for _, target := range []string{"/api/v1/service/iris/score", "/api/v1/service/nope/score"} {
			r := e.do(t, request("GET", target, bearer(e.primary), "x-ms-client-request-id: client-42"))
			checkEqual(t, target+": x-ms-client-request-id", []string{"client-42"}, r.values("X-Ms-Client-Request-Id"))
		}
	})

	t.Run("primary and secondary keys are both accepted", func(t *testing.T) {
		for _, key := range []string{e.primary, e.secondary} {
			e.up.reset()
			if r := e.do(t, request("GET", "/api/v1/service/iris/score", bearer(key))); r.Status != 200 {
				t.Errorf("status %d %s", r.Status, r.Body)
			}
			e.up.requireOne(t)
		}
	})

	t.Run("auth none passes without a credential and drops a sent one", func(t *testing.T) {
		for _, auth := range []string{"", bearer("whatever"), bearer(e.primary)} {
			e.up.reset()
			lines := []string{}
			if auth != "" {
				lines = append(lines, auth)
			}
			r := e.do(t, request("GET", "/api/v1/service/open/score?x=1", lines...))
			if r.Status != 200 {
				t.Fatalf("auth %q: status %d %s", auth, r.Status, r.Body)
			}
			if seen := e.up.requireOne(t); seen.Target != "/score?x=1" || seen.has("Authorization") {
				t.Errorf("auth %q: the model saw %s with Authorization %q", auth, seen.Target, seen.values("Authorization"))
			}
		}
	})
}

// TestErrorResponses checks the contract's error statuses, bodies and challenges, and that the
// model saw nothing.
func TestErrorResponses(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct {
		name      string
		raw       string
		status    int
		code      string
		challenge string
	}{
		{"unknown service is 404", request("GET", "/api/v1/service/nope/score", bearer("x")), 404, "NotFound", ""},
		{"unknown service with a valid key is 404", request("GET", "/api/v1/service/nope/score", bearer(e.primary)), 404, "NotFound", ""},
		{"no service name is 404", request("GET", "/api/v1/service/"), 404, "NotFound", ""},
		{"service names are case-sensitive", request("GET", "/api/v1/service/IRIS/score", bearer("x")), 404, "NotFound", ""},
		{"a path outside the service prefix is 404", request("GET", "/"), 404, "NotFound", ""},
		{"KEY-01 no credential is 401 with a bare challenge", request("GET", "/api/v1/service/iris/score"), 401, "Unauthorized", challenge},
		{"a sent credential that fails is 401 invalid_token", request("GET", "/api/v1/service/iris/score", bearer("nope")), 401, "Unauthorized", challengeInvalid},
		{"token service refuses no credential", request("GET", "/api/v1/service/tok/score"), 401, "Unauthorized", challenge},
		{"KEY-07 two Authorization headers is 400", request("GET", "/api/v1/service/iris/score", bearer("a"), bearer("b")), 400, "BadRequest", ""},
		{"CONNECT is refused", "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n", 400, "BadRequest", ""},
		{"an unparsable request is 400", "GET /x\x01 HTTP/1.1\r\nHost: gw.test\r\n\r\n", 400, "BadRequest", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			checkError(t, e.do(t, tc.raw), tc.status, tc.code, tc.challenge)
			e.up.requireNone(t)
		})
	}

	t.Run("token service refuses a valid key", func(t *testing.T) {
		e.up.reset()
		checkError(t, e.do(t, request("GET", "/api/v1/service/tok/score", bearer(e.primary))), 401, "Unauthorized", challengeInvalid)
		e.up.requireNone(t)
	})

	t.Run("the same 401 body whatever failed", func(t *testing.T) {
		var bodies []string
		for _, auth := range []string{"", bearer("nope"), bearer(e.otherKey), bearer(e.primary[:len(e.primary)-1])} {
			lines := []string{}
			if auth != "" {
				lines = append(lines, auth)
			}
			bodies = append(bodies, string(e.do(t, request("GET", "/api/v1/service/iris/score", lines...)).Body))
		}
		for _, b := range bodies[1:] {
			if b != bodies[0] {
				t.Errorf("401 bodies differ: %q", bodies)
			}
		}
	})
}

// TestUpstreamFailures covers the model being unreachable, slow, or answering badly.
func TestUpstreamFailures(t *testing.T) {
	e := newEnv(t, envOptions{})
	downAddr := strings.TrimPrefix(e.cfg.Service("down").Upstreams[0], "http://")
	_, downPort, _ := net.SplitHostPort(downAddr)
	tests := []struct {
		name   string
		target string
		status int
		code   string
	}{
		{"HTTP-47 upstream refuses connections", "/api/v1/service/down/score", 502, "BadGateway"},
		{"HTTP-46 response body over max_response_bytes", "/api/v1/service/open/big", 502, "BadGateway"},
		// A chunked answer is streamed: over max_response_bytes it is cut, after its 200 (stream_test.go).
		{"scoring timeout is 504", "/api/v1/service/slow/sleep", 504, "GatewayTimeout"},
		{"HTTP-34 upstream sends two Content-Length", "/api/v1/service/open/dup-cl", 502, "BadGateway"},
		{"HTTP-34 upstream sends Transfer-Encoding gzip", "/api/v1/service/open/te-gzip", 502, "BadGateway"},
		{"upstream answers something that is not HTTP", "/api/v1/service/open/garbage", 502, "BadGateway"},
		{"upstream closes without answering", "/api/v1/service/open/close-early", 502, "BadGateway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resps := e.exchange(t, request("GET", tc.target))
			if len(resps) != 1 {
				t.Fatalf("got %d responses, want one: %s", len(resps), describe(resps))
			}
			r := resps[0]
			checkError(t, r, tc.status, tc.code, "")
			// HTTP-47: the generic body names no address, port or error.
			for _, leak := range []string{"127.0.0.1", downPort, e.up.addr, "dial", "refused", "reset", "i/o timeout", "deadline", "EOF", "fasthttp", "body size", "malformed"} {
				if strings.Contains(strings.ToLower(string(r.Body)), strings.ToLower(leak)) {
					t.Errorf("body %s leaks %q", r.Body, leak)
				}
				for _, f := range r.Header {
					if strings.Contains(strings.ToLower(f.Value), strings.ToLower(leak)) {
						t.Errorf("header %s: %s leaks %q", f.Name, f.Value, leak)
					}
				}
			}
		})
	}

}

// TestHTTP34UpstreamResponseSmuggling: a model's answer with both Content-Length and
// Transfer-Encoding, or with bytes after its end (here, bytes that look like a second answer), is
// refused with 502 and its connection closed, so the next request to that model (possibly
// another client's) gets its own answer, not the leftover bytes. fasthttp alone reads a CL+TE
// answer as chunked and puts the connection back in its pool.
func TestHTTP34UpstreamResponseSmuggling(t *testing.T) {
	const smuggled = "HTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 9\r\n\r\nsmuggled!"
	answers := map[string]string{
		"/cl-te":   "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"/te-cl":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + smuggled,
		"/cl-te-0": "HTTP/1.1 200 OK\r\ncontent-length : 0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
		"/after":   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}" + smuggled,
		"/after-0": "HTTP/1.1 204 No Content\r\n\r\n" + smuggled,
	}
	for path := range answers {
		t.Run(path, func(t *testing.T) {
			e := newEnv(t, envOptions{respond: func(r *recorder, w io.Writer, req *seenRequest) bool {
				if a, ok := answers[req.Target]; ok {
					_, err := io.WriteString(w, a)
					return err == nil
				}
				return respondOK(r, w, req)
			}})
			first := e.exchange(t, request("GET", "/api/v1/service/open"+path))
			if len(first) != 1 || first[0].Status != 502 {
				t.Errorf("HTTP-34 %s: got %s, want one 502", path, describe(first))
			}
			for range 3 {
				next := e.do(t, request("GET", "/api/v1/service/open/score"))
				if next.Status != 200 || string(next.Body) != okBody || next.get("X-Smuggled") != "" {
					t.Errorf("HTTP-34 the next request got %d %s %q, want the model's own answer %s", next.Status, next.Body, next.Header, okBody)
				}
			}
		})
	}
}

// HTTP-34 for a streamed (chunked) answer with bytes after its end: the client has its headers
// already, so its answer is cut (no last chunk), and the next request gets its own answer.
func TestHTTP34StreamedAnswerWithBytesAfterItsEnd(t *testing.T) {
	const answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 9\r\n\r\nsmuggled!"
	e := newEnv(t, envOptions{respond: func(r *recorder, w io.Writer, req *seenRequest) bool {
		if req.Target == "/chunked-after" {
			_, err := io.WriteString(w, answer)
			return err == nil
		}
		return respondOK(r, w, req)
	}})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	io.WriteString(c, request("GET", "/api/v1/service/open/chunked-after"))
	got, _ := io.ReadAll(c) // the gateway closes the connection after a cut stream
	if strings.HasSuffix(string(got), "0\r\n\r\n") {
		t.Errorf("HTTP-34 the answer reached the client whole:\n%s", got)
	}
	for range 3 {
		next := e.do(t, request("GET", "/api/v1/service/open/score"))
		if next.Status != 200 || string(next.Body) != okBody || next.get("X-Smuggled") != "" {
			t.Errorf("HTTP-34 the next request got %d %s %q, want the model's own answer %s", next.Status, next.Body, next.Header, okBody)
		}
	}
}

// TestModelAdminPaths is HTTP-50: only /api/v1/service/{name}/ is proxied; a model server's
// management and debug endpoints at the gateway root are 404 and never reach a model.
func TestModelAdminPaths(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct{ method, target string }{
		{"GET", "/models"},
		{"POST", "/models?url=http://evil.test/model.mar"},
		{"GET", "/metrics"},
		{"GET", "/debug/pprof/"},
		{"GET", "/debug/pprof/goroutine?debug=2"},
		{"POST", "/v2/repository/models/x/load"},
		{"GET", "/v2/health/ready"},
		{"GET", "/score"},
		{"GET", "/api/v1/service"},
		{"GET", "/api/v1/services/iris/score"},
		{"GET", "/API/V1/SERVICE/iris/score"},
	} {
		t.Run("HTTP-50 "+tc.method+" "+tc.target, func(t *testing.T) {
			e.up.reset()
			checkError(t, e.do(t, request(tc.method, tc.target, bearer(e.primary), "Content-Length: 0")), 404, "NotFound", "")
			e.up.requireNone(t)
		})
	}
}

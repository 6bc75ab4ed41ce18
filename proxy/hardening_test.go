package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/testpki"
	"github.com/scoregate/scoregate/proxy"
)

// This file holds the threat model's rows (docs/threat-model.md) about what a client can do to
// the gateway's own resources (HTTP-40 content types, HTTP-41 slowloris, HTTP-43 slow read,
// HTTP-44 connection hoarding), HTTP-49 (TLS to the model) and LOG-08 (a panic while handling a
// request).

// editService returns a config edit that applies edit to the named service.
func editService(name string, edit func(*config.Service)) func(*config.Config) {
	return func(c *config.Config) {
		for i := range c.Services {
			if c.Services[i].Name == name {
				edit(&c.Services[i])
			}
		}
	}
}

// TestContentTypes is HTTP-40: a service that lists content_types takes only those media types
// (parameters and case aside); anything else is 415 and never reaches the model (U0).
func TestContentTypes(t *testing.T) {
	e := newEnv(t, envOptions{config: editService("iris", func(s *config.Service) {
		s.ContentTypes = []string{"application/json", "application/x-protobuf"}
	})})
	const score = "/api/v1/service/iris/score"
	post := func(body string, lines ...string) string {
		return request("POST", score, append([]string{bearer(e.primary), "Content-Length: " + strconv.Itoa(len(body))}, lines...)...) + body
	}
	chunked := func(lines ...string) string {
		return request("POST", score, append([]string{bearer(e.primary), "Transfer-Encoding: chunked"}, lines...)...) + "2\r\n{}\r\n0\r\n\r\n"
	}
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"HTTP-40 listed type", post(`{}`, "Content-Type: application/json"), 200},
		{"HTTP-40 listed type with a charset parameter", post(`{}`, "Content-Type: application/json; charset=utf-8"), 200},
		{"HTTP-40 listed type in another case", post(`{}`, "Content-Type: Application/JSON"), 200},
		{"HTTP-40 listed type with whitespace before its parameter", post(`{}`, "Content-Type: application/json ;charset=utf-8"), 200},
		{"HTTP-40 second listed type", post(`{}`, "Content-Type: application/x-protobuf"), 200},
		{"HTTP-40 listed type on a chunked body", chunked("Content-Type: application/json"), 200},
		{"HTTP-40 no body and no type passes (GET swagger.json)", request("GET", "/api/v1/service/iris/swagger.json", bearer(e.primary)), 200},
		{"HTTP-40 empty body and no type passes", post(""), 200},

		{"HTTP-40 text/plain", post(`{}`, "Content-Type: text/plain"), 415},
		{"HTTP-40 multipart/form-data", post(`{}`, "Content-Type: multipart/form-data; boundary=x"), 415},
		{"HTTP-40 form-urlencoded", post(`a=1`, "Content-Type: application/x-www-form-urlencoded"), 415},
		{"HTTP-40 missing type with a body", post(`{}`), 415},
		{"HTTP-40 missing type with a chunked body", chunked(), 415},
		{"HTTP-40 empty type with a body", post(`{}`, "Content-Type:"), 415},
		{"HTTP-40 listed type as a prefix", post(`{}`, "Content-Type: application/jsonx"), 415},
		{"HTTP-40 structured-syntax suffix is another type", post(`{}`, "Content-Type: application/json-patch+json"), 415},
		{"HTTP-40 type without a subtype", post(`{}`, "Content-Type: application"), 415},
		{"HTTP-40 a list of types", post(`{}`, "Content-Type: application/json, text/plain"), 415},
		{"HTTP-40 wildcard sent by the client", post(`{}`, "Content-Type: */*"), 415},
		{"HTTP-40 unlisted type without a body", request("GET", score, bearer(e.primary), "Content-Type: text/plain"), 415},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, tc.raw)
			if tc.status == 200 {
				if r.Status != 200 {
					t.Fatalf("status %d %s, want 200", r.Status, r.Body)
				}
				e.up.requireOne(t)
				return
			}
			checkError(t, r, 415, "UnsupportedMediaType", "")
			e.up.requireNone(t)
		})
	}

	// fasthttp keeps the last of two Content-Type lines and forwards that one alone: whichever
	// order, the model reads the type the gateway checked.
	t.Run("HTTP-40 two Content-Type lines: the model sees the one checked", func(t *testing.T) {
		for _, order := range [][2]string{{"text/plain", "application/json"}, {"application/json", "text/plain"}} {
			e.up.reset()
			r := e.do(t, post(`{}`, "Content-Type: "+order[0], "Content-Type: "+order[1]))
			switch r.Status {
			case 200:
				seen := e.up.requireOne(t)
				if got := seen.values("Content-Type"); len(got) != 1 || got[0] != "application/json" {
					t.Errorf("%q: the model saw Content-Type %q, want only the checked application/json", order, got)
				}
			case 415:
				e.up.requireNone(t)
			default:
				t.Errorf("%q: status %d %s, want 200 or 415", order, r.Status, r.Body)
			}
		}
	})

	t.Run("HTTP-40 an unauthenticated request gets 401, not 415", func(t *testing.T) {
		e.up.reset()
		r := e.do(t, request("POST", score, "Content-Type: text/plain", "Content-Length: 2")+"{}")
		checkError(t, r, 401, "Unauthorized", challenge)
		e.up.requireNone(t)
	})

	t.Run("HTTP-40 Expect: 100-continue with an unlisted type gets 415 before the body", func(t *testing.T) {
		e.up.reset()
		resps := e.exchange(t, request("POST", score, bearer(e.primary), "Content-Type: text/plain",
			"Content-Length: 2", "Expect: 100-continue"))
		if len(resps) != 1 {
			t.Fatalf("got %s, want one 415 and no 100 Continue", describe(resps))
		}
		checkError(t, resps[0], 415, "UnsupportedMediaType", "")
		e.up.requireNone(t)
	})

	t.Run("HTTP-40 a service without content_types takes any type", func(t *testing.T) {
		e.up.reset()
		r := e.do(t, request("POST", "/api/v1/service/other/score", bearer(e.otherKey), "Content-Type: text/plain", "Content-Length: 2")+"hi")
		if r.Status != 200 {
			t.Fatalf("status %d %s, want 200", r.Status, r.Body)
		}
		checkEqual(t, "the model's Content-Type", []string{"text/plain"}, e.up.requireOne(t).values("Content-Type"))
	})
}

// slowConn is one slowloris connection's fate.
type slowConn struct {
	dialed, closed time.Time
	got            []byte // what the gateway sent before closing
	stillOpen      bool
}

// TestSlowloris is HTTP-41: connections that trickle a request head one byte at a time are
// closed at server.read_timeout, while a fresh request is still served promptly, and the
// gateway's goroutines and memory stay proportional to the connections.
func TestSlowloris(t *testing.T) {
	t.Run("HTTP-41 1000 connections trickling a request head are closed at read_timeout while fresh requests are served", slowloris)
}

func slowloris(t *testing.T) {
	const (
		conns       = 1000 // HTTP-41 in docs/threat-model.md: a thousand connections
		readTimeout = time.Second
		interval    = 200 * time.Millisecond // one byte per interval, well inside read_timeout
		giveUp      = readTimeout + 20*time.Second
		legitBound  = 5 * time.Second // generous: a loopback request takes milliseconds
	)
	e := newEnv(t, envOptions{config: func(c *config.Config) { c.Server.ReadTimeout = readTimeout }})

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	head := request("GET", "/api/v1/service/open/score", "X-Slow: "+strings.Repeat("a", 4096))
	results := make([]slowConn, conns)
	var wg sync.WaitGroup
	for i := range results {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatalf("dialing connection %d: %v", i, err)
		}
		res := &results[i]
		res.dialed = time.Now()
		wg.Go(func() {
			defer c.Close()
			buf := make([]byte, 512)
			for n := 0; ; n++ {
				if time.Since(res.dialed) > giveUp {
					res.stillOpen = true
					return
				}
				c.SetWriteDeadline(time.Now().Add(interval))
				c.Write([]byte{head[n%len(head)]}) // fails once the gateway has closed; the read says so
				c.SetReadDeadline(time.Now().Add(interval))
				m, err := c.Read(buf)
				res.got = append(res.got, buf[:m]...)
				var ne net.Error
				if err == nil || errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				res.closed = time.Now() // EOF or reset: the gateway closed the connection
				return
			}
		})
	}

	// While every connection trickles, fresh requests are answered at once.
	for i := range 3 {
		start := time.Now()
		r := e.do(t, request("GET", "/api/v1/service/open/score"))
		if r.Status != 200 {
			t.Errorf("HTTP-41 legitimate request %d during the attack: status %d %s", i, r.Status, r.Body)
		}
		if d := time.Since(start); d > legitBound {
			t.Errorf("HTTP-41 legitimate request %d took %s during the attack, want under %s", i, d, legitBound)
		}
	}

	// Resources grow with the connections, not with the bytes they trickle: about one gateway
	// goroutine and one buffer per connection (the test's own goroutine per connection included).
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	if g := runtime.NumGoroutine() - goroutinesBefore; g > 3*conns {
		t.Errorf("HTTP-41 %d more goroutines during the attack, want at most %d for %d connections", g, 3*conns, conns)
	}
	const heapBound = 64 << 20 // 128 KiB a connection
	if grown := int64(during.HeapAlloc) - int64(before.HeapAlloc); grown > heapBound {
		t.Errorf("HTTP-41 heap grew by %d bytes during the attack, want under %d", grown, heapBound)
	}

	wg.Wait()
	timedOut := 0
	for i, res := range results {
		if res.stillOpen {
			t.Errorf("HTTP-41 connection %d still open after %s", i, giveUp)
			continue
		}
		if open := res.closed.Sub(res.dialed); open < readTimeout*9/10 {
			t.Errorf("HTTP-41 connection %d closed after %s, before read_timeout %s", i, open, readTimeout)
		}
		if len(res.got) == 0 {
			continue // the close raced the last trickled byte and reset the answer away
		}
		r, err := readResponse(bufio.NewReader(bytes.NewReader(res.got)))
		if err != nil || r.Status != 408 {
			t.Errorf("HTTP-41 connection %d was sent %q, want a 408 or nothing", i, res.got)
			continue
		}
		timedOut++
	}
	t.Logf("%d of %d connections were answered 408 before the close", timedOut, conns)

	if r := e.do(t, request("GET", "/api/v1/service/open/score")); r.Status != 200 {
		t.Errorf("HTTP-41 request after the attack: status %d %s", r.Status, r.Body)
	}
}

// dialSmallWindow dials addr with a 4 KiB receive buffer set before the handshake, so that a
// client that does not read stalls the gateway's writes after a few megabytes at most.
func dialSmallWindow(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestSlowRead is HTTP-43: a client that never reads a large answer is cut off at
// server.write_timeout, and neither the model's connection nor the service's only admission slot
// (max_concurrent_requests: 1) is held for it.
func TestSlowRead(t *testing.T) {
	t.Run("HTTP-43 a client that never reads a large answer is cut off at write_timeout and holds no admission slot", slowRead)
}

func slowRead(t *testing.T) {
	const (
		writeTimeout = 2 * time.Second
		// maxWait is how long a request may wait for the only slot: less than writeTimeout, so
		// that a slot held for the slow reader until its write times out would show as a 503.
		maxWait   = writeTimeout / 2
		hugeBytes = 16 << 20 // far more than loopback socket buffers hold
	)
	answered := make(chan struct{}, 1)
	e := newEnv(t, envOptions{
		respond: func(r *recorder, w io.Writer, req *seenRequest) bool {
			if req.Target != "/huge" {
				return respondByPath(r, w, req)
			}
			_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "+
				strconv.Itoa(hugeBytes)+"\r\n\r\n")
			if err == nil {
				_, err = w.Write(bytes.Repeat([]byte("x"), hugeBytes))
			}
			select {
			case answered <- struct{}{}:
			default:
			}
			return err == nil
		},
		config: func(c *config.Config) {
			c.Server.WriteTimeout = writeTimeout
			editService("open", func(s *config.Service) {
				s.MaxConcurrentRequests = 1
				s.MaxRequestWait = maxWait
				s.MaxResponseBytes = hugeBytes
			})(c)
		},
	})

	slow := dialSmallWindow(t, e.addr)
	defer slow.Close()
	if _, err := io.WriteString(slow, request("GET", "/api/v1/service/open/huge")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-answered:
	case <-time.After(20 * time.Second):
		t.Fatal("the model never answered /huge")
	}

	// The model's answer is read whole before the client is written to, so the slot is free
	// while the client stalls.
	if r := e.do(t, request("GET", "/api/v1/service/open/score")); r.Status != 200 {
		t.Errorf("HTTP-43 request while the slow reader stalls: status %d %s, want 200 (slot released)", r.Status, r.Body)
	}

	// Well past write_timeout the gateway has given up on the slow reader: what is left to read
	// is what the sockets buffered, then the end of the connection; without the timeout the whole
	// answer would come, and then nothing until the deadline.
	time.Sleep(2 * writeTimeout)
	slow.SetReadDeadline(time.Now().Add(ioDeadline))
	n, err := io.Copy(io.Discard, slow)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("HTTP-43 the slow reader's connection is still open after write_timeout (%d bytes read)", n)
	case n >= hugeBytes:
		t.Errorf("HTTP-43 the slow reader got the whole answer (%d bytes): write_timeout did not cut it off", n)
	}
	t.Logf("the slow reader got %d of %d bytes, then %v", n, hugeBytes, err)

	if r := e.do(t, request("GET", "/api/v1/service/open/score")); r.Status != 200 {
		t.Errorf("HTTP-43 request after the slow reader was cut off: status %d %s, want 200", r.Status, r.Body)
	}
}

// keptConn is a client connection kept open across requests.
type keptConn struct {
	net.Conn
	br *bufio.Reader
}

func dialKept(tb testing.TB, addr string) *keptConn {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &keptConn{Conn: c, br: bufio.NewReader(c)}
}

// roundTrip writes raw and reads one response.
func (k *keptConn) roundTrip(tb testing.TB, raw string) *response {
	tb.Helper()
	k.SetDeadline(time.Now().Add(ioDeadline))
	if _, err := io.WriteString(k, raw); err != nil {
		tb.Fatalf("writing: %v", err)
	}
	r, err := readResponse(k.br)
	if err != nil {
		tb.Fatalf("reading the response: %v", err)
	}
	return r
}

// refusedAtAccept reads what the gateway says to a connection it refuses before reading a
// request: one response with status, and Connection: close, then the end of the connection.
func refusedAtAccept(tb testing.TB, addr string, status int) {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	resps, err := readResponses(bufio.NewReader(c))
	if err != nil {
		tb.Fatalf("reading the refusal: %v", err)
	}
	if len(resps) != 1 || resps[0].Status != status || !strings.EqualFold(resps[0].get("Connection"), "close") {
		tb.Fatalf("the extra connection got %s %q, want one %d with Connection: close, then the end", describe(resps), headerOf(resps), status)
	}
	code := map[int]string{429: "TooManyRequests", 503: "ServiceUnavailable"}[status]
	checkError(tb, resps[0], status, code, "")
	if resps[0].get("Retry-After") == "" {
		tb.Errorf("the refusal has no Retry-After")
	}
}

func headerOf(resps []*response) [][]field {
	var out [][]field
	for _, r := range resps {
		out = append(out, r.Header)
	}
	return out
}

// eventuallyServed dials until a fresh connection is served again (the gateway notices a closed
// connection when it reads its end).
func eventuallyServed(tb testing.TB, addr string) {
	tb.Helper()
	deadline := time.Now().Add(ioDeadline)
	for {
		c := dialKept(tb, addr)
		c.SetDeadline(time.Now().Add(ioDeadline))
		io.WriteString(c, request("GET", "/api/v1/service/open/score"))
		r, err := readResponse(c.br)
		c.Close()
		if err == nil && r.Status == 200 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("a fresh connection is still refused after a held one closed: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConnectionHoarding is HTTP-44: the caps on connections per address and in total refuse the
// extra connection cleanly, idle keep-alive connections are closed at idle_timeout, and a
// pipelining connection is closed after max_requests_per_conn.
func TestConnectionHoarding(t *testing.T) {
	const held = 5
	score := request("GET", "/api/v1/service/open/score")
	for _, tc := range []struct {
		name   string
		edit   func(*config.Server)
		status int
	}{
		{"HTTP-44 max_conns_per_ip refuses the extra connection from one address", func(s *config.Server) { s.MaxConnsPerIP = held }, 429},
		{"HTTP-44 max_conns refuses the extra connection", func(s *config.Server) { s.MaxConns = held }, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{config: func(c *config.Config) { tc.edit(&c.Server) }})
			var conns []*keptConn
			for i := range held {
				c := dialKept(t, e.addr)
				if r := c.roundTrip(t, score); r.Status != 200 {
					t.Fatalf("held connection %d: status %d %s", i, r.Status, r.Body)
				}
				conns = append(conns, c)
			}
			e.up.reset()
			refusedAtAccept(t, e.addr, tc.status)
			e.up.requireNone(t)
			// The held connections are still served; closing one makes room.
			if r := conns[held-1].roundTrip(t, score); r.Status != 200 {
				t.Fatalf("a held connection after the refusal: status %d %s", r.Status, r.Body)
			}
			conns[0].Close()
			eventuallyServed(t, e.addr)
		})
	}

	t.Run("HTTP-44 idle_timeout closes an idle keep-alive connection", func(t *testing.T) {
		const idle = 500 * time.Millisecond
		e := newEnv(t, envOptions{config: func(c *config.Config) { c.Server.IdleTimeout = idle }})
		c := dialKept(t, e.addr)
		for i := range 2 {
			if r := c.roundTrip(t, score); r.Status != 200 || strings.EqualFold(r.get("Connection"), "close") {
				t.Fatalf("request %d on the kept connection: status %d, Connection %q", i, r.Status, r.get("Connection"))
			}
		}
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(ioDeadline))
		_, err := c.br.ReadByte()
		if !errors.Is(err, io.EOF) {
			t.Fatalf("HTTP-44 the idle connection was not closed by the gateway: %v", err)
		}
		if d := time.Since(start); d < idle/2 {
			t.Errorf("HTTP-44 the idle connection was closed after %s, well before idle_timeout %s", d, idle)
		}
	})

	t.Run("HTTP-44 max_requests_per_conn caps a pipelining connection", func(t *testing.T) {
		const perConn = 5
		e := newEnv(t, envOptions{config: func(c *config.Config) { c.Server.MaxRequestsPerConn = perConn }})
		var raw strings.Builder
		for i := range 4 * perConn {
			raw.WriteString(request("GET", "/api/v1/service/open/score?n="+strconv.Itoa(i)))
		}
		resps := e.exchange(t, raw.String())
		if len(resps) != perConn {
			t.Fatalf("HTTP-44 got %d responses on one connection, want %d: %s", len(resps), perConn, describe(resps))
		}
		for i, r := range resps {
			if r.Status != 200 {
				t.Errorf("response %d: status %d %s", i, r.Status, r.Body)
			}
		}
		if !strings.EqualFold(resps[perConn-1].get("Connection"), "close") {
			t.Errorf("HTTP-44 the last response allowed on the connection has no Connection: close")
		}
		var targets []string
		for _, seen := range e.up.requests() {
			targets = append(targets, seen.Target)
		}
		checkEqual(t, "what the model saw", []string{"/score?n=0", "/score?n=1", "/score?n=2", "/score?n=3", "/score?n=4"}, targets)
	})

	t.Run("HTTP-44 max_requests_per_conn against 10000 pipelined requests", func(t *testing.T) {
		const perConn, sent = 100, 10000
		e := newEnv(t, envOptions{config: func(c *config.Config) { c.Server.MaxRequestsPerConn = perConn }})
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(4 * ioDeadline))
		var raw strings.Builder
		for range sent {
			raw.WriteString(score)
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer c.Close() // ends the writer if the gateway stopped reading
		wg.Go(func() { io.WriteString(c, raw.String()) })
		resps, err := readResponses(bufio.NewReader(c))
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading: %v (after %d responses)", err, len(resps))
		}
		// The gateway closes with requests unread, which resets the connection: the client may
		// lose the last answers, but never gets more than the cap.
		if len(resps) > perConn {
			t.Errorf("HTTP-44 got %d responses on one connection, want at most %d", len(resps), perConn)
		}
		if n := len(e.up.requests()); n != perConn {
			t.Errorf("HTTP-44 the model saw %d requests from one connection, want exactly %d", n, perConn)
		}
	})
}

// TestUpstreamTLS is HTTP-49: an https:// model whose certificate the configured roots do not
// vouch for is never talked to (502, with a body that names nothing), however the mismatch
// arises; with its certificate in services[].tls.ca_file it is reached.
func TestUpstreamTLS(t *testing.T) {
	var hits atomic.Int32
	model := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, okBody)
	}))
	model.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are the point
	model.StartTLS()
	t.Cleanup(model.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(model.URL, "https://"))

	dir := t.TempDir()
	own := filepath.Join(dir, "model.pem") // httptest's certificate is self-signed: its own root
	if err := os.WriteFile(own, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: model.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(other, testpki.NewCA(t, "some other self-signed root").CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		tls    config.UpstreamTLS
		status int
	}{
		{"HTTP-49 self-signed model, no ca_file: the system roots refuse it", config.UpstreamTLS{}, 502},
		{"HTTP-49 self-signed model, ca_file of another root", config.UpstreamTLS{CAFile: other}, 502},
		{"HTTP-49 right ca_file, certificate not for server_name", config.UpstreamTLS{CAFile: own, ServerName: "wrong.example"}, 502},
		{"HTTP-49 self-signed model whose certificate is the ca_file", config.UpstreamTLS{CAFile: own}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{upstreamURL: model.URL, config: editService("open", func(s *config.Service) { s.TLS = tc.tls })})
			before := hits.Load()
			r := e.do(t, request("GET", "/api/v1/service/open/score"))
			if tc.status == 200 {
				if r.Status != 200 || string(r.Body) != okBody {
					t.Fatalf("status %d %s, want 200 from the model", r.Status, r.Body)
				}
				return
			}
			checkError(t, r, 502, "BadGateway", "")
			if hits.Load() != before {
				t.Errorf("HTTP-49 the model was sent the request over an unverified connection")
			}
			for _, leak := range []string{"x509", "certificate", "tls", "authority", "127.0.0.1", port, "wrong.example"} {
				if strings.Contains(strings.ToLower(string(r.Body)), leak) {
					t.Errorf("HTTP-49 body %s leaks %q", r.Body, leak)
				}
			}
		})
	}
}

// panicAuth is an Authenticator with a bug: a credential containing its trigger makes it panic,
// as a nil claims map or a bad type assertion would.
type panicAuth struct {
	trigger string
	asError bool // panic with an error value that quotes the credential, not a runtime error
}

func (a panicAuth) Authenticate(_, _ string, authorization [][]byte) (authn.Caller, error) {
	for _, v := range authorization {
		if !bytes.Contains(v, []byte(a.trigger)) {
			continue
		}
		if a.asError {
			panic(fmt.Errorf("no claims in %s", v))
		}
		var claims map[string]any // never filled in
		_ = claims["sub"].(string)
	}
	return authn.Caller{}, nil
}

func (panicAuth) MintToken(context.Context, string, [][]byte) (authn.TokenResponse, error) {
	return authn.TokenResponse{}, authn.ErrInvalidCredential
}

// lockedBuffer is a log destination shared by the gateway's goroutines and the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPanicIsA500 is LOG-08: a panic while handling one request answers that request 500 with
// the generic body and closes its connection; the panic and its stack are logged at error level
// without the request's headers or credential (L0) and counted; the gateway keeps serving.
func TestPanicIsA500(t *testing.T) {
	const canary = "sgk_CANARYpanic0000_LOG08secretLOG08secretLOG08secretLOG08se"
	for _, tc := range []struct {
		name    string
		asError bool
		logged  string // in the logged panic value
	}{
		{"LOG-08 nil claims type assertion", false, "interface conversion"},
		{"LOG-08 panic value quoting the credential", true, "*errors.errorString"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRecorder(t, nil)
			cfg := &config.Config{Services: []config.Service{{Name: "iris", Auth: config.AuthKey, Upstreams: []string{up.url}}}}
			cfg.ApplyDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			var logs lockedBuffer
			logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			gw, err := proxy.New(cfg, panicAuth{trigger: "CANARY", asError: tc.asError}, logger)
			if err != nil {
				t.Fatal(err)
			}
			e := &env{addr: serveGateway(t, gw, nil), up: up, gw: gw}
			const score = "/api/v1/service/iris/score"

			// The request that panics, pipelined with one that must not be answered: the
			// connection is closed after the 500.
			resps := e.exchange(t, request("GET", score, bearer(canary), "X-Ms-Client-Request-Id: caller-1")+request("GET", score))
			if len(resps) != 1 {
				t.Fatalf("got %s, want one 500 and the connection closed", describe(resps))
			}
			r := resps[0]
			checkError(t, r, 500, "InternalError", "")
			if !strings.EqualFold(r.get("Connection"), "close") {
				t.Errorf("500 after a panic without Connection: close")
			}
			checkEqual(t, "echoed client request id", "caller-1", r.get("X-Ms-Client-Request-Id"))
			up.requireNone(t)

			// With Expect: 100-continue the credential is checked before the body: same outcome.
			resps = e.exchange(t, request("POST", score, bearer(canary), "Content-Length: 2", "Expect: 100-continue"))
			if len(resps) != 1 {
				t.Fatalf("Expect: 100-continue: got %s, want one 500", describe(resps))
			}
			checkError(t, resps[0], 500, "InternalError", "")
			up.requireNone(t)

			// The gateway keeps serving, on new connections.
			for i := range 2 {
				if r := e.do(t, request("GET", score, bearer("sgk_fine"))); r.Status != 200 {
					t.Fatalf("request %d after the panics: status %d %s", i, r.Status, r.Body)
				}
			}
			if n := gw.Panics(); n != 2 {
				t.Errorf("Panics() = %d, want 2", n)
			}

			// The log: one error record per panic, with the stack, without the credential.
			out := logs.String()
			for _, leak := range []string{"CANARY", "LOG08secret", "Bearer", "caller-1"} {
				if strings.Contains(out, leak) {
					t.Errorf("L0: the log contains %q:\n%s", leak, out)
				}
			}
			var panics int
			for line := range strings.Lines(out) {
				var rec struct {
					Level, Msg, Panic, Stack string
					RequestID                string `json:"request_id"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if rec.Stack == "" {
					continue
				}
				panics++
				if rec.Level != "ERROR" || !strings.Contains(rec.Msg, "panic") || rec.RequestID == "" {
					t.Errorf("panic logged as %q %q with request id %q, want an ERROR about a panic with the request id", rec.Level, rec.Msg, rec.RequestID)
				}
				if !strings.Contains(rec.Panic, tc.logged) {
					t.Errorf("logged panic value %q, want it to contain %q", rec.Panic, tc.logged)
				}
				if !strings.Contains(rec.Stack, "panicAuth.Authenticate") {
					t.Errorf("the logged stack does not reach the panicking function:\n%s", rec.Stack)
				}
			}
			if panics != 2 {
				t.Errorf("%d panics logged with a stack, want 2:\n%s", panics, out)
			}
		})
	}
}

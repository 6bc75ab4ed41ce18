package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/otlpsink"
	"github.com/scoregate/scoregate/proxy"
)

// TestMain fails the run when a test leaves goroutines behind.
//
// fasthttp starts goroutines that outlive every server and client by design. They sit in
// time.Sleep or a ticker, not in a fasthttp function, so goleak.IgnoreTopFunction cannot name
// them; IgnoreAnyFunction matches the fasthttp function further down their stacks:
//   - updateServerDate.func1 refreshes the cached Date header once a second, for the life of the
//     process;
//   - (*HostClient).connsCleaner closes a HostClient's idle upstream connections and only stops
//     after sleeping past MaxIdleConnDuration (10s in the gateway) with no connection left; the
//     gateway's HostClients are not reachable from a test to close them;
//   - (*TCPDialer).tcpAddrsClean expires the default dialer's DNS cache (one minute);
//   - (*workerPool).Start.func2, the worker pool's cleaner, sleeps MaxIdleWorkerDuration (10s)
//     between looks at its stop channel, so it ends up to 10s after Shutdown.
//
// Serve itself, the workers and the connections are not ignored: every test shuts its gateway
// and servers down.
func TestMain(m *testing.M) {
	otlpsink.ServeIfAsked() // a benchmark's OTLP receiver, when this process was started as one
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

// ---------------------------------------------------------------------------------------------
// The recording upstream: a raw HTTP/1.1 server on a loopback port that records every request
// byte for byte, so that tests can say exactly what the model saw (and that it saw nothing).

type field struct{ Name, Value string }

// seenRequest is one request as the model received it.
type seenRequest struct {
	Method, Target, Proto string
	Header                []field // in wire order, names as sent
	Body                  []byte
	Trailer               []field // the trailer section of a chunked body
	Err                   error   // set when the request could not be parsed
}

func (r *seenRequest) values(name string) []string { return values(r.Header, name) }
func (r *seenRequest) has(name string) bool        { return len(r.values(name)) > 0 }
func (r *seenRequest) get(name string) string {
	if v := r.values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func values(h []field, name string) []string {
	var out []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

// responder writes the model's answer to req; it returns false to close the connection.
type responder func(r *recorder, w io.Writer, req *seenRequest) bool

type recorder struct {
	ln      net.Listener
	url     string
	addr    string
	respond responder
	done    chan struct{}
	release chan struct{} // a responder holding an answer sends it when the test sends here
	wg      sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	reqs     []*seenRequest
	bytes    int64
	accepted int
	conns    map[net.Conn]struct{}
}

func newRecorder(tb testing.TB, respond responder) *recorder {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if respond == nil {
		respond = respondOK
	}
	r := &recorder{
		ln:      ln,
		addr:    ln.Addr().String(),
		url:     "http://" + ln.Addr().String(),
		respond: respond,
		done:    make(chan struct{}),
		release: make(chan struct{}),
		conns:   map[net.Conn]struct{}{},
	}
	r.wg.Add(1)
	go r.accept()
	tb.Cleanup(r.close)
	return r
}

func (r *recorder) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = struct{}{}
		r.accepted++
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(c)
	}
}

type countingReader struct {
	r   io.Reader
	rec *recorder
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.rec.mu.Lock()
	c.rec.bytes += int64(n)
	c.rec.mu.Unlock()
	return n, err
}

func (r *recorder) serve(c net.Conn) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(countingReader{c, r})
	for {
		req, err := readRequest(br)
		if req != nil {
			r.mu.Lock()
			r.reqs = append(r.reqs, req)
			r.mu.Unlock()
		}
		if err != nil {
			return
		}
		if !r.respond(r, c, req) {
			return
		}
	}
}

func (r *recorder) close() {
	r.mu.Lock()
	r.closed = true
	close(r.done)
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.ln.Close()
	r.wg.Wait()
}

// reset forgets what the upstream saw so far.
func (r *recorder) reset() {
	r.mu.Lock()
	r.reqs = nil
	r.bytes = 0
	r.accepted = 0
	r.mu.Unlock()
}

func (r *recorder) requests() []*seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*seenRequest(nil), r.reqs...)
}

// requireNone is U0: since the last reset the upstream accepted no connection and received
// zero requests and zero bytes.
func (r *recorder) requireNone(tb testing.TB) {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) != 0 || r.bytes != 0 || r.accepted != 0 {
		var targets []string
		for _, q := range r.reqs {
			targets = append(targets, q.Method+" "+q.Target)
		}
		tb.Errorf("U0: the upstream accepted %d connections and received %d requests (%d bytes): %q",
			r.accepted, len(r.reqs), r.bytes, targets)
	}
}

// requireOne returns the only request the upstream received.
func (r *recorder) requireOne(tb testing.TB) *seenRequest {
	tb.Helper()
	reqs := r.requests()
	if len(reqs) != 1 {
		var targets []string
		for _, q := range reqs {
			targets = append(targets, q.Method+" "+q.Target)
		}
		tb.Fatalf("the upstream received %d requests, want 1: %q", len(reqs), targets)
	}
	return reqs[0]
}

const maxRecorded = 4 << 20

// readRequest reads one HTTP/1.1 request leniently: whatever arrives is recorded, and a request
// that cannot be framed comes back with an error (and ends the connection).
func readRequest(br *bufio.Reader) (*seenRequest, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		if line == "" {
			return nil, err
		}
		return &seenRequest{Target: line, Err: err}, err
	}
	req := &seenRequest{}
	parts := strings.SplitN(strings.TrimRight(line, "\r\n"), " ", 3)
	if len(parts) != 3 {
		req.Target = line
		req.Err = errors.New("bad request line")
		return req, req.Err
	}
	req.Method, req.Target, req.Proto = parts[0], parts[1], parts[2]
	req.Header, err = readHeader(br)
	if err != nil {
		req.Err = err
		return req, err
	}
	req.Body, err = readBody(br, req.Header, false, &req.Trailer)
	if err != nil {
		req.Err = err
		return req, err
	}
	return req, nil
}

func readHeader(br *bufio.Reader) ([]field, error) {
	var h []field
	total := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return h, err
		}
		total += len(line)
		if total > maxRecorded {
			return h, errors.New("header block too large")
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			return h, nil
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			h = append(h, field{Name: line})
			continue
		}
		h = append(h, field{Name: name, Value: strings.Trim(value, " \t")})
	}
}

// readBody reads a body framed by h; untilEOF says that a body with neither chunked coding nor a
// Content-Length runs to the end of the connection (responses), else it is empty (requests). A
// chunked body's trailer fields go to trailer, when it is not nil.
func readBody(br *bufio.Reader, h []field, untilEOF bool, trailer *[]field) ([]byte, error) {
	te := values(h, "Transfer-Encoding")
	cl := values(h, "Content-Length")
	switch {
	case len(te) > 0:
		if !strings.EqualFold(te[len(te)-1], "chunked") {
			return nil, fmt.Errorf("transfer-encoding %q", te)
		}
		return readChunked(br, trailer)
	case len(cl) > 0:
		n, err := strconv.Atoi(cl[0])
		if err != nil || n < 0 || n > maxRecorded {
			return nil, fmt.Errorf("content-length %q", cl)
		}
		body := make([]byte, n)
		_, err = io.ReadFull(br, body)
		return body, err
	case untilEOF:
		return io.ReadAll(io.LimitReader(br, maxRecorded))
	}
	return nil, nil
}

func readChunked(br *bufio.Reader, trailer *[]field) ([]byte, error) {
	var body []byte
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return body, err
		}
		size, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 || int64(len(body))+n > maxRecorded {
			return body, fmt.Errorf("chunk size %q", line)
		}
		if n == 0 {
			t, err := readHeader(br)
			if trailer != nil {
				*trailer = t
			}
			return body, err
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return body, err
		}
		body = append(body, chunk[:n]...)
	}
}

const okBody = `{"ok":true}`

func respondOK(_ *recorder, w io.Writer, _ *seenRequest) bool {
	_, err := io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: recorder\r\nContent-Length: "+
		strconv.Itoa(len(okBody))+"\r\n\r\n"+okBody)
	return err == nil
}

// The model's misbehaviours, chosen by the path the gateway forwards.
const (
	bigResponseBytes = 128 << 10 // twice the gateway's max_response_bytes in these tests
	testMaxResponse  = 64 << 10
)

func respondByPath(r *recorder, w io.Writer, req *seenRequest) bool {
	path, _, _ := strings.Cut(req.Target, "?")
	var err error
	switch path {
	case "/sleep":
		// Longer than the "slow" service's timeout; released when the test ends.
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
		return respondOK(r, w, req)
	case "/big":
		_, err = io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(bigResponseBytes)+"\r\n\r\n")
		if err == nil {
			_, err = w.Write(bytes.Repeat([]byte("x"), bigResponseBytes))
		}
	case "/big-chunked":
		_, err = io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := bytes.Repeat([]byte("x"), 8<<10)
		for i := 0; err == nil && i < bigResponseBytes/len(chunk); i++ {
			_, err = fmt.Fprintf(w, "%x\r\n%s\r\n", len(chunk), chunk)
		}
		if err == nil {
			_, err = io.WriteString(w, "0\r\n\r\n")
		}
	case "/hop":
		_, err = io.WriteString(w, "HTTP/1.1 200 OK\r\n"+
			"Connection: X-Foo, keep-alive\r\n"+
			"X-Foo: nominated by the model\r\n"+
			"Keep-Alive: timeout=5, max=100\r\n"+
			"Proxy-Authenticate: Basic realm=\"model\"\r\n"+
			"Proxy-Connection: keep-alive\r\n"+
			"Upgrade: h2c\r\n"+
			"Trailer: X-Checksum\r\n"+
			"Te: trailers\r\n"+
			"X-Kept: yes\r\n"+
			"Content-Length: "+strconv.Itoa(len(okBody))+"\r\n\r\n"+okBody)
	case "/dup-cl":
		io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc") // the connection is dropped after it either way
		return false
	case "/te-gzip":
		io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc") // the connection is dropped after it either way
		return false
	case "/garbage":
		io.WriteString(w, "SSH-2.0-OpenSSH_9.6\r\n\r\n") // the connection is dropped after it either way
		return false
	case "/close-early":
		return false // the model drops the connection without answering
	default:
		return respondOK(r, w, req)
	}
	return err == nil
}

// ---------------------------------------------------------------------------------------------
// The gateway under test, with a real authn stack on an embedded store.

type env struct {
	cfg       *config.Config
	gw        *proxy.Gateway
	keys      *authn.Keyring
	up        *recorder
	addr      string // the gateway's loopback address, when served on TCP
	primary   string // iris keys
	secondary string
	otherKey  string // the primary key of service "other"
}

type envOptions struct {
	// listener serves the gateway; nil means a fresh loopback TCP listener.
	listener net.Listener
	// respond is the recording upstream's behaviour; nil means respondByPath.
	respond responder
	// upstreamURL replaces the recording upstream for every service but "down".
	upstreamURL string
	// config changes the configuration before defaults and validation.
	config func(*config.Config)
	// options are passed to proxy.New.
	options []proxy.Option
}

// closedPortURL returns an http URL on a loopback port that nothing listens on.
func closedPortURL(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func newEnv(tb testing.TB, opts envOptions) *env {
	tb.Helper()
	ctx := context.Background()
	store, err := authn.OpenBolt(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	keys, err := authn.NewKeyring(ctx, store, nil)
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{keys: keys}
	for _, k := range []struct {
		dst           *string
		service, slot string
	}{
		{&e.primary, "iris", authn.SlotPrimary},
		{&e.secondary, "iris", authn.SlotSecondary},
		{&e.otherKey, "other", authn.SlotPrimary},
	} {
		if *k.dst, err = keys.Regenerate(ctx, k.service, k.slot); err != nil {
			tb.Fatal(err)
		}
	}

	respond := opts.respond
	if respond == nil {
		respond = respondByPath
	}
	e.up = newRecorder(tb, respond)
	upURL := e.up.url
	if opts.upstreamURL != "" {
		upURL = opts.upstreamURL
	}
	cfg := &config.Config{
		Server: config.Server{MaxResponseBytes: testMaxResponse},
		Services: []config.Service{
			{Name: "iris", Auth: config.AuthKey, Upstreams: []string{upURL}, MaxBodyBytes: 1024},
			{Name: "other", Auth: config.AuthKey, Upstreams: []string{upURL}},
			{Name: "open", Auth: config.AuthNone, Upstreams: []string{upURL}},
			{Name: "tok", Auth: config.AuthToken, Upstreams: []string{upURL}},
			{Name: "slow", Auth: config.AuthNone, Upstreams: []string{upURL}, ScoringTimeout: 200 * time.Millisecond},
			{Name: "down", Auth: config.AuthNone, Upstreams: []string{closedPortURL(tb)}},
		},
	}
	if opts.config != nil {
		opts.config(cfg)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	e.cfg = cfg
	e.gw, err = proxy.New(cfg, authn.NewAuthenticator(keys), nil, opts.options...)
	if err != nil {
		tb.Fatal(err)
	}
	addr := serveGateway(tb, e.gw, opts.listener)
	if opts.listener == nil {
		e.addr = addr
	}
	return e
}

// serveGateway serves gw on ln (a fresh loopback listener when ln is nil) until the test ends,
// then shuts it down and checks that Serve returned cleanly. It returns the listener's address.
func serveGateway(tb testing.TB, gw *proxy.Gateway, ln net.Listener) string {
	tb.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
	}
	serveUntilCleanup(tb, gw, func() error { return gw.Serve(ln) })
	return ln.Addr().String()
}

// serveUntilCleanup runs each of gw's serve loops (Serve, ServeH2) until the test ends, then
// shuts gw down once and checks that each loop returned cleanly.
func serveUntilCleanup(tb testing.TB, gw *proxy.Gateway, serves ...func() error) {
	served := make(chan error, len(serves))
	for _, serve := range serves {
		go func() { served <- serve() }()
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		for range serves {
			if err := <-served; err != nil {
				tb.Errorf("serving: %v", err)
			}
		}
	})
}

// ---------------------------------------------------------------------------------------------
// The client side: raw bytes on a fresh connection, and a lenient response reader.

type response struct {
	Proto  string
	Status int
	Header []field
	Body   []byte
}

func (r *response) values(name string) []string { return values(r.Header, name) }
func (r *response) get(name string) string {
	if v := r.values(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// ioDeadline only keeps a broken test from hanging; no test asserts on time.
const ioDeadline = 10 * time.Second

// exchange writes raw to a fresh connection to the gateway, closes the writing half, and reads
// every response until the gateway closes the connection.
func (e *env) exchange(tb testing.TB, raw string) []*response {
	tb.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	if _, err := io.WriteString(c, raw); err != nil {
		tb.Fatalf("writing the request: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	resps, err := readResponses(bufio.NewReader(c))
	if err != nil {
		tb.Fatalf("reading responses: %v (read %d)", err, len(resps))
	}
	return resps
}

// do is exchange for exactly one response.
func (e *env) do(tb testing.TB, raw string) *response {
	tb.Helper()
	resps := e.exchange(tb, raw)
	if len(resps) != 1 {
		tb.Fatalf("got %d responses, want 1: %s", len(resps), describe(resps))
	}
	return resps[0]
}

func describe(resps []*response) string {
	var parts []string
	for _, r := range resps {
		parts = append(parts, fmt.Sprintf("%d %s", r.Status, r.Body))
	}
	return strings.Join(parts, " | ")
}

func readResponses(br *bufio.Reader) ([]*response, error) {
	var out []*response
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return out, nil
		} else if errors.Is(err, syscall.ECONNRESET) && len(out) > 0 {
			// The gateway answered, then closed with request bytes still unread (an oversized
			// header block or body), which the kernel reports with a reset.
			return out, nil
		} else if err != nil {
			return out, err
		}
		r, err := readResponse(br)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

func readResponse(br *bufio.Reader) (*response, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("status line %q: %w", line, err)
	}
	proto, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if err != nil {
		return nil, fmt.Errorf("status line %q", line)
	}
	r := &response{Proto: proto, Status: status}
	if r.Header, err = readHeader(br); err != nil {
		return nil, err
	}
	if status < 200 || status == 204 || status == 304 {
		return r, nil
	}
	r.Body, err = readBody(br, r.Header, true, nil)
	return r, err
}

// request renders a raw HTTP/1.1 request; lines are whole header lines. A Host line is added
// unless one is given.
func request(method, target string, lines ...string) string {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\n")
	host := false
	for _, l := range lines {
		host = host || strings.HasPrefix(strings.ToLower(l), "host:")
	}
	if !host {
		b.WriteString("Host: gw.test\r\n")
	}
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func bearer(key string) string { return "Authorization: Bearer " + key }

// checkEqual reports got against want, as a go-cmp diff.
func checkEqual[T any](tb testing.TB, what string, want, got T) {
	tb.Helper()
	if diff := cmp.Diff(want, got); diff != "" {
		tb.Errorf("%s mismatch (-want +got):\n%s", what, diff)
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

const (
	challenge        = `Bearer realm="scoregate"`
	challengeInvalid = `Bearer realm="scoregate", error="invalid_token"`
)

// errorBody is the contract's error shape; unknown fields are refused when decoding.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// checkError checks an error response: status, JSON body of the contract with the code, the
// request id headers, and the challenge (empty: none expected).
func checkError(tb testing.TB, r *response, status int, code, wwwAuthenticate string) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d (body %s)", r.Status, status, r.Body)
	}
	if ct := r.get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", ct)
	}
	var body errorBody
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		tb.Fatalf("error body %s: %v", r.Body, err)
	}
	if body.Error.Code != code || body.Error.Message == "" {
		tb.Errorf("error body %s, want code %q and a message", r.Body, code)
	}
	if got := r.values("WWW-Authenticate"); wwwAuthenticate == "" && len(got) != 0 ||
		wwwAuthenticate != "" && (len(got) != 1 || got[0] != wwwAuthenticate) {
		tb.Errorf("WWW-Authenticate %q, want %q", got, wwwAuthenticate)
	}
	checkRequestIDs(tb, r)
}

// checkRequestIDs checks that a response carries one x-request-id and the same x-ms-request-id,
// and returns the id.
func checkRequestIDs(tb testing.TB, r *response) string {
	tb.Helper()
	id, ms := r.values("X-Request-Id"), r.values("X-Ms-Request-Id")
	if len(id) != 1 || len(ms) != 1 || id[0] != ms[0] || id[0] == "" {
		tb.Errorf("x-request-id %q and x-ms-request-id %q, want one equal non-empty value each", id, ms)
		return ""
	}
	return id[0]
}

// newTestKeyring is a keyring over an embedded store of the test's own, closed when it ends.
func newTestKeyring(t testing.TB) *authn.Keyring {
	t.Helper()
	store, err := authn.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	keys, err := authn.NewKeyring(context.Background(), store, nil)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

package proxy_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// At most once: a request that is not idempotent reaches a model at most once, whatever the
// model does with it. Only a request that never reached a model (the connection could not be
// made, or nothing of it was written) is sent again, and, on a reused connection that failed
// before the model answered a byte, a GET, HEAD or OPTIONS without a body or a request that
// carries an Idempotency-Key.

// A model that reads the whole request on a reused pooled connection and then resets or closes
// it without answering: the client gets 502, and the model has received a request that is not
// idempotent once. Before, the gateway took the failure for a stale pooled connection and sent
// the request again on a new one.
func TestNonIdempotentRequestReachesTheModelOnce(t *testing.T) {
	big := strings.Repeat("b", 100<<10) // over the 64 KiB buffered: streamed to the model
	tests := []struct {
		name string
		raw  string // the request, to /api/v1/service/model/PATH
		want int    // times the model receives it
	}{
		{"POST, the model resets after reading it", "POST /reset-before\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"POST, the model closes after reading it", "POST /close-before\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"POST without a body", "POST /close-before\r\nContent-Length: 0\r\n\r\n", 1},
		{"PATCH", "PATCH /reset-before\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"PUT", "PUT /close-before\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"DELETE with a body", "DELETE /close-before\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"GET with a body", "GET /close-before\r\nContent-Length: 2\r\n\r\n{}", 1},
		{"POST, chunked", "POST /close-before\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 1},
		{"POST, a streamed body", "POST /close-before\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n" + big, 1},
		// The exceptions: sent once more on a new connection, which the model drops too.
		{"GET without a body is sent again", "GET /close-before\r\n\r\n", 2},
		{"OPTIONS is sent again", "OPTIONS /reset-before\r\n\r\n", 2},
		{"POST with an Idempotency-Key is sent again", "POST /close-before\r\nIdempotency-Key: 8e03978e\r\nContent-Length: 2\r\n\r\n{}", 2},
	}
	for _, tc := range tests {
		noLeaks(t, tc.name, func(t *testing.T) {
			e := newFaultEnv(t, faultyModel, "")
			if r := e.do(t, request("POST", "/api/v1/service/model/ok", "Content-Length: 2")+"{}"); r.Status != 200 {
				t.Fatalf("warming the pool: %d %s", r.Status, r.Body)
			}
			e.up.reset()
			method, rest, _ := strings.Cut(tc.raw, " ")
			path, rest, _ := strings.Cut(rest, "\r\n")
			raw := method + " /api/v1/service/model" + path + " HTTP/1.1\r\nHost: gw.test\r\n" + rest
			r := e.do(t, raw)
			if r.Status != 502 {
				t.Errorf("status %d, want 502", r.Status)
			}
			if got := len(e.up.requests()); got != tc.want {
				t.Errorf("the model received the request %d times, want %d", got, tc.want)
			}
		})
	}
}

// keepAliveModel answers like a model server whose keep-alive timeout is one second: a
// connection with no new request for a second is closed.
func keepAliveModel(r *recorder, w io.Writer, req *seenRequest) bool {
	if !respondOK(r, w, req) {
		return false
	}
	return w.(net.Conn).SetReadDeadline(time.Now().Add(time.Second)) == nil
}

// A model whose keep-alive timeout is 1s, sent a POST about every second (a little under and a
// little over) for a minute, with upstream_idle_timeout below its timeout: every request is
// answered 200, and each reaches the model once. The gateway no longer relies on sending a
// request again to hide the race with the model's keep-alive close.
func TestModelKeepAliveTimeoutCostsNoErrors(t *testing.T) {
	t.Parallel()
	e := newFaultEnvWith(t, keepAliveModel, "", func(s *config.Service) { s.UpstreamIdleTimeout = 900 * time.Millisecond })
	gaps := []time.Duration{850, 880, 910, 940, 970, 1000, 1030, 1060, 1090}
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	sent, failed := 0, 0
	for start := time.Now(); time.Since(start) < time.Minute; sent++ {
		c.SetDeadline(time.Now().Add(ioDeadline))
		if _, err := io.WriteString(c, request("POST", "/api/v1/service/model/score", "Content-Length: 2")+"{}"); err != nil {
			t.Fatal(err)
		}
		r, err := readResponse(br)
		if err != nil {
			t.Fatalf("request %d: %v", sent, err)
		}
		if r.Status != 200 {
			failed++
			t.Errorf("request %d: %d %s", sent, r.Status, r.Body)
		}
		time.Sleep(gaps[sent%len(gaps)] * time.Millisecond)
	}
	if got := len(e.up.requests()); got != sent {
		t.Errorf("the model received %d requests for %d sent", got, sent)
	}
	e.up.mu.Lock()
	accepted := e.up.accepted
	e.up.mu.Unlock()
	t.Logf("%d requests, %d errors, %d connections", sent, failed, accepted)
	if accepted >= sent {
		t.Errorf("%d connections for %d requests: no pooled connection was reused", accepted, sent)
	}
	if w := e.log.warnings(); len(w) != 0 {
		t.Errorf("warnings:\n%s", strings.Join(w, "\n"))
	}
}

// A gRPC model that reads a whole call and then resets its stream, or closes its connection,
// without answering: the call fails UNAVAILABLE and the model has received it once, on the
// HTTP/2 listener as on the HTTP/1.1 one.
func TestGRPCCallReachesTheModelOnce(t *testing.T) {
	for _, method := range []string{"Reset", "Close"} {
		noLeaks(t, method, func(t *testing.T) {
			m := startDroppingGRPCModel(t)
			e := newGRPCFaultEnv(t, []string{m.url})
			if err := e.call(t, "Ok"); err != nil {
				t.Fatalf("warming the pool: %v", err)
			}
			err := e.call(t, method)
			if status.Code(err) != codes.Unavailable {
				t.Errorf("call: %v, want UNAVAILABLE", err)
			}
			if n := m.calls[method].Load(); n != 1 {
				t.Errorf("the model received the call %d times, want once", n)
			}
		})
	}
}

// droppingGRPCModel is an h2c server for the methods /t.S/Ok (an empty answer), /t.S/Reset
// (the call read whole, then its stream reset) and /t.S/Close (the call read whole, then the
// connection closed). It counts the calls it read.
type droppingGRPCModel struct {
	url   string
	calls map[string]*atomic.Int32
}

type connKey struct{}

func startDroppingGRPCModel(t *testing.T) *droppingGRPCModel {
	t.Helper()
	m := &droppingGRPCModel{calls: map[string]*atomic.Int32{"Ok": {}, "Reset": {}, "Close": {}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.url = "http://" + ln.Addr().String()
	srv := &http.Server{
		Protocols:   new(http.Protocols),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			method := strings.TrimPrefix(r.URL.Path, "/t.S/")
			if n := m.calls[method]; n != nil {
				n.Add(1)
			}
			switch method {
			case "Reset":
				panic(http.ErrAbortHandler)
			case "Close":
				r.Context().Value(connKey{}).(net.Conn).Close()
				panic(http.ErrAbortHandler)
			}
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			var frame [5]byte
			binary.BigEndian.PutUint32(frame[1:], 0)
			w.Write(frame[:])
			w.Header().Set("Grpc-Status", "0")
		}),
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return m
}

// grpcFaultEnv is a gateway, logging to log, whose HTTP/2 listener serves one gRPC service,
// "g" (auth none), with the given replicas in round_robin.
type grpcFaultEnv struct {
	addr string
	log  *logRecorder
}

func newGRPCFaultEnv(t *testing.T, upstreams []string) *grpcFaultEnv {
	t.Helper()
	keys := newTestKeyring(t)
	cfg := &config.Config{
		H2: config.H2{Listen: "127.0.0.1:0"},
		Services: []config.Service{{Name: "g", Auth: config.AuthNone, Protocol: config.ProtocolGRPC,
			Upstreams: upstreams, Balance: config.BalanceRoundRobin, ScoringTimeout: faultTimeout}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := &grpcFaultEnv{log: newLogRecorder()}
	gw, err := proxy.New(cfg, authn.NewAuthenticator(keys), slog.New(e.log))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() { gw.ServeH2(ln, nil) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		gw.Shutdown(ctx)
		wg.Wait()
	})
	return e
}

func (e *grpcFaultEnv) call(t *testing.T, method string) error {
	t.Helper()
	conn := dial(t, e.addr, nil)
	return conn.Invoke(testContext(t), "/t.S/"+method, wrapperspb.String("x"), new(wrapperspb.StringValue))
}

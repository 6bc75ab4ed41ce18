package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

// streamModel is a net/http model that streams: it notes when it writes each event (on the
// test's clock) and when it sees its request cancelled.
type streamModel struct {
	srv *httptest.Server

	mu        sync.Mutex
	writes    map[string][]time.Time // by the request's X-Test-Run header
	cancelled map[string]time.Time   // when the handler saw r.Context() done
}

func newStreamModel(t *testing.T) *streamModel {
	m := &streamModel{writes: map[string][]time.Time{}, cancelled: map[string]time.Time{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

// serve answers by path:
//
//	/sse?n=N&every=D&pad=P  N events (default 20) D apart (default 100ms), each with P more
//	                        bytes of data (default 0), text/event-stream; with &delay=D, the
//	                        headers only after D (or until the request is cancelled)
//	/ndjson?n=N&every=D     the same as JSON lines, chunked, application/x-ndjson
//	/stall?n=N&hold=D       N events, then nothing for D (default 10s) or until the request is cancelled
//	/reset                  one event, then a TCP reset
//	/half-chunk             one event, then half a chunk and the connection closed
//	/json                   a plain answer with a Content-Length
func (m *streamModel) serve(w http.ResponseWriter, r *http.Request) {
	run := r.Header.Get("X-Test-Run")
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	if n == 0 {
		n = 20
	}
	every, _ := time.ParseDuration(q.Get("every"))
	if every == 0 {
		every = 100 * time.Millisecond
	}
	pad, _ := strconv.Atoi(q.Get("pad"))
	event := func(i int) string {
		return fmt.Sprintf("id: %d\ndata: {\"token\": %d}%s\n\n", i, i, strings.Repeat(" ", pad))
	}
	switch r.URL.Path {
	case "/json":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result": [1]}`)
		return
	case "/sse", "/stall", "/reset":
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Accel-Buffering", "no")
	case "/ndjson":
		w.Header().Set("Content-Type", "application/x-ndjson")
		event = func(i int) string { return fmt.Sprintf("{\"token\": %d}\n", i) }
	}
	if r.URL.Path == "/reset" || r.URL.Path == "/half-chunk" {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		e := event(0)
		fmt.Fprintf(brw, "%x\r\n%s\r\n", len(e), e)
		if r.URL.Path == "/half-chunk" { // a chunk of 100 bytes that ends after 10, and a FIN
			brw.WriteString("64\r\n" + strings.Repeat("x", 10))
			brw.Flush()
			c.Close()
			return
		}
		brw.Flush()
		time.Sleep(50 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		return
	}
	if delay, _ := time.ParseDuration(q.Get("delay")); delay > 0 {
		select {
		case <-r.Context().Done():
			m.noteCancel(run)
			return
		case <-time.After(delay):
		}
	}
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	for i := range n {
		if i > 0 {
			select {
			case <-r.Context().Done():
				m.noteCancel(run)
				return
			case <-time.After(every):
			}
		}
		m.mu.Lock()
		m.writes[run] = append(m.writes[run], time.Now())
		m.mu.Unlock()
		if _, err := io.WriteString(w, event(i)); err != nil {
			m.noteCancel(run)
			return
		}
		fl.Flush()
	}
	if r.URL.Path == "/stall" {
		hold, _ := time.ParseDuration(q.Get("hold"))
		if hold == 0 {
			hold = 10 * time.Second
		}
		select {
		case <-r.Context().Done():
			m.noteCancel(run)
		case <-time.After(hold):
		}
	}
}

func (m *streamModel) noteCancel(run string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cancelled[run]; !ok {
		m.cancelled[run] = time.Now()
	}
}

func (m *streamModel) writeTimes(run string) []time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Time(nil), m.writes[run]...)
}

// cancelledAt waits up to d for the handler of run to see its request cancelled.
func (m *streamModel) cancelledAt(run string, d time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(d)
	for {
		m.mu.Lock()
		at, ok := m.cancelled[run]
		m.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return at, ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamEnv is a gateway with telemetry and a log of its own in front of a streamModel:
// service "live" (defaults), "one" (max_concurrent_requests 1, stream_idle_timeout 300ms) and
// "small" (max_response_bytes 300).
type streamEnv struct {
	gw    *proxy.Gateway
	addr  string
	model *streamModel
	log   *logRecorder
	spans *tracetest.InMemoryExporter
	tel   *telemetry.Telemetry
}

const streamIdle = 300 * time.Millisecond

func newStreamEnv(t *testing.T) *streamEnv {
	t.Helper()
	ctx := context.Background()
	keys := newTestKeyring(t)
	var err error
	e := &streamEnv{model: newStreamModel(t), log: newLogRecorder(), spans: tracetest.NewInMemoryExporter()}
	up := e.model.srv.URL
	cfg := &config.Config{Services: []config.Service{
		{Name: "live", Auth: config.AuthNone, Upstreams: []string{up}},
		{Name: "one", Auth: config.AuthNone, Upstreams: []string{up}, MaxConcurrentRequests: 1,
			MaxRequestWait: 100 * time.Millisecond, StreamIdleTimeout: streamIdle},
		{Name: "small", Auth: config.AuthNone, Upstreams: []string{up}, MaxResponseBytes: 300},
	}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if e.tel, err = telemetry.New(ctx, cfg, telemetry.Options{
		Exporters: []sdktrace.SpanExporter{e.spans},
		AccessLog: slog.New(slog.DiscardHandler),
	}); err != nil {
		t.Fatal(err)
	}
	if e.gw, err = proxy.New(cfg, authn.NewAuthenticator(keys), slog.New(e.log), proxy.WithTelemetry(e.tel)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the gateway's shutdown, which serveGateway registers next
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.tel.Shutdown(ctx)
	})
	e.addr = serveGateway(t, e.gw, nil)
	return e
}

// get sends GET /api/v1/service/{service}{path} on a fresh connection, as run.
func (e *streamEnv) get(t *testing.T, service, path, run string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.addr+"/api/v1/service/"+service+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Run", run)
	req.Header.Set("Accept", "text/event-stream")
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readEvents reads messages ending in sep from body, noting when each was complete, until the
// body ends (nil error) or fails, or max messages were read.
func readEvents(body io.Reader, sep string, max int) ([]time.Time, []string, error) {
	br := bufio.NewReader(body)
	var at []time.Time
	var msgs []string
	var cur strings.Builder
	for len(msgs) < max {
		line, err := br.ReadString('\n')
		cur.WriteString(line)
		if strings.HasSuffix(cur.String(), sep) {
			at = append(at, time.Now())
			msgs = append(msgs, cur.String())
			cur.Reset()
		}
		if err == io.EOF {
			return at, msgs, nil
		}
		if err != nil {
			return at, msgs, err
		}
	}
	return at, msgs, nil
}

// Acceptance: a model streaming 20 SSE events 100 ms apart; the client sees the first event
// within 150 ms of the model writing it and each next one within 50 ms of it.
//
// The gap per event is the client's read time minus the model's write time (one clock, one
// process). On a shared 2-core machine under -race a single read can be late by a scheduling
// stall that has nothing to do with the gateway, so one event of the 19 may take up to one
// event period (100 ms); a gateway that held anything back (a buffer, the whole answer) would
// make an event wait for the next one, at least 100 ms, and fail every bound.
func TestStreamSSEEventsArriveAsWritten(t *testing.T) {
	for _, tc := range []struct {
		name, path, contentType, sep string
	}{
		{"sse", "/sse", "text/event-stream", "\n\n"},
		{"chunked ndjson", "/ndjson", "application/x-ndjson", "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStreamEnv(t)
			run := t.Name()
			resp := e.get(t, "live", tc.path, run)
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.contentType {
				t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			if tc.path == "/sse" && (resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("X-Accel-Buffering") != "no") {
				t.Errorf("the model's Cache-Control and X-Accel-Buffering did not pass: %v", resp.Header)
			}
			if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.ContentLength != -1 {
				t.Errorf("Transfer-Encoding %v, Content-Length %d; want chunked", resp.TransferEncoding, resp.ContentLength)
			}
			read, msgs, err := readEvents(resp.Body, tc.sep, 100)
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			wrote := e.model.writeTimes(run)
			if len(read) != 20 || len(wrote) != 20 {
				t.Fatalf("read %d events, the model wrote %d; want 20", len(read), len(wrote))
			}
			var gaps []string
			var worst time.Duration
			slow := 0
			for i := range read {
				if !strings.Contains(msgs[i], fmt.Sprintf(`{"token": %d}`, i)) {
					t.Errorf("event %d is %q", i, msgs[i])
				}
				gap := read[i].Sub(wrote[i])
				gaps = append(gaps, gap.Round(100*time.Microsecond).String())
				if i > 0 {
					worst = max(worst, gap)
				}
				switch {
				case i == 0 && gap > 150*time.Millisecond:
					t.Errorf("first event read %v after the model wrote it; want within 150ms", gap)
				case i > 0 && gap > 100*time.Millisecond:
					t.Errorf("event %d read %v after the model wrote it: it waited for the next one", i, gap)
				case i > 0 && gap > 50*time.Millisecond:
					slow++
				}
			}
			if slow > 1 {
				t.Errorf("%d events read over 50ms after the model wrote them; want at most one (a scheduling stall)", slow)
			}
			t.Logf("write-to-read gap per event: %s (worst after the first: %v)", strings.Join(gaps, " "), worst)
		})
	}
}

// A client that goes away cancels the model's request: the model's handler sees its context
// done soon after, and the replica's slot is free again.
func TestStreamClientGoneCancelsModel(t *testing.T) {
	e := newStreamEnv(t)
	run := t.Name()
	resp := e.get(t, "one", "/sse?n=50", run)
	_, msgs, err := readEvents(resp.Body, "\n\n", 3)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("read %d events, err %v", len(msgs), err)
	}
	closed := time.Now()
	resp.Body.Close() // before the end: net/http closes the connection
	at, ok := e.model.cancelledAt(run, 2*time.Second)
	switch {
	case !ok:
		t.Fatal("the model's handler never saw its request cancelled")
	case at.Sub(closed) > time.Second:
		t.Errorf("the model saw the cancellation %v after the client left; want within 1s", at.Sub(closed))
	default:
		t.Logf("the model saw the cancellation %v after the client left", at.Sub(closed))
	}
	// max_concurrent_requests is 1: the next request gets the replica only if the stream gave it back.
	next := e.get(t, "one", "/sse?n=2&every=10ms", run+"-next")
	_, msgs, err = readEvents(next.Body, "\n\n", 100)
	next.Body.Close()
	if next.StatusCode != 200 || err != nil || len(msgs) != 2 {
		t.Errorf("next request: status %d, %d events, err %v", next.StatusCode, len(msgs), err)
	}
}

// A model that stalls mid-stream longer than stream_idle_timeout: the client's connection is
// closed with the chunked body unfinished, the log says upstream_timeout, the model's request is
// cancelled and the replica's slot is free again.
func TestStreamIdleTimeoutCutsStall(t *testing.T) {
	e := newStreamEnv(t)
	run := t.Name()
	start := time.Now()
	resp := e.get(t, "one", "/stall?n=2", run)
	read, msgs, err := readEvents(resp.Body, "\n\n", 100)
	resp.Body.Close()
	if len(msgs) != 2 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %d events, err %v; want 2 and an unexpected EOF (a truncated chunked body)", len(msgs), err)
	}
	cut := time.Since(read[1])
	if cut < streamIdle-20*time.Millisecond || cut > streamIdle+time.Second {
		t.Errorf("the stream was cut %v after its last event; want about stream_idle_timeout (%v)", cut, streamIdle)
	}
	if _, ok := e.model.cancelledAt(run, 2*time.Second); !ok {
		t.Error("the model's handler never saw its request cancelled")
	}
	waitWarning(t, e.log, "reason=\"upstream_timeout\"")
	next := e.get(t, "one", "/sse?n=2&every=10ms", run+"-next")
	_, msgs, err = readEvents(next.Body, "\n\n", 100)
	next.Body.Close()
	if next.StatusCode != 200 || err != nil || len(msgs) != 2 {
		t.Errorf("next request: status %d, %d events, err %v", next.StatusCode, len(msgs), err)
	}
	t.Logf("whole exchange %v", time.Since(start))
}

// A model whose stream breaks (a reset), or grows over max_response_bytes: the client sees the
// body end early, and the log says why.
func TestStreamCutOff(t *testing.T) {
	for _, tc := range []struct {
		name, service, path, reason string
		maxEvents                   int
	}{
		{"model reset", "live", "/reset", "upstream_reset", 1},
		{"model closes in the middle of a chunk", "live", "/half-chunk", "upstream_truncated", 1},
		{"over max_response_bytes", "small", "/sse?every=5ms", "upstream_too_large", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStreamEnv(t)
			resp := e.get(t, tc.service, tc.path, t.Name())
			_, msgs, err := readEvents(resp.Body, "\n\n", 100)
			resp.Body.Close()
			if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) || len(msgs) == 0 || len(msgs) > tc.maxEvents {
				t.Fatalf("status %d, %d events, err %v; want 200, 1 to %d events and an unexpected EOF", resp.StatusCode, len(msgs), err, tc.maxEvents)
			}
			waitWarning(t, e.log, "reason=\""+tc.reason+"\"")
		})
	}
}

// An answer with a Content-Length is still read whole: nothing about it changes.
func TestStreamNotForAnswersOfKnownLength(t *testing.T) {
	e := newStreamEnv(t)
	resp := e.get(t, "live", "/json", t.Name())
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != `{"result": [1]}` || resp.ContentLength != int64(len(body)) {
		t.Fatalf("body %q, Content-Length %d, err %v", body, resp.ContentLength, err)
	}
}

// The span of a streamed answer ends with the stream: its Duration covers every event, and it
// records the time to the first byte.
func TestStreamSpan(t *testing.T) {
	e := newStreamEnv(t)
	run := t.Name()
	start := time.Now()
	resp := e.get(t, "live", "/sse?n=5", run)
	_, msgs, err := readEvents(resp.Body, "\n\n", 100)
	resp.Body.Close()
	total := time.Since(start)
	if err != nil || len(msgs) != 5 {
		t.Fatalf("%d events, err %v", len(msgs), err)
	}
	wrote := e.model.writeTimes(run)
	streamed := wrote[len(wrote)-1].Sub(wrote[0])
	var span tracetest.SpanStub
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if spans := e.spans.GetSpans(); len(spans) > 0 {
			span = spans[0]
			break
		}
	}
	if span.Name == "" {
		t.Fatal("no span recorded")
	}
	a := map[string]any{}
	for _, kv := range span.Attributes {
		a[string(kv.Key)] = kv.Value.AsInterface()
	}
	dur, _ := a["Duration"].(float64)
	firstByte, _ := a["scoregate.upstream.first_byte_ms"].(float64)
	upstream, _ := a["scoregate.upstream.duration_ms"].(float64)
	if a["scoregate.stream"] != true || a["StatusCode"] != "200" || a["scoregate.outcome"] != "ok" {
		t.Errorf("attributes %v", a)
	}
	if ms := float64(streamed.Milliseconds()); dur < ms || upstream < ms || dur > float64(total.Milliseconds())+1 {
		t.Errorf("Duration %.1fms, upstream %.1fms; want both at least the %v the model streamed for, and Duration at most the client's %v",
			dur, upstream, streamed, total)
	}
	if firstByte <= 0 || firstByte > 150 || firstByte >= upstream {
		t.Errorf("first byte after %.1fms of an upstream call of %.1fms", firstByte, upstream)
	}
	if got := span.EndTime.Sub(span.StartTime); got < streamed {
		t.Errorf("span lasts %v, less than the %v streamed", got, streamed)
	}
	t.Logf("Duration %.1fms, first byte %.1fms, upstream %.1fms, model streamed %v", dur, firstByte, upstream, streamed)
}

// waitWarning waits up to 2s for a warning containing want.
func waitWarning(t *testing.T, log *logRecorder, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		ws := log.warnings()
		for _, w := range ws {
			if strings.Contains(w, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no warning with %s; warnings: %q", want, ws)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamShutdownEndsOpenStreams: Shutdown ends a streamed answer still open at its deadline,
// not when the model chooses to end it (30 seconds on): the model's connection is closed (its
// request cancelled), the client's chunked body ends unfinished, the replica is released, and
// the log and the span say shutting_down. A stream that ends by itself before the deadline reaches
// the client whole, its terminating chunk included. The same rule on the gRPC listener:
// TestGRPCShutdownEndsOpenStreams.
func TestStreamShutdownEndsOpenStreams(t *testing.T) {
	// bound only keeps a broken gateway from hanging the test; a working one ends the stream at
	// Shutdown's deadline.
	const bound = 5 * time.Second
	for _, tc := range []struct {
		name, path string
		deadline   time.Duration // Shutdown's
		events     int           // the client reads them all (0: any number)
		cut        bool          // the stream is still open at the deadline
		// stalled: the client stops reading after the first event, until the stream has ended on
		// the gateway's side, so that the gateway is held up writing to it, not reading the model.
		stalled bool
	}{
		{"a stream the model holds open past the deadline is cut", "/stall?n=1&hold=30s", 500 * time.Millisecond, 1, true, false},
		{"a stream to a client that stopped reading is cut", "/sse?n=100000&every=1ms&pad=65536", 500 * time.Millisecond, 0, true, true},
		{"a stream that ends before the deadline is delivered whole", "/sse?n=5&every=20ms", bound, 5, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStreamEnv(t)
			run := t.Name()
			resp := e.get(t, "live", tc.path, run)
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body) // readEvents reads on through the same buffer
			if _, msgs, err := readEvents(br, "\n\n", 1); err != nil || len(msgs) != 1 {
				t.Fatalf("first event: %d events, err %v", len(msgs), err)
			}
			waitFor(t, "the stream to hold a replica", func() bool { return holding(e.gw, "live") })

			type result struct {
				msgs []string
				err  error
			}
			ended := make(chan result, 1)
			read := func() {
				_, msgs, err := readEvents(br, "\n\n", 1000000)
				ended <- result{msgs, err}
			}
			if tc.stalled {
				// Not asserted: wait until the model's writes stop, the buffers between full.
				for n := -1; n != len(e.model.writeTimes(run)); time.Sleep(200 * time.Millisecond) {
					n = len(e.model.writeTimes(run))
				}
			} else {
				go read()
			}
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
				defer cancel()
				shut <- e.gw.Shutdown(ctx)
			}()
			select {
			case err := <-shut:
				if tc.cut != errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Shutdown: %v", err)
				}
			case <-time.After(tc.deadline + bound):
				t.Fatalf("Shutdown with a %v deadline has not returned after %v", tc.deadline, tc.deadline+bound)
			}
			if tc.stalled {
				waitReleased(t, e.gw, "live") // the stream ended without the client reading on
				go read()
			}
			var got result
			select {
			case got = <-ended:
			case <-time.After(bound):
				t.Fatalf("the stream is still open %v after Shutdown returned", bound)
			}
			if n := 1 + len(got.msgs); tc.events > 0 && n != tc.events {
				t.Errorf("the client read %d events; want %d", n, tc.events)
			}
			outcome := "ok"
			if tc.cut {
				outcome = "shutting_down" // as a gRPC call's
				if !errors.Is(got.err, io.ErrUnexpectedEOF) {
					t.Errorf("the stream ended with %v; want an unexpected EOF (a chunked body without its last chunk)", got.err)
				}
				if _, ok := e.model.cancelledAt(run, bound); !ok {
					t.Error("the model's handler never saw its request cancelled")
				}
				waitWarning(t, e.log, `reason="shutting_down"`)
			} else if got.err != nil {
				t.Errorf("the stream ended with %v; want its clean end", got.err)
			}
			waitReleased(t, e.gw, "live")
			waitFor(t, "the span to end", func() bool { return len(e.spans.GetSpans()) > 0 })
			a := map[string]any{}
			for _, kv := range e.spans.GetSpans()[0].Attributes {
				a[string(kv.Key)] = kv.Value.AsInterface()
			}
			if a["scoregate.stream"] != true || a["StatusCode"] != "200" || a["scoregate.outcome"] != outcome {
				t.Errorf("span attributes %v; want a stream, status 200, outcome %s", a, outcome)
			}
		})
	}
}

// TestStreamShutdownEndsStreamsAnsweredLate: a model that starts its streamed answer only after
// Shutdown's deadline (the request was in flight then) has it cut at once: the client gets the
// status line and an unfinished body, the model's request is cancelled, the replica released.
func TestStreamShutdownEndsStreamsAnsweredLate(t *testing.T) {
	const bound = 5 * time.Second // see TestStreamShutdownEndsOpenStreams
	e := newStreamEnv(t)
	run := t.Name()
	answered := make(chan *http.Response, 1)
	go func() { answered <- e.get(t, "live", "/sse?n=100&delay=1500ms", run) }()
	waitFor(t, "the call to hold a replica", func() bool { return holding(e.gw, "live") })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := e.gw.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	var resp *http.Response
	select {
	case resp = <-answered:
		defer resp.Body.Close()
	case <-time.After(bound):
		t.Fatalf("no answer %v after Shutdown returned", bound)
	}
	type result struct {
		events int
		err    error
	}
	ended := make(chan result, 1)
	go func() {
		_, msgs, err := readEvents(resp.Body, "\n\n", 1000)
		ended <- result{len(msgs), err}
	}()
	select {
	case got := <-ended:
		if resp.StatusCode != 200 || got.events != 0 || !errors.Is(got.err, io.ErrUnexpectedEOF) {
			t.Errorf("status %d, %d events, then %v; want 200, no event, an unexpected EOF", resp.StatusCode, got.events, got.err)
		}
	case <-time.After(bound):
		t.Fatalf("the stream is still open %v after it began", bound)
	}
	if _, ok := e.model.cancelledAt(run, bound); !ok {
		t.Error("the model's handler never saw its request cancelled")
	}
	waitWarning(t, e.log, `reason="shutting_down"`)
	waitReleased(t, e.gw, "live")
}

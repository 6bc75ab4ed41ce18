package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// The streaming semantics of the HTTP/2 listener, seen by grpc-go clients through the listener
// alone: bidirectional and client streaming, metadata and trailers both ways, deadlines, flow
// control, cancellation from either end, a model that dies, and Shutdown with streams open.

var (
	bidiDesc    = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	collectDesc = &grpc.StreamDesc{ClientStreams: true}
)

// recvString receives one message of s as a string (or the stream's end).
func recvString(s grpc.ClientStream) (string, error) {
	m := new(wrapperspb.StringValue)
	err := s.RecvMsg(m)
	return m.GetValue(), err
}

// sendString sends one message on s, failing the test if it cannot.
func sendString(t *testing.T, s grpc.ClientStream, v string) {
	t.Helper()
	if err := s.SendMsg(wrapperspb.String(v)); err != nil {
		t.Fatalf("sending %q: %v", v, err)
	}
}

// expectRecv receives one message of s and fails the test unless it is want.
func expectRecv(t *testing.T, s grpc.ClientStream, want string) {
	t.Helper()
	got, err := recvString(s)
	if err != nil || got != want {
		t.Fatalf("received %q (%v), want %q", got, err, want)
	}
}

// waitReleased waits until no replica of service has a call in flight.
func waitReleased(t *testing.T, gw *proxy.Gateway, service string) {
	t.Helper()
	for deadline := time.Now().Add(ioDeadline); holding(gw, service); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a replica of %s is still held: %+v", service, gw.Replicas())
		}
	}
}

// waitFor waits until cond holds, failing the test after ioDeadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(ioDeadline); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited in vain for %s", what)
		}
	}
}

// pingPong runs a bidirectional call on conn: each message is sent only once the answer to the
// one before has arrived, so a gateway that held either direction until its end would hang. It
// returns the answers and the trailer.
func pingPong(ctx context.Context, conn *grpc.ClientConn, inputs []string) ([]string, metadata.MD, error) {
	s, err := conn.NewStream(ctx, bidiDesc, methodBidiInfer)
	if err != nil {
		return nil, nil, err
	}
	var got []string
	for _, in := range inputs {
		if err := s.SendMsg(wrapperspb.String(in)); err != nil {
			return got, nil, err
		}
		v, err := recvString(s)
		if err != nil {
			return got, s.Trailer(), err
		}
		got = append(got, v)
	}
	if err := s.CloseSend(); err != nil {
		return got, nil, err
	}
	if _, err := recvString(s); !errors.Is(err, io.EOF) {
		return got, s.Trailer(), err
	}
	return got, s.Trailer(), nil
}

// endAfterEcho opens a bidirectional call on conn, has one message echoed, then sends last (an
// input that ends the call at the model) and returns the stream and the status it ended with.
func endAfterEcho(t *testing.T, conn *grpc.ClientConn, ctx context.Context, last string) (grpc.ClientStream, *status.Status) {
	t.Helper()
	s, err := conn.NewStream(ctx, bidiDesc, methodBidiInfer)
	if err != nil {
		t.Fatal(err)
	}
	sendString(t, s, "a")
	expectRecv(t, s, "echo:a")
	sendString(t, s, last)
	_, err = recvString(s)
	return s, status.Convert(err)
}

// TestGRPCBidiStream: a bidirectional call passes each message through as it comes, both ways,
// over h2c and TLS, and ends as a direct call does, its trailer included; its replica is
// released.
func TestGRPCBidiStream(t *testing.T) {
	overH2CAndTLS(t, func(t *testing.T, tls bool) {
		e := newGRPCEnv(t, grpcEnvOptions{tls: tls})
		ctx := testContext(t)
		inputs := []string{"a", "b", "c", strings.Repeat("z", 100<<10)}
		want, wantTr, err := pingPong(ctx, e.direct(t), inputs)
		if err != nil {
			t.Fatalf("direct: %v", err)
		}
		got, gotTr, err := pingPong(withKey(ctx, e.key), e.client(t), inputs)
		if err != nil {
			t.Fatalf("through the gateway: %v", err)
		}
		checkEqual(t, "answers", want, got)
		checkEqual(t, "trailer", []string{"4"}, gotTr.Get("x-model-echoes"))
		checkEqual(t, "trailer", wantTr.Get("x-model-echoes"), gotTr.Get("x-model-echoes"))
		waitReleased(t, e.gw, "kserve")
	})
}

// TestGRPCClientStreaming: a client-streaming call reaches the model message by message and gets
// its one answer and trailer as a direct call does, also when the model answers before the client
// has sent everything.
func TestGRPCClientStreaming(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{})
	gw, direct := e.client(t), e.direct(t)
	ctx := testContext(t)
	collect := func(ctx context.Context, conn *grpc.ClientConn, inputs []string) (string, metadata.MD, error) {
		s, err := conn.NewStream(ctx, collectDesc, methodCollect)
		if err != nil {
			return "", nil, err
		}
		for _, in := range inputs {
			// After an early answer a send may see the stream's end (io.EOF); the answer and
			// status are then the RecvMsg's.
			if err := s.SendMsg(wrapperspb.String(in)); err != nil && !errors.Is(err, io.EOF) {
				return "", nil, err
			}
		}
		if err := s.CloseSend(); err != nil {
			return "", nil, err
		}
		out, err := recvString(s)
		return out, s.Trailer(), err
	}
	for _, tc := range []struct {
		name   string
		inputs []string
		want   string
	}{
		{"no message", nil, "collect:"},
		{"three messages", []string{"a", "b", "c"}, "collect:a,b,c"},
		{"many messages", strings.Split(strings.Repeat("m,", 199)+"m", ","), "collect:" + strings.Repeat("m,", 199) + "m"},
		{"answered before the client's end", []string{"x", "early", "late", "later"}, "collect:x,early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantOut, wantTr, err := collect(ctx, direct, tc.inputs)
			if err != nil || wantOut != tc.want {
				t.Fatalf("direct: %q, %v", wantOut, err)
			}
			got, gotTr, err := collect(withKey(ctx, e.key), gw, tc.inputs)
			if err != nil {
				t.Fatalf("through the gateway: %v", err)
			}
			checkEqual(t, "answer", tc.want, got)
			checkEqual(t, "trailer", wantTr.Get("x-model-messages"), gotTr.Get("x-model-messages"))
			waitReleased(t, e.gw, "kserve")
		})
	}
}

// TestGRPCMetadataBothWays: the client's custom metadata (several values, binary ones) reaches the
// model unchanged; the model's response headers, custom trailers (ASCII and binary) and an error
// status with details sent after messages (so in real trailers, not a trailers-only answer) reach
// the client unchanged.
func TestGRPCMetadataBothWays(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{})
	ctx := metadata.AppendToOutgoingContext(testContext(t),
		"x-client", "one", "x-client", "two", "x-client-bin", "\x00\x01\x02\xff")
	type seen struct {
		header, trailer metadata.MD
		msgs            []string
		st              *status.Status
	}
	run := func(ctx context.Context, conn *grpc.ClientConn) seen {
		s, err := conn.NewStream(ctx, bidiDesc, methodBidiInfer)
		if err != nil {
			t.Fatal(err)
		}
		sendString(t, s, "md")
		var r seen
		for range 2 {
			v, err := recvString(s)
			if err != nil {
				t.Fatalf("receiving the metadata the model saw: %v", err)
			}
			r.msgs = append(r.msgs, v)
		}
		if r.header, err = s.Header(); err != nil {
			t.Fatal(err)
		}
		sendString(t, s, "abort")
		_, err = recvString(s)
		r.st, r.trailer = status.Convert(err), s.Trailer()
		return r
	}
	want := run(ctx, e.direct(t))
	got := run(withKey(ctx, e.key), e.client(t))

	checkEqual(t, "the metadata the model saw", []string{`x-client="one,two"`, `x-client-bin="\x00\x01\x02\xff"`}, got.msgs)
	checkEqual(t, "the metadata the model saw", want.msgs, got.msgs)
	for _, k := range []string{"x-model-header", "x-model-header-bin"} {
		checkEqual(t, "header "+k, want.header.Get(k), got.header.Get(k))
	}
	checkEqual(t, "binary header", []string{"\x00\xff"}, got.header.Get("x-model-header-bin"))
	if len(got.header.Get("x-request-id")) != 1 {
		t.Errorf("x-request-id = %q, want one id", got.header.Get("x-request-id"))
	}
	for _, k := range []string{"x-model-why", "x-model-why-bin"} {
		checkEqual(t, "trailer "+k, want.trailer.Get(k), got.trailer.Get(k))
	}
	checkEqual(t, "binary trailer", []string{"\x00\x01\xfe"}, got.trailer.Get("x-model-why-bin"))
	checkEqual(t, "code", codes.Aborted, got.st.Code())
	if !proto.Equal(want.st.Proto(), got.st.Proto()) {
		t.Errorf("status through the gateway %v, direct %v", got.st.Proto(), want.st.Proto())
	}
	checkEqual(t, "details", 1, len(got.st.Details()))
}

// TestGRPCDeadlines: the model gets the call's effective deadline, the client's grpc-timeout when
// it is shorter than scoring_timeout and scoring_timeout otherwise; a stream still open at
// scoring_timeout ends DEADLINE_EXCEEDED after the messages it carried, the model's context ends
// and the replica is released.
func TestGRPCDeadlines(t *testing.T) {
	const scoring = 4 * time.Second
	e := newGRPCEnv(t, grpcEnvOptions{config: func(c *config.Config) { c.Services[0].ScoringTimeout = scoring }})
	gw := e.client(t)
	for _, tc := range []struct {
		name   string
		client time.Duration // 0: no deadline
		max    time.Duration
	}{
		{"no client deadline", 0, scoring},
		{"a longer client deadline", time.Hour, scoring},
		{"a shorter client deadline", 2 * time.Second, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := withKey(context.Background(), e.key)
			if tc.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.client)
				defer cancel()
			}
			r := invoke(ctx, gw, methodModelInfer, wrapperspb.String("deadline"), new(wrapperspb.StringValue))
			if r.err != nil {
				t.Fatal(r.err)
			}
			left, err := time.ParseDuration(r.out.(*wrapperspb.StringValue).GetValue())
			if err != nil {
				t.Fatalf("the model saw no deadline: %q", r.out.(*wrapperspb.StringValue).GetValue())
			}
			if left <= 0 || left > tc.max {
				t.Errorf("the model had %v left, want at most %v", left, tc.max)
			}
		})
	}

	t.Run("a stream past scoring_timeout, the model ignoring its grpc-timeout", func(t *testing.T) {
		ended := make(chan struct{}, 1)
		model := serveH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// One message, then nothing until the gateway lets go of the call, whatever its
			// grpc-timeout says; the request stream stays open too.
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte{0, 0, 0, 0, 0})
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				ended <- struct{}{}
			case <-time.After(30 * time.Second):
			}
		}))
		e := newGRPCEnv(t, grpcEnvOptions{config: func(c *config.Config) {
			c.Services[0].ScoringTimeout = 300 * time.Millisecond
			c.Services[0].Upstreams = []string{model}
		}})
		// The client's own deadline is far off: DEADLINE_EXCEEDED can only be the gateway's.
		ctx, cancel := context.WithTimeout(withKey(context.Background(), e.key), time.Hour)
		defer cancel()
		s, err := e.client(t).NewStream(ctx, bidiDesc, methodBidiInfer)
		if err != nil {
			t.Fatal(err)
		}
		sendString(t, s, "hold") // and nothing more, the stream left open
		expectRecv(t, s, "")
		recvd := make(chan error, 1)
		go func() {
			_, err := recvString(s)
			recvd <- err
		}()
		select {
		case err := <-recvd:
			checkEqual(t, "code", codes.DeadlineExceeded, status.Code(err))
		case <-time.After(ioDeadline):
			t.Fatalf("the stream is still open %v after its scoring_timeout of 300ms", ioDeadline)
		}
		select {
		case <-ended:
		case <-time.After(ioDeadline):
			t.Error("the model's call was never ended")
		}
		waitReleased(t, e.gw, "kserve")
	})

	t.Run("a stream past scoring_timeout", func(t *testing.T) {
		e := newGRPCEnv(t, grpcEnvOptions{config: func(c *config.Config) { c.Services[0].ScoringTimeout = 300 * time.Millisecond }})
		s, err := e.client(t).NewStream(withKey(testContext(t), e.key), bidiDesc, methodBidiInfer)
		if err != nil {
			t.Fatal(err)
		}
		sendString(t, s, "hold")
		expectRecv(t, s, "holding")
		_, err = recvString(s)
		checkEqual(t, "code", codes.DeadlineExceeded, status.Code(err))
		waitFor(t, "the model's context to end", func() bool { return e.model.cancelled.Load() == 1 })
		waitReleased(t, e.gw, "kserve")
	})
}

// TestGRPCSlowReaderFlowControl: a model streams far more than the gateway may hold to a client
// that does not read; HTTP/2 flow control holds the model back, the gateway's heap stays within a
// few MB, and once the client reads everything arrives.
func TestGRPCSlowReaderFlowControl(t *testing.T) {
	const (
		messages  = 48 // of bigMessage bytes each
		maxGrowth = 16 << 20
	)
	e := newGRPCEnv(t, grpcEnvOptions{})
	// A client that grants the least window HTTP/2 allows and no more (a fixed window turns
	// grpc-go's own window growth off), so that what is held is held by the gateway or the model.
	conn, err := grpc.NewClient("passthrough:///"+e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(2*bigMessage)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := withKey(testContext(t), e.key)
	big := func(n int) grpc.ClientStream {
		s, err := conn.NewStream(ctx, bidiDesc, methodBidiInfer)
		if err != nil {
			t.Fatal(err)
		}
		sendString(t, s, "big:"+strconv.Itoa(n))
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	readAll := func(s grpc.ClientStream) int {
		n := 0
		for {
			err := s.RecvMsg(new(wrapperspb.BytesValue))
			if errors.Is(err, io.EOF) {
				return n
			}
			if err != nil {
				t.Fatalf("after %d messages: %v", n, err)
			}
			n++
		}
	}
	checkEqual(t, "messages of a warm-up stream", 2, readAll(big(2)))
	e.model.sent.Store(0)
	before := heapInUse()

	s := big(messages)
	if err := s.RecvMsg(new(wrapperspb.BytesValue)); err != nil {
		t.Fatal(err)
	}
	// The client reads no more: wait until the model is held back (it sends nothing for a while).
	for last, deadline := int32(-1), time.Now().Add(ioDeadline); ; time.Sleep(300 * time.Millisecond) {
		n := e.model.sent.Load()
		if n == last || n == messages || time.Now().After(deadline) {
			break
		}
		last = n
	}
	held := heapInUse()
	t.Logf("the client read 1 message; the model sent %d of %d; the heap grew by %d KB",
		e.model.sent.Load(), messages, (int64(held)-int64(before))>>10)
	if n := e.model.sent.Load(); n >= messages {
		t.Errorf("the model sent all %d messages to a client that read one", n)
	}
	if growth := int64(held) - int64(before); growth > maxGrowth {
		t.Errorf("the heap grew by %d MB while the client did not read (model sent %d of %d messages of 1 MB), want at most %d MB",
			growth>>20, e.model.sent.Load(), messages, maxGrowth>>20)
	}
	checkEqual(t, "messages once the client reads", messages-1, readAll(s))
	waitReleased(t, e.gw, "kserve")
}

// heapInUse is the process's heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestGRPCCancellation: a client that cancels a stream ends the model's context and frees the
// replica; a model that aborts a stream after some messages gets its status to the client.
func TestGRPCCancellation(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{})
	gw := e.client(t)

	t.Run("the client cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(withKey(testContext(t), e.key))
		defer cancel()
		s, err := gw.NewStream(ctx, bidiDesc, methodBidiInfer)
		if err != nil {
			t.Fatal(err)
		}
		sendString(t, s, "hold")
		expectRecv(t, s, "holding")
		before := e.model.cancelled.Load()
		cancel()
		_, err = recvString(s)
		checkEqual(t, "code", codes.Canceled, status.Code(err))
		waitFor(t, "the model's context to end", func() bool { return e.model.cancelled.Load() == before+1 })
		waitReleased(t, e.gw, "kserve")
	})

	t.Run("the model aborts", func(t *testing.T) {
		_, st := endAfterEcho(t, gw, withKey(testContext(t), e.key), "abort")
		checkEqual(t, "code", codes.Aborted, st.Code())
		checkEqual(t, "message", "the model gave up on this stream", st.Message())
		checkEqual(t, "details", 1, len(st.Details()))
		waitReleased(t, e.gw, "kserve")
	})
}

// TestGRPCModelDiesMidStream: a model whose connection goes away in the middle of a stream (the
// process died) ends the client's stream UNAVAILABLE in the trailers, after the messages it had
// sent; the replica is released and the next call reaches the model again.
func TestGRPCModelDiesMidStream(t *testing.T) {
	overH2CAndTLS(t, func(t *testing.T, tls bool) {
		e := newGRPCEnv(t, grpcEnvOptions{tls: tls})
		gw := e.client(t)
		ctx := withKey(testContext(t), e.key)
		s, st := endAfterEcho(t, gw, ctx, "die")
		checkEqual(t, "code", codes.Unavailable, st.Code())
		if h, _ := s.Header(); len(h.Get("x-request-id")) != 1 {
			t.Errorf("the stream's headers lack x-request-id: %v", h)
		}
		waitReleased(t, e.gw, "kserve")
		got, _, err := pingPong(ctx, gw, []string{"again"})
		if err != nil {
			t.Fatalf("the next call: %v", err)
		}
		checkEqual(t, "the next call's answer", []string{"echo:again"}, got)
	})
}

// TestGRPCShutdownEndsOpenStreams: Shutdown with streams still open ends them at its deadline,
// whether or not the model has answered yet, with UNAVAILABLE and a message that says why, not
// when the model chooses to end them (30 seconds on); the model's context ends and the replica
// is released.
func TestGRPCShutdownEndsOpenStreams(t *testing.T) {
	// bound only keeps a broken gateway from hanging the test; a working one ends the streams at
	// Shutdown's 500 ms deadline.
	const bound = 5 * time.Second
	for _, tc := range []struct {
		name string
		// open starts a stream that the model holds and returns once the model holds it.
		open func(t *testing.T, e *grpcEnv, s grpc.ClientStream)
	}{
		{"after the model's first message", func(t *testing.T, e *grpcEnv, s grpc.ClientStream) {
			sendString(t, s, "hold")
			expectRecv(t, s, "holding")
		}},
		{"before the model answers", func(t *testing.T, e *grpcEnv, s grpc.ClientStream) {
			waitFor(t, "the model to take the call", func() bool { return e.model.calls.Load() == 1 })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newGRPCEnv(t, grpcEnvOptions{})
			s, err := e.client(t).NewStream(withKey(testContext(t), e.key), bidiDesc, methodBidiInfer)
			if err != nil {
				t.Fatal(err)
			}
			tc.open(t, e, s)
			waitFor(t, "the gateway to hold a replica", func() bool { return holding(e.gw, "kserve") })

			ended := make(chan error, 1)
			go func() {
				_, err := recvString(s)
				ended <- err
			}()
			shut := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				shut <- e.gw.Shutdown(ctx)
			}()
			select {
			case <-shut:
			case <-time.After(bound):
				t.Fatalf("Shutdown with a 500ms deadline has not returned after %v", bound)
			}
			select {
			case err := <-ended:
				st := status.Convert(err)
				checkEqual(t, "code", codes.Unavailable, st.Code())
				if !strings.Contains(st.Message(), "shutting down") {
					t.Errorf("message %q does not say the gateway is shutting down", st.Message())
				}
			case <-time.After(bound):
				t.Fatalf("the stream is still open %v after Shutdown returned", bound)
			}
			waitFor(t, "the model's context to end", func() bool { return e.model.cancelled.Load() == 1 })
			waitReleased(t, e.gw, "kserve")
		})
	}
}

// TestGRPCCompressedCall: a client that compresses its messages (grpc-encoding gzip) is answered
// as a direct call is. The gateway decompresses what it reads, and compresses its answer to the
// client the same way; the model gets plain messages.
func TestGRPCCompressedCall(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{})
	in := wrapperspb.String(strings.Repeat("compress me ", 100))
	call := func(ctx context.Context, conn *grpc.ClientConn) string {
		out := new(wrapperspb.StringValue)
		if err := conn.Invoke(ctx, methodModelInfer, in, out, grpc.UseCompressor(gzip.Name)); err != nil {
			t.Fatal(err)
		}
		return out.GetValue()
	}
	want := call(testContext(t), e.direct(t))
	checkEqual(t, "answer", want, call(withKey(testContext(t), e.key), e.client(t)))
}

// TestGRPCMessageCapFixedAtStart: the HTTP/2 listener reads no request message larger than the
// largest max_body_bytes of its gRPC services (and server.max_body_bytes) when it starts, so a
// message far over every limit is refused before it is read whole. A reload that raises a
// service's limit above that cap does not raise the cap: the larger messages stay refused until
// a restart, as docs/grpc.md says.
func TestGRPCMessageCapFixedAtStart(t *testing.T) {
	const limit = 1024
	e := newGRPCEnv(t, grpcEnvOptions{http1: true, config: func(c *config.Config) {
		c.Server.MaxBodyBytes = limit
		c.Services[0].MaxBodyBytes = limit
	}})
	ctx, conn := withKey(testContext(t), e.key), e.client(t)
	call := func(size int) codes.Code {
		in := wrapperspb.String(strings.Repeat("x", size))
		return status.Code(invoke(ctx, conn, methodModelInfer, in, new(wrapperspb.StringValue)).err)
	}
	checkEqual(t, "a message within the limit", codes.OK, call(limit/2))
	checkEqual(t, "a message over the limit", codes.ResourceExhausted, call(4*limit))

	cfg := *e.http.cfg
	cfg.Services = append([]config.Service(nil), cfg.Services...)
	cfg.Services[0].MaxBodyBytes = 8 * limit
	if _, err := e.gw.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "after the reload, a message within the new limit but over the cap", codes.ResourceExhausted, call(4*limit))
	checkEqual(t, "after the reload, a message within the cap", codes.OK, call(limit/2))
}

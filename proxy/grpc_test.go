package proxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/internal/testing/testpki"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

// ---------------------------------------------------------------------------------------------
// A small KServe v2 model server, "inference.GRPCInferenceService", written without protoc: the
// service descriptor by hand, the messages from protobuf's well-known types.

const (
	methodServerLive  = "/inference.GRPCInferenceService/ServerLive"
	methodModelInfer  = "/inference.GRPCInferenceService/ModelInfer"
	methodStreamInfer = "/inference.GRPCInferenceService/ModelStreamInfer"
	methodBidiInfer   = "/inference.GRPCInferenceService/ModelBidiInfer"
	methodCollect     = "/inference.GRPCInferenceService/ModelCollectInfer"
	streamParts       = 5
	// A "paced" stream: headers at once, then pacedParts messages, one every streamPace.
	pacedParts = 3
	streamPace = 200 * time.Millisecond
)

type kserveModel struct {
	calls   atomic.Int32  // calls the model's handlers took
	streams atomic.Int32  // streams opened, of any method, handled or not
	release chan struct{} // "hold" waits on it
	// cancelled counts the bidi calls whose context ended while the model held them.
	cancelled atomic.Int32
	sent      atomic.Int32 // messages of bidi "big" streams the model has sent

	mu    sync.Mutex
	seen  []metadata.MD
	conns []net.Conn // every connection the model accepted, for "die"
}

func (m *kserveModel) note(ctx context.Context) {
	m.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	m.mu.Lock()
	m.seen = append(m.seen, md)
	m.mu.Unlock()
}

func (m *kserveModel) lastMD() metadata.MD {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.seen) == 0 {
		return nil
	}
	return m.seen[len(m.seen)-1]
}

// infer answers "infer:<input>"; some inputs ask for something else.
func (m *kserveModel) infer(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	m.note(ctx)
	switch in.GetValue() {
	case "fail":
		st, _ := status.New(codes.InvalidArgument, "input tensor shape [1 3] does not match [1 4]").
			WithDetails(wrapperspb.String("expected 4 features"))
		return nil, st.Err()
	case "stall":
		<-ctx.Done()
		return nil, ctx.Err()
	case "hold":
		select {
		case <-m.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "deadline": // the time left to the call's deadline, as the model sees it
		d, ok := ctx.Deadline()
		if !ok {
			return wrapperspb.String("none"), nil
		}
		return wrapperspb.String(time.Until(d).String()), nil
	}
	grpc.SetTrailer(ctx, metadata.Pairs("x-model-version", "7"))
	return wrapperspb.String("infer:" + in.GetValue()), nil
}

var kserveDesc = grpc.ServiceDesc{
	ServiceName: "inference.GRPCInferenceService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "ServerLive", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			srv.(*kserveModel).note(ctx)
			return wrapperspb.Bool(true), nil
		}},
		{MethodName: "ModelInfer", Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(*kserveModel).infer(ctx, in)
		}},
	},
	Streams: []grpc.StreamDesc{{
		StreamName:    "ModelStreamInfer",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			m := srv.(*kserveModel)
			m.note(stream.Context())
			in := new(wrapperspb.StringValue)
			if err := stream.RecvMsg(in); err != nil {
				return err
			}
			if in.GetValue() == "paced" { // headers at once, then a message every streamPace
				if err := stream.SendHeader(metadata.Pairs("x-early", "yes")); err != nil {
					return err
				}
				for i := range pacedParts {
					time.Sleep(streamPace)
					if err := stream.SendMsg(wrapperspb.String("paced:part" + string(rune('0'+i)))); err != nil {
						return err
					}
				}
				return nil
			}
			for i := range streamParts {
				if err := stream.SendMsg(wrapperspb.String(in.GetValue() + ":part" + string(rune('0'+i)))); err != nil {
					return err
				}
			}
			stream.SetTrailer(metadata.Pairs("x-model-parts", "5"))
			return nil
		},
	}, {
		StreamName:    "ModelBidiInfer",
		ServerStreams: true,
		ClientStreams: true,
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(*kserveModel).bidi(stream) },
	}, {
		StreamName:    "ModelCollectInfer",
		ClientStreams: true,
		Handler:       func(srv any, stream grpc.ServerStream) error { return srv.(*kserveModel).collect(stream) },
	}},
}

// bigMessage is the size of each message of a bidi "big" stream.
const bigMessage = 1 << 20

// bidi answers each message of the stream as it comes, by its input: "hold" sends "holding" and
// waits for the call to end or 30 seconds; "abort" ends the call ABORTED
// with details and a custom trailer; "die" closes every connection of the model, as a model
// process that dies; "big:<n>" sends n messages of bigMessage bytes (counted in sent); "md" sends
// the response headers (an ASCII and a binary value) and then the client's x-client and
// x-client-bin metadata as the model got them (quoted); anything else is echoed as "echo:<input>". When
// the client has sent everything, the call ends OK with the number of echoes in a trailer. A
// call whose context ends while the model waits (to send or for a message) counts in cancelled.
func (m *kserveModel) bidi(stream grpc.ServerStream) error {
	ctx := stream.Context()
	m.note(ctx)
	echoes := 0
	for {
		in := new(wrapperspb.StringValue)
		err := stream.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			stream.SetTrailer(metadata.Pairs("x-model-echoes", strconv.Itoa(echoes)))
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				m.cancelled.Add(1)
			}
			return err
		}
		v := in.GetValue()
		switch {
		case v == "hold":
			if err := stream.SendMsg(wrapperspb.String("holding")); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				m.cancelled.Add(1)
				return ctx.Err()
			case <-time.After(30 * time.Second):
				return stream.SendMsg(wrapperspb.String("held 30s"))
			}
		case v == "abort":
			stream.SetTrailer(metadata.Pairs("x-model-why", "input rejected", "x-model-why-bin", "\x00\x01\xfe"))
			st, _ := status.New(codes.Aborted, "the model gave up on this stream").
				WithDetails(wrapperspb.String("retry with a smaller batch"))
			return st.Err()
		case v == "die":
			m.mu.Lock()
			for _, c := range m.conns {
				c.Close()
			}
			m.mu.Unlock()
			return status.Error(codes.Internal, "the model is dead; nothing of this reaches anyone")
		case strings.HasPrefix(v, "big:"):
			n, _ := strconv.Atoi(strings.TrimPrefix(v, "big:"))
			msg := wrapperspb.Bytes(make([]byte, bigMessage))
			for range n {
				if err := stream.SendMsg(msg); err != nil {
					return err
				}
				m.sent.Add(1)
			}
		case v == "md":
			md, _ := metadata.FromIncomingContext(ctx)
			if err := stream.SendHeader(metadata.Pairs("x-model-header", "h1", "x-model-header-bin", "\x00\xff")); err != nil {
				return err
			}
			for _, k := range []string{"x-client", "x-client-bin"} {
				if err := stream.SendMsg(wrapperspb.String(k + "=" + strconv.Quote(strings.Join(md.Get(k), ",")))); err != nil {
					return err
				}
			}
		default:
			echoes++
			if err := stream.SendMsg(wrapperspb.String("echo:" + v)); err != nil {
				return err
			}
		}
	}
}

// collect reads every message of a client stream and answers once, "collect:" and the inputs
// joined by commas, with their number in a trailer; an input "early" is answered at once, the
// rest of the stream unread.
func (m *kserveModel) collect(stream grpc.ServerStream) error {
	m.note(stream.Context())
	var got []string
	for {
		in := new(wrapperspb.StringValue)
		err := stream.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		got = append(got, in.GetValue())
		if in.GetValue() == "early" {
			break
		}
	}
	stream.SetTrailer(metadata.Pairs("x-model-messages", strconv.Itoa(len(got))))
	return stream.SendMsg(wrapperspb.String("collect:" + strings.Join(got, ",")))
}

// startModel serves the KServe model on a loopback port: h2c, or TLS with tlsConf.
func startModel(t testing.TB, tlsConf *tls.Config) (*kserveModel, string) {
	t.Helper()
	m := &kserveModel{release: make(chan struct{})}
	opts := []grpc.ServerOption{grpc.InTapHandle(func(ctx context.Context, _ *tap.Info) (context.Context, error) {
		m.streams.Add(1)
		return ctx, nil
	})}
	scheme := "http://"
	if tlsConf != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
		scheme = "https://"
	}
	srv := grpc.NewServer(opts...)
	srv.RegisterService(&kserveDesc, m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(&trackingListener{ln, m}) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return m, scheme + ln.Addr().String()
}

// trackingListener notes the model's connections, so that "die" can close them.
type trackingListener struct {
	net.Listener
	m *kserveModel
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.m.mu.Lock()
		l.m.conns = append(l.m.conns, c)
		l.m.mu.Unlock()
	}
	return c, err
}

// ---------------------------------------------------------------------------------------------
// The gateway with its HTTP/2 listener.

type grpcEnv struct {
	model     *kserveModel
	modelURL  string
	key       string
	gw        *proxy.Gateway
	addr      string
	spans     *tracetest.InMemoryExporter
	tel       *telemetry.Telemetry
	clientTLS *tls.Config // the client's side of the gateway's TLS, nil for h2c
	// http is the same gateway's HTTP/1.1 listener with the "iris" service, its recording model
	// and key, when asked for with grpcEnvOptions.http1.
	http *env
}

type grpcEnvOptions struct {
	tls       bool // TLS on both sides: client to gateway, gateway to model
	telemetry bool
	config    func(*config.Config)
	// auth, when set, wraps the gateway's authenticator; limiter enforces the services' rate
	// limits.
	auth    func(proxy.Authenticator) proxy.Authenticator
	limiter bool
	// http1 also serves the gateway's HTTP/1.1 listener (e.http): the "iris" service then calls
	// a recording model that answers with respond (nil: respondByPath) instead of the gRPC model.
	http1   bool
	respond responder
	// authFailures brakes the guessing of credentials, counted in memory.
	authFailures bool
}

func newGRPCEnv(t testing.TB, o grpcEnvOptions) *grpcEnv {
	t.Helper()
	ctx := context.Background()
	e := &grpcEnv{}
	var ca *testpki.CA
	var modelTLS, gwTLS *tls.Config
	dir := t.TempDir()
	if o.tls {
		ca = testpki.NewCA(t, "scoregate gRPC test CA")
		modelTLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "127.0.0.1")}}
		gwTLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "127.0.0.1", "grpc.example.test", "other.example.test")}}
		e.clientTLS = &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
	}
	e.model, e.modelURL = startModel(t, modelTLS)

	keys := newTestKeyring(t)
	var err error
	if e.key, err = keys.Regenerate(ctx, "kserve", authn.SlotPrimary); err != nil {
		t.Fatal(err)
	}
	irisURL := e.modelURL
	if o.http1 {
		respond := o.respond
		if respond == nil {
			respond = respondByPath
		}
		e.http = &env{keys: keys, up: newRecorder(t, respond)}
		irisURL = e.http.up.url
		if e.http.primary, err = keys.Regenerate(ctx, "iris", authn.SlotPrimary); err != nil {
			t.Fatal(err)
		}
	}
	svc := config.Service{Name: "kserve", Auth: config.AuthKey, Protocol: config.ProtocolGRPC, Upstreams: []string{e.modelURL}}
	if o.tls {
		caFile := filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		svc.TLS.CAFile = caFile
	}
	cfg := &config.Config{
		ComputeType: "sidecar",
		H2:          config.H2{Listen: "127.0.0.1:0"},
		Services: []config.Service{svc,
			{Name: "iris", Auth: config.AuthKey, Upstreams: []string{irisURL}},
		},
	}
	if o.config != nil {
		o.config(cfg)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var opts []proxy.Option
	if o.telemetry {
		e.spans = tracetest.NewInMemoryExporter()
		if e.tel, err = telemetry.New(ctx, cfg, telemetry.Options{Exporters: []sdktrace.SpanExporter{e.spans}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { // after the gateway's shutdown
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.tel.Shutdown(ctx)
		})
		opts = append(opts, proxy.WithTelemetry(e.tel))
	}
	if o.limiter {
		opts = append(opts, proxy.WithRateLimiter(ratelimit.NewLocal()))
	}
	if o.authFailures {
		opts = append(opts, proxy.WithAuthFailures(ratelimit.NewLocalFailures(), cfg.AdminAuthFailureLimit, nil))
	}
	var auth proxy.Authenticator = authn.NewAuthenticator(keys)
	if o.auth != nil {
		auth = o.auth(auth)
	}
	if e.gw, err = proxy.New(cfg, auth, nil, opts...); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	serves := []func() error{func() error { return e.gw.ServeH2(ln, gwTLS) }}
	if o.http1 {
		ln1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.http.cfg, e.http.gw, e.http.addr = cfg, e.gw, ln1.Addr().String()
		serves = append(serves, func() error { return e.gw.Serve(ln1) })
	}
	serveUntilCleanup(t, e.gw, serves...)
	return e
}

// dial connects a grpc-go client to target (h2c, or TLS with clientTLS).
func dial(t testing.TB, target string, clientTLS *tls.Config) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if clientTLS != nil {
		creds = credentials.NewTLS(clientTLS)
	}
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (e *grpcEnv) client(t testing.TB) *grpc.ClientConn { return dial(t, e.addr, e.clientTLS) }

// direct is a client of the model itself, for answers to compare with.
func (e *grpcEnv) direct(t testing.TB) *grpc.ClientConn {
	target := strings.TrimPrefix(strings.TrimPrefix(e.modelURL, "http://"), "https://")
	return dial(t, target, e.clientTLS)
}

func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// callResult is what a client saw of a unary call.
type callResult struct {
	out     proto.Message
	err     error
	header  metadata.MD
	trailer metadata.MD
}

func invoke(ctx context.Context, conn *grpc.ClientConn, method string, in, out proto.Message) callResult {
	var r callResult
	r.err = conn.Invoke(ctx, method, in, out, grpc.Header(&r.header), grpc.Trailer(&r.trailer))
	r.out = out
	return r
}

func streamAll(ctx context.Context, conn *grpc.ClientConn, in string) ([]string, metadata.MD, error) {
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, methodStreamInfer)
	if err != nil {
		return nil, nil, err
	}
	if err := s.SendMsg(wrapperspb.String(in)); err != nil {
		return nil, nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, nil, err
	}
	var got []string
	for {
		m := new(wrapperspb.StringValue)
		err := s.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			return got, s.Trailer(), nil
		}
		if err != nil {
			return got, s.Trailer(), err
		}
		got = append(got, m.GetValue())
	}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// overH2CAndTLS runs f as two subtests: the listener in cleartext (h2c), then over TLS.
func overH2CAndTLS(t *testing.T, f func(t *testing.T, tls bool)) {
	t.Run("h2c", func(t *testing.T) { f(t, false) })
	t.Run("TLS", func(t *testing.T) { f(t, true) })
}

// TestGRPCThroughGateway is the issue's acceptance (2): a grpc-go client reaches the KServe
// model through the gateway over h2c and over TLS (TLS to the model too); with a valid key the
// answers match a direct call, trailers included; with none the call is UNAUTHENTICATED and the
// model sees nothing; an error status the model sets arrives unchanged, with its details.
func TestGRPCThroughGateway(t *testing.T) {
	overH2CAndTLS(t, func(t *testing.T, tls bool) {
		e := newGRPCEnv(t, grpcEnvOptions{tls: tls})
		gw, direct := e.client(t), e.direct(t)
		ctx := testContext(t)
		keyed := withKey(ctx, e.key)

		t.Run("unary answers match a direct call", func(t *testing.T) {
			for _, c := range []struct {
				method  string
				in, out func() proto.Message
			}{
				{methodServerLive, func() proto.Message { return &emptypb.Empty{} }, func() proto.Message { return new(wrapperspb.BoolValue) }},
				{methodModelInfer, func() proto.Message { return wrapperspb.String("x") }, func() proto.Message { return new(wrapperspb.StringValue) }},
			} {
				want := invoke(ctx, direct, c.method, c.in(), c.out())
				got := invoke(keyed, gw, c.method, c.in(), c.out())
				if want.err != nil || got.err != nil {
					t.Fatalf("%s: direct err %v, through the gateway err %v", c.method, want.err, got.err)
				}
				if !proto.Equal(want.out, got.out) {
					t.Errorf("%s: through the gateway %v, direct %v", c.method, got.out, want.out)
				}
				if c.method == methodModelInfer {
					checkEqual(t, "model trailer", want.trailer.Get("x-model-version"), got.trailer.Get("x-model-version"))
					if ids := got.header.Get("x-request-id"); len(ids) != 1 || ids[0] == "" {
						t.Errorf("x-request-id = %q, want one id", ids)
					}
				}
			}
			md := e.model.lastMD()
			if v := md.Get("authorization"); len(v) > 0 {
				t.Errorf("the model saw the credential: %q", v)
			}
			if v := md.Get(config.GRPCServiceHeader); len(v) > 0 {
				t.Errorf("the model saw %s: %q", config.GRPCServiceHeader, v)
			}
			if v := md.Get("x-request-id"); len(v) != 1 {
				t.Errorf("the model got x-request-id %q, want one", v)
			}
		})

		t.Run("server streaming gets every message and the trailers", func(t *testing.T) {
			want, wantTr, err := streamAll(ctx, direct, "s")
			if err != nil {
				t.Fatal(err)
			}
			got, gotTr, err := streamAll(keyed, gw, "s")
			if err != nil {
				t.Fatal(err)
			}
			checkEqual(t, "messages", want, got)
			checkEqual(t, "parts", streamParts, len(got))
			checkEqual(t, "trailer", wantTr.Get("x-model-parts"), gotTr.Get("x-model-parts"))
		})

		t.Run("a streamed answer's headers and messages pass on as the model sends them", func(t *testing.T) {
			s, err := gw.NewStream(keyed, &grpc.StreamDesc{ServerStreams: true}, methodStreamInfer)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := s.SendMsg(wrapperspb.String("paced")); err != nil {
				t.Fatal(err)
			}
			if err := s.CloseSend(); err != nil {
				t.Fatal(err)
			}
			// Bounds far above the gateway's flushDelay, and far below streamPace: a message
			// held back until the next one (or the end) misses them.
			const slack = 150 * time.Millisecond
			md, err := s.Header()
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > slack || md.Get("x-early")[0] != "yes" {
				t.Errorf("the headers arrived after %v (%v), want them within %v, before the first message", d, md, slack)
			}
			for i := range pacedParts {
				m := new(wrapperspb.StringValue)
				if err := s.RecvMsg(m); err != nil {
					t.Fatal(err)
				}
				due := time.Duration(i+1) * streamPace
				if d := time.Since(start); d > due+slack {
					t.Errorf("message %d arrived %v after the call began, want within %v of the model sending it at %v", i, d, slack, due)
				}
			}
			if err := s.RecvMsg(new(wrapperspb.StringValue)); !errors.Is(err, io.EOF) {
				t.Errorf("after the last message: %v, want the end of the stream", err)
			}
		})

		t.Run("model error status arrives unchanged", func(t *testing.T) {
			want := invoke(ctx, direct, methodModelInfer, wrapperspb.String("fail"), new(wrapperspb.StringValue))
			got := invoke(keyed, gw, methodModelInfer, wrapperspb.String("fail"), new(wrapperspb.StringValue))
			ws, gs := status.Convert(want.err), status.Convert(got.err)
			checkEqual(t, "code", codes.InvalidArgument, gs.Code())
			checkEqual(t, "message", ws.Message(), gs.Message())
			if !proto.Equal(ws.Proto(), gs.Proto()) {
				t.Errorf("status through the gateway %v, direct %v", gs.Proto(), ws.Proto())
			}
			checkEqual(t, "details", 1, len(gs.Details()))
		})

		t.Run("no key: UNAUTHENTICATED and the model sees nothing", func(t *testing.T) {
			before := e.model.calls.Load()
			for _, c := range []struct {
				name string
				ctx  context.Context
			}{
				{"none", ctx},
				{"wrong", withKey(ctx, "not-a-key-"+strings.Repeat("x", 40))},
			} {
				r := invoke(c.ctx, gw, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
				st := status.Convert(r.err)
				checkEqual(t, c.name+": code", codes.Unauthenticated, st.Code())
				if strings.Contains(st.Message(), e.key) || strings.Contains(st.Message(), "127.0.0.1") {
					t.Errorf("%s: message says too much: %q", c.name, st.Message())
				}
				_, _, err := streamAll(c.ctx, gw, "s")
				checkEqual(t, c.name+": streaming code", codes.Unauthenticated, status.Code(err))
			}
			checkEqual(t, "calls the model saw", before, e.model.calls.Load())
		})
	})
}

// TestGRPCRouting: a call names its service in the scoregate-service metadata, or goes to the
// only grpc service; an http service, an unknown one and a path that is not a gRPC method are
// UNIMPLEMENTED; the http service is not reached; an unknown pinned deployment is NOT_FOUND.
func TestGRPCRouting(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{})
	gw := e.client(t)
	ctx := withKey(testContext(t), e.key)
	for _, tc := range []struct {
		name   string
		md     []string
		method string
		want   codes.Code
	}{
		{"the only grpc service", nil, methodModelInfer, codes.OK},
		{"named", []string{config.GRPCServiceHeader, "kserve"}, methodModelInfer, codes.OK},
		{"an http service", []string{config.GRPCServiceHeader, "iris"}, methodModelInfer, codes.Unimplemented},
		{"an unknown service", []string{config.GRPCServiceHeader, "nope"}, methodModelInfer, codes.Unimplemented},
		{"pinned deployment", []string{config.DeploymentHeader, "default"}, methodModelInfer, codes.OK},
		{"unknown pinned deployment", []string{config.DeploymentHeader, "blue"}, methodModelInfer, codes.NotFound},
		{"not a gRPC method path", nil, "/inference.GRPCInferenceService/Model..Infer", codes.Unimplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ctx
			if tc.md != nil {
				c = metadata.AppendToOutgoingContext(ctx, tc.md...)
			}
			r := invoke(c, gw, tc.method, wrapperspb.String("x"), new(wrapperspb.StringValue))
			st := status.Convert(r.err)
			checkEqual(t, "code", tc.want, st.Code())
			if tc.want == codes.Unimplemented && tc.method == methodModelInfer && !strings.Contains(st.Message(), config.GRPCServiceHeader) {
				t.Errorf("message %q does not name %s", st.Message(), config.GRPCServiceHeader)
			}
		})
	}
}

// TestGRPCLimits: a stalled model past a short scoring_timeout is DEADLINE_EXCEEDED (and so is
// a shorter grpc-timeout of the client); with max_concurrent_requests 1 and no queue, a second
// call while one is in flight is UNAVAILABLE and never reaches the model.
func TestGRPCLimits(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{config: func(c *config.Config) {
		c.Services[0].ScoringTimeout = 300 * time.Millisecond
		c.Services[0].MaxConcurrentRequests = 1
		c.Services[0].MaxQueueLength = 1
		c.Services[0].MaxRequestWait = time.Millisecond
	}})
	gw := e.client(t)
	ctx := withKey(testContext(t), e.key)

	t.Run("scoring_timeout", func(t *testing.T) {
		start := time.Now()
		r := invoke(ctx, gw, methodModelInfer, wrapperspb.String("stall"), new(wrapperspb.StringValue))
		if status.Code(r.err) != codes.DeadlineExceeded {
			t.Errorf("code %v, want DeadlineExceeded: %v (the model saw %d calls)", status.Code(r.err), r.err, e.model.calls.Load())
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %s", d)
		}
	})

	t.Run("shed", func(t *testing.T) {
		base := e.model.calls.Load() // the calls of the subtests before
		held := make(chan callResult, 1)
		go func() {
			held <- invoke(ctx, gw, methodModelInfer, wrapperspb.String("hold"), new(wrapperspb.StringValue))
		}()
		deadline := time.Now().Add(5 * time.Second)
		for e.model.calls.Load() == base || !holding(e.gw, "kserve") {
			if time.Now().After(deadline) {
				t.Fatal("the first call never reached the model")
			}
			time.Sleep(5 * time.Millisecond)
		}
		before := e.model.calls.Load()
		r := invoke(ctx, gw, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
		checkEqual(t, "code", codes.Unavailable, status.Code(r.err))
		checkEqual(t, "calls the model saw", before, e.model.calls.Load())
		e.model.release <- struct{}{}
		if r := <-held; r.err != nil {
			t.Errorf("the held call: %v", r.err)
		}
	})
}

// holding reports whether a replica of service has a call in flight.
func holding(gw *proxy.Gateway, service string) bool {
	for _, r := range gw.Replicas() {
		if r.Service == service && r.Inflight > 0 {
			return true
		}
	}
	return false
}

// TestGRPCSpans is the issue's acceptance (3): a gRPC call's span carries the Application
// Insights fields (HTTPMethod POST, RequestUrl, StatusCode 200, RequestId, Duration, UserAgent,
// ComputeType) and rpc.system, rpc.service, rpc.method and rpc.grpc.status_code.
func TestGRPCSpans(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{telemetry: true})
	gw := e.client(t)
	ctx := withKey(testContext(t), e.key)
	invoke(ctx, gw, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
	invoke(ctx, gw, methodModelInfer, wrapperspb.String("fail"), new(wrapperspb.StringValue))
	invoke(testContext(t), gw, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue)) // no key
	var spans tracetest.SpanStubs
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if spans = e.spans.GetSpans(); len(spans) >= 3 {
			break
		}
	}
	checkEqual(t, "spans", 3, len(spans))
	wantStatus := []int64{0, 3, 16}
	for i, s := range spans {
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes {
			attrs[kv.Key] = kv.Value
		}
		str := func(k string) string { return attrs[attribute.Key(k)].String() }
		checkEqual(t, "HTTPMethod", "POST", str("HTTPMethod"))
		checkEqual(t, "StatusCode", "200", str("StatusCode"))
		checkEqual(t, "ComputeType", "sidecar", str("ComputeType"))
		checkEqual(t, "RequestUrl", "http://"+e.addr+methodModelInfer, str("RequestUrl"))
		checkEqual(t, "rpc.system", "grpc", str("rpc.system"))
		checkEqual(t, "rpc.service", "inference.GRPCInferenceService", str("rpc.service"))
		checkEqual(t, "rpc.method", "ModelInfer", str("rpc.method"))
		checkEqual(t, "rpc.grpc.status_code", wantStatus[i], attrs["rpc.grpc.status_code"].AsInt64())
		if !strings.HasPrefix(str("UserAgent"), "grpc-go/") {
			t.Errorf("UserAgent = %q", str("UserAgent"))
		}
		if str("RequestId") == "" || attrs["Duration"].AsFloat64() <= 0 {
			t.Errorf("RequestId %q, Duration %v", str("RequestId"), attrs["Duration"])
		}
		for _, kv := range s.Attributes {
			if strings.Contains(kv.Value.String(), e.key) {
				t.Errorf("attribute %s carries the key", kv.Key)
			}
		}
	}

	// The metrics: rpc_server_duration_seconds by service and gRPC status code, and the calls in
	// the HTTP request histogram as well.
	rec := httptest.NewRecorder()
	e.tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, code := range wantStatus {
		want := fmt.Sprintf(`rpc_server_duration_seconds_count{rpc_grpc_status_code="%d",rpc_system="grpc",service="kserve"} 1`, code)
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(rec.Body.String(), `http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_class="2xx",service="kserve"} 3`) {
		t.Errorf("/metrics does not count the three calls as requests:\n%s", rec.Body.String())
	}
}

// ---------------------------------------------------------------------------------------------

// refusingAuth answers every call with err, as authn does for a caller it refuses.
type refusingAuth struct {
	proxy.Authenticator
	err error
}

func (a refusingAuth) Authenticate(string, string, [][]byte) (authn.Caller, error) {
	return authn.Caller{}, a.err
}

// The gRPC statuses of refusals docs/grpc.md's table promises and the other tests do not reach:
// each refused call leaves the model untouched.
func TestGRPCRefusalStatuses(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"a role without the permission", authn.ErrForbidden, codes.PermissionDenied},
		{"the gateway cannot decide", authn.ErrUnavailable, codes.Unavailable},
		{"two credentials", authn.ErrMultipleCredentials, codes.InvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newGRPCEnv(t, grpcEnvOptions{auth: func(a proxy.Authenticator) proxy.Authenticator {
				return refusingAuth{a, c.err}
			}})
			r := invoke(withKey(testContext(t), e.key), e.client(t), methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
			checkEqual(t, "code", c.want, status.Code(r.err))
			checkEqual(t, "calls the model saw", int32(0), e.model.calls.Load())
		})
	}
	t.Run("a key over its rate limit", func(t *testing.T) {
		e := newGRPCEnv(t, grpcEnvOptions{limiter: true, config: func(cfg *config.Config) {
			cfg.Services[0].RateLimit.PerKey = config.Rate{RequestsPerSecond: 0.001, Burst: 1}
		}})
		gw := e.client(t)
		ctx := withKey(testContext(t), e.key)
		first := invoke(ctx, gw, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
		checkEqual(t, "first call", codes.OK, status.Code(first.err))
		second := invoke(ctx, gw, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
		checkEqual(t, "second call", codes.ResourceExhausted, status.Code(second.err))
		checkEqual(t, "calls the model saw", int32(1), e.model.calls.Load())
	})
}

// BenchmarkGRPCUnary is one unary ModelInfer call at a time through the HTTP/2 listener (h2c)
// with a key, against the same call made directly. cpu-ns/op is the CPU time, user and system,
// of the whole process (client, gateway and model) per call; the difference between the two is
// what the gateway adds.
func BenchmarkGRPCUnary(b *testing.B) {
	e := newGRPCEnv(b, grpcEnvOptions{})
	for _, via := range []string{"direct", "gateway"} {
		b.Run(via, func(b *testing.B) {
			conn, ctx := e.direct(b), context.Background()
			if via == "gateway" {
				conn, ctx = e.client(b), withKey(context.Background(), e.key)
			}
			in, out := wrapperspb.String("bench"), new(wrapperspb.StringValue)
			if r := invoke(ctx, conn, methodModelInfer, in, out); r.err != nil {
				b.Fatal(r.err)
			}
			b.ReportAllocs()
			start := processCPU(b)
			for b.Loop() {
				if err := conn.Invoke(ctx, methodModelInfer, in, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}

package proxy_test

import (
	"bufio"
	"cmp"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// credential is what a call carries: Authorization headers on the HTTP/1.1 listener,
// authorization metadata on the HTTP/2 one.
type credential int

const (
	theKey         credential = iota // the service's own key
	noCredential                     // nothing
	unknownKey                       // a key of the right shape that was never issued
	basicAuth                        // "Basic x", a scheme the gateway does not take
	twoCredentials                   // the key, twice
)

func (c credential) values(key string) []string {
	switch c {
	case noCredential:
		return nil
	case unknownKey:
		return []string{"Bearer " + mutate(key, keyIDAt)}
	case basicAuth:
		return []string{"Basic x"}
	case twoCredentials:
		return []string{"Bearer " + key, "Bearer " + key}
	}
	return []string{"Bearer " + key}
}

// ask is one call, said once for both listeners. On the HTTP/1.1 listener it is a request to
// /api/v1/service/{service}{path} with the input as its body; on the HTTP/2 listener, a unary
// call of the method path with the input as its message, the service in the scoregate-service
// metadata. Either model does what the input says: "stall" never answers, "hold" answers when
// the test lets it, anything else answers at once (the HTTP model is inputModel, the gRPC one
// the KServe model); the gRPC service of the rows about a broken answer calls cutGRPCModel.
type ask struct {
	cred    credential
	service string // "": the listener's own service ("iris" or "kserve")
	path    string // "": methodModelInfer
	input   string // "": "x"
	pin     string // azureml-model-deployment, when set
	method  string // "": POST
}

// first is what happens on a listener before the call of a row.
type first int

const (
	nothingFirst  first = iota
	answeredFirst       // one call answered: the row's call is the second
	failedFirst         // one call with a key never issued: the row's call is the second
	heldFirst           // one call held at the model until the row's call is answered
)

// modelReach is what the model receives of a row's call.
type modelReach int

const (
	involved   modelReach = iota // the call is forwarded, or tried: the model's own failure is the case
	untouched                    // refused before forwarding: no connection and no byte (HTTP/1.1), no stream (gRPC)
	streamOnly                   // HTTP/1.1: as untouched; gRPC: the stream opens and is reset before its message reaches a handler
)

// httpOnH2 in the code column: the call is not gRPC, so the HTTP/2 listener answers it with the
// row's HTTP status, as the HTTP/1.1 listener does. It is made with net/http's HTTP/2 client
// (h2Do), with the ask's method, credential and pin.
const httpOnH2 codes.Code = 1 << 16

// inputModel is faultyModel driven by the request body instead of its path, as the KServe model
// is driven by its input.
func inputModel(r *recorder, w io.Writer, req *seenRequest) bool {
	byInput := *req
	byInput.Target = "/" + string(req.Body)
	return faultyModel(r, w, &byInput)
}

// cutGRPCModel is a gRPC model that breaks off as faultyModel does, chosen by the input of a
// unary call instead of the path: "close-before" resets the stream without answering;
// "bare-status" sends its response headers, then resets the stream; "half-cl" sends its headers
// and the first byte of a 100-byte message, then resets the stream.
func cutGRPCModel(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	in := new(wrapperspb.StringValue)
	if len(body) < 5 || proto.Unmarshal(body[5:], in) != nil || in.GetValue() == "close-before" {
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Content-Type", "application/grpc")
	w.WriteHeader(http.StatusOK)
	if in.GetValue() == "half-cl" {
		w.Write([]byte{0, 0, 0, 0, 100, 'x'})
	}
	http.NewResponseController(w).Flush() // written before the reset, in order
	panic(http.ErrAbortHandler)
}

// both applies edit to every service: the HTTP one and the gRPC one keep identical settings.
func both(edit func(*config.Service)) func(*config.Config) {
	return func(c *config.Config) {
		for i := range c.Services {
			edit(&c.Services[i])
		}
	}
}

// grpcModel points the gRPC service at url.
func grpcModel(url string) func(*config.Config) {
	return editService("kserve", func(s *config.Service) { s.Upstreams = []string{url} })
}

// refusal is a row of TestRefusalParity: a case, and what each listener answers.
type refusal struct {
	name   string
	config func(*config.Config) // nil: the defaults
	auth   error                // what authn answers for every credential; nil: it checks them
	first  first
	ask    ask
	status int        // on the HTTP/1.1 listener
	code   codes.Code // on the HTTP/2 listener
	reach  modelReach // what the model receives of the call
}

// TestRefusalParity is issue 17's acceptance: the same refusal table runs through both
// listeners of a gateway, the HTTP/1.1 one (an HTTP status) and the HTTP/2 one (a gRPC code),
// with two services whose settings differ only by their protocol. Each row has a gateway of its
// own, so that a rate or a held slot stays in its row.
func TestRefusalParity(t *testing.T) {
	down := closedPortURL(t)
	cut := serveH2C(t, http.HandlerFunc(cutGRPCModel))
	tests := []refusal{
		{"no credential", nil, nil, nothingFirst, ask{cred: noCredential}, 401, codes.Unauthenticated, untouched},
		{"a key never issued", nil, nil, nothingFirst, ask{cred: unknownKey}, 401, codes.Unauthenticated, untouched},
		{"a malformed Authorization", nil, nil, nothingFirst, ask{cred: basicAuth}, 401, codes.Unauthenticated, untouched},
		{"two credentials", nil, nil, nothingFirst, ask{cred: twoCredentials}, 400, codes.InvalidArgument, untouched},
		{"a role without the permission", nil, authn.ErrForbidden, nothingFirst, ask{}, 403, codes.PermissionDenied, untouched},
		{"the gateway cannot decide", nil, authn.ErrUnavailable, nothingFirst, ask{}, 503, codes.Unavailable, untouched},
		{"an unknown service", nil, nil, nothingFirst, ask{service: "nope"}, 404, codes.Unimplemented, untouched},
		{"a blocked path", both(func(s *config.Service) { s.BlockedPaths = []string{"/admin"} }), nil, nothingFirst, ask{path: "/admin/Infer"}, 404, codes.Unimplemented, untouched},
		// A gRPC message declares its length in the body, which is read once the call is forwarded.
		{"a body over max_body_bytes", both(func(s *config.Service) { s.MaxBodyBytes = 64 }), nil, nothingFirst, ask{input: strings.Repeat("x", 1024)}, 413, codes.ResourceExhausted, streamOnly},
		{"a key over its rate limit", both(func(s *config.Service) { s.RateLimit.PerKey = config.Rate{RequestsPerSecond: 0.001, Burst: 1} }), nil, answeredFirst, ask{}, 429, codes.ResourceExhausted, untouched},
		{"shed: the only slot taken past max_request_wait", both(func(s *config.Service) { s.MaxConcurrentRequests, s.MaxRequestWait = 1, time.Millisecond }), nil, heldFirst, ask{}, 503, codes.Unavailable, untouched},
		{"the model past scoring_timeout", both(func(s *config.Service) { s.ScoringTimeout = 300 * time.Millisecond }), nil, nothingFirst, ask{input: "stall"}, 504, codes.DeadlineExceeded, involved},
		{"an unknown deployment pinned", nil, nil, nothingFirst, ask{pin: "blue"}, 404, codes.NotFound, untouched},
		{"the model down", both(func(s *config.Service) { s.Upstreams = []string{down} }), nil, nothingFirst, ask{}, 502, codes.Unavailable, involved},
		{"the model closes without answering", grpcModel(cut), nil, nothingFirst, ask{input: "close-before"}, 502, codes.Unavailable, involved},
		{"the model's answer cut after its status", grpcModel(cut), nil, nothingFirst, ask{input: "bare-status"}, 502, codes.Unavailable, involved},
		{"the model's answer cut half way", grpcModel(cut), nil, nothingFirst, ask{input: "half-cl"}, 502, codes.Unavailable, involved},
		{"method TRACE", nil, nil, nothingFirst, ask{method: "TRACE"}, 405, httpOnH2, untouched},
		{"the right key from an address past its failed-authentication limit", both(func(s *config.Service) {
			s.AuthFailureLimit = config.AuthFailureLimit{Failures: 1, Window: time.Minute}
		}), nil, failedFirst, ask{}, 429, codes.ResourceExhausted, untouched},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := grpcEnvOptions{http1: true, respond: inputModel, limiter: true, authFailures: true, config: tc.config}
			if tc.auth != nil {
				o.auth = func(a proxy.Authenticator) proxy.Authenticator { return refusingAuth{a, tc.auth} }
			}
			e := newGRPCEnv(t, o)
			t.Run("HTTP/1.1", func(t *testing.T) { tc.http1(t, e) })
			t.Run("HTTP/2 gRPC", func(t *testing.T) { tc.grpc(t, e) })
		})
	}
}

func (tc refusal) http1(t *testing.T, e *grpcEnv) {
	h := e.http
	switch tc.first {
	case answeredFirst:
		checkEqual(t, "the first call's status", 200, h.do(t, httpRequest(h, ask{})).Status)
	case failedFirst:
		checkEqual(t, "the first call's status", 401, h.do(t, httpRequest(h, ask{cred: unknownKey})).Status)
	case heldFirst:
		defer holdHTTP(t, e)()
	}
	h.up.reset()
	r := h.do(t, httpRequest(h, tc.ask))
	if r.Status != tc.status {
		t.Errorf("status %d, want %d (%s)", r.Status, tc.status, r.Body)
	}
	if tc.reach != involved {
		h.up.requireNone(t)
	}
}

func (tc refusal) grpc(t *testing.T, e *grpcEnv) {
	conn, ctx := e.client(t), testContext(t)
	switch tc.first {
	case answeredFirst:
		checkEqual(t, "the first call's code", codes.OK, status.Code(grpcCall(ctx, conn, e, ask{})))
	case failedFirst:
		checkEqual(t, "the first call's code", codes.Unauthenticated, status.Code(grpcCall(ctx, conn, e, ask{cred: unknownKey})))
	case heldFirst:
		defer holdGRPC(t, conn, e)()
	}
	streams, calls := e.model.streams.Load(), e.model.calls.Load()
	if tc.code == httpOnH2 {
		got, _, _ := h2Do(t, e, cmp.Or(tc.ask.method, http.MethodPost), tc.ask.header(e.key), nil)
		checkEqual(t, "HTTP status", tc.status, got)
	} else if err := grpcCall(ctx, conn, e, tc.ask); status.Code(err) != tc.code {
		t.Errorf("code %v, want %v (%v)", status.Code(err), tc.code, err)
	}
	switch tc.reach {
	case untouched:
		checkEqual(t, "streams the model received", streams, e.model.streams.Load())
	case streamOnly:
		checkEqual(t, "calls the model's handlers took", calls, e.model.calls.Load())
	}
}

// header is the call's credential and pin as HTTP headers (Authorization is there, without a
// value, for a call that carries no credential).
func (a ask) header(key string) http.Header {
	h := http.Header{"Authorization": a.cred.values(key)}
	if a.pin != "" {
		h.Set(config.DeploymentHeader, a.pin)
	}
	return h
}

// httpRequest is a as a raw request to the HTTP/1.1 listener of e, with e's key.
func httpRequest(e *env, a ask) string {
	input := cmp.Or(a.input, "x")
	lines := []string{"Content-Length: " + strconv.Itoa(len(input))}
	for name, vs := range a.header(e.primary) {
		for _, v := range vs {
			lines = append(lines, name+": "+v)
		}
	}
	target := "/api/v1/service/" + cmp.Or(a.service, "iris") + cmp.Or(a.path, methodModelInfer)
	return request(cmp.Or(a.method, http.MethodPost), target, lines...) + input
}

// grpcCall makes a as a unary call on conn, to the HTTP/2 listener of e, with e's key.
func grpcCall(ctx context.Context, conn *grpc.ClientConn, e *grpcEnv, a ask) error {
	var md []string
	for name, vs := range a.header(e.key) {
		for _, v := range vs {
			md = append(md, name, v)
		}
	}
	if a.service != "" {
		md = append(md, config.GRPCServiceHeader, a.service)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, md...)
	in := wrapperspb.String(cmp.Or(a.input, "x"))
	return invoke(ctx, conn, cmp.Or(a.path, methodModelInfer), in, new(wrapperspb.StringValue)).err
}

// holdHTTP sends a call that the HTTP model holds, on a connection of its own, and returns once
// the model has the whole call and the gateway counts it in flight; the function it returns lets
// the model answer and checks the answer.
func holdHTTP(t *testing.T, e *grpcEnv) (release func()) {
	t.Helper()
	c, err := net.Dial("tcp", e.http.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioDeadline))
	if _, err := io.WriteString(c, httpRequest(e.http, ask{input: "hold"})); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, e.gw, "iris", func() bool { return len(e.http.up.requests()) > 0 })
	return func() {
		e.http.up.release <- struct{}{}
		r, err := readResponse(bufio.NewReader(c))
		if err != nil {
			t.Fatalf("the held call: %v", err)
		}
		checkEqual(t, "the held call's status", 200, r.Status)
	}
}

// holdGRPC is holdHTTP on the HTTP/2 listener.
func holdGRPC(t *testing.T, conn *grpc.ClientConn, e *grpcEnv) (release func()) {
	t.Helper()
	held, ctx := make(chan error, 1), testContext(t)
	go func() { held <- grpcCall(ctx, conn, e, ask{input: "hold"}) }()
	waitHeld(t, e.gw, "kserve", func() bool { return e.model.calls.Load() > 0 })
	return func() {
		e.model.release <- struct{}{}
		checkEqual(t, "the held call's code", codes.OK, status.Code(<-held))
	}
}

// waitHeld waits until the model has a call (arrived) and the gateway counts it in flight.
func waitHeld(t *testing.T, gw *proxy.Gateway, service string, arrived func() bool) {
	t.Helper()
	for deadline := time.Now().Add(ioDeadline); !arrived() || !holding(gw, service); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held call never reached the model")
		}
	}
}

package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/config"
)

// TestF10TraceNeverForwarded is issue 17 finding 10 on the HTTP/1.1 listener: TRACE (and TRACK,
// IIS's name for it) with a valid key is answered 405 with an Allow header by the gateway and
// never reaches the model, whatever the case of the method; CONNECT stays refused (400); a
// method-override header naming TRACE never reaches the model. Other methods are forwarded as
// before.
func TestF10TraceNeverForwarded(t *testing.T) {
	e := newEnv(t, envOptions{})
	const score = "/api/v1/service/iris/score"
	tests := []struct {
		name   string
		raw    string
		status int
	}{
		{"TRACE with a valid key", request("TRACE", score, bearer(e.primary)), 405},
		{"TRACK with a valid key", request("TRACK", score, bearer(e.primary)), 405},
		{"trace in lower case", request("trace", score, bearer(e.primary)), 405},
		{"TRACE to a service without auth", request("TRACE", "/api/v1/service/open/", "Max-Forwards: 0"), 405},
		{"TRACE without a credential", request("TRACE", score), 405},
		{"TRACE to an unknown service", request("TRACE", "/api/v1/service/nope/x", bearer(e.primary)), 405},
		{"TRACE with a body", request("TRACE", score, bearer(e.primary), "Content-Length: 2") + "{}", 405},
		{"CONNECT with an origin-form target", request("CONNECT", score, bearer(e.primary)), 400},
		{"connect in lower case", request("connect", score, bearer(e.primary)), 400},

		{"GET is forwarded", request("GET", score, bearer(e.primary)), 200},
		{"OPTIONS without Origin is forwarded", request("OPTIONS", score, bearer(e.primary)), 200},
		{"a custom method is forwarded", request("PROPFIND", score, bearer(e.primary)), 200},
		// A method-override header reaches no model (cleanRequest removes it): the model gets the
		// POST as sent.
		{"X-HTTP-Method-Override: TRACE", request("POST", score, bearer(e.primary), "X-HTTP-Method-Override: TRACE", "Content-Length: 0"), 200},
		{"X-HTTP-Method: TRACK", request("POST", score, bearer(e.primary), "X-HTTP-Method: TRACK", "Content-Length: 0"), 200},
		{"X-Method-Override: TRACE", request("POST", score, bearer(e.primary), "X-Method-Override: TRACE", "Content-Length: 0"), 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			r := e.do(t, tc.raw)
			switch tc.status {
			case 200:
				if r.Status != 200 {
					t.Fatalf("%d %s, want the model's 200", r.Status, r.Body)
				}
				seen := e.up.requireOne(t)
				for _, h := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"} {
					if seen.has(h) {
						t.Errorf("the model received %s: %q", h, seen.values(h))
					}
				}
				if strings.EqualFold(seen.Method, "TRACE") || strings.EqualFold(seen.Method, "TRACK") {
					t.Errorf("the model received %s", seen.Method)
				}
			case 405:
				checkError(t, r, 405, "MethodNotAllowed", "")
				allow := r.get("Allow")
				if allow == "" || strings.Contains(allow, "TRACE") || strings.Contains(allow, "CONNECT") {
					t.Errorf("Allow %q, want the methods forwarded, without TRACE or CONNECT", allow)
				}
				e.up.requireNone(t)
			default:
				checkError(t, r, tc.status, "BadRequest", "")
				e.up.requireNone(t)
			}
		})
	}
}

// TestF10GRPCListenerMethods is finding 10 on the HTTP/2 (gRPC) listener: only POST is gRPC;
// TRACE, TRACK and every other method get HTTP 405 (with a grpc-status, as the listener's gRPC
// server answers them) and never reach a model, with a valid key and the gRPC content type.
func TestF10GRPCListenerMethods(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{})
	client := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	client.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(client.CloseIdleConnections)
	for _, method := range []string{"TRACE", "TRACK", "GET", "OPTIONS", "PUT", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			req, err := http.NewRequest(method, "http://"+e.addr+methodServerLive, strings.NewReader("\x00\x00\x00\x00\x00"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Authorization", "Bearer "+e.key)
			req.Header.Set("Origin", "https://app.example")
			req.Header.Set("Access-Control-Request-Method", "POST")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("answered over HTTP/%d", resp.ProtoMajor)
			}
			if resp.StatusCode != 405 || resp.Header.Get("Grpc-Status") == "" {
				t.Errorf("%d with grpc-status %q, want 405 with a grpc-status", resp.StatusCode, resp.Header.Get("Grpc-Status"))
			}
			if n := e.model.calls.Load(); n != 0 {
				t.Errorf("the model received %d calls", n)
			}
		})
	}
	// The same listener still serves gRPC.
	if res := invoke(withKey(testContext(t), e.key), e.client(t), methodServerLive, new(emptypb.Empty), new(wrapperspb.BoolValue)); status.Code(res.err) != codes.OK {
		t.Fatalf("a gRPC call after them: %v", res.err)
	}
}

// TestF11GRPCBlockedPaths checks that blocked_paths hold for gRPC method paths as they do for
// HTTP paths, without regard to case: a blocked method is UNIMPLEMENTED and never reaches the
// model; another method of the same service is served.
func TestF11GRPCBlockedPaths(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{config: editService("kserve", func(s *config.Service) {
		s.BlockedPaths = []string{"/Inference.GRPCInferenceService/ModelInfer"}
	})})
	ctx := withKey(testContext(t), e.key)
	conn := e.client(t)
	if res := invoke(ctx, conn, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue)); status.Code(res.err) != codes.Unimplemented {
		t.Errorf("blocked method: %v, want Unimplemented", res.err)
	}
	if n := e.model.calls.Load(); n != 0 {
		t.Fatalf("the model received %d calls for a blocked method", n)
	}
	if res := invoke(ctx, conn, methodServerLive, new(emptypb.Empty), new(wrapperspb.BoolValue)); status.Code(res.err) != codes.OK {
		t.Fatalf("an unblocked method: %v", res.err)
	}
}

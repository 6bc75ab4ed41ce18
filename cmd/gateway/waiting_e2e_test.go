package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// Issue 17, finding 4, as the contract puts it ("the gateway cannot decide: 503, never 401"): an
// instance that starts while its Redis store is unreachable answers on its data plane from the
// first moment, on the HTTP/1.1 listener and on the cleartext HTTP/2 (gRPC) one, with 503 and
// Retry-After (gRPC: UNAVAILABLE), never 401 and never a refused connection, whatever the
// credential, and nothing reaches a model. Once Redis answers, the same instance hands its
// listeners to the real data plane, which serves the keys made before.
func TestFinding4DataPlaneAnswers503WhileWaitingForRedis(t *testing.T) {
	srv := redistest.Start(t)
	px := redistest.NewProxy(t, srv.Addr)
	rec, upstream := newRecorder(t)
	modelAddr, calls := startGRPCModel(t)
	dir := t.TempDir()
	// Fixed ports: the waiting instance does not log that it started.
	dataAddr, adminAddr, h2Addr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`listen: %q
admin_listen: %q
h2:
  listen: %q
store:
  dir: %q
  redis_url: %q
services:
  - name: iris
    auth: key
    upstreams: [%q]
  - name: infer
    auth: key
    protocol: grpc
    upstreams: ["http://%s"]
`, dataAddr, adminAddr, h2Addr, filepath.Join(dir, "data"), px.URL(), upstream.URL, modelAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}

	// Keys made while Redis answers, then the instance stops and Redis becomes unreachable.
	a := start(t, env, "serve", "-config", cfgPath)
	var irisKey, inferKey struct{ Key string }
	adminCall(t, a, "POST", "/v1/services/iris/keys/primary/regenerate", "", &irisKey)
	adminCall(t, a, "POST", "/v1/services/infer/keys/primary/regenerate", "", &inferKey)
	if irisKey.Key == "" || inferKey.Key == "" {
		t.Fatal("no keys were made")
	}
	a.stop(t, syscall.SIGTERM)
	px.Cut(t)

	b := launch(t, env, "serve", "-config", cfgPath)
	deadline := time.Now().Add(15 * time.Second)
	for httpStatus("http://"+adminAddr+"/readyz") != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatalf("the admin listener never answered readyz 503 while waiting for Redis\nstderr:\n%s", b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	modelCalls := calls.Load()

	for _, c := range []struct {
		name, method, path, cred, requestID string
	}{
		{"a good key", "POST", "/api/v1/service/iris/score", irisKey.Key, ""},
		{"a good key, with the caller's request id", "POST", "/api/v1/service/iris/score", irisKey.Key, "caller-id-42"},
		{"a key-shaped guess", "POST", "/api/v1/service/iris/score", "sgk_" + strings.Repeat("x", 40), ""},
		{"no credential", "POST", "/api/v1/service/iris/score", "", ""},
		{"an unknown service", "GET", "/api/v1/service/nope/score", irisKey.Key, ""},
	} {
		t.Run("HTTP/1.1, "+c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, "http://"+dataAddr+c.path, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
			if c.cred != "" {
				req.Header.Set("Authorization", "Bearer "+c.cred)
			}
			if c.requestID != "" {
				req.Header.Set("X-Request-Id", c.requestID)
				req.Header.Set("X-Ms-Client-Request-Id", c.requestID)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("the data plane does not answer while waiting for Redis: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			checkContractError(t, resp.StatusCode, resp.Header, body, 503, "ServiceUnavailable")
			if !strings.Contains(string(body), "cannot check credentials") {
				t.Errorf("the message does not say the gateway cannot check credentials: %s", body)
			}
			if lower := strings.ToLower(string(body)); strings.Contains(lower, "redis") || strings.Contains(lower, "store") {
				t.Errorf("the answer tells the client about the store: %s", body)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			id := resp.Header.Get("X-Request-Id")
			if id == "" || resp.Header.Get("X-Ms-Request-Id") != id {
				t.Errorf("request ids %q and %q, want the same one under both names", id, resp.Header.Get("X-Ms-Request-Id"))
			}
			if c.requestID != "" && (id != c.requestID || resp.Header.Get("X-Ms-Client-Request-Id") != c.requestID) {
				t.Errorf("the caller's request id %q came back as %q and %q", c.requestID, id, resp.Header.Get("X-Ms-Client-Request-Id"))
			}
			if !resp.Close {
				t.Error("the answer does not close the connection")
			}
		})
	}

	conn, err := grpc.NewClient("passthrough:///"+h2Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, c := range []struct{ name, cred string }{
		{"a good key", inferKey.Key},
		{"a key-shaped guess", "sgk_" + strings.Repeat("x", 40)},
		{"no credential", ""},
	} {
		t.Run("gRPC, "+c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c.cred != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.cred)
			}
			var header, trailer metadata.MD
			err := conn.Invoke(ctx, "/inference.GRPCInferenceService/ModelInfer", wrapperspb.String("x"), new(wrapperspb.StringValue),
				grpc.Header(&header), grpc.Trailer(&trailer))
			if code := grpcstatus.Code(err); code != codes.Unavailable {
				t.Fatalf("%v, want Unavailable", err)
			}
			if msg := grpcstatus.Convert(err).Message(); !strings.Contains(msg, "cannot check credentials") || strings.Contains(strings.ToLower(msg), "redis") {
				t.Errorf("message %q", msg)
			}
			md := metadata.Join(header, trailer)
			if ids := md.Get("x-request-id"); len(ids) != 1 || ids[0] == "" || !slices.Equal(md.Get("x-ms-request-id"), ids) {
				t.Errorf("request ids %q and %q, want the same one under both names", ids, md.Get("x-ms-request-id"))
			}
			if len(md.Get("grpc-retry-pushback-ms")) != 1 {
				t.Errorf("no grpc-retry-pushback-ms in %v", md)
			}
		})
	}
	if n := rec.count(); n != 0 {
		t.Errorf("%d requests reached the HTTP model while the gateway waited for Redis", n)
	}
	if calls.Load() != modelCalls {
		t.Error("a gRPC call reached the model while the gateway waited for Redis")
	}

	// Redis answers again: the same instance takes its addresses over and serves real answers.
	px.Restore(t)
	deadline = time.Now().Add(30 * time.Second)
	for !strings.Contains(b.stderr.String(), `"msg":"gateway started"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the instance did not start once Redis answered:\n%s", b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.dataURL, b.adminURL = "http://"+dataAddr, "http://"+adminAddr
	if s := status(t, b.dataURL+"/api/v1/service/iris/score", irisKey.Key); s != 200 {
		t.Fatalf("a good key after Redis came back: %d, want 200\nstderr:\n%s", s, b.stderr)
	}
	if s := status(t, b.dataURL+"/api/v1/service/iris/score", "sgk_"+strings.Repeat("x", 40)); s != 401 {
		t.Errorf("a guessed key after Redis came back: %d, want 401", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := new(wrapperspb.StringValue)
	keyed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+inferKey.Key)
	if err := conn.Invoke(keyed, "/inference.GRPCInferenceService/ModelInfer", wrapperspb.String("x"), out, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("a gRPC call with a good key after Redis came back: %v\nstderr:\n%s", err, b.stderr)
	}
	if out.GetValue() != "infer:x" {
		t.Errorf("answer %q, want infer:x", out.GetValue())
	}
	if code := b.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit code %d\nstderr:\n%s", code, b.stderr)
	}
}

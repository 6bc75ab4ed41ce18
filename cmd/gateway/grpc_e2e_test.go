package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestGRPCServeH2 runs the binary with the h2 listener, in cleartext and with the tls section's
// certificate files, in front of a gRPC model: a keyed ModelInfer call is answered by the model,
// one without a key is UNAUTHENTICATED and never reaches it, and the listener's address is in
// the "gateway started" line.
func TestGRPCServeH2(t *testing.T) {
	modelAddr, calls := startGRPCModel(t)
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"h2c", false}, {"TLS", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h2Addr := freeAddr(t)
			top := fmt.Sprintf("h2:\n  listen: %q\n  tls: %v\n", h2Addr, tc.tls)
			var clientTLS *tls.Config
			if tc.tls {
				ca := newTestCA(t, "gRPC e2e CA")
				certFile, keyFile, _ := ca.issue(t, dir, "gateway", "127.0.0.1")
				top += fmt.Sprintf("tls:\n  listen: %q\n  redirect_http: false\n  certificates:\n    - cert_file: %q\n      key_file: %q\n",
					freeAddr(t), certFile, keyFile)
				clientTLS = &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"}
			}
			path := filepath.Join(dir, "gateway.yaml")
			cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
store:
  dir: %q
%s
services:
  - name: iris
    auth: key
    protocol: grpc
    upstreams: ["http://%s"]
`, filepath.Join(dir, "data"), top, modelAddr)
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			adminKey := strings.Repeat("a", 40)
			p := start(t, []string{"GATEWAY_ADMIN_KEY=" + adminKey}, "serve", "-config", path)
			if !strings.Contains(p.stderr.String(), `"h2_listen":"`+h2Addr+`"`) {
				t.Errorf("the started line does not name h2_listen %s:\n%s", h2Addr, p.stderr)
			}
			key := regenerateKey(t, p, adminKey, "primary")

			creds := insecure.NewCredentials()
			if clientTLS != nil {
				creds = credentials.NewTLS(clientTLS)
			}
			conn, err := grpc.NewClient("passthrough:///"+h2Addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			before := calls.Load()
			out := new(wrapperspb.StringValue)
			err = conn.Invoke(ctx, "/inference.GRPCInferenceService/ModelInfer", wrapperspb.String("x"), out)
			if code := grpcstatus.Code(err); code != codes.Unauthenticated {
				t.Errorf("without a key: %v, want Unauthenticated", err)
			}
			if calls.Load() != before {
				t.Error("the model was called without a key")
			}
			keyed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
			if err := conn.Invoke(keyed, "/inference.GRPCInferenceService/ModelInfer", wrapperspb.String("x"), out); err != nil {
				t.Fatalf("with the key: %v\nstderr:\n%s", err, p.stderr)
			}
			if out.GetValue() != "infer:x" {
				t.Errorf("answer %q, want infer:x", out.GetValue())
			}
			if code := p.stop(t, os.Interrupt); code != 0 {
				t.Errorf("exit code %d\nstderr:\n%s", code, p.stderr)
			}
		})
	}
}

// startGRPCModel runs a gRPC model with one method, inference.GRPCInferenceService/ModelInfer,
// that answers "infer:" and its input; calls counts the calls it answered.
func startGRPCModel(t *testing.T) (addr string, calls *atomic.Int32) {
	t.Helper()
	calls = new(atomic.Int32)
	desc := grpc.ServiceDesc{
		ServiceName: "inference.GRPCInferenceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "ModelInfer", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			calls.Add(1)
			return wrapperspb.String("infer:" + in.GetValue()), nil
		}}},
	}
	model := grpc.NewServer()
	model.RegisterService(&desc, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go model.Serve(ln)
	t.Cleanup(model.Stop)
	return ln.Addr().String(), calls
}

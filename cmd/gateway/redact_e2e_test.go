package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
)

// Issue 17, finding 7, through the binary: keys and JWTs that clients put in the URL (the
// service's own key as a path segment, as in POST /api/v1/service/iris/sgk_…; forged ones in
// the path, percent-encoded, as a query name and value; a JWT in the path; a key as a gRPC
// call's service or method name on the h2 listener) appear in no log line (access log and the
// gateway's own, "gRPC call failed" included), no span (traces_file and OTLP) and no metric. The
// spans and the access log say REDACTED where they were.
func TestKeyInTheURLIsNeverRecorded(t *testing.T) {
	rcv := newOTLPReceiver(t)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	tracesFile := filepath.Join(dir, "traces.jsonl")
	h2Addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
store:
  dir: %q
h2:
  listen: %q
  tls: false
telemetry:
  access_log: true
  traces_file: %q
services:
  - name: iris
    auth: key
    upstreams: [%q]
  - name: triton
    auth: key
    protocol: grpc
    upstreams: ["http://%s"]
`, filepath.Join(dir, "data"), h2Addr, tracesFile, upstream.URL, freeAddr(t)) // triton's model is down
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, rcv.env(sharedOwnerKey), "serve", "-config", cfgPath)
	key := regenerateKey(t, p, sharedOwnerKey, "primary")
	out, errOut, code := runCLI(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "keys", "-admin", p.adminURL, "regenerate", "triton", "primary")
	var tritonKey struct{ Key string }
	if code != 0 || json.Unmarshal([]byte(out), &tritonKey) != nil || tritonKey.Key == "" {
		t.Fatalf("keys regenerate triton: exit %d: %s%s", code, out, errOut)
	}

	forged := func(prefix string) string {
		return withChecksum(prefix + newCanary("F7")[:12] + "_" + newCanary("F7SECRET") + randomBase62(13))
	}
	inPath, encoded, queryName, queryValue, grpcService, grpcMethod := forged("sgk_"), forged("sgk_"), forged("sgp_"), forged("sgk_"), forged("sgk_"), forged("sgp_")
	jwt := jwtSegment(map[string]string{"alg": "EdDSA", "kid": newCanary("F7KID")}) + "." +
		jwtSegment(map[string]string{"sub": newCanary("F7SUB")}) + "." + newCanary("F7SIG") + randomBase62(40)
	secrets := map[string]string{}
	keySecrets(secrets, "iris's key", key)
	keySecrets(secrets, "triton's key", tritonKey.Key)
	for name, k := range map[string]string{"the key in the path": inPath, "the percent-encoded key": encoded,
		"the key as a query name": queryName, "the key as a query value": queryValue,
		"the key as a gRPC service": grpcService, "the key as a gRPC method": grpcMethod} {
		keySecrets(secrets, name, k)
	}
	tokenSecrets(secrets, "the JWT in the path", jwt)

	base := p.dataURL + "/api/v1/service/iris/"
	for _, r := range []struct {
		name, url, cred string
		want            int
	}{
		{"the service's key as the path, no credential", base + key, "", 401},
		{"a key in the path", base + "score/" + inPath, key, 200},
		{"a key with its prefix percent-encoded", base + "sgk%5F" + encoded[4:] + "/score", "", 401},
		{"a key as a query name and one as a value", base + "score?" + queryName + "=1&v=" + queryValue, key, 200},
		{"a JWT in the path", base + jwt, key, 200},
	} {
		if status, _ := sendCred(t, http.MethodPost, r.url, r.cred, nil); status != r.want {
			t.Errorf("%s: status %d, want %d", r.name, status, r.want)
		}
	}

	conn, err := grpc.NewClient("passthrough:///"+h2Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keyed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tritonKey.Key)
	for _, method := range []string{"/" + grpcService + "/ModelInfer", "/inference.GRPCInferenceService/" + grpcMethod} {
		// Keyed, so that the call is forwarded, fails at the model, and is logged as failed.
		err := conn.Invoke(keyed, method, wrapperspb.String("x"), new(wrapperspb.StringValue))
		if code := grpcstatus.Code(err); code != codes.Unavailable {
			t.Errorf("a call with a key in its method path: %v, want Unavailable (the model is down)", code)
		}
	}

	resp, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if code := p.stop(t, syscall.SIGTERM); code != 0 { // flushes the spans
		t.Fatalf("exit %d", code)
	}
	traces, err := os.ReadFile(tracesFile)
	if err != nil {
		t.Fatal(err)
	}
	_, otlp := rcv.received()
	logs := p.stderr.String()
	// The places hold the requests, REDACTED where the credentials were, so that the search
	// below looks where they would be.
	for where, v := range map[string]string{"traces_file": string(traces), "OTLP": otlp, "the log": logs} {
		if !strings.Contains(v, "/api/v1/service/iris/REDACTED") || !strings.Contains(v, "/inference.GRPCInferenceService/REDACTED") {
			t.Errorf("%s lacks the redacted paths:\n%s", where, v)
		}
	}
	if !strings.Contains(logs, "gRPC call failed") {
		t.Errorf("no gRPC call failed at the model; the log would prove nothing:\n%s", logs)
	}
	if !strings.Contains(string(metrics), `service="triton"`) {
		t.Errorf("/metrics has no series of the calls; the search would prove nothing:\n%s", metrics)
	}
	places := map[string]string{"traces_file": string(traces), "OTLP": otlp, "stderr (logs and access log)": logs,
		"stdout": p.stdout.String(), "/metrics": string(metrics)}
	for _, leak := range findLeaks(places, secrets) {
		t.Error(leak)
	}
}

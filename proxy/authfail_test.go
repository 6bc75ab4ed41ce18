package proxy_test

import (
	"context"
	"net"
	"strconv"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/config"
)

// dialFrom connects a grpc-go client to target from the loopback address local, so that a test
// can be several clients.
func dialFrom(t *testing.T, target, local string) *grpc.ClientConn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Finding 5 of issue 17 on the HTTP/2 listener: after services[].auth_failure_limit failed keys
// from one address, every call from it, the right key included, is RESOURCE_EXHAUSTED with a
// retry pushback and never reaches the model; another address is served.
func TestIssue17Finding5GuessingIsBrakedOnGRPC(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{authFailures: true, config: func(cfg *config.Config) {
		cfg.Services[0].AuthFailureLimit = config.AuthFailureLimit{Failures: 3}
	}})
	attacker := dialFrom(t, e.addr, "127.0.0.2")
	call := func(conn *grpc.ClientConn, key string) callResult {
		return invoke(withKey(testContext(t), key), conn, methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
	}
	for i := range 3 {
		r := call(attacker, "sgk_wrong"+strconv.Itoa(i))
		checkEqual(t, "a wrong key, under the limit", codes.Unauthenticated, status.Code(r.err))
	}
	for _, c := range []struct{ name, key string }{{"one more wrong key", "sgk_wrong"}, {"the right key", e.key}} {
		r := call(attacker, c.key)
		checkEqual(t, c.name+" from the blocked address", codes.ResourceExhausted, status.Code(r.err))
		if ms, err := strconv.Atoi(firstValue(r.trailer.Get("grpc-retry-pushback-ms"))); err != nil || ms < 1000 {
			t.Errorf("%s: grpc-retry-pushback-ms %q, want the seconds until the window ends", c.name, r.trailer.Get("grpc-retry-pushback-ms"))
		}
	}
	checkEqual(t, "calls the model saw", int32(0), e.model.calls.Load())
	r := call(dialFrom(t, e.addr, "127.0.0.3"), e.key)
	checkEqual(t, "the right key from another address", codes.OK, status.Code(r.err))
}

func firstValue(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

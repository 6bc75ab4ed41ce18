package proxy_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/proxy"
)

// serveUndecidable serves proxy.UndecidableServer on a loopback port until the test ends.
func serveUndecidable(t *testing.T, e *grpcEnv, h2c bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.UndecidableServer(e.http.cfg.Server, h2c, slog.New(slog.NewTextHandler(io.Discard, nil)))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != http.ErrServerClosed {
			t.Errorf("serving: %v", err)
		}
	})
	return ln.Addr().String()
}

// Issue 17, finding 4: what an instance waiting for its store answers on its data plane is the
// answer of a running gateway that cannot decide, on both listeners: the same status, body and
// Retry-After on HTTP/1.1 (and the connection closed), the same gRPC status, message and
// retry pushback on HTTP/2.
func TestFinding4WaitingAnswerIsTheUndecidableRefusal(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{http1: true, auth: func(a proxy.Authenticator) proxy.Authenticator {
		return refusingAuth{a, authn.ErrUnavailable}
	}})
	waiting := &env{addr: serveUndecidable(t, e, false)}
	waitingH2 := serveUndecidable(t, e, true)

	t.Run("HTTP/1.1", func(t *testing.T) {
		raw := request("POST", "/api/v1/service/iris/score", bearer(e.http.primary), "X-Request-Id: caller-7",
			"X-Ms-Client-Request-Id: client-7", "Content-Length: 2") + "{}"
		want, got := e.http.do(t, raw), waiting.do(t, raw)
		checkError(t, got, http.StatusServiceUnavailable, "ServiceUnavailable", "")
		checkEqual(t, "status", want.Status, got.Status)
		checkEqual(t, "body", string(want.Body), string(got.Body))
		for _, h := range []string{"Content-Type", "Cache-Control", "Retry-After", "X-Request-Id", "X-Ms-Request-Id", "X-Ms-Client-Request-Id"} {
			checkEqual(t, h, want.values(h), got.values(h))
		}
		checkEqual(t, "Connection", []string{"close"}, got.values("Connection"))
		e.http.up.requireNone(t)
	})
	t.Run("gRPC", func(t *testing.T) {
		ctx := withKey(testContext(t), e.key)
		want := invoke(ctx, e.client(t), methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
		got := invoke(ctx, dial(t, waitingH2, nil), methodModelInfer, wrapperspb.String("x"), new(wrapperspb.StringValue))
		checkEqual(t, "code", status.Code(want.err), status.Code(got.err))
		checkEqual(t, "message", status.Convert(want.err).Message(), status.Convert(got.err).Message())
		for _, k := range []string{"grpc-retry-pushback-ms", "content-type"} {
			checkEqual(t, k, want.trailer.Get(k), got.trailer.Get(k))
		}
		if ids := got.trailer.Get("x-request-id"); len(ids) != 1 || ids[0] == "" {
			t.Errorf("x-request-id %q", ids)
		}
		checkEqual(t, "x-ms-request-id", got.trailer.Get("x-request-id"), got.trailer.Get("x-ms-request-id"))
		checkEqual(t, "calls the model saw", int32(0), e.model.calls.Load())
	})
}

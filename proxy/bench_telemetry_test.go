package proxy_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

// BenchmarkProxyKeyRequestTelemetry is BenchmarkProxyKeyRequest with telemetry on: the same
// request, the same key, the same model, one reused connection, but the gateway runs
// WithTelemetry, so the difference between the two is the cost of telemetry per request.
//
// Every request is sampled (the default parentbased_always_on) and becomes a span, which goes to
// tracetest's no-op exporter: the recorder builds and batches every span as it would for OTLP, but
// nothing keeps them, so memory does not grow with b.N (an in-memory exporter would hold every
// span of the run). ns/op is the latency of one request; the recorder's work runs on another
// goroutine beside it (BenchmarkRecorderSpan in package telemetry measures it).
func BenchmarkProxyKeyRequestTelemetry(b *testing.B) {
	b.Setenv("OTEL_TRACES_SAMPLER", "") // the default, whatever the environment says
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	tel, err := telemetry.New(context.Background(), cfg, telemetry.Options{
		Exporters: []sdktrace.SpanExporter{tracetest.NewNoopExporter()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { // registered first, so it runs after the gateway has stopped
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			b.Errorf("telemetry Shutdown: %v", err)
		}
	})
	key, c := benchTelemetryClient(b, tel)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/api/v1/service/iris/score?version=2")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+key)
	req.SetBodyString(`{"data":[[5.1,3.5,1.4,0.2]]}`)
	benchRequest(b, c, req, fasthttp.StatusOK)
	b.StopTimer()
	b.ReportMetric(float64(tel.Dropped())/float64(b.N), "dropped/op")
}

// benchTelemetryClient is benchClient for a gateway WithTelemetry(tel): the iris service of
// newEnv on benchUpstream, served on an in-memory listener, and a client over one reused
// connection. It returns iris's primary key.
func benchTelemetryClient(b *testing.B, tel *telemetry.Telemetry) (string, *fasthttp.HostClient) {
	b.Helper()
	ctx := context.Background()
	store, err := authn.OpenBolt(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	keys, err := authn.NewKeyring(ctx, store, nil)
	if err != nil {
		b.Fatal(err)
	}
	key, err := keys.Regenerate(ctx, "iris", authn.SlotPrimary)
	if err != nil {
		b.Fatal(err)
	}
	cfg := &config.Config{
		Server:   config.Server{MaxResponseBytes: testMaxResponse},
		Services: []config.Service{{Name: "iris", Auth: config.AuthKey, Upstreams: []string{benchUpstream(b)}, MaxBodyBytes: 1024}},
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	gw, err := proxy.New(cfg, authn.NewAuthenticator(keys), nil, proxy.WithTelemetry(tel))
	if err != nil {
		b.Fatal(err)
	}
	ln := fasthttputil.NewInmemoryListener()
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	c := &fasthttp.HostClient{
		Addr: "gw.test",
		Dial: func(string) (net.Conn, error) {
			return ln.DialWithLocalAddr(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000})
		},
		MaxConns: 1,
	}
	b.Cleanup(c.CloseIdleConnections)
	return key, c
}

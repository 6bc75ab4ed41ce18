package proxy_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/otlpsink"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

// BenchmarkProxyKeyRequestTelemetry is BenchmarkProxyKeyRequest with telemetry off and on: the
// same request, the same key, the same model, one reused connection, on the same gateway set-up,
// so the difference between the two is the cost of telemetry per request.
//
//   - off: the gateway runs without telemetry.
//   - otlp-http: telemetry configured as a user configures it, through the environment: spans go
//     over OTLP/HTTP (the gateway's own exporter, which OTEL_EXPORTER_OTLP_ENDPOINT chooses) to a
//     loopback receiver that reads and throws away each batch. Every request is sampled (the
//     default parentbased_always_on) and becomes a span. The receiver is a process of its own, as
//     a collector is, so its CPU time is not counted. otlp-B/op is the OTLP request body per
//     request, counted by the receiver.
//   - otlp-http-library: the same through the library's otlptracehttp client, which the gateway
//     used before its own exporter, for comparison.
//
// ns/op is the latency of one request. The recorder's work (metrics, the span's encoding, the
// upload) runs on another goroutine beside it and, the requests being one at a time, mostly
// while the request waits on the model, so ns/op shows little of it; on a gateway whose CPUs are
// busy it is paid in full. cpu-ns/op is that full price: the CPU time, user and system, the whole
// process used per request (client, gateway, model, and with telemetry the recorder), with the last batch flushed before it is read. B/op and allocs/op count every
// goroutine's allocations.
func BenchmarkProxyKeyRequestTelemetry(b *testing.B) {
	b.Run("off", func(b *testing.B) {
		key, c := benchTelemetryClient(b, nil)
		start := processCPU(b)
		benchKeyRequest(b, c, key)
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	})
	b.Run("otlp-http", func(b *testing.B) { benchOTLPTelemetry(b, false) })
	b.Run("otlp-http-library", func(b *testing.B) { benchOTLPTelemetry(b, true) })
}

// benchOTLPTelemetry is BenchmarkProxyKeyRequestTelemetry's request with telemetry sending every
// span over OTLP/HTTP, through the library's client when library is true.
func benchOTLPTelemetry(b *testing.B, library bool) {
	// The receiver runs in a process of its own: a collector's CPU time is not the gateway's.
	// Started first, so that it stops after telemetry has flushed.
	sink := otlpsink.Start(b)

	b.Setenv("OTEL_TRACES_SAMPLER", "") // the default, whatever the environment says
	b.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	b.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL)
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	b.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "")
	cfg := &config.Config{}
	cfg.ApplyDefaults()
	var opts telemetry.Options
	if library {
		opts.Client = otlptracehttp.NewClient() // configured from the same variables
	}
	tel, err := telemetry.New(context.Background(), cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			b.Errorf("telemetry Shutdown: %v", err)
		}
	}
	b.Cleanup(shutdown) // registered before the gateway's, so it runs after the gateway has stopped
	key, c := benchTelemetryClient(b, tel)
	start := processCPU(b)
	benchKeyRequest(b, c, key)
	shutdown() // flushes the last batch (Shutdown is idempotent)
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	received := sink.Received(b)
	if received == 0 {
		b.Fatal("the OTLP receiver got nothing: telemetry was not on")
	}
	b.ReportMetric(float64(received)/float64(b.N+1), "otlp-B/op") // +1: benchRequest's first request
	b.ReportMetric(float64(tel.Dropped())/float64(b.N), "dropped/op")
}

// benchKeyRequest is BenchmarkProxyKeyRequest's request, with key, through c.
func benchKeyRequest(b *testing.B, c *fasthttp.HostClient, key string) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://gw.test/api/v1/service/iris/score?version=2")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+key)
	req.SetBodyString(`{"data":[[5.1,3.5,1.4,0.2]]}`)
	benchRequest(b, c, req, fasthttp.StatusOK)
	b.StopTimer()
}

// processCPU is the CPU time, user and system, the process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTelemetryClient is benchClient for a gateway WithTelemetry(tel) (without telemetry when tel
// is nil): the iris service of newEnv on benchUpstream, served on an in-memory listener, and a
// client over one reused connection. It returns iris's primary key.
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

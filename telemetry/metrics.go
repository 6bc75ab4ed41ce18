package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// metrics are the gateway's Prometheus metrics, recorded by the background recorder. No label
// carries a credential, a client address or anything else a client chooses freely: methods are
// folded to the standard ones, services are the configured names.
type metrics struct {
	handler    http.Handler
	duration   metric.Float64Histogram
	upstream   metric.Float64Histogram
	rejections metric.Int64Counter
	admission  metric.Int64Counter
	queueWait  metric.Float64Histogram
	rpc        metric.Float64Histogram
	meter      metric.Meter

	// Attribute sets, made once per label combination (only the recorder goroutine uses them).
	// They are kept as the variadic option slices Record and Add take, which would otherwise
	// allocate a new one for every call.
	durationOpts  map[durationKey][]metric.RecordOption
	serviceOpts   map[string][]metric.RecordOption
	rejectionOpts map[[2]string][]metric.AddOption
	queueOpts     map[[2]string][]metric.RecordOption
	rpcOpts       map[rpcKey][]metric.RecordOption
}

// rpcKey labels a gRPC call's duration: the service (a configured name) and the call's gRPC
// status code. The gRPC service and method are left out: a client chooses them freely.
type rpcKey struct {
	service string
	code    int
}

type durationKey struct{ method, class, service string }

func newMetrics(t *Telemetry, stateAge func() time.Duration) (*metrics, error) {
	reg := prometheus.NewRegistry()
	// The Go runtime's and the process's own metrics (go_goroutines, go_memstats_*,
	// process_resident_memory_bytes, process_open_fds, ...), as every Go service exposes them.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("starting the Prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(t.resource))
	meter := provider.Meter("github.com/scoregate/scoregate/telemetry")
	m := &metrics{
		handler:       promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		durationOpts:  map[durationKey][]metric.RecordOption{},
		serviceOpts:   map[string][]metric.RecordOption{},
		rejectionOpts: map[[2]string][]metric.AddOption{},
		queueOpts:     map[[2]string][]metric.RecordOption{},
		rpcOpts:       map[rpcKey][]metric.RecordOption{},
		meter:         meter,
	}
	buckets := metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
	if m.duration, err = meter.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to answer a data-plane request."), buckets); err != nil {
		return nil, err
	}
	if m.upstream, err = meter.Float64Histogram("scoregate.upstream.duration", metric.WithUnit("s"),
		metric.WithDescription("Time the model took to answer."), buckets); err != nil {
		return nil, err
	}
	if m.rejections, err = meter.Int64Counter("scoregate.auth.rejections",
		metric.WithDescription("Requests refused by authentication or authorization, by reason.")); err != nil {
		return nil, err
	}
	if m.admission, err = meter.Int64Counter("scoregate.admission.rejections",
		metric.WithDescription("Requests refused before reaching a model for lack of capacity or rate, by reason (rate_limited, shed, no_healthy_upstream).")); err != nil {
		return nil, err
	}
	if m.queueWait, err = meter.Float64Histogram("scoregate.queue.wait", metric.WithUnit("s"),
		metric.WithDescription("Time forwarded requests waited for a replica, by service and deployment."), buckets); err != nil {
		return nil, err
	}
	if m.rpc, err = meter.Float64Histogram("rpc.server.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to answer a gRPC call, by service and gRPC status code."), buckets); err != nil {
		return nil, err
	}
	_, err = meter.Int64ObservableGauge("http.server.active_requests",
		metric.WithDescription("Data-plane requests in flight."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(t.inflight.Load())
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = meter.Int64ObservableCounter("scoregate.telemetry.dropped_spans",
		metric.WithDescription("Spans dropped because the recorder was behind or an export failed."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(t.dropped.Load())
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = meter.Float64ObservableGauge("scoregate.shared_state.age", metric.WithUnit("s"),
		metric.WithDescription("How old this instance's copy of the revocation and key state is (0 with the embedded store)."),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			if stateAge != nil {
				o.Observe(stateAge().Seconds())
			} else {
				o.Observe(0)
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	return m, nil
}

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// authReasons are the outcomes counted as authentication or authorization rejections.
var authReasons = map[string]bool{
	"missing_credential": true, "invalid_credential": true, "multiple_credentials": true,
	"forbidden": true, "undecidable": true,
}

func (m *metrics) record(r *Record) {
	ctx := context.Background()
	class := "other"
	if c := r.status/100 - 1; c >= 0 && c < len(statusClasses) {
		class = statusClasses[c]
	}
	service := r.Service
	dk := durationKey{normalMethod(r.method), class, service}
	dopts, ok := m.durationOpts[dk]
	if !ok {
		dopts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String("http.request.method", dk.method),
			attribute.String("http.response.status_class", dk.class),
			attribute.String("service", dk.service)))}
		m.durationOpts[dk] = dopts
	}
	m.duration.Record(ctx, r.duration.Seconds(), dopts...)
	if r.RPCService != "" {
		rk := rpcKey{service, r.GRPCStatus}
		ropts, ok := m.rpcOpts[rk]
		if !ok {
			ropts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
				attribute.String("rpc.system", "grpc"),
				attribute.Int("rpc.grpc.status_code", rk.code),
				attribute.String("service", rk.service)))}
			m.rpcOpts[rk] = ropts
		}
		m.rpc.Record(ctx, r.duration.Seconds(), ropts...)
	}
	if r.Upstream != "" {
		sopts, ok := m.serviceOpts[service]
		if !ok {
			sopts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("service", service)))}
			m.serviceOpts[service] = sopts
		}
		m.upstream.Record(ctx, r.upstreamDur.Seconds(), sopts...)
	}
	if r.Deployment != "" {
		qk := [2]string{service, r.Deployment}
		qopts, ok := m.queueOpts[qk]
		if !ok {
			qopts = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("service", qk[0]), attribute.String("deployment", qk[1])))}
			m.queueOpts[qk] = qopts
		}
		m.queueWait.Record(ctx, r.QueueWait.Seconds(), qopts...)
	}
	if authReasons[r.Reason] || admissionReasons[r.Reason] {
		rk := [2]string{r.Reason, service}
		ropts, ok := m.rejectionOpts[rk]
		if !ok {
			ropts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", rk[0]), attribute.String("service", rk[1])))}
			m.rejectionOpts[rk] = ropts
		}
		if authReasons[r.Reason] {
			m.rejections.Add(ctx, 1, ropts...)
		} else {
			m.admission.Add(ctx, 1, ropts...)
		}
	}
}

// admissionReasons are the outcomes counted as admission rejections.
var admissionReasons = map[string]bool{"rate_limited": true, "shed": true, "no_healthy_upstream": true}

// Meter is where other parts of the gateway (the data plane's replicas, rate limits,
// certificates) register their own instruments, served on the same /metrics.
func (t *Telemetry) Meter() metric.Meter { return t.metrics.meter }

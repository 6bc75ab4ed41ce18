package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// metrics are the gateway's Prometheus metrics. No label carries a credential, a client address
// or anything else a client chooses freely: methods are folded to the standard ones, services are
// the configured names, a language-model call's request model labels nothing and its response
// model is bounded per service (modelLabel).
//
// The per-request instruments (durations and rejection counts) are aggregated here, by the
// recorder goroutine, rather than by the OpenTelemetry SDK: an SDK Record call costs about as much
// as encoding the request's span, and the recorder makes up to four of them per request. metrics
// hands its aggregates to the OpenTelemetry Prometheus exporter as a metric producer at each
// scrape, so they are exposed exactly as SDK instruments of the same names would be. The other
// instruments (gauges, and those other packages register through Meter) are the SDK's.
type metrics struct {
	handler http.Handler
	meter   metric.Meter
	start   time.Time // the start of every cumulative series

	mu         sync.Mutex // held by record and by Produce
	duration   map[durationKey]*histSeries
	upstream   map[string]*histSeries
	queueWait  map[[2]string]*histSeries
	rpc        map[rpcKey]*histSeries
	rejections map[[2]string]*counterSeries
	admission  map[[2]string]*counterSeries

	// Language-model calls (recordGenAI).
	tokens     map[genAIKey]*histSeries
	firstToken map[genAIKey]*histSeries // the keys' tokenType is ""
	usage      map[[3]string]*counterSeries
	// models is, by service, the response models that label its language-model series,
	// each kept as a copy of its own; any further one is labelled otherLabel.
	models map[string]map[string]string
}

// genAIKey labels a language-model call's series: the token type (token usage only), the
// operation and response model (both bounded: genAIOperation, metrics.modelLabel), the service
// and the deployment.
type genAIKey struct{ tokenType, operation, model, service, deployment string }

// rpcKey labels a gRPC call's duration: the service (a configured name) and the call's gRPC
// status code. The gRPC service and method are left out: a client chooses them freely.
type rpcKey struct {
	service string
	code    int
}

type durationKey struct{ method, class, service string }

// durationBounds are the upper bounds, in seconds, of every duration histogram's buckets but the
// time to first token's.
var durationBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// tokenBounds and firstTokenBounds are the OpenTelemetry GenAI conventions' bucket boundaries of
// gen_ai.client.token.usage (tokens) and gen_ai.server.time_to_first_token (seconds).
var (
	tokenBounds      = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
	firstTokenBounds = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0}
)

// maxModelsPerService bounds the response models that label a service's language-model series:
// a model's answer names its model, and a model server may simply echo the request's "model",
// which the client chooses. Past this many, a service's further models are labelled otherLabel.
const maxModelsPerService = 16

// otherLabel is the label value of whatever a bound folded away.
const otherLabel = "_OTHER"

// The per-request instruments, as the OpenTelemetry Prometheus exporter names them: dots become
// underscores, the unit "s" adds "_seconds" and a counter gets "_total".
var (
	durationInst   = instrument{"http.server.request.duration", "s", "Time to answer a data-plane request."}
	upstreamInst   = instrument{"scoregate.upstream.duration", "s", "Time the model took to answer."}
	queueWaitInst  = instrument{"scoregate.queue.wait", "s", "Time forwarded requests waited for a replica, by service and deployment."}
	rpcInst        = instrument{"rpc.server.duration", "s", "Time to answer a gRPC call, by service and gRPC status code."}
	rejectionsInst = instrument{"scoregate.auth.rejections", "", "Requests refused by authentication or authorization, by reason."}
	admissionInst  = instrument{"scoregate.admission.rejections", "", "Requests refused before reaching a model for lack of capacity or rate, by reason (rate_limited, shed, no_healthy_upstream, token_rate_limited, token_quota_exceeded)."}
	// The unit {token} is an annotation, which adds no suffix: gen_ai_client_token_usage.
	tokenUsageInst = instrument{"gen_ai.client.token.usage", "{token}", "Tokens a language-model call used, as the model reported them, by token type (input, output)."}
	firstTokenInst = instrument{"gen_ai.server.time_to_first_token", "s", "Time from the call to the model to the first token of its streamed answer."}
	genAIUsageInst = instrument{"scoregate.gen_ai.usage", "", "Language-model calls by where their token counts came from: reported by the model, or none because the answer had them missing, unparsable, or was cut."}
)

type instrument struct{ name, unit, description string }

// histSeries is one histogram time series: the counts of its buckets (bounds, then +Inf), their
// total, sum, minimum and maximum.
type histSeries struct {
	attrs    attribute.Set
	bounds   []float64  // durationBounds, tokenBounds or firstTokenBounds
	buckets  [17]uint64 // the first len(bounds)+1; room for the longest bounds and +Inf
	count    uint64
	sum      float64
	min, max float64
}

func (s *histSeries) observe(v float64) {
	i := 0 // the first bucket whose upper bound is v or more, as the SDK counts
	for i < len(s.bounds) && v > s.bounds[i] {
		i++
	}
	s.buckets[i]++
	if s.count == 0 || v < s.min {
		s.min = v
	}
	if s.count == 0 || v > s.max {
		s.max = v
	}
	s.count++
	s.sum += v
}

type counterSeries struct {
	attrs attribute.Set
	n     int64
}

func newMetrics(t *Telemetry, stateAge func() time.Duration) (*metrics, error) {
	m := &metrics{
		start:      time.Now(),
		duration:   map[durationKey]*histSeries{},
		upstream:   map[string]*histSeries{},
		queueWait:  map[[2]string]*histSeries{},
		rpc:        map[rpcKey]*histSeries{},
		rejections: map[[2]string]*counterSeries{},
		admission:  map[[2]string]*counterSeries{},
		tokens:     map[genAIKey]*histSeries{},
		firstToken: map[genAIKey]*histSeries{},
		usage:      map[[3]string]*counterSeries{},
		models:     map[string]map[string]string{},
	}
	reg := prometheus.NewRegistry()
	// The Go runtime's and the process's own metrics (go_goroutines, go_memstats_*,
	// process_resident_memory_bytes, process_open_fds, ...), as every Go service exposes them.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithProducer(m))
	if err != nil {
		return nil, fmt.Errorf("starting the Prometheus exporter: %w", err)
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(t.resource))
	m.meter = provider.Meter(meterName)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	_, err = m.meter.Int64ObservableGauge("http.server.active_requests",
		metric.WithDescription("Data-plane requests in flight."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(t.inflight.Load())
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = m.meter.Int64ObservableCounter("scoregate.telemetry.dropped_spans",
		metric.WithDescription("Spans dropped because the recorder was behind or an export failed."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(t.dropped.Load())
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = m.meter.Float64ObservableGauge("scoregate.shared_state.age", metric.WithUnit("s"),
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

const meterName = "github.com/scoregate/scoregate/telemetry"

var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// authReasons are the outcomes counted as authentication or authorization rejections.
var authReasons = map[string]bool{
	"missing_credential": true, "invalid_credential": true, "multiple_credentials": true,
	"forbidden": true, "undecidable": true,
}

// admissionReasons are the outcomes counted as admission rejections.
var admissionReasons = map[string]bool{
	"rate_limited": true, "shed": true, "no_healthy_upstream": true,
	"token_rate_limited": true, "token_quota_exceeded": true,
}

// record counts one request in the per-request instruments.
func (m *metrics) record(r *Record) {
	class := "other"
	if c := r.status/100 - 1; c >= 0 && c < len(statusClasses) {
		class = statusClasses[c]
	}
	service := r.Service
	m.mu.Lock()
	defer m.mu.Unlock()
	dk := durationKey{normalMethod(r.method), class, service}
	series(m.duration, dk, durationBounds, func() attribute.Set {
		return attribute.NewSet(
			attribute.String("http.request.method", dk.method),
			attribute.String("http.response.status_class", dk.class),
			attribute.String("service", dk.service))
	}).observe(r.duration.Seconds())
	if r.RPCService != "" {
		rk := rpcKey{service, r.GRPCStatus}
		series(m.rpc, rk, durationBounds, func() attribute.Set {
			return attribute.NewSet(
				attribute.String("rpc.system", "grpc"),
				attribute.Int("rpc.grpc.status_code", rk.code),
				attribute.String("service", rk.service))
		}).observe(r.duration.Seconds())
	}
	if r.Upstream != "" {
		series(m.upstream, service, durationBounds, func() attribute.Set {
			return attribute.NewSet(attribute.String("service", service))
		}).observe(r.upstreamDur.Seconds())
	}
	if r.Deployment != "" {
		qk := [2]string{service, r.Deployment}
		series(m.queueWait, qk, durationBounds, func() attribute.Set {
			return attribute.NewSet(attribute.String("service", qk[0]), attribute.String("deployment", qk[1]))
		}).observe(r.QueueWait.Seconds())
	}
	if r.GenAI.Operation != "" {
		m.recordGenAI(r)
	}
	counters := m.rejections
	if !authReasons[r.Reason] {
		if !admissionReasons[r.Reason] {
			return
		}
		counters = m.admission
	}
	rk := [2]string{r.Reason, service}
	c, ok := counters[rk]
	if !ok {
		c = &counterSeries{attrs: attribute.NewSet(attribute.String("reason", rk[0]), attribute.String("service", rk[1]))}
		counters[rk] = c
	}
	c.n++
}

// series is the histogram series of key in m, made with bounds and the attributes attrs gives
// the first time.
func series[K comparable](m map[K]*histSeries, key K, bounds []float64, attrs func() attribute.Set) *histSeries {
	s, ok := m[key]
	if !ok {
		s = &histSeries{attrs: attrs(), bounds: bounds}
		m[key] = s
	}
	return s
}

// recordGenAI counts a language-model call: by where its token counts came from, its tokens when
// the model reported them, and its time to first token when its answer was streamed. The
// request's model, which the client chooses freely, labels none of them; the response model
// does, bounded by modelLabel. m.mu is held.
func (m *metrics) recordGenAI(r *Record) {
	g := &r.GenAI
	op := genAIOperation(g.Operation)
	usage := genAIUsage(g.Usage)
	if usage != "" {
		uk := [3]string{usage, op, r.Service}
		c, ok := m.usage[uk]
		if !ok {
			c = &counterSeries{attrs: attribute.NewSet(attribute.String("usage", uk[0]),
				attribute.String(attrGenAIOperation, uk[1]), attribute.String("service", uk[2]))}
			m.usage[uk] = c
		}
		c.n++
	}
	if usage != usageReported && g.TimeToFirstToken <= 0 {
		return
	}
	key := genAIKey{operation: op, model: m.modelLabel(r.Service, g.ResponseModel), service: r.Service, deployment: r.Deployment}
	if usage == usageReported {
		for _, tokens := range [...]struct {
			typ string
			n   int64
		}{{"input", g.InputTokens}, {"output", g.OutputTokens}} {
			if tokens.n < 0 {
				continue
			}
			key.tokenType = tokens.typ
			series(m.tokens, key, tokenBounds, key.attrs).observe(float64(tokens.n))
		}
	}
	if g.TimeToFirstToken > 0 {
		key.tokenType = ""
		series(m.firstToken, key, firstTokenBounds, key.attrs).observe(g.TimeToFirstToken.Seconds())
	}
}

// attrs is the attribute set of k's series.
func (k genAIKey) attrs() attribute.Set {
	kvs := make([]attribute.KeyValue, 0, 6)
	if k.tokenType != "" {
		kvs = append(kvs, attribute.String("gen_ai.token.type", k.tokenType))
	}
	kvs = append(kvs,
		attribute.String(attrGenAIOperation, k.operation),
		attribute.String(attrGenAIProvider, providerOpenAI),
		attribute.String(attrGenAIResponseModel, k.model),
		attribute.String("service", k.service),
		attribute.String("deployment", k.deployment))
	return attribute.NewSet(kvs...)
}

// modelLabel is the label of the response model of a call to service: the model itself, kept
// as a copy of its own, for the first maxModelsPerService models the service has seen, and
// otherLabel for any further one.
func (m *metrics) modelLabel(service, model string) string {
	seen := m.models[service]
	if label, ok := seen[model]; ok {
		return label
	}
	if len(seen) >= maxModelsPerService {
		return otherLabel
	}
	if seen == nil {
		seen = map[string]string{}
		m.models[service] = seen
	}
	label := strings.Clone(model) // the Record's string may not outlive it
	seen[label] = label
	return label
}

// genAIOperation is the label of a language-model call's operation: one of those the gateway
// knows, or otherLabel.
func genAIOperation(op string) string {
	switch op {
	case "chat":
		return "chat"
	case "text_completion":
		return "text_completion"
	case "embeddings":
		return "embeddings"
	case "responses":
		return "responses"
	}
	return otherLabel
}

// genAIUsage is the label of where a call's token counts came from (GenAI.Usage): one of those
// the gateway knows, otherLabel, or "" when there was no answer to take them from.
func genAIUsage(usage string) string {
	switch usage {
	case "":
		return ""
	case usageReported:
		return usageReported
	case "missing":
		return "missing"
	case "unparsable":
		return "unparsable"
	case "cut":
		return "cut"
	}
	return otherLabel
}

// Produce hands the per-request instruments to the Prometheus exporter (sdkmetric.Producer).
func (m *metrics) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []metricdata.Metrics
	out = appendHistogram(out, durationInst, m.duration, m.start, now)
	out = appendHistogram(out, upstreamInst, m.upstream, m.start, now)
	out = appendHistogram(out, queueWaitInst, m.queueWait, m.start, now)
	out = appendHistogram(out, rpcInst, m.rpc, m.start, now)
	out = appendCounter(out, rejectionsInst, m.rejections, m.start, now)
	out = appendCounter(out, admissionInst, m.admission, m.start, now)
	out = appendHistogram(out, tokenUsageInst, m.tokens, m.start, now)
	out = appendHistogram(out, firstTokenInst, m.firstToken, m.start, now)
	out = appendCounter(out, genAIUsageInst, m.usage, m.start, now)
	return []metricdata.ScopeMetrics{{Scope: instrumentation.Scope{Name: meterName}, Metrics: out}}, nil
}

// appendHistogram appends inst with every series of m, unless there is none (as the SDK leaves
// out an instrument nothing was recorded in).
func appendHistogram[K comparable](out []metricdata.Metrics, inst instrument, m map[K]*histSeries, start, now time.Time) []metricdata.Metrics {
	if len(m) == 0 {
		return out
	}
	points := make([]metricdata.HistogramDataPoint[float64], 0, len(m))
	for _, s := range m {
		points = append(points, metricdata.HistogramDataPoint[float64]{
			Attributes:   s.attrs,
			StartTime:    start,
			Time:         now,
			Count:        s.count,
			Bounds:       s.bounds,
			BucketCounts: append([]uint64(nil), s.buckets[:len(s.bounds)+1]...),
			Min:          metricdata.NewExtrema(s.min),
			Max:          metricdata.NewExtrema(s.max),
			Sum:          s.sum,
		})
	}
	return append(out, metricdata.Metrics{
		Name: inst.name, Description: inst.description, Unit: inst.unit,
		Data: metricdata.Histogram[float64]{DataPoints: points, Temporality: metricdata.CumulativeTemporality},
	})
}

// appendCounter appends inst with every series of m, unless there is none.
func appendCounter[K comparable](out []metricdata.Metrics, inst instrument, m map[K]*counterSeries, start, now time.Time) []metricdata.Metrics {
	if len(m) == 0 {
		return out
	}
	points := make([]metricdata.DataPoint[int64], 0, len(m))
	for _, c := range m {
		points = append(points, metricdata.DataPoint[int64]{Attributes: c.attrs, StartTime: start, Time: now, Value: c.n})
	}
	return append(out, metricdata.Metrics{
		Name: inst.name, Description: inst.description, Unit: inst.unit,
		Data: metricdata.Sum[int64]{DataPoints: points, Temporality: metricdata.CumulativeTemporality, IsMonotonic: true},
	})
}

// Meter is where other parts of the gateway (the data plane's replicas, rate limits,
// certificates) register their own instruments, served on the same /metrics.
func (t *Telemetry) Meter() metric.Meter { return t.metrics.meter }

package telemetry

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/otlpsink"
)

// benchDrain is how many records BenchmarkRecordRequest hands over between pauses in which the
// queue is emptied.
const benchDrain = 1024

// BenchmarkRecordRequest is telemetry's cost for one forwarded request, as the proxy records it:
// Begin, SetRequest with an incoming traceparent, SetRequestID, the service, auth mode and
// upstream, the upstream call's start and end, the traceparent for the model into a stack buffer,
// and End(200). Every benchDrain requests the benchmark waits for the queue to empty, in three
// settings:
//
//   - request-path: the recorder is stopped and the benchmark hands the queued Records back to the
//     pool itself, with the timer stopped. ns/op, B/op and allocs/op are the request path's alone
//     (the allocation counters are process-wide, so a running recorder's allocations would
//     otherwise be counted here).
//   - recorder-running: the recorder runs on its own goroutine with an in-memory exporter (SDK
//     spans, as for traces_file and tests). The wait for it to catch up is timed, so B/op and
//     allocs/op include the recorder's allocations; only throwing the exporter's spans away is
//     not timed. The request path and the recorder run side by side, so ns/op is about the
//     slower of the two; cpu-ns/op is what one request costs the CPUs together: the process's
//     CPU time, user and system, per request.
//   - recorder-running-otlp: the same with the recorder sending spans as a gateway configured for
//     OTLP/HTTP does (OTEL_EXPORTER_OTLP_ENDPOINT): encoded by the gateway's exporter and POSTed
//     to a loopback receiver that reads and discards them, on the same CPUs but in a process of
//     its own, whose CPU time cpu-ns/op leaves out.
//   - recorder-running-otlp-library: the same through the library's client (otlptracehttp), which
//     the gateway used before, for comparison.
//
// The queue is large enough never to fill, so End takes the hand-over branch, not the drop branch
// (dropped/op says so), and Records come back from the pool as they do in a gateway whose
// recorder keeps up. The recorders' last partial batch is uploaded after the timer has stopped.
func BenchmarkRecordRequest(b *testing.B) {
	b.Run("request-path", func(b *testing.B) {
		tel, _ := newTel(b, func(c *config.Config) { c.Telemetry.QueueSize = 2 * benchDrain }, Options{})
		shutdown(b, tel) // the recorder stops; End still queues, and the reset hands Records back
		benchRecordRequest(b, tel, nil, func() {
			for len(tel.queue) > 0 {
				tel.put(<-tel.queue)
			}
		})
	})
	b.Run("recorder-running", func(b *testing.B) {
		tel, mem := newTel(b, func(c *config.Config) { c.Telemetry.QueueSize = 4 * benchDrain }, Options{})
		start := processCPU(b)
		benchRecordRequest(b, tel, waitForRecorder(tel), mem.Reset)
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	})
	b.Run("recorder-running-otlp", func(b *testing.B) {
		b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", discardingCollector(b).URL)
		tel, _ := newTel(b, func(c *config.Config) { c.Telemetry.QueueSize = 4 * benchDrain },
			Options{Exporters: []sdktrace.SpanExporter{}})
		start := processCPU(b)
		benchRecordRequest(b, tel, waitForRecorder(tel), nil)
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	})
	b.Run("recorder-running-otlp-library", func(b *testing.B) {
		client := otlptracehttp.NewClient(otlptracehttp.WithEndpointURL(discardingCollector(b).URL))
		tel, _ := newTel(b, func(c *config.Config) { c.Telemetry.QueueSize = 4 * benchDrain },
			Options{Exporters: []sdktrace.SpanExporter{}, Client: client})
		start := processCPU(b)
		benchRecordRequest(b, tel, waitForRecorder(tel), nil)
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	})
}

// discardingCollector is an OTLP/HTTP receiver on loopback that reads each request and throws it
// away, in a process of its own (otlpsink), so that its CPU time is not counted as the sender's.
func discardingCollector(b *testing.B) *otlpsink.Sink { return otlpsink.Start(b) }

// processCPU is the CPU time, user and system, the process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// waitForRecorder returns a function that waits until tel's recorder has taken every queued
// Record. It sleeps between looks rather than spin, which would spend CPU time cpu-ns/op counts.
func waitForRecorder(tel *Telemetry) func() {
	return func() {
		for len(tel.queue) > 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// benchRecordRequest records b.N requests; every benchDrain of them it calls catchUp with the
// timer running and then reset with the timer stopped (either may be nil).
func benchRecordRequest(b *testing.B, tel *Telemetry, catchUp, reset func()) {
	var (
		method      = []byte("POST")
		target      = []byte("/api/v1/service/iris/score?x=1")
		userAgent   = []byte("python-requests/2.32.3")
		host        = []byte("scoring.example.com:8080")
		client      = []byte("10.20.30.40")
		traceparent = []byte("00-" + parentTrace + "-" + parentSpan + "-01")
		tracestate  = []byte("congo=t61rcWkgMzE")
		requestID   = []byte("6f1c2b7e-3d4a-4c1e-9a8b-7c6d5e4f3a2b")
	)
	drain := func() {
		if catchUp != nil {
			catchUp()
		}
		if reset != nil {
			b.StopTimer()
			reset()
			b.StartTimer()
		}
	}
	n, sent := 0, 0
	b.ReportAllocs()
	for b.Loop() {
		rec := tel.Begin()
		rec.SetRequest(method, target, userAgent, host, client, traceparent, tracestate)
		rec.SetRequestID(requestID)
		rec.Service, rec.Auth = "iris", config.AuthKey
		rec.Upstream = "127.0.0.1:5001"
		var tp [55]byte
		sent += len(rec.AppendTraceparent(tp[:0]))
		rec.UpstreamStart()
		rec.UpstreamEnd()
		rec.End(200)
		if n++; n%benchDrain == 0 {
			drain()
		}
	}
	b.StopTimer()
	if catchUp != nil {
		catchUp()
	}
	if reset != nil {
		reset()
	}
	if sent != 55*n {
		b.Fatalf("traceparents of %d bytes for %d requests", sent, n)
	}
	b.ReportMetric(float64(tel.Dropped())/float64(b.N), "dropped/op")
}

// BenchmarkRecorderSpan is the background recorder's cost per request, which the request path
// does not pay, for a request with a sampled parent, a tracestate and a key in its query:
//
//   - otlp-wire: encoding its span into the OTLP/HTTP exporter's request body (spanEncoder.add),
//     and completing the body every batchSize spans. B/op is what parsing the tracestate
//     allocates (a request without one allocates nothing); wire-B/span the body per span.
//   - otlp-build: writing its span into the OTLP batch's reused protobuf messages (fillOTLP).
//   - otlp-build-marshal: the same, plus proto.Marshal of the ExportTraceServiceRequest for every
//     batchSize spans, as the OTLP clients do before sending (otlptracehttp marshals into a new
//     buffer per batch, so B/op is mostly that buffer, about the span's size on the wire). ns/op and
//     B/op are per span; a last partial batch of b.N is built but not marshalled.
//   - metrics: recording its metrics (metrics.record).
//   - sdk: turning it into an SDK span (t.span), what the traces_file exporter and tests get.
//
// otlp-build and otlp-build-marshal are the library client's path, which grpc still takes.
// BenchmarkOTLPUpload adds the HTTP request; the optional access-log line comes on top.
func BenchmarkRecorderSpan(b *testing.B) {
	tel, _ := newTel(b, nil, Options{Exporters: []sdktrace.SpanExporter{}})
	recs := benchRecords(b, tel, batchSize)
	batch := newOTLPBatch(tel.resource)
	for _, r := range recs {
		batch.add(r)
	}
	batch.build(tel) // makes the messages
	b.Run("otlp-wire", func(b *testing.B) {
		enc, err := newSpanEncoder(tel.resource)
		if err != nil {
			b.Fatal(err)
		}
		i, size := 0, 0
		b.ReportAllocs()
		for b.Loop() {
			enc.add(tel, recs[i])
			if i++; i == len(recs) {
				i = 0
				size = len(enc.request())
				enc.reset()
			}
		}
		b.ReportMetric(float64(size)/float64(len(recs)), "wire-B/span")
	})
	b.Run("otlp-build", func(b *testing.B) {
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			tel.fillOTLP(batch.spans[i], recs[i])
			if i++; i == len(recs) {
				i = 0
			}
		}
	})
	b.Run("otlp-build-marshal", func(b *testing.B) {
		i, size := 0, 0
		b.ReportAllocs()
		for b.Loop() {
			tel.fillOTLP(batch.spans[i], recs[i])
			if i++; i == len(recs) {
				i = 0
				body, err := proto.Marshal(&collectortrace.ExportTraceServiceRequest{ResourceSpans: batch.upload})
				if err != nil {
					b.Fatal(err)
				}
				size = len(body)
			}
		}
		b.ReportMetric(float64(size)/float64(len(recs)), "wire-B/span")
	})
	b.Run("metrics", func(b *testing.B) {
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			tel.metrics.record(recs[i])
			if i++; i == len(recs) {
				i = 0
			}
		}
	})
	b.Run("sdk", func(b *testing.B) {
		i := 0
		b.ReportAllocs()
		for b.Loop() {
			if s := tel.span(recs[i]); s.Name() == "" {
				b.Fatal("span without a name")
			}
			if i++; i == len(recs) {
				i = 0
			}
		}
	})
	batch.release(tel)
}

// BenchmarkOTLPUpload is the recorder's cost per span of sending spans over OTLP/HTTP to a
// loopback receiver that reads and discards each request:
//
//   - otlphttp: the gateway's exporter: encoding each span into the request body, and for every
//     batchSize spans completing it and POSTing it (upload).
//   - library: the library's client (otlptracehttp.NewClient): filling the batch's protobuf
//     messages, and UploadTraces (marshal, HTTP request, response) for every batchSize spans.
//
// The receiver runs on the same CPUs, in a process of its own, so its share is not counted. ns/op,
// B/op and allocs/op are per span; wire-B/span is the body per span.
func BenchmarkOTLPUpload(b *testing.B) {
	ctx := context.Background()
	b.Run("otlphttp", func(b *testing.B) {
		sink := discardingCollector(b)
		tel, _ := newTel(b, nil, Options{Exporters: []sdktrace.SpanExporter{}})
		env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL}
		exp, err := newOTLPHTTP(func(k string) string { return env[k] }, os.ReadFile, tel.resource, tel.log)
		if err != nil {
			b.Fatal(err)
		}
		recs := benchRecords(b, tel, batchSize)
		upload := func() {
			if err := exp.upload(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for _, r := range recs { // the connection and the buffers exist before the timer starts
			exp.add(tel, r)
		}
		upload()
		base := sink.Received(b)
		i, batches := 0, 0
		b.ReportAllocs()
		for b.Loop() {
			exp.add(tel, recs[i])
			if i++; i == len(recs) {
				upload()
				i = 0
				batches++
			}
		}
		b.StopTimer()
		if batches > 0 {
			b.ReportMetric(float64(sink.Received(b)-base)/float64(batches*len(recs)), "wire-B/span")
		}
		exp.close()
	})
	b.Run("library", func(b *testing.B) {
		sink := discardingCollector(b)
		client := otlptracehttp.NewClient(otlptracehttp.WithEndpointURL(sink.URL))
		tel, _ := newTel(b, nil, Options{Exporters: []sdktrace.SpanExporter{}, Client: client})
		recs := benchRecords(b, tel, batchSize)
		batch := newOTLPBatch(tel.resource)
		for _, r := range recs {
			batch.add(r)
		}
		upload := func() {
			if err := client.UploadTraces(ctx, batch.build(tel)); err != nil {
				b.Fatal(err)
			}
		}
		upload() // the connection and the messages exist before the timer starts
		base := sink.Received(b)
		i, batches := 0, 0
		b.ReportAllocs()
		for b.Loop() {
			if i++; i == len(recs) {
				upload()
				i = 0
				batches++
			}
		}
		b.StopTimer()
		if batches > 0 {
			b.ReportMetric(float64(sink.Received(b)-base)/float64(batches*len(recs)), "wire-B/span")
		}
		batch.release(tel)
	})
}

// benchRecords returns n Records of the same request, with a sampled parent, a tracestate and a
// key in the query, as the request path leaves them at End (but not handed over).
func benchRecords(b *testing.B, tel *Telemetry, n int) []*Record {
	recs := make([]*Record, n)
	for i := range recs {
		rec := tel.Begin()
		rec.SetRequest([]byte("POST"), []byte("/api/v1/service/iris/score?x=1&key=abc"), []byte("python-requests/2.32.3"),
			[]byte("scoring.example.com:8080"), []byte("10.20.30.40"), []byte("00-"+parentTrace+"-"+parentSpan+"-01"),
			[]byte("congo=t61rcWkgMzE"))
		rec.SetRequestID([]byte("6f1c2b7e-3d4a-4c1e-9a8b-7c6d5e4f3a2b"))
		rec.Service, rec.Auth, rec.Reason, rec.Upstream = "iris", config.AuthKey, "ok", "127.0.0.1:5001"
		rec.upstreamDur, rec.duration, rec.status = 1200*time.Microsecond, 1500*time.Microsecond, 200
		if !rec.sampled {
			b.Fatal("the record is not sampled: no span would be built")
		}
		recs[i] = rec
	}
	return recs
}

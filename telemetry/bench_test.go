package telemetry

import (
	"runtime"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// benchDrain is how many records BenchmarkRecordRequest hands over between pauses in which the
// queue is emptied.
const benchDrain = 1024

// BenchmarkRecordRequest is the request path's share of telemetry for one forwarded request, as
// the proxy does it: Begin, SetRequest with an incoming traceparent, SetRequestID, the service,
// auth mode and upstream, the upstream call's start and end, the traceparent for the model into a
// stack buffer, and End(200). It measures the request path only, not the recorder that turns
// records into spans and metrics (BenchmarkRecorderSpan measures that), in two settings:
//
//   - request-path: the recorder is stopped and the benchmark hands the queued Records back to the
//     pool itself every benchDrain requests, with the timer stopped. ns/op, B/op and allocs/op are
//     the request path's alone (the allocation counters are process-wide, so a running recorder's
//     allocations would otherwise be counted here).
//   - recorder-running: the recorder runs on its own goroutine with an in-memory exporter, as in
//     the gateway; ns/op includes waking it up on End and sharing the CPUs with it, and B/op and
//     allocs/op include its allocations. Every benchDrain requests the timer stops until it has
//     caught up and the exporter's spans are thrown away.
//
// Either way the queue is large enough never to fill, so End takes the hand-over branch, not the
// drop branch (dropped/op says so), and Records come back from the pool as they do in a gateway
// whose recorder keeps up.
func BenchmarkRecordRequest(b *testing.B) {
	b.Run("request-path", func(b *testing.B) {
		tel, _ := newTel(b, func(c *config.Config) { c.Telemetry.QueueSize = 2 * benchDrain }, Options{})
		shutdown(b, tel) // the recorder stops; End still queues, and drain hands Records back
		benchRecordRequest(b, tel, func() {
			for len(tel.queue) > 0 {
				tel.put(<-tel.queue)
			}
		})
	})
	b.Run("recorder-running", func(b *testing.B) {
		tel, mem := newTel(b, func(c *config.Config) { c.Telemetry.QueueSize = 4 * benchDrain }, Options{})
		benchRecordRequest(b, tel, func() {
			for len(tel.queue) > 0 {
				runtime.Gosched()
			}
			mem.Reset()
		})
	})
}

func benchRecordRequest(b *testing.B, tel *Telemetry, drain func()) {
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
			b.StopTimer()
			drain()
			b.StartTimer()
		}
	}
	b.StopTimer()
	drain()
	if sent != 55*n {
		b.Fatalf("traceparents of %d bytes for %d requests", sent, n)
	}
	b.ReportMetric(float64(tel.Dropped())/float64(b.N), "dropped/op")
}

// BenchmarkRecorderSpan is the background recorder's cost per request, which the request path
// does not pay: turning a Record into a finished SERVER span (t.span) and recording its metrics
// (metrics.record). Handing spans to the exporter in batches and the optional access-log line
// come on top.
func BenchmarkRecorderSpan(b *testing.B) {
	tel, _ := newTel(b, nil, Options{})
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
	b.ReportAllocs()
	for b.Loop() {
		if s := tel.span(rec); s.Name() == "" {
			b.Fatal("span without a name")
		}
		tel.metrics.record(rec)
	}
	b.StopTimer()
	rec.End(200)
}

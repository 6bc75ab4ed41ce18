package main

import (
	"fmt"
	"strings"
)

// writeGRPC writes the gRPC table: the model called directly and through the gateway.
func (r *results) writeGRPC(b *strings.Builder) {
	g := r.GRPC
	if g == nil {
		return
	}
	b.WriteString("## gRPC: the gateway against a direct call\n\n")
	fmt.Fprintf(b, "A grpc-go client calls a unary method, `%s` (a hand-written service with protobuf's `BytesValue`: the fast profile's JSON in, the same model's JSON answer out, about 60 bytes each way), on a gRPC model the harness runs in a process of its own, over cleartext HTTP/2: once directly (\"direct\") and once through a scoregate (`GOMAXPROCS=1`, tracing off) whose `h2.listen` (h2c) fronts it as a `protocol: grpc` key-auth service, the key in `authorization` metadata. Closed loop: %d goroutines over %d connections, each calling again as soon as its call returns, for %gs per measurement after a warm-up, %d rounds interleaved. CPU per call from `/proc/<pid>/stat` as for the other rows; the client is this harness (grpc-go), so its CPU per call is large and shared with the gateway's cores. Errors are calls that did not end OK.\n\n",
		g.Method, g.Concurrency, g.Connections, g.Seconds, r.Settings.Rounds)
	if g.Status != statusOK {
		fmt.Fprintf(b, "Not measured: %s\n\n", cell(g.Check))
		return
	}
	fmt.Fprintf(b, "Check: %s.\n\n", g.Check)
	b.WriteString("| target | calls/s | gateway CPU µs/call | model CPU µs/call | client CPU µs/call | p50 ms | p90 ms | p99 ms | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, rw := range g.Rows {
		s := rw.Summary
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Peer, cellStat(s.RPS, 0), cpuCell(s.ProxyCPUus),
			cellStat(s.UpstreamCPUus, 1), cellStat(s.GeneratorCPUus, 1), cellStat(s.P50ms, 2), cellStat(s.P90ms, 2), cellStat(s.P99ms, 2), errCell(s))
	}
	writeExtraFailures(b, g.Notes, func(add func(string)) {
		for _, rw := range g.Rows {
			for _, f := range rw.Failures {
				add(rw.Peer + ": " + f)
			}
			for _, s := range rw.Samples {
				if s.FirstError != "" {
					add(fmt.Sprintf("%s: %d errors, the first: %s", rw.Peer, s.Errors, s.FirstError))
				}
			}
		}
	})
	b.WriteString("\n")
}

// writeSSE writes the SSE table: time to the first event and to the end of a stream, and the
// delay of each event, directly and through the gateway.
func (r *results) writeSSE(b *strings.Builder) {
	s := r.SSE
	if s == nil {
		return
	}
	b.WriteString("## Server-sent events: time to first event\n\n")
	fmt.Fprintf(b, "A model inside the harness answers `GET /sse` with `text/event-stream`: %d events, the first at once and then one every %g ms, each flushed as written and carrying its write time. The harness reads %d streams per measurement, %d at a time, over kept-alive net/http connections: directly (\"direct\") and through a scoregate (`GOMAXPROCS=1`, tracing off, a key-auth service in front of the model, `Authorization: Bearer <key>`), %d rounds interleaved. *First event* is from sending the request to having read the first event whole; *stream* to the end of the body; *event delay* is, for every event, the client's read time minus the model's write time on the same process's monotonic clock, so what the gateway adds per event is its row's delay less the direct row's. Gateway CPU is per stream (%d events).\n\n",
		s.Events, s.EveryMs, s.Streams, s.Concurrency, r.Settings.Rounds, s.Events)
	if s.Status != statusOK {
		fmt.Fprintf(b, "Not measured: %s\n\n", cell(s.Check))
		return
	}
	fmt.Fprintf(b, "Check: %s.\n\n", s.Check)
	b.WriteString("| target | first event p50 ms | first event p99 ms | stream p50 ms | stream p99 ms | event delay p50 ms | event delay p99 ms | gateway CPU µs/stream | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	var direct, gateway *sseRow
	for _, rw := range s.Rows {
		sm := rw.Summary
		switch rw.Target {
		case targetDirect:
			direct = rw
		case targetGateway:
			gateway = rw
		}
		errs := "0"
		if sm.Errors > 0 {
			errs = fmt.Sprintf("**%s** of %s", num(float64(sm.Errors)), num(float64(sm.Streams+sm.Errors)))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Target, cellStat(sm.TTFBp50ms, 2), cellStat(sm.TTFBp99ms, 2),
			cellStat(sm.TotalP50ms, 1), cellStat(sm.TotalP99ms, 1), cellStat(sm.EventDelayP50ms, 3), cellStat(sm.EventDelayP99ms, 3),
			cpuCell(sm.GatewayCPUus), errs)
	}
	if direct != nil && gateway != nil && direct.Summary.EventDelayP50ms.N > 0 && gateway.Summary.EventDelayP50ms.N > 0 {
		fmt.Fprintf(b, "\nThrough the gateway, the median event arrived %.3f ms later than directly (p99: %.3f ms later), and the first event %.2f ms later (p50).\n",
			gateway.Summary.EventDelayP50ms.Median-direct.Summary.EventDelayP50ms.Median,
			gateway.Summary.EventDelayP99ms.Median-direct.Summary.EventDelayP99ms.Median,
			gateway.Summary.TTFBp50ms.Median-direct.Summary.TTFBp50ms.Median)
	}
	writeExtraFailures(b, s.Notes, func(add func(string)) {
		for _, rw := range s.Rows {
			for _, f := range rw.Failures {
				add(rw.Target + ": " + f)
			}
			for _, smp := range rw.Samples {
				if smp.FirstError != "" {
					add(fmt.Sprintf("%s: %d errors, the first: %s", rw.Target, smp.Errors, smp.FirstError))
				}
			}
		}
	})
	b.WriteString("\n")
}

// writeExtraFailures lists a section's notes, failed measurements and first errors, if any.
func writeExtraFailures(b *strings.Builder, notes []string, each func(add func(string))) {
	lines := append([]string(nil), notes...)
	each(func(s string) { lines = append(lines, s) })
	if len(lines) == 0 {
		return
	}
	b.WriteString("\n")
	for _, l := range lines {
		fmt.Fprintf(b, "- %s\n", cell(l))
	}
}

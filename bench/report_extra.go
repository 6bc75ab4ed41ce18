package main

import (
	"fmt"
	"strings"
)

// writeGRPC writes the gRPC tables: the model called directly and through the gateway by the
// grpc-go client and by ghz, and the delay of streamed messages.
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
	if len(g.Rows) > 0 {
		b.WriteString("| target | calls/s | gateway CPU µs/call | model CPU µs/call | client CPU µs/call | p50 ms | p90 ms | p99 ms | errors |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
		for _, rw := range g.Rows {
			s := rw.Summary
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Peer, cellStat(s.RPS, 0), cpuCell(s.ProxyCPUus),
				cellStat(s.UpstreamCPUus, 1), cellStat(s.GeneratorCPUus, 1), cellStat(s.P50ms, 2), cellStat(s.P90ms, 2), cellStat(s.P99ms, 2), errCell(s))
		}
	} else {
		b.WriteString("The grpc-go client's rows were not selected (`-only`).\n")
	}
	g.writeGhz(b, r.Settings.Rounds)
	g.writeStreamDelay(b)
	writeExtraFailures(b, g.Notes, func(add func(string)) {
		for _, rw := range g.allRows() {
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

// writeGhz writes the ghz table: unary and server-streaming calls, each against its direct row.
func (g *grpcBench) writeGhz(b *strings.Builder, rounds int) {
	if len(g.Ghz) == 0 {
		return
	}
	b.WriteString("\n### ghz: unary and server-streaming calls\n\n")
	fmt.Fprintf(b, "[ghz](https://github.com/bojand/ghz) %s, an outside gRPC load tester, built into the harness from its Go module (`github.com/bojand/ghz/runner`) and run as a child process of it, as wrk is, calls the same model and gateway with the methods `bench/inference.proto` describes: `ModelInfer` (unary, the fast profile's JSON) and `ModelInferStream` (server-streaming: %d short messages a call, sent back to back). %d concurrent calls over %d connections, closed loop, %gs per measurement after a warm-up, interleaved with the other gRPC rows in each of the %d rounds; calls still in flight when the time is up are left out. Gateway and model CPU from `/proc/<pid>/stat` as for the other rows; ghz's CPU is its process's user+system time over its run. A stream's latency is the whole call's, to its last message.\n\n",
		g.GhzVersion, g.GhzStreamMessages, g.Concurrency, g.Connections, g.ExtraSeconds, rounds)
	b.WriteString("| row | calls/s | × direct | messages/s | gateway CPU µs/call | gateway CPU µs/message | model CPU µs/call | ghz CPU µs/call | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	direct := map[string]*row{}
	for _, rw := range g.Ghz {
		switch rw.Peer {
		case ghzUnaryDirect, ghzStreamDirect:
			direct[rw.Peer] = rw
		}
	}
	for _, rw := range g.Ghz {
		s := rw.Summary
		per := 1
		if rw.Peer == ghzStreamDirect || rw.Peer == ghzStreamGateway {
			per = g.GhzStreamMessages
		}
		ratio, msgs, cpuMsg := "–", "–", "–"
		base := direct[ghzUnaryDirect]
		if per > 1 {
			base = direct[ghzStreamDirect]
			msgs = num(s.RPS.Median * float64(per))
			if s.ProxyCPUus.N > 0 && s.ProxyCPUus.Median > 0 {
				cpuMsg = fmt.Sprintf("%.1f", s.ProxyCPUus.Median/float64(per))
			}
		}
		if base != nil && base != rw && base.Summary.RPS.Median > 0 && s.RPS.N > 0 {
			ratio = fmt.Sprintf("%.2f", s.RPS.Median/base.Summary.RPS.Median)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Peer, cellStat(s.RPS, 0), ratio, msgs,
			cpuCell(s.ProxyCPUus), cpuMsg, cellStat(s.UpstreamCPUus, 1), cellStat(s.GeneratorCPUus, 1),
			cellStat(s.P50ms, 2), cellStat(s.P90ms, 2), cellStat(s.P99ms, 2), cellStat(s.P999ms, 2), errCell(s))
	}
}

// writeStreamDelay writes the delay of streamed messages, directly and through the gateway.
func (g *grpcBench) writeStreamDelay(b *strings.Builder) {
	if len(g.StreamDelay) == 0 {
		return
	}
	b.WriteString("\n### Server-streaming: message delay\n\n")
	fmt.Fprintf(b, "ghz times whole calls, not the messages of a stream, so a grpc-go client of the harness's own measures this: %d streams open at once over the same %d connections, each asking `ModelInferStream` for %d messages %g ms apart (the first at once) and opening the next when one ends, %gs per measurement, interleaved with the rows above. The model stamps each message with the machine's wall-clock time just before handing it to grpc-go; the delay is the time the client read it less that stamp (two processes, one clock). CPU is per message; failed streams are streams that did not end OK with every message.\n\n",
		g.DelayStreams, g.Connections, g.DelayMessages, g.DelayEveryMs, g.ExtraSeconds)
	b.WriteString("| target | messages/s | delay p50 ms | delay p90 ms | delay p99 ms | delay p99.9 ms | gateway CPU µs/message | model CPU µs/message | client CPU µs/message | failed streams |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, rw := range g.StreamDelay {
		s := rw.Summary
		errs := "0"
		if s.Errors > 0 {
			errs = "**" + num(float64(s.Errors)) + "**"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Peer, cellStat(s.RPS, 0),
			cellStat(s.P50ms, 3), cellStat(s.P90ms, 3), cellStat(s.P99ms, 3), cellStat(s.P999ms, 3),
			cpuCell(s.ProxyCPUus), cellStat(s.UpstreamCPUus, 1), cellStat(s.GeneratorCPUus, 1), errs)
	}
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

package main

import (
	"fmt"
	"strings"
)

// targetCheck is one of the performance targets, held against this run's numbers.
type targetCheck struct {
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"` // met, missed, or "not measured: why"
}

// Verdicts.
const (
	verdictMet    = "met"
	verdictMissed = "missed"
)

// targetProfile is the profile the targets are judged on: the one where the proxy's own cost
// shows most.
const targetProfile = "fast"

// checkTargets compares the measurements with the targets. It judges nothing it did not measure.
func (r *results) checkTargets() []targetCheck {
	var out []targetCheck
	out = append(out, r.throughputTargets()...)
	out = append(out, r.addedLatencyTargets()...)
	for _, axis := range []string{"sweep-keys", "sweep-revocations", "sweep-services"} {
		out = append(out, r.flatCostTarget(axis))
	}
	out = append(out, r.manyConnsTarget(), r.idleConnTarget(), r.bodyTarget())
	out = append(out, r.grpcThroughputTarget(), r.grpcCPUTarget(), r.streamDelayTarget())
	out = append(out, targetCheck{
		Target:  "zero allocations in the key and revocation checks; allocs/op of the whole handler",
		Verdict: "not measured: a benchmark matter (go test -bench . -benchmem ./authn ./proxy), not a load-test one",
	})
	return out
}

// notMeasured explains a target the run has no numbers for.
func notMeasured(target, why string) targetCheck {
	return targetCheck{Target: target, Verdict: "not measured: " + why}
}

func judge(ok bool) string {
	if ok {
		return verdictMet
	}
	return verdictMissed
}

// closedSummary is the closed-loop summary of a peer in the target profile, if it was measured.
func (r *results) closedSummary(peer string) (summary, bool) {
	rw := r.row(targetProfile, peer, modeClosed, 0)
	if rw == nil || len(rw.Samples) == 0 {
		return summary{}, false
	}
	return rw.Summary, true
}

// throughputTargets compare the target tier's closed-loop throughput and CPU per request with
// HAProxy's.
func (r *results) throughputTargets() []targetCheck {
	loop := " (closed loop, " + targetProfile + " profile)"
	t1 := "throughput of " + targetTier + " at least 0.9 of HAProxy's" + loop
	t2 := "CPU per request of " + targetTier + " at most 1.1 times HAProxy's" + loop
	t3 := "model CPU per request behind " + targetTier + " at most 1.05 times behind HAProxy" + loop
	t4 := "load-generator CPU per request against " + targetTier + " at most 1.05 times against HAProxy" + loop
	sg, ok1 := r.closedSummary(targetTier)
	hp, ok2 := r.closedSummary("haproxy")
	if !ok1 || !ok2 {
		why := "HAProxy or " + targetTier + " was not measured"
		return []targetCheck{notMeasured(t1, why), notMeasured(t2, why), notMeasured(t3, why), notMeasured(t4, why)}
	}
	tput := sg.RPS.Median / hp.RPS.Median
	cpu := sg.ProxyCPUus.Median / hp.ProxyCPUus.Median
	model := sg.UpstreamCPUus.Median / hp.UpstreamCPUus.Median
	gen := sg.GeneratorCPUus.Median / hp.GeneratorCPUus.Median
	return []targetCheck{
		{Target: t1, Verdict: judge(tput >= 0.9),
			Measured: fmt.Sprintf("%.2f (%s r/s against %s r/s)", tput, num(sg.RPS.Median), num(hp.RPS.Median))},
		{Target: t2, Verdict: judge(cpu <= 1.1),
			Measured: fmt.Sprintf("%.2f (%.1f µs against %.1f µs)", cpu, sg.ProxyCPUus.Median, hp.ProxyCPUus.Median)},
		{Target: t3, Verdict: judge(model <= 1.05),
			Measured: fmt.Sprintf("%.2f (%.1f µs against %.1f µs)", model, sg.UpstreamCPUus.Median, hp.UpstreamCPUus.Median)},
		{Target: t4, Verdict: judge(gen <= 1.05),
			Measured: fmt.Sprintf("%.2f (%.1f µs against %.1f µs)", gen, sg.GeneratorCPUus.Median, hp.GeneratorCPUus.Median)},
	}
}

// addedLatencyTargets compare the latency a proxy adds to the model's own, at half of the
// reference maximum.
func (r *results) addedLatencyTargets() []targetCheck {
	var out []targetCheck
	for _, q := range []struct {
		name string
		get  func(summary) float64
	}{
		{"p50", func(s summary) float64 { return s.P50ms.Median }},
		{"p99", func(s summary) float64 { return s.P99ms.Median }},
	} {
		t := fmt.Sprintf("added %s latency over the upstream alone at 50%% load at most 1.5 times HAProxy's (%s, %s profile)", q.name, targetTier, targetProfile)
		sg, hp, up := r.row(targetProfile, targetTier, modeOpen, 0.5), r.row(targetProfile, "haproxy", modeOpen, 0.5), r.row(targetProfile, "upstream alone", modeOpen, 0.5)
		if sg == nil || hp == nil || up == nil || len(sg.Samples)*len(hp.Samples)*len(up.Samples) == 0 {
			out = append(out, notMeasured(t, "HAProxy, the upstream alone or "+targetTier+" lacks an open-loop measurement at 50%"))
			continue
		}
		if short := shortOfRate(sg, hp, up); short != "" {
			out = append(out, notMeasured(t, short+" fell more than 5% short of the asked rate, so its latency is an overloaded machine's"))
			continue
		}
		addSG, addHP := q.get(sg.Summary)-q.get(up.Summary), q.get(hp.Summary)-q.get(up.Summary)
		m := fmt.Sprintf("scoregate adds %.3f ms, HAProxy %.3f ms", addSG, addHP)
		if addHP <= 0 {
			out = append(out, targetCheck{Target: t, Measured: m, Verdict: "not measured: HAProxy added nothing measurable, so no ratio"})
			continue
		}
		ratio := addSG / addHP
		out = append(out, targetCheck{Target: t, Measured: fmt.Sprintf("%.2f (%s)", ratio, m), Verdict: judge(ratio <= 1.5)})
	}
	return out
}

// shortOfRate names the first open-loop row whose median achieved rate fell more than 5% short
// of the asked rate, or "".
func shortOfRate(rows ...*row) string {
	for _, rw := range rows {
		if rw.Summary.RPS.Median < 0.95*float64(rw.Rate) {
			return rw.Peer
		}
	}
	return ""
}

// sweep finds a sweep by axis name.
func (r *results) sweep(axis string) *sweepResult {
	for _, s := range r.Sweeps {
		if s.Axis == axis {
			return s
		}
	}
	return nil
}

// measuredSteps are the steps of a sweep that have samples.
func measuredSteps(s *sweepResult) []*sweepStep {
	var out []*sweepStep
	if s == nil {
		return nil
	}
	for _, st := range s.Steps {
		if len(st.Samples) > 0 {
			out = append(out, st)
		}
	}
	return out
}

// flatCostTarget compares the gateway's CPU per request at an axis's largest step with its
// smallest. The issue names 1,000,000; the services sweep stops at 10,000, its own largest step.
func (r *results) flatCostTarget(axis string) targetCheck {
	full := map[string]int64{"sweep-keys": 1_000_000, "sweep-revocations": 1_000_000, "sweep-services": 10_000}[axis]
	s := r.sweep(axis)
	title := strings.TrimPrefix(axis, "sweep-")
	t := fmt.Sprintf("flat cost over %s: gateway CPU per request at %s within 10%% of the smallest step's", title, num(float64(full)))
	steps := measuredSteps(s)
	if len(steps) < 2 {
		return notMeasured(t, "fewer than two steps measured")
	}
	first, last := steps[0], steps[len(steps)-1]
	ratio := last.Summary.ProxyCPUus.Median / first.Summary.ProxyCPUus.Median
	m := fmt.Sprintf("%.2f (%.1f µs at %s, %.1f µs at %s)", ratio, last.Summary.ProxyCPUus.Median, num(float64(last.Value)),
		first.Summary.ProxyCPUus.Median, num(float64(first.Value)))
	if last.Value < full {
		return targetCheck{Target: t, Measured: m, Verdict: "not measured: the largest step was " + num(float64(last.Value))}
	}
	return targetCheck{Target: t, Measured: m, Verdict: judge(ratio <= 1.10)}
}

// manyConnsTarget compares the gateway's CPU per request with HAProxy's at the connections sweep's
// largest step where both were measured (10,000 connections in a full run).
func (r *results) manyConnsTarget() targetCheck {
	t := "gateway CPU per request at 10,000 connections at most 1.3 times HAProxy's at the same count"
	steps := measuredSteps(r.sweep("sweep-connections"))
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		if st.HAProxy == nil || st.HAProxy.ProxyCPUus.Median <= 0 {
			continue
		}
		ratio := st.Summary.ProxyCPUus.Median / st.HAProxy.ProxyCPUus.Median
		m := fmt.Sprintf("%.2f (%.1f µs against %.1f µs, %s connections)", ratio, st.Summary.ProxyCPUus.Median, st.HAProxy.ProxyCPUus.Median, num(float64(st.Value)))
		if st.Value < 10000 {
			return targetCheck{Target: t, Measured: m, Verdict: "not measured: the largest step with HAProxy has fewer than 10,000 connections"}
		}
		return targetCheck{Target: t, Measured: m, Verdict: judge(ratio <= 1.3)}
	}
	return notMeasured(t, "the connections sweep did not measure HAProxy")
}

// idleConnTarget reads the memory per idle connection at the largest connections step.
func (r *results) idleConnTarget() targetCheck {
	t := "memory per idle connection at most 12 KB"
	steps := measuredSteps(r.sweep("sweep-connections"))
	if len(steps) == 0 {
		return notMeasured(t, "the connections sweep did not run")
	}
	last := steps[len(steps)-1] // the most connections: the least noise per connection
	return targetCheck{Target: t, Verdict: judge(last.IdleConnBytes <= 12<<10),
		Measured: fmt.Sprintf("%.1f KB per connection with %s idle connections", last.IdleConnBytes/1024, num(float64(last.Value)))}
}

// bodyTarget reads how much more the gateway's memory grew with the largest bodies than with the
// smallest: the smallest step's growth is the buffers any request needs, the rest is what the
// body itself costs (nothing much, when it is streamed).
func (r *results) bodyTarget() targetCheck {
	t := "a 10 MB body through with gateway memory growth under 2 MB beyond the buffers"
	steps := measuredSteps(r.sweep("sweep-body"))
	if len(steps) < 2 {
		return notMeasured(t, "the body sweep measured fewer than two steps")
	}
	first, last := steps[0], steps[len(steps)-1]
	growth := func(st *sweepStep) float64 { return float64(st.RSSPeakKB-st.RSSStartKB) * 1024 }
	beyond := growth(last) - growth(first)
	m := fmt.Sprintf("%s MB beyond the buffers: peak over the gateway as started %s MB with %s MB bodies, %s MB with %s KB bodies; one connection",
		mb(beyond), mb(growth(last)), mb(float64(last.Value)), mb(growth(first)), num(float64(first.Value)/1024))
	if last.Value < 10<<20 {
		return targetCheck{Target: t, Measured: m, Verdict: "not measured: the largest step was " + mb(float64(last.Value)) + " MB"}
	}
	return targetCheck{Target: t, Measured: m, Verdict: judge(beyond < 2<<20)}
}

func mb(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }

// grpcHTTPPeer is the HTTP/1.1 row the gRPC gateway's CPU is held against: set up as the gRPC
// gateway is (key auth, the embedded store, tracing off, GOMAXPROCS=1).
const grpcHTTPPeer = "scoregate key"

// measuredRow finds a measured row by peer, or nil.
func measuredRow(rows []*row, peer string) *row {
	for _, rw := range rows {
		if rw.Peer == peer && len(rw.Samples) > 0 {
			return rw
		}
	}
	return nil
}

// grpcUnaryRows are the unary gRPC rows the targets are judged on, direct and through the gateway:
// ghz's, or the grpc-go client's when the ghz rows did not run; client names which.
func (r *results) grpcUnaryRows() (direct, gateway *row, client string) {
	g := r.GRPC
	if g == nil || g.Status != statusOK {
		return nil, nil, ""
	}
	if d, gw := measuredRow(g.Ghz, ghzUnaryDirect), measuredRow(g.Ghz, ghzUnaryGateway); d != nil && gw != nil {
		return d, gw, "ghz"
	}
	if d, gw := measuredRow(g.Rows, targetDirect), measuredRow(g.Rows, targetGateway); d != nil && gw != nil {
		return d, gw, "the grpc-go client; the ghz rows did not run"
	}
	return nil, nil, ""
}

// grpcThroughputTarget compares unary calls through the gateway with direct ones.
func (r *results) grpcThroughputTarget() targetCheck {
	t := "gRPC unary (ModelInfer) throughput through the gateway at least 0.5 of direct (closed loop)"
	d, gw, client := r.grpcUnaryRows()
	if d == nil {
		return notMeasured(t, "the unary gRPC rows were not measured")
	}
	ratio := gw.Summary.RPS.Median / d.Summary.RPS.Median
	m := fmt.Sprintf("%.2f (%s calls/s against %s calls/s, %s)", ratio, num(gw.Summary.RPS.Median), num(d.Summary.RPS.Median), client)
	if g := r.GRPC; client == "ghz" {
		if d2, gw2 := measuredRow(g.Rows, targetDirect), measuredRow(g.Rows, targetGateway); d2 != nil && gw2 != nil {
			m += fmt.Sprintf("; the grpc-go client saw %.2f", gw2.Summary.RPS.Median/d2.Summary.RPS.Median)
		}
	}
	return targetCheck{Target: t, Measured: m, Verdict: judge(ratio >= 0.5)}
}

// grpcCPUTarget compares the gateway's CPU per unary gRPC call with its CPU per HTTP/1.1 request,
// both from this run.
func (r *results) grpcCPUTarget() targetCheck {
	t := "gateway CPU per gRPC unary call at most 2 times the HTTP/1.1 path's per request (" + grpcHTTPPeer + ", " + targetProfile + " profile, closed loop)"
	_, gw, client := r.grpcUnaryRows()
	if gw == nil {
		return notMeasured(t, "the unary gRPC rows were not measured")
	}
	h1, ok := r.closedSummary(grpcHTTPPeer)
	if !ok || h1.ProxyCPUus.Median <= 0 {
		return notMeasured(t, "the HTTP/1.1 "+grpcHTTPPeer+" row was not measured in this run")
	}
	ratio := gw.Summary.ProxyCPUus.Median / h1.ProxyCPUus.Median
	return targetCheck{Target: t, Verdict: judge(ratio <= 2),
		Measured: fmt.Sprintf("%.2f (%.1f µs per call, %s, against %.1f µs per request)", ratio, gw.Summary.ProxyCPUus.Median, client, h1.ProxyCPUus.Median)}
}

// streamDelayTarget reads the p99 delay of streamed messages through the gateway.
func (r *results) streamDelayTarget() targetCheck {
	t := "server-streaming: each message reaches the client within 1 ms of the model sending it (p99, through the gateway, paced streams)"
	g := r.GRPC
	if g == nil || g.Status != statusOK {
		return notMeasured(t, "the gRPC rows were not measured")
	}
	gw := measuredRow(g.StreamDelay, streamDelayGateway)
	if gw == nil {
		return notMeasured(t, "the stream delay rows were not measured")
	}
	s := gw.Summary
	m := fmt.Sprintf("p99 %.3f ms, p50 %.3f ms", s.P99ms.Median, s.P50ms.Median)
	if d := measuredRow(g.StreamDelay, streamDelayDirect); d != nil {
		m += fmt.Sprintf(" (direct: p99 %.3f ms, p50 %.3f ms)", d.Summary.P99ms.Median, d.Summary.P50ms.Median)
	}
	return targetCheck{Target: t, Measured: m, Verdict: judge(s.P99ms.Median <= 1)}
}

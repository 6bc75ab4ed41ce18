package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// markdown renders the report: how it was run, the peers and their checks, the targets, the
// comparison tables, the sweeps and the plots. Every figure comes from r.
func (r *results) markdown(plots []plotFile) string {
	var b strings.Builder
	r.writeHeader(&b)
	r.writeMethod(&b)
	r.writePeers(&b)
	r.writeTargets(&b)
	for _, prof := range r.Settings.Profiles {
		r.writeClosed(&b, prof)
		for _, share := range r.Settings.OpenShares {
			r.writeOpen(&b, prof, share)
		}
	}
	r.writeGRPC(&b)
	r.writeSSE(&b)
	for _, s := range r.Sweeps {
		writeSweep(&b, s)
	}
	r.writeFailures(&b)
	writePlots(&b, plots)
	return b.String()
}

func (r *results) writeHeader(b *strings.Builder) {
	mode := "full run"
	if r.Settings.Quick {
		mode = "quick smoke run (-quick): short measurements and small sweep steps; it shows the harness works, its figures are not to be quoted"
	}
	fmt.Fprintf(b, "# scoregate bench report\n\n")
	fmt.Fprintf(b, "- **Run**: %s, %s to %s (%s)\n", mode, r.Started.Format(time.RFC3339), r.Finished.Format("15:04:05"),
		r.Finished.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(b, "- **Command**: `%s`\n", strings.TrimSpace("go run ./bench "+strings.Join(r.Settings.Args, " ")))
	if r.Interrupted {
		b.WriteString("- **Interrupted**: the run was stopped before its end; the rows and steps it did not reach are missing.\n")
	}
	if r.Settings.RaceDetector {
		b.WriteString("- **Built with the race detector**: the model, the floor and the load generators ran several times slower than they do; read nothing into the figures.\n")
	}
	m := r.Machine
	fmt.Fprintf(b, "- **Machine**: %s, %d cores, %s MB memory, Linux %s; load average %s at the start, %s at the end (other work on the machine shares the cores)\n",
		m.CPU, m.Cores, num(float64(m.MemoryKB)/1024), m.Kernel, m.LoadAvgStart, m.LoadAvgEnd)
	fmt.Fprintf(b, "- **Versions**: %s; gateway `%s`; %s; %s; %s; %s\n\n", m.Go, m.Gateway,
		orAbsent(m.HAProxy, "HAProxy absent"), orAbsent(m.Nginx, "nginx absent"), orAbsent(m.Wrk, "wrk absent"), orAbsent(m.Redis, "redis-server absent"))
}

func orAbsent(s, absent string) string {
	if s == "" {
		return absent
	}
	return s
}

func (r *results) writeMethod(b *strings.Builder) {
	s := r.Settings
	b.WriteString("## How it was measured\n\n")
	fmt.Fprintf(b, "- Everything on loopback. One model process serves every profile; every peer forwards `%s/<profile>` to it, stripping the prefix.\n", servicePrefix)
	for _, name := range s.Profiles {
		p := profileByName[name]
		fmt.Fprintf(b, "  - **%s**: %s.\n", p.name, p.describe)
	}
	b.WriteString("- **One worker each**: scoregate and the floor run with `GOMAXPROCS=1`, HAProxy with `nbthread 1`, nginx with `worker_processes 1` (its master's CPU is counted too). The model, the load generator and the telemetry sink are not limited; nothing is pinned to a core, so on a two-core machine they all compete with the proxy.\n")
	fmt.Fprintf(b, "- **Closed loop** (maximum throughput): %s with %d connections for %gs per measurement.\n", generatorName(s.ClosedLoadgen), s.Conns, s.ClosedSeconds)
	fmt.Fprintf(b, "- **Open loop** (latency at fixed rates): vegeta's constant pacer sets the schedule; a scheduler releases the requests due every %s tick (a timerfd: waking an idle process costs tens of µs of CPU on a small VM, so not once per request) to a pool of fasthttp connections (the rate × %s, %d to %d of them), opened before the measurement and kept from the warm-up, one request at a time on each. Latency runs from a request's intended send time, its tick, so that waiting for a free connection counts, and is recorded in an HDR histogram. %gs per measurement after a %s warm-up at the same rate, at %s of the reference peer's median closed-loop maximum (HAProxy's; the floor's when HAProxy was not measured).\n",
		openTick, openSenderWindow, openMinSenders, openMaxSenders, s.OpenSeconds, openWarmup, shareList(s.OpenShares))
	fmt.Fprintf(b, "- **Interleaved and repeated**: %d rounds; each round measures every peer once, starting one peer further each time; all closed-loop rounds come first, since they set the open-loop rates. Tables give the median and, in brackets, the minimum–maximum over the rounds.\n", s.Rounds)
	b.WriteString("- **CPU per request**: utime+stime from `/proc/<pid>/stat` (and its children) before and after a measurement, divided by the requests answered; the proxy and the model separately. The clock tick is 10 ms, so short measurements are coarse.\n")
	b.WriteString("- **Errors**: non-2xx answers, transport errors and timeouts seen by the load generator.\n")
	b.WriteString("- **Checks**: before anything is measured, every peer must answer 401 without a credential and with a wrong one, and 200 with the model's answer with its own (peers without auth: 200). A peer that fails is reported as failed and not measured.\n")
	fmt.Fprintf(b, "- **Uncached tokens**: `tokens.cache_entries: 1` (at most one cached token per shard) and %d distinct tokens sent in turn, each wrk thread its own share.\n", s.TokenPool)
	fmt.Fprintf(b, "- **Telemetry tiers** export over OTLP/HTTP to a discarding sink the harness runs; over the run it received %s export requests (%s MB).\n\n",
		num(float64(r.Sink.Requests)), mb(float64(r.Sink.Bytes)))
	for _, ref := range r.References {
		if ref.Peer == "" {
			fmt.Fprintf(b, "- Open-loop reference, %s profile: none measured, so no open-loop rows.\n", ref.Profile)
			continue
		}
		fmt.Fprintf(b, "- Open-loop reference, %s profile: %s at %s r/s.\n", ref.Profile, ref.Peer, num(ref.RPS))
	}
	b.WriteString("\n")
}

func generatorName(g string) string {
	if g == "wrk" {
		return "wrk"
	}
	return "the built-in fasthttp generator (wrk is not installed)"
}

func shareList(shares []float64) string {
	var parts []string
	for _, s := range shares {
		parts = append(parts, fmt.Sprintf("%g%%", 100*s))
	}
	return strings.Join(parts, " and ")
}

func (r *results) writePeers(b *strings.Builder) {
	b.WriteString("## Peers\n\n| peer | status | check | what |\n|---|---|---|---|\n")
	for _, p := range r.Peers {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", p.Name, p.Status, cell(p.Detail), cell(p.Note))
	}
	b.WriteString("\n")
}

func (r *results) writeTargets(b *strings.Builder) {
	b.WriteString("## Performance targets against this run\n\n")
	if r.Settings.Quick || r.Settings.RaceDetector {
		b.WriteString("This was not a full run; the verdicts below only show that each is computed.\n\n")
	}
	b.WriteString("| target | measured | verdict |\n|---|---|---|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(b, "| %s | %s | %s |\n", cell(t.Target), cell(t.Measured), cell(t.Verdict))
	}
	b.WriteString("\n")
}

// writeClosed writes the closed-loop table of a profile, with ratios to HAProxy.
func (r *results) writeClosed(b *strings.Builder, prof string) {
	if len(r.rowsOf(prof, modeClosed, 0)) == 0 {
		return
	}
	fmt.Fprintf(b, "## Closed loop, %s profile: maximum throughput\n\n", prof)
	hp, hasHP := r.closedSummaryOf(prof, "haproxy")
	b.WriteString("| peer | requests/s | × HAProxy | proxy CPU µs/request | × HAProxy | model CPU µs/request | generator CPU µs/request | proxy CPU % of a core | p50 ms | p99 ms | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, rw := range r.rowsOf(prof, modeClosed, 0) {
		s := rw.Summary
		tput, cpu := "–", "–"
		if hasHP && hp.RPS.Median > 0 {
			tput = fmt.Sprintf("%.2f", s.RPS.Median/hp.RPS.Median)
		}
		if hasHP && hp.ProxyCPUus.Median > 0 && s.ProxyCPUus.N > 0 && s.ProxyCPUus.Median > 0 {
			cpu = fmt.Sprintf("%.2f", s.ProxyCPUus.Median/hp.ProxyCPUus.Median)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Peer,
			cellStat(s.RPS, 0), tput, cpuCell(s.ProxyCPUus), cpu, cellStat(s.UpstreamCPUus, 1), cellStat(s.GeneratorCPUus, 1),
			proxyPercent(rw), cellStat(s.P50ms, 2), cellStat(s.P99ms, 2), errCell(s))
	}
	b.WriteString("\n")
}

// writeOpen writes the open-loop table of a profile at one share of the reference's maximum.
func (r *results) writeOpen(b *strings.Builder, prof string, share float64) {
	rows := r.rowsOf(prof, modeOpen, share)
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "## Open loop, %s profile, %g%% of the reference maximum (%s r/s)\n\n", prof, 100*share, num(float64(rows[0].Rate)))
	up := r.row(prof, "upstream alone", modeOpen, share)
	b.WriteString("| peer | achieved r/s | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | proxy CPU µs/request | generator CPU µs/request | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	short := false
	for _, rw := range rows {
		s := rw.Summary
		add50, add99 := "–", "–"
		if up != nil && up.Summary.P50ms.N > 0 && rw.Peer != up.Peer && s.P50ms.N > 0 {
			add50 = fmt.Sprintf("%.3f", s.P50ms.Median-up.Summary.P50ms.Median)
			add99 = fmt.Sprintf("%.3f", s.P99ms.Median-up.Summary.P99ms.Median)
		}
		mark := ""
		if s.RPS.N > 0 && shortOfRate(rw) != "" {
			mark, short = " †", true
		}
		fmt.Fprintf(b, "| %s%s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", rw.Peer, mark, cellStat(s.RPS, 0),
			cellStat(s.P50ms, 3), cellStat(s.P90ms, 3), cellStat(s.P99ms, 3), cellStat(s.P999ms, 3), add50, add99,
			cpuCell(s.ProxyCPUus), cellStat(s.GeneratorCPUus, 1), errCell(s))
	}
	b.WriteString("\n")
	if short {
		b.WriteString("† Fell more than 5% short of the asked rate: the machine (proxy, model and load generator on the same cores) could not carry it, so these latencies are an overloaded machine's, queueing included, rather than the peer's at that rate.\n\n")
	}
}

// writeSweep writes a sweep's table, each step's CPU per request also as a multiple of the first
// step's.
func writeSweep(b *strings.Builder, s *sweepResult) {
	fmt.Fprintf(b, "## Sweep: %s\n\n%s. A fresh gateway per step; the steps are measured interleaved. RSS started: once listening, before any request; idle: after the check and the warm-up; peak: the high-water mark at the end.\n\n", s.Title, s.Note)
	withHAProxy := slices.ContainsFunc(s.Steps, func(st *sweepStep) bool { return st.HAProxy != nil })
	hpHead, hpRule := "", ""
	if withHAProxy {
		hpHead, hpRule = " HAProxy requests/s | HAProxy CPU µs/request | gateway CPU × HAProxy |", "---|---|---|"
	}
	b.WriteString("| " + s.Unit + " | load connections | requests/s | gateway CPU µs/request | × first step |" + hpHead + " p99 ms | RSS started MB | RSS idle MB | RSS peak MB | idle connection KB | errors | set-up s | check |\n")
	b.WriteString("|---|---|---|---|---|" + hpRule + "---|---|---|---|---|---|---|---|\n")
	var base float64
	for _, st := range s.Steps {
		if st.Failure != "" && len(st.Samples) == 0 {
			fmt.Fprintf(b, "| %s | %d | failed: %s | | |%s | | | | | | %.1f | |\n", num(float64(st.Value)), st.Conns, cell(st.Failure),
				strings.Repeat(" |", strings.Count(hpRule, "|")), st.SetupSeconds)
			continue
		}
		sm := st.Summary
		if base == 0 {
			base = sm.ProxyCPUus.Median
		}
		ratio := "–"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", sm.ProxyCPUus.Median/base)
		}
		hpCells := ""
		if withHAProxy {
			hpCells = " – | – | – |"
			if hp := st.HAProxy; hp != nil && hp.ProxyCPUus.Median > 0 {
				hpCells = fmt.Sprintf(" %s | %s | %.2f |", cellStat(hp.RPS, 0), cpuCell(hp.ProxyCPUus), sm.ProxyCPUus.Median/hp.ProxyCPUus.Median)
			}
		}
		idle := "–"
		if st.IdleConnBytes != 0 {
			idle = fmt.Sprintf("%.1f", st.IdleConnBytes/1024)
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s |%s %s | %.1f | %.1f | %.1f | %s | %s | %.1f | %s |\n", num(float64(st.Value)), st.Conns,
			cellStat(sm.RPS, 0), cpuCell(sm.ProxyCPUus), ratio, hpCells, cellStat(sm.P99ms, 2), float64(st.RSSStartKB)/1024, float64(st.RSSIdleKB)/1024,
			float64(st.RSSPeakKB)/1024, idle, errCell(sm), st.SetupSeconds, okMark(st))
	}
	b.WriteString("\n")
}

func okMark(st *sweepStep) string {
	if st.Failure != "" {
		return "failed: " + cell(st.Failure)
	}
	if st.Check != "" {
		return "401/200 ok"
	}
	return ""
}

func (r *results) writeFailures(b *strings.Builder) {
	var lines []string
	for _, rw := range r.Rows {
		for _, f := range rw.Failures {
			lines = append(lines, fmt.Sprintf("- %s, %s, %s: %s", rw.Profile, rw.Peer, rw.Mode, f))
		}
		for _, s := range rw.Samples {
			if s.FirstError != "" {
				lines = append(lines, fmt.Sprintf("- %s, %s, %s: %d errors, the first: %s", rw.Profile, rw.Peer, rw.Mode, s.Errors, s.FirstError))
			}
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("## Measurement failures and errors\n\n" + strings.Join(lines, "\n") + "\n\n")
}

func writePlots(b *strings.Builder, plots []plotFile) {
	if len(plots) == 0 {
		return
	}
	b.WriteString("## Plots\n\n")
	for _, p := range plots {
		fmt.Fprintf(b, "### %s\n\n![%s](%s)\n\n", p.title, p.title, p.name)
	}
}

// rowsOf lists a profile's rows of one mode and share, in the order the peers were started.
func (r *results) rowsOf(prof, mode string, share float64) []*row {
	var out []*row
	for _, p := range r.Peers {
		if rw := r.row(prof, p.Name, mode, share); rw != nil {
			out = append(out, rw)
		}
	}
	return out
}

func (r *results) closedSummaryOf(prof, peer string) (summary, bool) {
	rw := r.row(prof, peer, modeClosed, 0)
	if rw == nil || len(rw.Samples) == 0 {
		return summary{}, false
	}
	return rw.Summary, true
}

// cellStat writes "median [min–max]" with the given decimals.
func cellStat(s stat, decimals int) string {
	if s.N == 0 {
		return "–"
	}
	f := func(v float64) string {
		if decimals == 0 {
			return num(v)
		}
		return strconv.FormatFloat(v, 'f', decimals, 64)
	}
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s [%s–%s]", f(s.Median), f(s.Min), f(s.Max))
}

// cpuCell is a CPU-per-request stat, or a dash where there is no proxy process.
func cpuCell(s stat) string {
	if s.N == 0 || (s.Median == 0 && s.Max == 0) {
		return "–"
	}
	return cellStat(s, 1)
}

func proxyPercent(rw *row) string {
	v := field(rw.Samples, func(s sample) float64 { return s.ProxyCPUPercent })
	st := newStat(v)
	if st.N == 0 || st.Max == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", st.Median)
}

func errCell(s summary) string {
	if s.Errors == 0 {
		return "0"
	}
	return fmt.Sprintf("**%s** of %s", num(float64(s.Errors)), num(float64(s.Requests)))
}

// num writes v rounded, with thousands separators.
func num(v float64) string {
	n := int64(math.Round(v))
	s := strconv.FormatInt(max(n, -n), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if n < 0 {
		return "-" + string(out)
	}
	return string(out)
}

// cell makes text safe in a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

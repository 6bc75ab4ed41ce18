package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

// clusterResults is everything the cluster run measured; cluster.json is this, whole.
type clusterResults struct {
	Started     time.Time       `json:"started"`
	Finished    time.Time       `json:"finished"`
	Settings    clusterSettings `json:"settings"`
	Machine     machine         `json:"machine"`
	Cluster     clusterDesc     `json:"cluster"`
	Instances   []instanceDesc  `json:"instances"`
	Credentials credentialsDesc `json:"credentials"`
	Steady      *steadyResult   `json:"steady,omitempty"`
	Burst       *burstResult    `json:"revocationBurst,omitempty"`
	Cut         *cutResult      `json:"pubsubCut,omitempty"`
	Kill        *killResult     `json:"masterKill,omitempty"`
	Checks      []clusterCheck  `json:"checks"`
	// Failures says why a phase could not run (the later ones then did not either).
	Failures    []string `json:"failures,omitempty"`
	Interrupted bool     `json:"interrupted,omitempty"`
}

type clusterSettings struct {
	Quick                 bool     `json:"quick"`
	Instances             int      `json:"instances"`
	Rate                  int      `json:"rate"`
	SteadySeconds         float64  `json:"steadySeconds"`
	StoredRevocations     int      `json:"storedRevocations"`
	BurstTokens           int      `json:"burstTokens"`
	CutTokens             int      `json:"cutTokens"`
	OutageSeconds         float64  `json:"outageSeconds"`
	ProbeEveryMs          float64  `json:"probeEveryMs"`
	ProbeBoundSeconds     float64  `json:"probeBoundSeconds"`
	StalenessBoundSeconds float64  `json:"stalenessBoundSeconds"`
	ResyncIntervalSeconds float64  `json:"resyncIntervalSeconds"`
	RedisTimeoutMs        float64  `json:"redisTimeoutMs"`
	ClusterNodeTimeoutMs  int64    `json:"clusterNodeTimeoutMs"`
	RaceDetector          bool     `json:"raceDetector"`
	Args                  []string `json:"args"`
}

type clusterDesc struct {
	Nodes     []nodeDesc `json:"nodes"`
	StoreSlot int        `json:"storeSlot"` // CLUSTER KEYSLOT of the store's keys
	StoreNode string     `json:"storeNode"` // the master serving it
}

type nodeDesc struct {
	Addr       string `json:"addr"`
	ID         string `json:"id"`
	Slots      int    `json:"slots"`
	SlotRanges string `json:"slotRanges"`
	HoldsStore bool   `json:"holdsStore"`
}

type instanceDesc struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Data  string `json:"data"`
	Admin string `json:"admin"` // also serves /metrics
	// At the end of the run: resident memory, and the full reloads since start, by reason.
	RSSKBEnd   int64            `json:"rssKbEnd"`
	ReloadsEnd map[string]int64 `json:"fullReloadsEnd"`
}

type credentialsDesc struct {
	KeyServices      int `json:"keyServices"`
	Keys             int `json:"keys"`
	TokenServices    int `json:"tokenServices"`
	Principals       int `json:"principals"`
	Tokens           int `json:"tokens"`
	PerKeyRate       int `json:"perKeyRate"`
	PerPrincipalRate int `json:"perPrincipalRate"`
}

type steadyResult struct {
	Seconds      float64      `json:"seconds"`
	AskedRate    int          `json:"askedRate"`
	AchievedRate float64      `json:"achievedRate"`
	Statuses     statusCounts `json:"statuses"`
	P50ms        float64      `json:"p50Ms"`
	P99ms        float64      `json:"p99Ms"`
	Masters      []masterLoad `json:"masters"`
	// BusiestToLeast is the busiest master's commands/s over the least busy one's; nil when the
	// least busy did none.
	BusiestToLeast *float64       `json:"busiestToLeast"`
	Instances      []instanceLoad `json:"instances"`
	TotalRSSKB     int64          `json:"totalRssKb"`
	Log            []logCount     `json:"log"`
}

type masterLoad struct {
	Addr       string  `json:"addr"`
	ID         string  `json:"id"`
	HoldsStore bool    `json:"holdsStore"`
	Commands   int64   `json:"commands"` // total_commands_processed over the phase, less the harness's own
	Harness    int64   `json:"harnessCommands"`
	Publishes  int64   `json:"publishCalls"` // PUBLISH and SPUBLISH commands received (from clients, not over the cluster bus)
	PerSecond  float64 `json:"perSecond"`
	// InBytesPerSecond and OutBytesPerSecond are total_net_input_bytes and
	// total_net_output_bytes over the phase (the harness's INFO included, the cluster bus not).
	InBytesPerSecond  float64        `json:"inBytesPerSecond"`
	OutBytesPerSecond float64        `json:"outBytesPerSecond"`
	Top               []commandCount `json:"topCommands"` // INFO commandstats calls over the phase (the harness's INFO included)
}

type commandCount struct {
	Command string `json:"command"`
	Calls   int64  `json:"calls"`
}

type instanceLoad struct {
	Name            string           `json:"name"`
	Requests        int64            `json:"requests"`
	Failed          int64            `json:"failed"`
	CPUusPerRequest float64          `json:"cpuUsPerRequest"`
	RSSKB           int64            `json:"rssKb"`
	Reloads         map[string]int64 `json:"fullReloads"` // since start, at the end of the phase
}

// setRatio computes BusiestToLeast.
func (s *steadyResult) setRatio() {
	if len(s.Masters) == 0 {
		return
	}
	hi, lo := s.Masters[0].PerSecond, s.Masters[0].PerSecond
	for _, m := range s.Masters {
		hi, lo = max(hi, m.PerSecond), min(lo, m.PerSecond)
	}
	if lo > 0 {
		v := hi / lo
		s.BusiestToLeast = &v
	}
}

type reloadDelta struct {
	Instance string           `json:"instance"`
	ByReason map[string]int64 `json:"byReason"`
}

func (d reloadDelta) total() int64 { return sumReloads(d.ByReason) }

func (d reloadDelta) String() string {
	if len(d.ByReason) == 0 {
		return "none"
	}
	var parts []string
	for _, why := range authn.ReloadReasons {
		if n := d.ByReason[why]; n != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", why, n))
		}
	}
	return strings.Join(parts, ", ")
}

// propagation is how long revocations took to reach the instances, over every (revocation,
// instance) pair: from the admin call's return to the first probe answered 401.
type propagation struct {
	Pairs              int     `json:"pairs"`
	Refused            int     `json:"refused"`
	P50ms              float64 `json:"p50Ms"`
	P99ms              float64 `json:"p99Ms"`
	MaxMs              float64 `json:"maxMs"`
	StillAccepted      int     `json:"stillAcceptedAfterBound"`
	FirstStillAccepted string  `json:"firstStillAccepted,omitempty"`
}

type revokeOutcome struct {
	Revoked     int         `json:"revoked"`
	Errors      int         `json:"revokeErrors"`
	FirstError  string      `json:"firstRevokeError,omitempty"`
	PerSecond   float64     `json:"revocationsPerSecond"`
	AdminP50ms  float64     `json:"adminP50Ms"`
	AdminP99ms  float64     `json:"adminP99Ms"`
	Propagation propagation `json:"propagation"`
	// Masters is each master's load over the revocations.
	Masters []masterLoad `json:"masters"`
	results [][]probeResult
}

type burstResult struct {
	Stored                  int     `json:"storedRevocations"`
	StoreSeconds            float64 `json:"storeSeconds"`
	ReloadSeconds           float64 `json:"reloadStartedEverywhereSeconds"`
	CanaryRefusedEverywhere bool    `json:"canaryRefusedEverywhere"`
	Tokens                  int     `json:"tokens"`
	MintSeconds             float64 `json:"mintSeconds"`
	NotAcceptedBefore       int     `json:"notAcceptedBeforeRevocation"`
	FirstNotAccepted        string  `json:"firstNotAccepted,omitempty"`
	revokeOutcome
	BurstSeconds float64       `json:"burstSeconds"`
	Reloads      []reloadDelta `json:"fullReloadsDuring"`
	Load         statusCounts  `json:"load"`
	Log          []logCount    `json:"log"`
}

type cutResult struct {
	Tokens                int              `json:"tokens"`
	CutAfter              int              `json:"cutAfterRevocations"`
	CutAtSeconds          float64          `json:"cutAtSeconds"`
	ClientsKilled         map[string]int64 `json:"clientsKilled"`
	NotAcceptedBefore     int              `json:"notAcceptedBeforeRevocation"`
	FirstNotAccepted      string           `json:"firstNotAccepted,omitempty"`
	ReconnectedEverywhere bool             `json:"reconnectedEverywhere"`
	revokeOutcome
	Reloads            []reloadDelta `json:"fullReloadsDuring"`
	RevokedChecked     int           `json:"revokedTokensChecked"`
	CheckedAfter       int           `json:"pairsCheckedAfter"`
	AcceptedAfter      int           `json:"acceptedAfter"`
	FirstAcceptedAfter string        `json:"firstAcceptedAfter,omitempty"`
	Load               statusCounts  `json:"load"`
	Log                []logCount    `json:"log"`
}

type killResult struct {
	Victim                nodeDesc         `json:"victim"`
	StoreNode             string           `json:"storeNode"`
	StoreSlot             int              `json:"storeSlot"`
	OutageSeconds         float64          `json:"outageSeconds"`
	StalenessBoundSeconds float64          `json:"stalenessBoundSeconds"`
	ClusterFailAfterKill  *float64         `json:"clusterFailSeenAfterKillSeconds"`
	OthersOKAfterRestart  float64          `json:"othersOkAfterRestartSeconds"`  // the masters that stayed up
	ClusterOKAfterRestart float64          `json:"clusterOkAfterRestartSeconds"` // every master
	ClusterOKAtSeconds    float64          `json:"clusterOkAfterKillSeconds"`
	DownSeconds           float64          `json:"downSeconds"`
	Load                  statusCounts     `json:"load"`
	Unauthorized          int64            `json:"unauthorized401"`
	First503AfterKill     *float64         `json:"first503AfterKillSeconds"`
	SucceedingAfterOK     *float64         `json:"succeedingAfterClusterOkSeconds"` // the slowest instance
	NotRecovered          int              `json:"instancesNotRecovered"`
	Instances             []killInstance   `json:"instances"`
	Timeline              []timelineBucket `json:"timeline"`
	Log                   []logCount       `json:"log"`
}

type killInstance struct {
	Name              string   `json:"name"`
	First503AfterKill *float64 `json:"first503AfterKillSeconds"`
	// SucceedingAfterOK is when, after cluster_state:ok, its first success after its last
	// failure was due; negative when that was before the cluster was whole.
	SucceedingAfterOK *float64 `json:"succeedingAfterClusterOkSeconds"`
	Recovery          string   `json:"recovery,omitempty"`
}

type timelineBucket struct {
	FromSeconds float64 `json:"fromSeconds"` // from the kill
	OK          int64   `json:"ok"`
	S401        int64   `json:"unauthorized401"`
	S503        int64   `json:"unavailable503"`
	Other       int64   `json:"other"`
}

// logCount is a kind of line the instances logged during a phase.
type logCount struct {
	Line      string `json:"line"` // level, message and error, addresses and numbers left out
	Count     int    `json:"count"`
	Instances int    `json:"instances"` // how many instances logged it
}

// writeLog lists the most frequent lines the instances logged during a phase.
func writeLog(b *strings.Builder, ls []logCount) {
	if len(ls) == 0 {
		b.WriteString("The instances logged nothing at WARN or above during the phase.\n\n")
		return
	}
	b.WriteString("What the instances logged (WARN and above) during the phase, alike lines together:\n\n")
	for i, l := range ls {
		if i == 8 {
			fmt.Fprintf(b, "- and %d other kinds of line\n", len(ls)-i)
			break
		}
		fmt.Fprintf(b, "- %d× on %d instances: `%s`\n", l.Count, l.Instances, strings.ReplaceAll(l.Line, "`", "'"))
	}
	b.WriteString("\n")
}

type clusterCheck struct {
	Check    string `json:"check"`
	Measured string `json:"measured"`
	Verdict  string `json:"verdict"`
}

func newClusterResults(o options, started time.Time) *clusterResults {
	c := o.cluster
	return &clusterResults{Started: started, Settings: clusterSettings{
		Quick: o.quick, Instances: c.instances, Rate: c.rate, SteadySeconds: c.duration.Seconds(),
		StoredRevocations: c.stored, BurstTokens: c.burst, CutTokens: c.cutBurst, OutageSeconds: c.outage.Seconds(),
		ProbeEveryMs: float64(probeEvery) / float64(time.Millisecond), ProbeBoundSeconds: probeBound.Seconds(),
		StalenessBoundSeconds: config.DefaultStalenessBound.Seconds(), ResyncIntervalSeconds: config.DefaultResyncInterval.Seconds(),
		RedisTimeoutMs: float64(config.DefaultRedisTimeout) / float64(time.Millisecond), ClusterNodeTimeoutMs: clusterNodeTimeout.Milliseconds(),
		RaceDetector: raceEnabled, Args: o.args,
	}}
}

// finish stamps the end and judges the checks.
func (r *clusterResults) finish() {
	r.Finished = time.Now()
	r.Machine.LoadAvgEnd = loadAvg()
	r.Checks = r.judge()
}

// judge holds the run's numbers against the cluster run's acceptance criteria. It judges
// nothing it did not measure.
func (r *clusterResults) judge() []clusterCheck {
	var out []clusterCheck
	add := func(check string, measured bool, why, got string, ok bool) {
		c := clusterCheck{Check: check, Measured: got}
		switch {
		case !measured:
			c.Verdict = "not measured: " + why
		case ok:
			c.Verdict = verdictMet
		default:
			c.Verdict = verdictMissed
		}
		out = append(out, c)
	}
	notRun := "the phase did not run"
	if s := r.Steady; s != nil && len(s.Masters) > 0 {
		hi, lo := s.Masters[0], s.Masters[0]
		for _, m := range s.Masters {
			if m.PerSecond > hi.PerSecond {
				hi = m
			}
			if m.PerSecond < lo.PerSecond {
				lo = m
			}
		}
		got := fmt.Sprintf("busiest %s commands/s (%s), least busy %s (%s)", perSec(hi.PerSecond), hi.Addr, perSec(lo.PerSecond), lo.Addr)
		ok := s.BusiestToLeast != nil && *s.BusiestToLeast <= 2
		if s.BusiestToLeast != nil {
			got += fmt.Sprintf(": ratio %.2f", *s.BusiestToLeast)
		} else {
			got += ": ratio unbounded"
		}
		add("steady load: busiest master's commands/s at most 2.0 × the least busy one's", true, "", got, ok)
	} else {
		add("steady load: busiest master's commands/s at most 2.0 × the least busy one's", false, notRun, "", false)
	}
	if b := r.Burst; b != nil && b.Revoked > 0 {
		var moved []string
		for _, d := range b.Reloads {
			if d.total() != 0 {
				moved = append(moved, d.Instance+": "+d.String())
			}
		}
		got := "none on any instance"
		if len(moved) > 0 {
			got = strings.Join(moved, "; ")
		}
		add("revocation burst: no full reload on any instance", true, "", got, len(moved) == 0)
		p := b.Propagation
		add("revocation burst: propagation p99 under 10 ms", p.Refused > 0, "no revocation was seen refused",
			fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms over %s pairs", p.P50ms, p.P99ms, p.MaxMs, num(float64(p.Refused))), p.P99ms < 10)
		add(fmt.Sprintf("revocation burst: every revoked token refused by every instance within %s", probeBound), true, "",
			fmt.Sprintf("%d of %s pairs still accepted", p.StillAccepted, num(float64(p.Pairs))), p.StillAccepted == 0)
	} else {
		add("revocation burst: no full reload on any instance", false, notRun, "", false)
		add("revocation burst: propagation p99 under 10 ms", false, notRun, "", false)
	}
	if c := r.Cut; c != nil && c.Revoked > 0 && len(c.Reloads) > 0 {
		var off []string
		for _, d := range c.Reloads {
			if d.total() != 1 {
				off = append(off, d.Instance+": "+d.String())
			}
		}
		got := fmt.Sprintf("one on each of the %d instances", len(c.Reloads))
		if len(off) > 0 {
			got = fmt.Sprintf("%d of %d instances otherwise: %s", len(off), len(c.Reloads), strings.Join(off, "; "))
		}
		add("pub/sub cut: exactly one full reload per instance", true, "", got, len(off) == 0)
		add("pub/sub cut: no revoked token accepted afterwards", c.CheckedAfter > 0, "nothing checked",
			fmt.Sprintf("%d of %s (token, instance) pairs accepted, over the %s tokens revoked in both bursts", c.AcceptedAfter, num(float64(c.CheckedAfter)), num(float64(c.RevokedChecked))),
			c.AcceptedAfter == 0)
	} else {
		add("pub/sub cut: exactly one full reload per instance", false, notRun, "", false)
		add("pub/sub cut: no revoked token accepted afterwards", false, notRun, "", false)
	}
	if k := r.Kill; k != nil && k.Load.Sent > 0 {
		add("master kill: no 401 for a valid credential", true, "",
			fmt.Sprintf("%d 401s in %s requests", k.Unauthorized, num(float64(k.Load.Sent))), k.Unauthorized == 0)
		got := "no request failed"
		ok := k.NotRecovered == 0
		switch {
		case k.NotRecovered > 0:
			got = fmt.Sprintf("%d instances still failing at the end", k.NotRecovered)
		case k.SucceedingAfterOK != nil:
			got = fmt.Sprintf("the slowest instance %s cluster_state:ok", relSecs(k.SucceedingAfterOK))
			ok = *k.SucceedingAfterOK <= 5
		}
		add("master kill: requests succeed again within 5 s of cluster_state:ok", true, "", got, ok)
	} else {
		add("master kill: no 401 for a valid credential", false, notRun, "", false)
		add("master kill: requests succeed again within 5 s of cluster_state:ok", false, notRun, "", false)
	}
	return out
}

// write puts cluster.json and cluster.md in dir.
func (r *clusterResults) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cluster.md"), []byte(r.markdown()), 0o644)
}

// relSecs says how long after (or before) cluster_state:ok v is.
func relSecs(v *float64) string {
	switch {
	case v == nil:
		return "—"
	case *v < 0:
		return fmt.Sprintf("%.2f s before", -*v)
	}
	return fmt.Sprintf("%.2f s after", *v)
}

// perSec writes a rate: with a decimal under 100, so that a master nearly idle does not read 0.
func perSec(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return num(v)
}

func fmtSecs(v *float64) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f s", *v)
}

func statusLine(s statusCounts) string {
	line := fmt.Sprintf("%s sent: %s 2xx, %s 401, %s 429, %s 503, %s other statuses, %s without an answer, %s dropped by the generator",
		num(float64(s.Sent)), num(float64(s.OK)), num(float64(s.S401)), num(float64(s.S429)), num(float64(s.S503)),
		num(float64(s.Other)), num(float64(s.Transport)), num(float64(s.Dropped)))
	if s.FirstOther != 0 {
		line += fmt.Sprintf(" (the first other status: %d)", s.FirstOther)
	}
	return line
}

func (r *clusterResults) markdown() string {
	var b strings.Builder
	st := r.Settings
	mode := "full run"
	if st.Quick {
		mode = "quick smoke run (-quick): few instances, a few seconds, small bursts; it shows the harness works, its figures are not to be quoted"
	}
	fmt.Fprintf(&b, "# scoregate on a Redis Cluster: scale run\n\n")
	fmt.Fprintf(&b, "- **Run**: %s, %s to %s (%s)\n", mode, r.Started.Format(time.RFC3339), r.Finished.Format("15:04:05"),
		r.Finished.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(&b, "- **Command**: `%s`\n", strings.TrimSpace("go run ./bench "+strings.Join(st.Args, " ")))
	if r.Interrupted {
		b.WriteString("- **Interrupted**: the run was stopped before its end.\n")
	}
	if st.RaceDetector {
		b.WriteString("- **Built with the race detector**: the harness (load generator, probes) ran several times slower; read nothing into the figures.\n")
	}
	m := r.Machine
	fmt.Fprintf(&b, "- **Machine**: %s, %d cores, %s MB memory, Linux %s; load average %s at the start, %s at the end; everything below shares these cores\n",
		m.CPU, m.Cores, num(float64(m.MemoryKB)/1024), m.Kernel, m.LoadAvgStart, m.LoadAvgEnd)
	fmt.Fprintf(&b, "- **Versions**: %s; gateway `%s`; %s\n\n", m.Go, m.Gateway, orAbsent(m.Redis, "redis-server absent"))

	fmt.Fprintf(&b, "## Set-up\n\n")
	fmt.Fprintf(&b, "A Redis Cluster of %d masters of the harness's own (no replicas, `--cluster-node-timeout %d`, no persistence), %d `gateway serve` instances (`GOMAXPROCS=1` each) with `store.redis_addrs` naming every node, the default `store.redis_prefix` (`%s`, slot %d, served by %s), `staleness_bound` %gs, `resync_interval` %gs, `redis_timeout` %g ms. ",
		len(r.Cluster.Nodes), st.ClusterNodeTimeoutMs, st.Instances, storePrefix, r.Cluster.StoreSlot, orAbsent(r.Cluster.StoreNode, "?"),
		st.StalenessBoundSeconds, st.ResyncIntervalSeconds, st.RedisTimeoutMs)
	cr := r.Credentials
	fmt.Fprintf(&b, "%d key-auth services (`rate_limit.per_key` %d/s) with a primary and a secondary key each, and a token-auth service `%s` (`rate_limit.per_principal` %d/s) with a token for each of %d principals: %d credentials in the steady load, which sends %s requests/s open loop, to the instances in turn and, on each, the credentials in turn.\n\n",
		cr.KeyServices, cr.PerKeyRate, clusterTokenService, cr.PerPrincipalRate, cr.Principals, cr.Keys+cr.Tokens, num(float64(st.Rate)))
	b.WriteString("| node | slots | holds the store |\n|---|---|---|\n")
	for _, n := range r.Cluster.Nodes {
		fmt.Fprintf(&b, "| %s | %s (%s) | %s |\n", n.Addr, num(float64(n.Slots)), n.SlotRanges, yesNo(n.HoldsStore))
	}
	b.WriteString("\n## Checks\n\n| check | measured | verdict |\n|---|---|---|\n")
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(c.Check), cell(c.Measured), cell(c.Verdict))
	}
	b.WriteString("\n")
	r.writeSteady(&b)
	r.writeBurst(&b)
	r.writeCut(&b)
	r.writeKill(&b)
	if len(r.Failures) > 0 {
		b.WriteString("## Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}

func reloadsText(m map[string]int64) string {
	d := reloadDelta{ByReason: map[string]int64{}}
	for k, v := range m {
		if v != 0 {
			d.ByReason[k] = v
		}
	}
	return d.String()
}

func (r *clusterResults) writeSteady(b *strings.Builder) {
	s := r.Steady
	if s == nil {
		return
	}
	fmt.Fprintf(b, "## Steady load\n\n%s s at %s requests/s asked, %s achieved. %s. Latency from each request's due time: p50 %.2f ms, p99 %.2f ms.\n\n",
		num(s.Seconds), num(float64(s.AskedRate)), num(s.AchievedRate), statusLine(s.Statuses), s.P50ms, s.P99ms)
	b.WriteString("Per master: `total_commands_processed` over the phase less the harness's own INFO calls (Redis counts the commands a script runs as well: the rate limiter's EVALSHA is four, with its TIME, GET and SET); the commands most called over the phase (INFO commandstats).\n\n")
	writeMasters(b, s.Masters, false)
	ratio := "unbounded (the least busy master processed no command)"
	if s.BusiestToLeast != nil {
		ratio = fmt.Sprintf("%.2f", *s.BusiestToLeast)
	}
	fmt.Fprintf(b, "\nBusiest over least busy: %s.\n\n", ratio)
	b.WriteString("| instance | requests | not 2xx | CPU µs/request | RSS | full reloads since start |\n|---|---|---|---|---|---|\n")
	for _, in := range s.Instances {
		fmt.Fprintf(b, "| %s | %s | %s | %.0f | %s MB | %s |\n", in.Name, num(float64(in.Requests)), num(float64(in.Failed)),
			in.CPUusPerRequest, fmt.Sprintf("%.1f", float64(in.RSSKB)/1024), reloadsText(in.Reloads))
	}
	fmt.Fprintf(b, "\nTotal RSS of the instances: %.1f MB.\n\n", float64(s.TotalRSSKB)/1024)
	writeLog(b, s.Log)
}

func writeRevoke(b *strings.Builder, o revokeOutcome) {
	fmt.Fprintf(b, "%d revoked (%d admin calls failed%s), %.0f revocations/s; admin call p50 %.2f ms, p99 %.2f ms. ",
		o.Revoked, o.Errors, firstErr(o.FirstError), o.PerSecond, o.AdminP50ms, o.AdminP99ms)
	p := o.Propagation
	fmt.Fprintf(b, "Propagation, from each admin call's return until each instance answered 401 (probed every %s, at most %s), over %s (revocation, instance) pairs: p50 **%.2f ms**, p99 **%.2f ms**, max %.2f ms; %d pairs still accepted at the bound%s.\n\n",
		probeEvery, probeBound, num(float64(p.Pairs)), p.P50ms, p.P99ms, p.MaxMs, p.StillAccepted, firstErr(p.FirstStillAccepted))
	if len(o.Masters) > 0 {
		b.WriteString("The masters over the revocations (a change notice is one SPUBLISH to the master of the store's slot, which sends it to the instances subscribed there; a PUBLISH, as before sharded notices, goes to any node and is passed to the others over the cluster bus):\n\n")
		writeMasters(b, o.Masters, true)
		b.WriteString("\n")
	}
}

// writeMasters writes the masters' load; with publishes, the PUBLISH calls each received.
func writeMasters(b *strings.Builder, ms []masterLoad, publishes bool) {
	if publishes {
		b.WriteString("| master | holds the store | commands/s | KB/s in | KB/s out | PUBLISH and SPUBLISH received | most called |\n|---|---|---|---|---|---|---|\n")
	} else {
		b.WriteString("| master | holds the store | commands/s | KB/s in | KB/s out | most called |\n|---|---|---|---|---|---|\n")
	}
	for _, m := range ms {
		var top []string
		for _, c := range m.Top {
			top = append(top, fmt.Sprintf("%s %s", c.Command, num(float64(c.Calls))))
		}
		pub := ""
		if publishes {
			pub = " " + num(float64(m.Publishes)) + " |"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %.1f |%s %s |\n", m.Addr, yesNo(m.HoldsStore), perSec(m.PerSecond),
			m.InBytesPerSecond/1000, m.OutBytesPerSecond/1000, pub, cell(strings.Join(top, ", ")))
	}
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return "; the first: " + s
}

func writeReloads(b *strings.Builder, ds []reloadDelta) {
	b.WriteString("| instance | full reloads during the phase |\n|---|---|\n")
	for _, d := range ds {
		fmt.Fprintf(b, "| %s | %s |\n", d.Instance, d.String())
	}
	b.WriteString("\n")
}

func (r *clusterResults) writeBurst(b *strings.Builder) {
	s := r.Burst
	if s == nil {
		return
	}
	fmt.Fprintf(b, "## Revocation burst\n\n%s revocations written straight into `%srevoked` (%.1f s), with the generation bumped without a notice: every instance began a full reload within %.2f s; a canary token revoked among them was refused by every instance: %s. Then %d tokens minted (%.1f s; %d (token, instance) pairs not accepted before revocation%s) and revoked one after the other through the instances' admin APIs in turn, under the steady load.\n\n",
		num(float64(s.Stored)), storePrefix, s.StoreSeconds, s.ReloadSeconds, yesNo(s.CanaryRefusedEverywhere), s.Tokens, s.MintSeconds, s.NotAcceptedBefore, firstErr(s.FirstNotAccepted))
	writeRevoke(b, s.revokeOutcome)
	writeReloads(b, s.Reloads)
	fmt.Fprintf(b, "Steady load over the phase: %s.\n\n", statusLine(s.Load))
	writeLog(b, s.Log)
}

func (r *clusterResults) writeCut(b *strings.Builder) {
	s := r.Cut
	if s == nil {
		return
	}
	var killed []string
	for _, a := range slices.Sorted(maps.Keys(s.ClientsKilled)) {
		killed = append(killed, fmt.Sprintf("%s %d", a, s.ClientsKilled[a]))
	}
	fmt.Fprintf(b, "## Pub/sub cut\n\n%d tokens minted (%d pairs not accepted before revocation%s) and revoked as above; after %d revocations, `CLIENT KILL TYPE pubsub` on every master (connections killed: %s). Every instance resubscribed: %s. ",
		s.Tokens, s.NotAcceptedBefore, firstErr(s.FirstNotAccepted), s.CutAfter, strings.Join(killed, ", "), yesNo(s.ReconnectedEverywhere))
	writeRevoke(b, s.revokeOutcome)
	writeReloads(b, s.Reloads)
	fmt.Fprintf(b, "Afterwards every token revoked in both bursts (%s) was sent to every instance: %d of %s pairs accepted%s.\n\n",
		num(float64(s.RevokedChecked)), s.AcceptedAfter, num(float64(s.CheckedAfter)), firstErr(s.FirstAcceptedAfter))
	fmt.Fprintf(b, "Steady load over the phase: %s.\n\n", statusLine(s.Load))
	writeLog(b, s.Log)
}

func (r *clusterResults) writeKill(b *strings.Builder) {
	k := r.Kill
	if k == nil {
		return
	}
	fmt.Fprintf(b, "## Master kill\n\nUnder the steady load, %s (slots %s; not the store's slot %d, which %s serves) was killed (SIGKILL) and restarted %gs later on the same port and folder (its nodes.conf: the same node, its data gone). The other masters saw `cluster_state:fail` %s after the kill; after the restart they said `cluster_state:ok` again within %.2f s, and every node, the restarted one included, within %.2f s (%.2f s after the kill). The stated staleness bound is %gs, counted from an instance's last successful check of the store.\n\n",
		k.Victim.Addr, k.Victim.SlotRanges, k.StoreSlot, k.StoreNode, k.OutageSeconds, fmtSecs(k.ClusterFailAfterKill), k.OthersOKAfterRestart, k.ClusterOKAfterRestart, k.ClusterOKAtSeconds, k.StalenessBoundSeconds)
	fmt.Fprintf(b, "From the kill to the end of the phase: %s. 401s: **%d**. The first 503 came %s after the kill. The slowest instance succeeded again %s `cluster_state:ok` on every node (a request's due time, from the first success after its instance's last failure).\n\n",
		statusLine(k.Load), k.Unauthorized, fmtSecs(k.First503AfterKill), relSecs(k.SucceedingAfterOK))
	b.WriteString("| instance | first 503 after the kill | succeeding again |\n|---|---|---|\n")
	for _, in := range k.Instances {
		rec := relSecs(in.SucceedingAfterOK)
		if in.Recovery != "" {
			rec = in.Recovery
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", in.Name, fmtSecs(in.First503AfterKill), rec)
	}
	b.WriteString("\nEvery half second from 2 s before the kill, by due time (0 is the kill):\n\n| from (s) | 2xx | 401 | 503 | other |\n|---|---|---|---|---|\n")
	for _, t := range k.Timeline {
		fmt.Fprintf(b, "| %.1f | %d | %d | %d | %d |\n", t.FromSeconds, t.OK, t.S401, t.S503, t.Other)
	}
	b.WriteString("\n")
	writeLog(b, k.Log)
}

// printSummary writes the checks and the main figures, short, to w.
func (r *clusterResults) printSummary(w io.Writer, dir string) {
	if w == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cluster run: %s\n", filepath.Join(dir, "cluster.md"))
	if s := r.Steady; s != nil {
		var per []string
		for _, m := range s.Masters {
			per = append(per, fmt.Sprintf("%s %s/s", m.Addr, perSec(m.PerSecond)))
		}
		fmt.Fprintf(&b, "  steady: %s r/s achieved, %d not 2xx; masters: %s; gateways' RSS %.0f MB in all\n",
			num(s.AchievedRate), s.Statuses.failed(), strings.Join(per, ", "), float64(s.TotalRSSKB)/1024)
	}
	if s := r.Burst; s != nil {
		fmt.Fprintf(&b, "  burst: %d revoked at %.0f/s; propagation p50 %.2f ms, p99 %.2f ms, max %.2f ms; %d still accepted\n",
			s.Revoked, s.PerSecond, s.Propagation.P50ms, s.Propagation.P99ms, s.Propagation.MaxMs, s.Propagation.StillAccepted)
	}
	if s := r.Kill; s != nil {
		fmt.Fprintf(&b, "  master kill: %d 401s, first 503 %s after the kill (staleness bound %gs), succeeding again %s cluster_state:ok\n",
			s.Unauthorized, fmtSecs(s.First503AfterKill), s.StalenessBoundSeconds, relSecs(s.SucceedingAfterOK))
	}
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "  [%s] %s: %s\n", c.Verdict, c.Check, c.Measured)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  FAILED: %s\n", f)
	}
	fmt.Fprint(w, b.String())
}

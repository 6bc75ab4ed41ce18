package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// results is everything a run measured; results.json is this, whole.
type results struct {
	Started    time.Time      `json:"started"`
	Finished   time.Time      `json:"finished"`
	Settings   settings       `json:"settings"`
	Machine    machine        `json:"machine"`
	Peers      []peerInfo     `json:"peers"`
	Rows       []*row         `json:"rows"`
	References []reference    `json:"references"`
	Sweeps     []*sweepResult `json:"sweeps"`
	GRPC       *grpcBench     `json:"grpc,omitempty"` // the gRPC rows, when run
	SSE        *sseBench      `json:"sse,omitempty"`  // the SSE rows, when run
	Sink       sinkStats      `json:"otlpSink"`
	Targets    []targetCheck  `json:"targets"`
	// Interrupted is set when the run was stopped before its end: what it holds was measured,
	// but rows and steps are missing.
	Interrupted bool `json:"interrupted,omitempty"`
}

type settings struct {
	Quick         bool      `json:"quick"`
	ClosedSeconds float64   `json:"closedLoopSeconds"`
	OpenSeconds   float64   `json:"openLoopSeconds"`
	Rounds        int       `json:"rounds"`
	SweepRounds   int       `json:"sweepRounds"`
	Conns         int       `json:"closedLoopConnections"`
	ClosedLoadgen string    `json:"closedLoopGenerator"`
	Profiles      []string  `json:"profiles"`
	TokenPool     int       `json:"uncachedTokenPool"`
	RaceDetector  bool      `json:"raceDetector"`
	OpenShares    []float64 `json:"openLoopShares"`
	Args          []string  `json:"args"`
}

type peerInfo struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Note   string `json:"note"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// row is the repeated measurement of one peer in one profile and mode.
type row struct {
	Profile  string   `json:"profile"`
	Peer     string   `json:"peer"`
	Mode     string   `json:"mode"`            // closed or open
	Share    float64  `json:"share,omitempty"` // open loop: share of the reference's maximum
	Rate     int      `json:"rate,omitempty"`  // open loop: requests a second asked for
	Samples  []sample `json:"samples"`
	Failures []string `json:"failures,omitempty"`
	Summary  summary  `json:"summary"`
}

// reference is the peer whose closed-loop maximum set a profile's open-loop rates.
type reference struct {
	Profile string  `json:"profile"`
	Peer    string  `json:"peer"`
	RPS     float64 `json:"rps"`
}

// sinkStats is what the telemetry sink received over the whole run.
type sinkStats struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

func newResults(o options) *results {
	loadgen := o.loadgen
	return &results{
		Started: time.Now(),
		Settings: settings{
			Quick: o.quick, ClosedSeconds: o.duration.Seconds(), OpenSeconds: o.openFor.Seconds(),
			Rounds: o.rounds, Conns: o.conns, ClosedLoadgen: loadgen, Profiles: o.profiles,
			TokenPool: o.tokenPool, RaceDetector: raceEnabled, OpenShares: o.shares, SweepRounds: o.sweepRounds, Args: o.args,
		},
	}
}

// row finds a row, or nil.
func (r *results) row(prof, peer, mode string, share float64) *row {
	for _, rw := range r.Rows {
		if rw.Profile == prof && rw.Peer == peer && rw.Mode == mode && rw.Share == share {
			return rw
		}
	}
	return nil
}

// reference returns the reference of a profile.
func (r *results) reference(prof string) reference {
	for _, ref := range r.References {
		if ref.Profile == prof {
			return ref
		}
	}
	return reference{Profile: prof}
}

func (r *results) setPeerStatus(name, status, detail string) {
	for i := range r.Peers {
		if r.Peers[i].Name == name {
			r.Peers[i].Status, r.Peers[i].Detail = status, detail
		}
	}
}

// finish computes the summaries and the target checks.
func (r *results) finish() {
	r.Finished = time.Now()
	r.Machine.LoadAvgEnd = loadAvg()
	for _, rw := range r.Rows {
		rw.Summary = summarize(rw.Samples)
	}
	for _, s := range r.Sweeps {
		for _, st := range s.Steps {
			st.Summary = summarize(st.Samples)
			if len(st.HAProxySamples) > 0 {
				hp := summarize(st.HAProxySamples)
				st.HAProxy = &hp
			}
		}
	}
	if r.GRPC != nil {
		for _, rw := range r.GRPC.allRows() {
			rw.Summary = summarize(rw.Samples)
		}
	}
	if r.SSE != nil {
		for _, rw := range r.SSE.Rows {
			rw.Summary = summarizeSSE(rw.Samples)
		}
	}
	r.Targets = r.checkTargets()
}

// write puts report.md, results.json and the plots in dir.
func (r *results) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	plots, err := r.plot(dir)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.markdown(plots)), 0o644)
}

// rerender rewrites a results folder from its results.json: the targets judged again, the report
// and the plots drawn again, so that a change to the report's form needs no new run. The measured
// numbers are the file's own, untouched.
func rerender(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	r.Targets = r.checkTargets()
	return r.write(dir)
}

// stat is the median and range of one number over the rounds.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// summary holds the stats of a row's samples.
type summary struct {
	RPS            stat  `json:"rps"`
	ProxyCPUus     stat  `json:"proxyCpuUsPerRequest"`
	UpstreamCPUus  stat  `json:"upstreamCpuUsPerRequest"`
	P50ms          stat  `json:"p50Ms"`
	P90ms          stat  `json:"p90Ms"`
	P99ms          stat  `json:"p99Ms"`
	P999ms         stat  `json:"p999Ms"`
	ProxyRSSKB     stat  `json:"proxyRssKb"`
	GeneratorCPUus stat  `json:"generatorCpuUsPerRequest"`
	Requests       int64 `json:"requests"`
	Errors         int64 `json:"errors"`
}

// summarize turns a row's samples into medians and ranges, and totals its requests and errors.
func summarize(ss []sample) summary {
	var out summary
	f := func(get func(sample) float64) stat { return newStat(field(ss, get)) }
	out.RPS = f(func(s sample) float64 { return s.RPS })
	out.ProxyCPUus = f(func(s sample) float64 { return s.ProxyCPUus })
	out.UpstreamCPUus = f(func(s sample) float64 { return s.UpstreamCPUus })
	out.P50ms = f(func(s sample) float64 { return s.P50ms })
	out.P90ms = f(func(s sample) float64 { return s.P90ms })
	out.P99ms = f(func(s sample) float64 { return s.P99ms })
	out.P999ms = f(func(s sample) float64 { return s.P999ms })
	out.ProxyRSSKB = f(func(s sample) float64 { return float64(s.ProxyRSSKB) })
	out.GeneratorCPUus = f(func(s sample) float64 { return s.GeneratorCPUus })
	for _, s := range ss {
		out.Requests += s.Requests
		out.Errors += s.Errors
	}
	return out
}

func field(ss []sample, get func(sample) float64) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = get(s)
	}
	return out
}

func newStat(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	return stat{Median: median(v), Min: slices.Min(v), Max: slices.Max(v), N: len(v)}
}

// median of v; the mean of the middle two for an even count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

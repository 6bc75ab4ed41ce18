package main

import (
	"context"
	"fmt"
	"math"
	"time"
)

// openWarmup is the unmeasured attack before each open-loop measurement, at the same rate, so that
// the open loop's connections exist, and are warm, before the clock starts.
const openWarmup = 150 * time.Millisecond

// Measurement modes.
const (
	modeClosed = "closed"
	modeOpen   = "open"
)

// livePeers are the peers that passed their check and still run.
func livePeers(peers []*peer) []*peer {
	var out []*peer
	for _, p := range peers {
		if p.status == statusOK {
			out = append(out, p)
		}
	}
	return out
}

// plan tells the progress line how much work lies ahead, in expected seconds.
func (h *harness) plan(peers []*peer) {
	n := float64(len(livePeers(peers)) * len(h.opts.profiles) * h.opts.rounds)
	h.progress.plan(n * (h.closedSeconds() + 0.1))
	h.progress.plan(n * float64(len(h.opts.shares)) * (h.opts.openFor + openWarmup).Seconds())
	h.progress.plan(float64(h.opts.rounds) * h.opts.grpcSeconds())
	if h.opts.selected(sseSelect) {
		h.progress.plan(float64(2*h.opts.rounds) * h.sseSeconds())
	}
	for _, a := range h.axes() {
		if h.opts.selected(a.name) {
			h.progress.plan(float64(len(a.steps)) * (a.setupGuess + float64(h.opts.sweepRounds)*h.closedSeconds()))
		}
	}
}

// closedSeconds is how long one closed-loop measurement lasts (wrk counts whole seconds).
func (h *harness) closedSeconds() float64 {
	if h.wrk != "" {
		return math.Ceil(h.opts.duration.Seconds())
	}
	return h.opts.duration.Seconds()
}

// compare measures every live peer: all closed-loop rounds first, then the open-loop rounds at
// rates set from the reference peer's median maximum.
func (h *harness) compare(ctx context.Context, peers []*peer) {
	rows := rowSet{res: h.res, rows: map[string]*row{}}
	h.closedRounds(ctx, peers, rows)
	for _, prof := range h.profiles() {
		h.res.References = append(h.res.References, h.reference(prof.name))
	}
	h.openRounds(ctx, peers, rows)
}

// rowSet finds or adds the row of a profile, peer, mode and share.
type rowSet struct {
	res  *results
	rows map[string]*row
}

func (s rowSet) get(prof, peer, mode string, share float64, rate int) *row {
	k := fmt.Sprintf("%s|%s|%s|%g", prof, peer, mode, share)
	if s.rows[k] == nil {
		s.rows[k] = &row{Profile: prof, Peer: peer, Mode: mode, Share: share, Rate: rate}
		s.res.Rows = append(s.res.Rows, s.rows[k])
	}
	return s.rows[k]
}

// inTurn lists the live peers for round r, starting r further along, so that no peer is always
// measured first (on a cold machine) or right after the same neighbour.
func inTurn(peers []*peer, r int) []*peer {
	live := livePeers(peers)
	out := make([]*peer, 0, len(live))
	for i := range live {
		out = append(out, live[(i+r)%len(live)])
	}
	return out
}

// closedRounds measures each peer's maximum throughput, rounds times, interleaved.
func (h *harness) closedRounds(ctx context.Context, peers []*peer, rows rowSet) {
	for r := range h.opts.rounds {
		for _, prof := range h.profiles() {
			for _, p := range inTurn(peers, r) {
				if ctx.Err() != nil {
					return
				}
				h.progress.step(fmt.Sprintf("round %d/%d, closed loop, %s: %s", r+1, h.opts.rounds, prof.name, p.name), h.closedSeconds()+0.1)
				s, err := h.measure(p.proc, h.generator(), func() (loadResult, error) {
					lr, _, err := h.closedLoop(ctx, p.target(prof), h.opts.conns, h.opts.duration)
					return lr, err
				})
				h.record(rows.get(prof.name, p.name, modeClosed, 0, 0), p, s, err)
			}
		}
	}
}

// openRounds measures each peer's latency at the fixed rates, rounds times, interleaved.
func (h *harness) openRounds(ctx context.Context, peers []*peer, rows rowSet) {
	for r := range h.opts.rounds {
		for _, prof := range h.profiles() {
			ref := h.res.reference(prof.name)
			for _, share := range h.opts.shares {
				rate := int(math.Round(share * ref.RPS))
				for _, p := range inTurn(peers, r) {
					if ctx.Err() != nil {
						return
					}
					h.progress.step(fmt.Sprintf("round %d/%d, open loop %d r/s, %s: %s", r+1, h.opts.rounds, rate, prof.name, p.name),
						(h.opts.openFor + openWarmup).Seconds())
					if rate < 1 {
						continue // no reference was measured
					}
					s, err := h.openMeasure(ctx, p, prof, rate)
					h.record(rows.get(prof.name, p.name, modeOpen, share, rate), p, s, err)
				}
			}
		}
	}
}

// openMeasure warms the open loop's connections at rate, then measures at rate.
func (h *harness) openMeasure(ctx context.Context, p *peer, prof profile, rate int) (sample, error) {
	ol := newOpenLoop(p.target(prof))
	defer ol.close()
	if _, err := ol.attack(ctx, rate, openWarmup); err != nil {
		return sample{}, err
	}
	s, err := h.measure(p.proc, "openloop", func() (loadResult, error) { return ol.attack(ctx, rate, h.opts.openFor) })
	s.TargetRate = rate
	return s, err
}

// generator names the closed-loop generator in use.
func (h *harness) generator() string {
	if h.wrk != "" {
		return "wrk"
	}
	return "builtin"
}

// record adds a sample to its row, or the reason it is missing; a peer whose process died is
// marked failed and measured no more.
func (h *harness) record(rw *row, p *peer, s sample, err error) {
	if err != nil {
		rw.Failures = append(rw.Failures, err.Error())
	} else {
		rw.Samples = append(rw.Samples, s)
	}
	if p.proc != nil && p.proc.exited() && p.status == statusOK {
		p.status, p.detail = statusFailed, fmt.Sprintf("exited during the run (%v): %s", p.proc.err, p.proc.tail())
		h.res.setPeerStatus(p.name, p.status, p.detail)
	}
}

// reference picks whose median closed-loop maximum sets the open-loop rates of a profile: HAProxy's,
// or the floor's when HAProxy was not measured.
func (h *harness) reference(prof string) reference {
	for _, name := range []string{"haproxy", "floor (fasthttp)", "upstream alone"} {
		rw := h.res.row(prof, name, modeClosed, 0)
		if rw == nil || len(rw.Samples) == 0 {
			continue
		}
		return reference{Profile: prof, Peer: name, RPS: median(field(rw.Samples, func(s sample) float64 { return s.RPS }))}
	}
	return reference{Profile: prof}
}

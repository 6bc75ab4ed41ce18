package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// sweepSteps are the sizes each scale sweep visits.
type sweepSteps struct {
	keys, revocations, services, conns, body []int64
}

func fullSweepSteps() sweepSteps {
	return sweepSteps{
		keys:        []int64{1, 1_000, 10_000, 100_000, 1_000_000},
		revocations: []int64{10, 1_000, 10_000, 100_000, 1_000_000},
		services:    []int64{1, 100, 1_000, 10_000},
		conns:       []int64{100, 1_000, 10_000},
		body:        []int64{1 << 10, 64 << 10, 1 << 20, 10 << 20},
	}
}

func quickSweepSteps() sweepSteps {
	return sweepSteps{
		keys:        []int64{1, 1_000},
		revocations: []int64{10, 1_000},
		services:    []int64{1, 100},
		conns:       []int64{100},
		body:        []int64{1 << 10, 1 << 20},
	}
}

// axis is one scale sweep: a fresh gateway per step, set up for that step's size.
type axis struct {
	name       string // matched by -only
	title      string
	unit       string
	steps      []int64
	setupGuess float64 // seconds to set one step up, for the progress line
	conns      func(step int64) int
	setup      func(ctx context.Context, step int64) (*sweepSUT, error)
	idleConns  bool // also measure the memory of step idle connections
	// haproxy: HAProxy is measured at every step too, right after the gateway, with the same
	// connections and profile.
	haproxy bool
	note    string
}

// sweepSUT is one step's gateway and what to send it.
type sweepSUT struct {
	gw      *gatewayInstance
	peer    *peer // for the check; its target is what the load sends
	prof    profile
	check   string
	startKB int64 // resident memory once started, before the check
}

// sweepResult is one axis's measurements.
type sweepResult struct {
	Axis  string       `json:"axis"`
	Title string       `json:"title"`
	Unit  string       `json:"unit"`
	Note  string       `json:"note"`
	Steps []*sweepStep `json:"steps"`
}

// sweepStep is one step: closed-loop samples and the gateway's memory.
type sweepStep struct {
	Value         int64    `json:"value"`
	Conns         int      `json:"connections"`
	Samples       []sample `json:"samples"`
	Summary       summary  `json:"summary"`
	RSSStartKB    int64    `json:"rssStartKb"`              // once started and loaded, before any request
	RSSIdleKB     int64    `json:"rssIdleKb"`               // after the check and the warm-up
	RSSPeakKB     int64    `json:"rssPeakKb"`               // high-water mark at the end of the step
	IdleConnBytes float64  `json:"idleConnBytes,omitempty"` // resident memory per idle connection
	// HAProxy's samples and summary at the same step, on axes that measure it.
	HAProxySamples []sample `json:"haproxySamples,omitempty"`
	HAProxy        *summary `json:"haproxy,omitempty"`
	SetupSeconds   float64  `json:"setupSeconds"`
	Check          string   `json:"check,omitempty"`
	Failure        string   `json:"failure,omitempty"`
}

// axes are the sweeps, in the order they run.
func (h *harness) axes() []axis {
	fixed := func(int64) int { return h.opts.conns }
	s := h.opts.sweepSteps
	return []axis{
		{name: "sweep-keys", title: "keys in the store", unit: "keys", steps: s.keys, setupGuess: 4, conns: fixed,
			setup: h.keysStep, note: "auth: key; the measured key plus keys of other services written into the embedded store"},
		{name: "sweep-revocations", title: "revoked tokens", unit: "revocations", steps: s.revocations, setupGuess: 5, conns: fixed,
			setup: h.revocationsStep, note: "auth: token, one cached token; the revocation list checked on every request"},
		{name: "sweep-services", title: "services in the configuration", unit: "services", steps: s.services, setupGuess: 2, conns: fixed,
			setup: h.servicesStep, note: "auth: key; the measured service is the first of the list"},
		{name: "sweep-connections", title: "concurrent connections", unit: "connections", steps: s.conns, setupGuess: 4,
			conns: func(n int64) int { return int(n) }, setup: h.plainKeyStep, idleConns: true, haproxy: true,
			note: "auth: key; the closed loop keeps that many connections busy; idle memory is measured with that many open idle keep-alive connections; HAProxy is measured at each step right after the gateway, with as many connections"},
		{name: "sweep-body", title: "request body size", unit: "bytes", steps: s.body, setupGuess: 2,
			conns: func(int64) int { return 1 }, setup: h.bodyStep,
			note: "auth: key; POST of that many bytes, the model answers its size; one connection. What a body costs in memory is its step's peak growth over the smallest step's"},
	}
}

// sweeps runs every selected axis after the comparison, each step on a fresh gateway.
func (h *harness) sweeps(ctx context.Context) {
	for _, a := range h.axes() {
		if h.opts.selected(a.name) && ctx.Err() == nil {
			h.res.Sweeps = append(h.res.Sweeps, h.sweepAxis(ctx, a))
		}
	}
}

// sweepAxis sets every step of an axis up (a gateway each), then measures them interleaved, as the
// comparison does: each round visits every step, starting one further each time, so that the
// machine's drift falls on all steps alike rather than on the last ones.
func (h *harness) sweepAxis(ctx context.Context, a axis) *sweepResult {
	res := &sweepResult{Axis: a.name, Title: a.title, Unit: a.unit, Note: a.note}
	suts := make([]*sweepSUT, len(a.steps))
	defer func() {
		for _, sut := range suts {
			if sut != nil {
				sut.gw.proc.stop()
				if !h.opts.keep {
					os.RemoveAll(sut.gw.dir)
				}
			}
		}
	}()
	for i, v := range a.steps {
		if ctx.Err() != nil {
			return res
		}
		st := &sweepStep{Value: v, Conns: a.conns(v)}
		res.Steps = append(res.Steps, st)
		suts[i] = h.prepareStep(ctx, a, st)
	}
	var hp *peer // HAProxy, on an axis that compares with it
	if a.haproxy && ctx.Err() == nil {
		if hp = h.haproxyPeer(ctx, "haproxy-"+a.name); hp.status != statusOK { // its own folder and log
			res.Note += "; HAProxy not measured: " + hp.detail
			hp = nil
		} else {
			defer hp.proc.stop()
		}
	}
	for r := range h.opts.sweepRounds {
		for i := range a.steps {
			j := (i + r) % len(a.steps)
			st := res.Steps[j]
			h.progress.step(fmt.Sprintf("%s %d: round %d/%d", a.name, st.Value, r+1, h.opts.sweepRounds), h.opts.duration.Seconds())
			if suts[j] == nil || ctx.Err() != nil {
				continue
			}
			s, err := h.measure(suts[j].gw.proc, h.generator(), func() (loadResult, error) {
				lr, _, err := h.closedLoop(ctx, suts[j].target(), st.Conns, h.opts.duration)
				return lr, err
			})
			if err != nil {
				st.Failure = err.Error()
				suts[j].gw.proc.stop()
				suts[j] = nil
				continue
			}
			st.Samples = append(st.Samples, s)
			if hp != nil {
				h.measureHAProxyStep(ctx, hp, suts[j].prof, st)
			}
		}
	}
	for i, sut := range suts {
		if sut != nil {
			res.Steps[i].RSSPeakKB = peakRSS(sut.gw.proc, res.Steps[i])
		}
	}
	return res
}

// measureHAProxyStep measures HAProxy with a step's connections and profile. A failure is noted
// in the step and does not fail it: the gateway's samples stand.
func (h *harness) measureHAProxyStep(ctx context.Context, hp *peer, prof profile, st *sweepStep) {
	s, err := h.measure(hp.proc, h.generator(), func() (loadResult, error) {
		lr, _, err := h.closedLoop(ctx, hp.target(prof), st.Conns, h.opts.duration)
		return lr, err
	})
	if err != nil {
		st.Failure = "HAProxy: " + err.Error()
		return
	}
	st.HAProxySamples = append(st.HAProxySamples, s)
}

// peakRSS is the largest resident size seen of a step's gateway: its high-water mark, or a reading
// taken along the way when that is larger (the kernel updates VmHWM lazily).
func peakRSS(p *process, st *sweepStep) int64 {
	u, _ := readUsage(p.pid())
	peak := max(u.hwmKB, u.rssKB, st.RSSIdleKB, st.RSSStartKB)
	for _, s := range st.Samples {
		peak = max(peak, s.ProxyRSSKB)
	}
	return peak
}

// prepareStep starts a step's gateway, checks it, warms it up and reads its idle memory (and, on
// the connections axis, the memory of idle connections). It returns nil, with the step's failure
// set, when any of that fails.
func (h *harness) prepareStep(ctx context.Context, a axis, st *sweepStep) *sweepSUT {
	h.progress.step(fmt.Sprintf("%s %d: setting up", a.name, st.Value), a.setupGuess)
	began := time.Now()
	sut, err := a.setup(ctx, st.Value)
	st.SetupSeconds = time.Since(began).Seconds()
	if err != nil {
		st.Failure = err.Error()
		return nil
	}
	st.Check, st.RSSStartKB = sut.check, sut.startKB
	fail := func(what string, err error) *sweepSUT {
		st.Failure = what + ": " + err.Error()
		sut.gw.proc.stop()
		return nil
	}
	if _, err := builtinClosedLoop(ctx, sut.target(), min(st.Conns, 64), h.opts.warmup); err != nil {
		return fail("warm-up", err)
	}
	u, err := readUsage(sut.gw.proc.pid())
	if err != nil {
		return fail("reading memory", err)
	}
	st.RSSIdleKB = u.rssKB
	if a.idleConns {
		if st.IdleConnBytes, err = idleConnBytes(ctx, sut.gw.proc, sut.gw.data, int(st.Value), sut.target()); err != nil {
			return fail("idle connections", err)
		}
	}
	return sut
}

// target is what the step's load sends.
func (s *sweepSUT) target() target { return s.peer.target(s.prof) }

// sweepGateway starts a key-mode gateway for a step, gives it a primary key (or uses key, when the
// store already holds it) and checks it with prof.
func (h *harness) sweepGateway(ctx context.Context, name string, services int, key string, prof profile) (*sweepSUT, error) {
	g, err := h.startGateway(ctx, gatewayConfig{name: name, auth: "key", services: services, env: h.telemetryEnv("")})
	if err != nil {
		return nil, err
	}
	if key == "" {
		if key, err = g.regenerateKey(ctx, "bench"); err != nil {
			g.proc.stop()
			return nil, err
		}
	}
	p := &peer{name: name, auth: true, base: "http://" + g.data + servicePrefix, creds: []string{"Bearer " + key}, wrong: wrongKey(), proc: g.proc}
	return h.checkSUT(ctx, g, p, prof)
}

// checkSUT reads a step's gateway's memory as started, then runs the peer check on it.
func (h *harness) checkSUT(ctx context.Context, g *gatewayInstance, p *peer, prof profile) (*sweepSUT, error) {
	u, err := readUsage(g.proc.pid())
	if err != nil {
		g.proc.stop()
		return nil, err
	}
	check, err := checkPeer(ctx, p, []profile{prof})
	if err != nil {
		g.proc.stop()
		return nil, fmt.Errorf("check: %w", err)
	}
	return &sweepSUT{gw: g, peer: p, prof: prof, check: check, startKB: u.rssKB}, nil
}

// stepName names a step's gateway (and so its scratch folder), fresh for each step.
func stepName(axis string, v int64) string { return fmt.Sprintf("%s-%d", axis, v) }

// keysStep fills the store with n keys, then starts a key-mode gateway on it.
func (h *harness) keysStep(ctx context.Context, n int64) (*sweepSUT, error) {
	name := stepName("sweep-keys", n)
	key, err := fillKeys(ctx, filepath.Join(h.tmp, name, "data"), n)
	if err != nil {
		return nil, err
	}
	return h.sweepGateway(ctx, name, 1, key, profileByName["fast"])
}

// servicesStep starts a gateway whose configuration names n key-mode services.
func (h *harness) servicesStep(ctx context.Context, n int64) (*sweepSUT, error) {
	return h.sweepGateway(ctx, stepName("sweep-services", n), int(n), "", profileByName["fast"])
}

// plainKeyStep starts a one-service key-mode gateway: the connections axis changes only the load.
func (h *harness) plainKeyStep(ctx context.Context, n int64) (*sweepSUT, error) {
	return h.sweepGateway(ctx, stepName("sweep-connections", n), 1, "", profileByName["fast"])
}

// bodyStep starts a one-service key-mode gateway and loads it with bodies of n bytes sent to the
// model's sink route.
func (h *harness) bodyStep(ctx context.Context, n int64) (*sweepSUT, error) {
	prof := profile{name: "body", path: sinkPath, contentType: "application/octet-stream", body: pattern(int(n)),
		wantInBody: fmt.Sprintf(`"bytes": %d`, n)}
	return h.sweepGateway(ctx, stepName("sweep-body", n), 1, "", prof)
}

// revocationsStep mints two tokens on a token-mode gateway, revokes the second through the admin
// API, stops it, adds n-1 revocations to its store, starts it again and checks that the first
// token is accepted and the revoked one refused.
func (h *harness) revocationsStep(ctx context.Context, n int64) (*sweepSUT, error) {
	name := stepName("sweep-revocations", n)
	c := gatewayConfig{name: name, auth: "token", env: h.telemetryEnv("")}
	g, err := h.startGateway(ctx, c)
	if err != nil {
		return nil, err
	}
	toks, err := g.mintTokens(ctx, "bench", 2)
	if err == nil {
		err = g.revokeToken(ctx, toks[1])
	}
	g.proc.stop()
	if err != nil {
		return nil, err
	}
	if err := fillRevocations(ctx, filepath.Join(g.dir, "data"), "scoregate", n-1, 1); err != nil {
		return nil, err
	}
	if g, err = h.startGateway(ctx, c); err != nil {
		return nil, err
	}
	p := &peer{name: name, auth: true, base: "http://" + g.data + servicePrefix, creds: []string{"Bearer " + toks[0]},
		wrong: "Bearer " + toks[1], proc: g.proc}
	return h.checkSUT(ctx, g, p, profileByName["fast"])
}

// idleConnBytes opens n keep-alive connections to addr, sends one request of t on each and leaves
// them idle, and returns the growth of the gateway's resident memory per connection.
func idleConnBytes(ctx context.Context, proc *process, addr string, n int, t target) (float64, error) {
	before, err := readUsage(proc.pid())
	if err != nil {
		return 0, err
	}
	raw := rawRequest(t)
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				c, err := oneRequest(ctx, addr, raw)
				mu.Lock()
				conns[i] = c
				if err != nil && first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return 0, first
	}
	time.Sleep(500 * time.Millisecond) // let the gateway finish with the last ones
	after, err := readUsage(proc.pid())
	if err != nil {
		return 0, err
	}
	return float64(after.rssKB-before.rssKB) * 1024 / float64(n), nil
}

// rawRequest is t as HTTP/1.1 bytes, with its first credential.
func rawRequest(t target) []byte {
	path := strings.TrimPrefix(t.url, "http://")
	host, path, _ := strings.Cut(path, "/")
	var b strings.Builder
	fmt.Fprintf(&b, "POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n", path, host, t.contentType, len(t.body))
	if len(t.creds) > 0 {
		fmt.Fprintf(&b, "Authorization: %s\r\n", t.creds[0])
	}
	b.WriteString("\r\n")
	b.Write(t.body)
	return []byte(b.String())
}

// oneRequest dials addr, sends raw, reads the whole answer and returns the open connection.
func oneRequest(ctx context.Context, addr string, raw []byte) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(raw); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("status %d on an idle-connection request", resp.StatusCode)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

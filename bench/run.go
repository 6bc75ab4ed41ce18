package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// harness is one run: its scratch folder, the shared helpers and every process it started.
type harness struct {
	opts         options
	tmp          string
	moduleDir    string
	self         string // this executable, for the helper roles
	gatewayBin   string
	wrk          string // wrk's path, "" for the built-in generator
	adminKey     string
	upstream     *process
	upstreamAddr string
	sinkAddr     string
	started      []*process
	progress     *progress
	res          *results
}

// run does the whole run and returns the results folder.
func run(ctx context.Context, opts options) (string, error) {
	h, err := newHarness(opts)
	if err != nil {
		return "", err
	}
	defer h.cleanup()
	out, err := h.resultsDir()
	if err != nil {
		return "", err
	}
	if err := h.prepare(ctx); err != nil {
		return "", err
	}
	peers := h.startPeers(ctx)
	h.plan(peers)
	h.compare(ctx, peers)
	for _, p := range peers {
		p.stop()
	}
	if ctx.Err() == nil && h.opts.grpcSelected() {
		h.grpcRows(ctx)
	}
	if ctx.Err() == nil && h.opts.selected(sseSelect) {
		h.sseRows(ctx)
	}
	if ctx.Err() == nil {
		h.sweeps(ctx)
	}
	h.progress.finish()
	h.res.Sink = h.sinkStats()
	h.res.Interrupted = ctx.Err() != nil
	h.res.finish()
	if err := h.res.write(out); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("interrupted; what was measured is in %s: %w", out, err)
	}
	return out, nil
}

func newHarness(opts options) (*harness, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	mod, err := moduleDir()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "scoregate-bench-")
	if err != nil {
		return nil, err
	}
	raiseFileLimit()
	h := &harness{opts: opts, tmp: tmp, moduleDir: mod, self: self, adminKey: newAdminKey(),
		progress: newProgress(opts.progressOut)}
	h.res = newResults(opts)
	return h, nil
}

// moduleDir finds the module's root from the working directory, for building the gateway and
// placing results.
func moduleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/scoregate/scoregate\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("run bench inside the scoregate module (no go.mod above %s)", dir)
		}
	}
}

// resultsDir makes bench/results/<timestamp>/ (or under -out).
func (h *harness) resultsDir() (string, error) {
	base := h.opts.out
	if base == "" {
		base = filepath.Join(h.moduleDir, "bench", "results")
	}
	dir := filepath.Join(base, h.res.Started.Format("2006-01-02T15-04-05"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// raiseFileLimit lifts the soft limit on open files to the hard one, for the 10,000-connection
// step; the children inherit it.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// cleanup stops every process the harness started, by pid, and removes the scratch folder.
func (h *harness) cleanup() {
	for i := len(h.started) - 1; i >= 0; i-- {
		h.started[i].stop()
	}
	if h.opts.keep {
		fmt.Fprintf(h.opts.progressOut, "scratch folder kept: %s\n", h.tmp)
		return
	}
	os.RemoveAll(h.tmp)
}

// start starts a process and remembers it for cleanup.
func (h *harness) start(name string, env []string, bin string, args ...string) (*process, error) {
	p, err := startProcess(h.tmp, name, env, bin, args...)
	if err != nil {
		return nil, err
	}
	h.started = append(h.started, p)
	return p, nil
}

// startSelf starts this executable in a helper role listening on addr.
func (h *harness) startSelf(name, role, addr string, env ...string) (*process, error) {
	env = append([]string{roleEnv + "=" + role, listenEnv + "=" + addr}, env...)
	return h.start(name, env, h.self)
}

// prepare finds the tools, builds the gateway and starts the model and the telemetry sink.
func (h *harness) prepare(ctx context.Context) error {
	h.progress.say("preparing: building the gateway, starting the model")
	if err := h.chooseLoadgen(); err != nil {
		return err
	}
	h.res.Machine = describeMachine(h.wrk)
	h.res.Settings.ClosedLoadgen = h.generator()
	if err := h.buildGateway(ctx); err != nil {
		return err
	}
	h.res.Machine.Gateway = commandVersion(h.gatewayBin, "version")
	var addrs []string
	var err error
	if err := h.startModel(ctx); err != nil {
		return err
	}
	_, addrs, err = startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		return h.startSelf("otlp-sink", roleSink, a[0])
	})
	if err != nil {
		return err
	}
	h.sinkAddr = addrs[0]
	return nil
}

// chooseLoadgen picks wrk or the built-in closed-loop generator.
func (h *harness) chooseLoadgen() error {
	path, found := lookBinary("wrk")
	switch {
	case h.opts.loadgen == "builtin":
	case found:
		h.wrk = path
	case h.opts.loadgen == "wrk":
		return errors.New("-loadgen wrk: wrk is not installed (apt-get install -y wrk)")
	}
	return nil
}

// launch starts a peer under name and, when it came up, checks and warms it (checkAndWarm).
func (h *harness) launch(ctx context.Context, name string, start func() *peer) *peer {
	p := start()
	p.name = name
	if p.status == statusOK {
		h.checkAndWarm(ctx, p)
	}
	return p
}

// startPeers starts every selected peer and checks each; a peer that fails its check is stopped
// and reported, never measured.
func (h *harness) startPeers(ctx context.Context) []*peer {
	var peers []*peer
	add := func(name string, start func() *peer) {
		if !h.opts.selected(name) || ctx.Err() != nil {
			return
		}
		h.progress.say("starting " + name)
		peers = append(peers, h.launch(ctx, name, start))
	}
	add("upstream alone", h.ceilingPeer)
	add("floor (fasthttp)", func() *peer { return h.floorPeer(ctx) })
	for _, t := range tiers {
		add(t.name, func() *peer { return h.gatewayPeer(ctx, t) })
	}
	add("haproxy", func() *peer { return h.haproxyPeer(ctx, "haproxy") })
	add("nginx", func() *peer { return h.nginxPeer(ctx) })
	for _, p := range peers {
		h.res.Peers = append(h.res.Peers, peerInfo{Name: p.name, Kind: p.kind, Note: p.note, Status: p.status, Detail: p.detail})
	}
	return peers
}

// checkAndWarm runs the 401/200 check on p, then a short load so that the first measurement does
// not pay for connection set-up and heap growth.
func (h *harness) checkAndWarm(ctx context.Context, p *peer) {
	profs := h.profiles()
	detail, err := checkPeer(ctx, p, profs)
	if err != nil {
		failed(p, fmt.Errorf("check: %w", err))
		return
	}
	p.detail = detail
	for _, prof := range profs {
		if _, err := builtinClosedLoop(ctx, p.target(prof), h.opts.conns, h.opts.warmup); err != nil {
			failed(p, fmt.Errorf("warm-up: %w", err))
			return
		}
	}
}

// profiles are the measured profiles, in order.
func (h *harness) profiles() []profile {
	var out []profile
	for _, name := range h.opts.profiles {
		out = append(out, profileByName[name])
	}
	return out
}

// commandVersion runs a version command and returns its first line.
func commandVersion(bin string, args ...string) string {
	out, _ := exec.Command(bin, args...).CombinedOutput() // wrk -v exits 1 after printing its version
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// startModel starts the harness's model on a free port: h.upstream, at h.upstreamAddr.
func (h *harness) startModel(ctx context.Context) error {
	proc, addrs, err := startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		return h.startSelf("model", roleUpstream, a[0])
	})
	if err != nil {
		return err
	}
	h.upstream, h.upstreamAddr = proc, addrs[0]
	return nil
}

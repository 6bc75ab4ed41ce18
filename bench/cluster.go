package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

// The cluster run (-cluster): scoregate instances sharing their state through a Redis Cluster
// of the harness's own, under a steady open-loop load, through a revocation burst, a cut of
// every pub/sub connection and the loss of a master. See bench/README.md.

// clusterOptions are the cluster run's flags.
type clusterOptions struct {
	enabled   bool
	instances int           // gateway instances
	rate      int           // steady load, requests a second over all instances
	duration  time.Duration // the steady phase
	stored    int           // revocations written straight into Redis before the burst
	burst     int           // tokens issued and revoked in the burst
	cutBurst  int           // tokens issued and revoked in the pub/sub cut phase
	outage    time.Duration // how long the killed master stays down
}

func defaultClusterOptions() clusterOptions {
	return clusterOptions{instances: 10, rate: 1000, duration: time.Minute, stored: 100000, burst: 1000, cutBurst: 300, outage: 10 * time.Second}
}

// quickCluster shrinks what the flags left at their defaults: three instances, a few seconds of
// load, small bursts; the outage stays long enough to pass the staleness bound.
func (c *clusterOptions) quickCluster(set map[string]bool) {
	if !set["instances"] {
		c.instances = 3
	}
	if !set["cluster-rate"] {
		c.rate = 300
	}
	if !set["cluster-duration"] {
		c.duration = 4 * time.Second
	}
	if !set["cluster-stored"] {
		c.stored = 1000
	}
	if !set["cluster-burst"] {
		c.burst = 20
	}
	if !set["cluster-cut-burst"] {
		c.cutBurst = 20
	}
}

func (c clusterOptions) validate() error {
	if c.instances < 1 || c.rate < 1 || c.duration <= 0 || c.stored < 0 || c.burst < 1 || c.cutBurst < 3 || c.outage <= 0 {
		return errors.New("-instances, -cluster-rate, -cluster-duration, -cluster-burst and -cluster-outage must be positive, -cluster-cut-burst at least 3")
	}
	return nil
}

// What the cluster run's gateways are given.
const (
	clusterKeyServices  = 30    // key-auth services, each with a primary and a secondary key in the load
	clusterPrincipals   = 10    // principals, each with a token for the token service in the load
	clusterTokenService = "tok" // the token-auth service: the load's principals' tokens and the revoked ones
	clusterPerKeyRate   = 1000  // rate_limit.per_key.requests_per_second of every key service
	clusterPerPrinRate  = 1000  // rate_limit.per_principal.requests_per_second of the token service
	// probeEvery spaces a revocation's probes of one instance: a probe is sent at most this
	// often (at once when the previous answer took longer).
	probeEvery = time.Millisecond
	// probeBound is how long a revoked token is probed before it counts as still accepted.
	probeBound = 2 * time.Second
	// storePrefix is the gateways' store.redis_prefix (the default): its hash tag puts every
	// key of the store in one slot.
	storePrefix = config.DefaultRedisPrefix
)

func clusterServicePath(service string) string { return "/api/v1/service/" + service + "/fast" }

// clusterRun is one cluster run.
type clusterRun struct {
	h       *harness
	o       clusterOptions
	res     *clusterResults
	cluster *redisCluster
	gws     []*gatewayInstance
	names   []string
	load    *clusterLoad
	poll    *poller
	creds   []clusterCred
	revoked []string // every token revoked in the bursts
}

// runCluster does the cluster run and returns its results folder.
func runCluster(ctx context.Context, opts options) (string, error) {
	h, err := newHarness(opts)
	if err != nil {
		return "", err
	}
	defer h.cleanup()
	out, err := h.resultsDir()
	if err != nil {
		return "", err
	}
	r := &clusterRun{h: h, o: opts.cluster, res: newClusterResults(opts, h.res.Started)}
	defer func() { r.cluster.close() }() // r.cluster is set by run
	err = r.run(ctx)
	r.stopGateways() // before Redis, so that their shutdown finds the cluster whole
	if err != nil && ctx.Err() == nil {
		r.res.Failures = append(r.res.Failures, err.Error())
	}
	h.progress.finish()
	r.res.Interrupted = ctx.Err() != nil
	r.res.finish()
	if werr := r.res.write(out); werr != nil {
		return "", werr
	}
	r.res.printSummary(h.opts.progressOut, out)
	if ctx.Err() != nil {
		return out, fmt.Errorf("interrupted; what was measured is in %s: %w", out, ctx.Err())
	}
	if err != nil {
		return out, fmt.Errorf("%w (what was measured is in %s)", err, out)
	}
	return out, nil
}

// run sets everything up and runs the phases in turn; a phase that cannot run ends the run.
func (r *clusterRun) run(ctx context.Context) error {
	h, o := r.h, r.o
	burstSecs := float64(o.stored)/20000 + float64(o.burst)/200 + 2
	cutSecs := float64(o.cutBurst)/200 + 6
	killSecs := o.outage.Seconds() + 12
	h.progress.plan(o.duration.Seconds() + burstSecs + cutSecs + killSecs)
	h.progress.say("preparing: building the gateway, starting the model")
	r.res.Machine = describeMachine("")
	if err := h.buildGateway(ctx); err != nil {
		return err
	}
	r.res.Machine.Gateway = commandVersion(h.gatewayBin, "version")
	if err := h.startModel(ctx); err != nil {
		return err
	}
	var err error

	h.progress.say("starting a Redis Cluster of 3 masters")
	if r.cluster, err = h.startRedisCluster(ctx, 3); err != nil {
		return fmt.Errorf("starting the Redis Cluster: %w", err)
	}
	if err := r.describeCluster(ctx); err != nil {
		return err
	}
	h.progress.say(fmt.Sprintf("starting %d gateway instances on the cluster", o.instances))
	if err := r.startGateways(ctx); err != nil {
		return err
	}
	h.progress.say("issuing keys and tokens")
	if err := r.credentials(ctx); err != nil {
		return err
	}
	r.poll = newPoller(r.dataAddrs())
	defer r.poll.close()
	if err := r.checkCredentials(ctx); err != nil {
		return err
	}

	r.load = startClusterLoad(r.dataAddrs(), r.creds, o.rate)
	defer r.load.stop()
	h.progress.step(fmt.Sprintf("steady load: %d requests/s over %d instances for %s", o.rate, o.instances, o.duration), o.duration.Seconds())
	if err := r.steady(ctx); err != nil {
		return fmt.Errorf("steady phase: %w", err)
	}
	h.progress.step(fmt.Sprintf("revocation burst: %s stored revocations, %d tokens revoked", num(float64(o.stored)), o.burst), burstSecs)
	if err := r.revocationBurst(ctx); err != nil {
		return fmt.Errorf("revocation burst: %w", err)
	}
	h.progress.step(fmt.Sprintf("pub/sub cut: %d tokens revoked, every pub/sub connection killed during it", o.cutBurst), cutSecs)
	if err := r.pubsubCut(ctx); err != nil {
		return fmt.Errorf("pub/sub cut: %w", err)
	}
	h.progress.step(fmt.Sprintf("master kill: a master without the store's slot down for %s", o.outage), killSecs)
	if err := r.masterKill(ctx); err != nil {
		return fmt.Errorf("master kill: %w", err)
	}
	r.load.stop()
	r.res.Instances = r.instanceDescs()
	for i, g := range r.gws {
		rss, _ := readMemory(g.proc.pid())
		r.res.Instances[i].RSSKBEnd = rss
		if rel, err := scrapeReloads(ctx, g.admin); err == nil {
			r.res.Instances[i].ReloadsEnd = rel
		}
	}
	return nil
}

// stopGateways stops every instance, all at once.
func (r *clusterRun) stopGateways() {
	var wg sync.WaitGroup
	for _, g := range r.gws {
		wg.Go(g.proc.stop)
	}
	wg.Wait()
}

func (r *clusterRun) dataAddrs() []string {
	var out []string
	for _, g := range r.gws {
		out = append(out, g.data)
	}
	return out
}

// describeCluster records the nodes, their slots and which holds the store's slot.
func (r *clusterRun) describeCluster(ctx context.Context) error {
	slot, err := r.cluster.keySlot(ctx, storePrefix+"gen")
	if err != nil {
		return fmt.Errorf("CLUSTER KEYSLOT: %w", err)
	}
	topo, err := r.cluster.topology(ctx)
	if err != nil {
		return fmt.Errorf("CLUSTER NODES: %w", err)
	}
	owner := topo.owner(slot)
	d := clusterDesc{StoreSlot: slot}
	for _, n := range r.cluster.nodes {
		count, ranges := topo.slots(n.id)
		nd := nodeDesc{Addr: n.addr, ID: n.id, Slots: count, SlotRanges: ranges, HoldsStore: n.id == owner}
		if nd.HoldsStore {
			d.StoreNode = n.addr
		}
		d.Nodes = append(d.Nodes, nd)
	}
	if d.StoreNode == "" {
		return fmt.Errorf("no master serves slot %d, the store's", slot)
	}
	r.res.Cluster = d
	return nil
}

// writeClusterGatewayConfig writes instance i's configuration: the Redis Cluster as its store,
// the key services and the token service, each with its rate limit.
func (r *clusterRun) writeClusterGatewayConfig(path, data, admin, dir string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\nadmin_listen: %q\ncompute_type: \"bench\"\n", data, admin)
	fmt.Fprintf(&b, "store:\n  dir: %q\n  redis_addrs:\n", filepath.Join(dir, "data"))
	for _, a := range r.cluster.addrs() {
		fmt.Fprintf(&b, "    - %q\n", a)
	}
	b.WriteString("log:\n  level: warn\nserver:\n  shutdown_timeout: 2s\n")
	b.WriteString("services:\n")
	for i := range clusterKeyServices {
		fmt.Fprintf(&b, "  - name: %s\n    auth: key\n    upstreams: [\"http://%s\"]\n", keyServiceName(i), r.h.upstreamAddr)
		fmt.Fprintf(&b, "    rate_limit:\n      per_key: {requests_per_second: %d, burst: %d}\n", clusterPerKeyRate, clusterPerKeyRate)
	}
	fmt.Fprintf(&b, "  - name: %s\n    auth: token\n    upstreams: [\"http://%s\"]\n", clusterTokenService, r.h.upstreamAddr)
	fmt.Fprintf(&b, "    rate_limit:\n      per_principal: {requests_per_second: %d, burst: %d}\n", clusterPerPrinRate, clusterPerPrinRate)
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func keyServiceName(i int) string { return fmt.Sprintf("key-%02d", i+1) }

// startGateways starts the instances one after the other (the first makes the store) with
// GOMAXPROCS=1 each, and waits until every one is ready.
func (r *clusterRun) startGateways(ctx context.Context) error {
	h := r.h
	for i := range r.o.instances {
		name := fmt.Sprintf("gateway-%02d", i+1)
		dir := filepath.Join(h.tmp, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		cfgPath := filepath.Join(dir, "gateway.yaml")
		env := append([]string{"GOMAXPROCS=1", "GATEWAY_ADMIN_KEY=" + h.adminKey}, h.telemetryEnv("")...)
		env = append(env, h.profileEnv(name)...)
		proc, addrs, err := startOnFreePorts(ctx, 2, 2*time.Minute, func(a []string) (*process, error) {
			if err := r.writeClusterGatewayConfig(cfgPath, a[1], a[0], dir); err != nil {
				return nil, err
			}
			return h.start(name, env, h.gatewayBin, "serve", "-config", cfgPath)
		})
		if err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		r.gws = append(r.gws, &gatewayInstance{proc: proc, data: addrs[1], admin: addrs[0], adminKey: h.adminKey, dir: dir})
		r.names = append(r.names, name)
	}
	for i, g := range r.gws {
		if err := waitReady(ctx, g, 60*time.Second); err != nil {
			return fmt.Errorf("%s: %w", r.names[i], err)
		}
	}
	r.res.Instances = r.instanceDescs()
	return nil
}

func (r *clusterRun) instanceDescs() []instanceDesc {
	out := r.res.Instances
	for i, g := range r.gws {
		if i >= len(out) {
			out = append(out, instanceDesc{Name: r.names[i], PID: g.proc.pid(), Data: g.data, Admin: g.admin})
		}
	}
	return out
}

// waitReady waits until the instance's /readyz answers 200.
func waitReady(ctx context.Context, g *gatewayInstance, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := http.Client{Timeout: 2 * time.Second}
	last := ""
	for {
		resp, err := c.Get("http://" + g.admin + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s %s", resp.Status, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if g.proc.exited() {
			return fmt.Errorf("exited (%v): %s", g.proc.err, g.proc.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %s; log: %s", timeout, last, g.proc.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// credentials gives the key services a primary and a secondary key each, and makes the
// principals, each with a token for the token service: the steady load's credentials.
func (r *clusterRun) credentials(ctx context.Context) error {
	g := r.gws[0]
	for i := range clusterKeyServices {
		svc := keyServiceName(i)
		for _, slot := range []string{"primary", "secondary"} {
			var out struct {
				Key string `json:"key"`
			}
			if err := g.adminPost(ctx, "/v1/services/"+svc+"/keys/"+slot+"/regenerate", nil, &out); err != nil {
				return err
			}
			if out.Key == "" {
				return errors.New("admin API answered no key")
			}
			r.creds = append(r.creds, clusterCred{path: clusterServicePath(svc), auth: "Bearer " + out.Key})
		}
	}
	for i := range clusterPrincipals {
		var p struct {
			Key string `json:"key"`
		}
		name := fmt.Sprintf("bench-caller-%02d", i+1)
		if err := g.adminPost(ctx, "/v1/principals", map[string]string{"name": name, "role": "reader"}, &p); err != nil {
			return err
		}
		// Through the instance that made the principal: the others learn of it a moment later.
		as := &gatewayInstance{admin: g.admin, adminKey: p.Key}
		toks, err := as.mintTokens(ctx, clusterTokenService, 1)
		if err != nil {
			return err
		}
		r.creds = append(r.creds, clusterCred{path: clusterServicePath(clusterTokenService), auth: "Bearer " + toks[0]})
	}
	r.res.Credentials = credentialsDesc{KeyServices: clusterKeyServices, Keys: 2 * clusterKeyServices, TokenServices: 1,
		Principals: clusterPrincipals, Tokens: clusterPrincipals, PerKeyRate: clusterPerKeyRate, PerPrincipalRate: clusterPerPrinRate}
	return nil
}

// checkCredentials waits (up to 10 s) until every instance accepts every credential of the load.
func (r *clusterRun) checkCredentials(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for i := range r.gws {
		for _, c := range r.creds {
			for {
				st := r.poll.status(i, c.path, c.auth)
				if st == http.StatusOK {
					break
				}
				if time.Now().After(deadline) || ctx.Err() != nil {
					return fmt.Errorf("%s does not accept a credential of the load on %s: status %d", r.names[i], c.path, st)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	return nil
}

// masterSnapshot is what INFO says of a master at one moment.
type masterSnapshot struct {
	total int64            // total_commands_processed
	in    int64            // total_net_input_bytes
	out   int64            // total_net_output_bytes
	calls map[string]int64 // commandstats calls
	own   int64            // the harness's commands sent to it before this INFO
}

func (r *clusterRun) snapshotMasters(ctx context.Context) ([]masterSnapshot, error) {
	var out []masterSnapshot
	for _, n := range r.cluster.nodes {
		own := n.own.Load()
		m, err := n.info(ctx, "stats", "commandstats")
		if err != nil {
			return nil, fmt.Errorf("%s: INFO: %w", n.addr, err)
		}
		s := masterSnapshot{own: own, calls: map[string]int64{}}
		s.total, _ = strconv.ParseInt(m["total_commands_processed"], 10, 64)
		s.in, _ = strconv.ParseInt(m["total_net_input_bytes"], 10, 64)
		s.out, _ = strconv.ParseInt(m["total_net_output_bytes"], 10, 64)
		for k, v := range m {
			cmd, ok := strings.CutPrefix(k, "cmdstat_")
			if !ok {
				continue
			}
			for f := range strings.SplitSeq(v, ",") {
				if c, ok := strings.CutPrefix(f, "calls="); ok {
					s.calls[cmd], _ = strconv.ParseInt(c, 10, 64)
				}
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// steady runs the steady load alone for the steady phase and measures the masters' load, the
// instances' CPU, memory and reload counters.
func (r *clusterRun) steady(ctx context.Context) error {
	warm := min(2*time.Second, r.o.duration/4)
	if err := sleepCtx(ctx, warm); err != nil {
		return err
	}
	before, err := r.snapshotMasters(ctx)
	if err != nil {
		return err
	}
	cpu0 := r.gatewayCPU()
	logs := r.logMark()
	from := r.load.now()
	if err := sleepCtx(ctx, r.o.duration); err != nil {
		return err
	}
	to := r.load.now()
	after, err := r.snapshotMasters(ctx)
	if err != nil {
		return err
	}
	cpu1 := r.gatewayCPU()
	secs := (to - from).Seconds()
	st := &steadyResult{Seconds: secs, AskedRate: r.o.rate}
	// The answers of the last hits come after the window closes.
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	recs := r.load.window(from, to)
	st.Statuses = countStatuses(recs)
	st.AchievedRate = float64(st.Statuses.Sent) / secs
	st.P50ms, st.P99ms = latencies(recs)
	st.Masters = r.masterLoads(before, after, secs)
	st.setRatio()
	perInst := make([]statusCounts, len(r.gws))
	for _, rec := range recs {
		perInst[rec.inst].add(rec)
	}
	for i, g := range r.gws {
		il := instanceLoad{Name: r.names[i], Requests: perInst[i].Sent, Failed: perInst[i].failed()}
		il.RSSKB, _ = readMemory(g.proc.pid())
		st.TotalRSSKB += il.RSSKB
		if perInst[i].Sent > 0 && cpu0[i] >= 0 && cpu1[i] >= 0 {
			il.CPUusPerRequest = float64((cpu1[i]-cpu0[i])/time.Microsecond) / float64(perInst[i].Sent)
		}
		rel, err := scrapeReloads(ctx, g.admin)
		if err != nil {
			return fmt.Errorf("%s: %w", r.names[i], err)
		}
		il.Reloads = rel
		st.Instances = append(st.Instances, il)
	}
	st.Log = r.logSince(logs)
	r.res.Steady = st
	return nil
}

// masterLoads is what each master processed between two snapshots secs apart: its commands
// less the harness's own, and the commands most called.
func (r *clusterRun) masterLoads(before, after []masterSnapshot, secs float64) []masterLoad {
	var out []masterLoad
	for i, n := range r.cluster.nodes {
		b, a := before[i], after[i]
		own := a.own - b.own
		ml := masterLoad{Addr: n.addr, ID: n.id, HoldsStore: r.res.Cluster.Nodes[i].HoldsStore, Harness: own,
			Commands: a.total - b.total - own, Publishes: a.calls["publish"] - b.calls["publish"] + a.calls["spublish"] - b.calls["spublish"]}
		ml.PerSecond = float64(ml.Commands) / secs
		ml.InBytesPerSecond = float64(a.in-b.in) / secs
		ml.OutBytesPerSecond = float64(a.out-b.out) / secs
		for cmd, calls := range a.calls {
			if d := calls - b.calls[cmd]; d > 0 {
				ml.Top = append(ml.Top, commandCount{Command: cmd, Calls: d})
			}
		}
		sort.Slice(ml.Top, func(i, j int) bool {
			if ml.Top[i].Calls != ml.Top[j].Calls {
				return ml.Top[i].Calls > ml.Top[j].Calls
			}
			return ml.Top[i].Command < ml.Top[j].Command
		})
		if len(ml.Top) > 5 {
			ml.Top = ml.Top[:5]
		}
		out = append(out, ml)
	}
	return out
}

// revokeMeasured is revokeAll with the masters' load over it.
func (r *clusterRun) revokeMeasured(ctx context.Context, toks []string, before func(i int)) (revokeOutcome, error) {
	b, err := r.snapshotMasters(ctx)
	if err != nil {
		return revokeOutcome{}, err
	}
	t0 := time.Now()
	out, err := r.revokeAll(ctx, toks, before)
	if err != nil {
		return out, err
	}
	secs := time.Since(t0).Seconds()
	a, err := r.snapshotMasters(ctx)
	if err != nil {
		return out, err
	}
	out.Masters = r.masterLoads(b, a, secs)
	return out, nil
}

// gatewayCPU reads every instance's CPU time (-1 where unreadable).
func (r *clusterRun) gatewayCPU() []time.Duration {
	out := make([]time.Duration, len(r.gws))
	for i, g := range r.gws {
		c, err := readCPU(g.proc.pid())
		if err != nil {
			c = -1
		}
		out[i] = c
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// scrapeReloads reads scoregate_shared_state_full_reloads_total, by reason, from an instance's
// /metrics (on its admin listener).
func scrapeReloads(ctx context.Context, admin string) (map[string]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out, err := parseReloads(resp.Body)
	if err == nil && len(out) == 0 {
		err = errors.New("/metrics has no scoregate_shared_state_full_reloads_total")
	}
	return out, err
}

// parseReloads reads the full-reload counters from Prometheus text: one line per reason,
// `scoregate_shared_state_full_reloads_total{...,reason="check",...} 3`.
func parseReloads(rd io.Reader) (map[string]int64, error) {
	const name = "scoregate_shared_state_full_reloads_total{"
	out := map[string]int64{}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		labels, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		_, reason, ok := strings.Cut(labels, `reason="`)
		if !ok {
			continue
		}
		reason, _, _ = strings.Cut(reason, `"`)
		f, err := strconv.ParseFloat(strings.Fields(val)[0], 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics: %q: %w", line, err)
		}
		out[reason] += int64(f)
	}
	return out, sc.Err()
}

// scrapeAll reads every instance's reload counters.
func (r *clusterRun) scrapeAll(ctx context.Context) ([]map[string]int64, error) {
	out := make([]map[string]int64, len(r.gws))
	for i, g := range r.gws {
		m, err := scrapeReloads(ctx, g.admin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.names[i], err)
		}
		out[i] = m
	}
	return out, nil
}

// reloadDeltas is what moved between two scrapes, per instance, reasons that did not move left out.
func (r *clusterRun) reloadDeltas(before, after []map[string]int64) []reloadDelta {
	var out []reloadDelta
	for i := range r.gws {
		d := reloadDelta{Instance: r.names[i], ByReason: map[string]int64{}}
		for _, why := range authn.ReloadReasons {
			if n := after[i][why] - before[i][why]; n != 0 {
				d.ByReason[why] = n
			}
		}
		out = append(out, d)
	}
	return out
}

func sumReloads(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// jwtClaims reads a token's iss, jti and exp, without checking it.
func jwtClaims(tok string) (iss, jti string, exp int64, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", "", 0, errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", "", 0, err
	}
	var c struct {
		Iss string `json:"iss"`
		JTI string `json:"jti"`
		Exp int64  `json:"exp"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", "", 0, err
	}
	if c.Iss == "" || c.JTI == "" {
		return "", "", 0, errors.New("no iss or jti")
	}
	return c.Iss, c.JTI, c.Exp, nil
}

// storeRevocations writes n revocations straight into the store's sorted set (member
// "<iss>\x00<jti>", score the expiry in unix ms), in the store's own format, plus one for the
// canary token, without bumping the generation.
func (r *clusterRun) storeRevocations(ctx context.Context, n int, canary string) error {
	iss, jti, exp, err := jwtClaims(canary)
	if err != nil {
		return fmt.Errorf("reading the canary token: %w", err)
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: r.cluster.addrs(), Protocol: 2, DisableIdentity: true,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	defer cc.Close()
	key := storePrefix + "revoked"
	score := float64(time.Now().Add(3 * time.Hour).UnixMilli())
	const batch = 1000
	members := []redis.Z{{Score: float64(exp * 1000), Member: iss + "\x00" + jti}}
	flush := func() error {
		if len(members) == 0 {
			return nil
		}
		err := cc.ZAdd(ctx, key, members...).Err()
		members = members[:0]
		return err
	}
	for i := range n {
		members = append(members, redis.Z{Score: score, Member: fmt.Sprintf("%s\x00bench-stored-%07d", iss, i)})
		if len(members) == batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// bumpGeneration increments the store's generation counter without a change notice, so that
// every instance's periodic check finds a change no notice brought, and reloads.
func (r *clusterRun) bumpGeneration(ctx context.Context) error {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: r.cluster.addrs(), Protocol: 2, DisableIdentity: true})
	defer cc.Close()
	return cc.Incr(ctx, storePrefix+"gen").Err()
}

// waitReloaded waits until every instance has begun a full reload since before, and the
// counters have then stayed still for settle (the reload itself takes a while with many
// revocations, and no second one should be counted in the baseline).
func (r *clusterRun) waitReloaded(ctx context.Context, before []map[string]int64, timeout time.Duration) ([]map[string]int64, time.Duration, error) {
	start := time.Now()
	for {
		now, err := r.scrapeAll(ctx)
		if err != nil {
			return nil, 0, err
		}
		all := true
		for i := range r.gws {
			if sumReloads(now[i]) <= sumReloads(before[i]) {
				all = false
			}
		}
		if all {
			return now, time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return nil, 0, fmt.Errorf("not every instance reloaded within %s", timeout)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, 0, err
		}
	}
}

// acceptedEverywhere checks tokens on every instance (16 at a time) and returns how many
// (token, instance) pairs were not accepted (not 2xx nor 429: a 429 comes after the token was
// accepted).
func (r *clusterRun) acceptedEverywhere(toks []string, wantAccepted bool) (checked, wrong int, first string) {
	path := clusterServicePath(clusterTokenService)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, tok := range toks {
		for i := range r.gws {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				st := r.poll.status(i, path, "Bearer "+tok)
				accepted := st/100 == 2 || st == http.StatusTooManyRequests
				mu.Lock()
				checked++
				if accepted != wantAccepted || (!wantAccepted && st != http.StatusUnauthorized) {
					if wrong == 0 {
						first = fmt.Sprintf("%s answered %d", r.names[i], st)
					}
					wrong++
				}
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return checked, wrong, first
}

// probeResult is one (revocation, instance) pair.
type probeResult struct {
	refusedAfter time.Duration // from the admin call's return to the 401
	refused      bool
	lastStatus   int
}

// revokeAll revokes toks one after the other through the instances' admin APIs in turn, each as
// soon as the previous call returned, and probes every instance with each revoked token from the
// moment its call returned until it answers 401 (or probeBound passes). before, if set, runs just
// before revocation i.
func (r *clusterRun) revokeAll(ctx context.Context, toks []string, before func(i int)) (revokeOutcome, error) {
	var out revokeOutcome
	path := clusterServicePath(clusterTokenService)
	results := make([][]probeResult, len(toks))
	admin := newHistogram()
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[string]
	start := time.Now()
	for k, tok := range toks {
		if ctx.Err() != nil {
			break
		}
		if before != nil {
			before(k)
		}
		g := r.gws[k%len(r.gws)]
		t0 := time.Now()
		err := g.revokeToken(ctx, tok)
		ret := time.Now()
		if err != nil {
			out.Errors++
			if out.FirstError == "" {
				out.FirstError = err.Error()
			}
			continue
		}
		_ = admin.RecordValue(max(int64(ret.Sub(t0)/time.Microsecond), 1))
		out.Revoked++
		r.revoked = append(r.revoked, tok)
		results[k] = make([]probeResult, len(r.gws))
		for i := range r.gws {
			wg.Go(func() {
				pr := &results[k][i]
				for {
					sent := time.Now()
					st := r.poll.status(i, path, "Bearer "+tok)
					pr.lastStatus = st
					if st == http.StatusUnauthorized {
						pr.refused, pr.refusedAfter = true, time.Since(ret)
						return
					}
					if time.Since(ret) > probeBound || ctx.Err() != nil {
						if st == 0 {
							msg := fmt.Sprintf("%s: a probe got no answer", r.names[i])
							firstErr.CompareAndSwap(nil, &msg)
						}
						return
					}
					if wait := probeEvery - time.Since(sent); wait > 0 {
						time.Sleep(wait)
					}
				}
			})
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	if out.Revoked > 0 {
		out.PerSecond = float64(out.Revoked) / elapsed.Seconds()
		out.AdminP50ms = float64(admin.ValueAtQuantile(50)) / 1000
		out.AdminP99ms = float64(admin.ValueAtQuantile(99)) / 1000
	}
	out.results = results
	out.Propagation = summarizeProbes(results, r.names)
	if p := firstErr.Load(); p != nil && out.Propagation.FirstStillAccepted == "" {
		out.Propagation.FirstStillAccepted = *p
	}
	return out, ctx.Err()
}

// summarizeProbes gives the propagation percentiles over every (revocation, instance) pair.
func summarizeProbes(results [][]probeResult, names []string) propagation {
	var p propagation
	var ds []time.Duration
	for k, rs := range results {
		for i, pr := range rs {
			p.Pairs++
			if pr.refused {
				ds = append(ds, pr.refusedAfter)
				continue
			}
			p.StillAccepted++
			if p.FirstStillAccepted == "" {
				p.FirstStillAccepted = fmt.Sprintf("revocation %d on %s: still answered %d after %s", k+1, names[i], pr.lastStatus, probeBound)
			}
		}
	}
	p.Refused = len(ds)
	if len(ds) > 0 {
		slices.Sort(ds)
		q := func(f float64) float64 {
			idx := min(int(f*float64(len(ds)-1)+0.5), len(ds)-1)
			return float64(ds[idx]) / float64(time.Millisecond)
		}
		p.P50ms, p.P99ms, p.MaxMs = q(0.5), q(0.99), float64(ds[len(ds)-1])/float64(time.Millisecond)
	}
	return p
}

// revocationBurst stores the revocations, has every instance reload them, then issues and
// revokes the burst's tokens under the steady load, measuring how fast each revocation reaches
// each instance and that no instance reloads the whole state meanwhile.
func (r *clusterRun) revocationBurst(ctx context.Context) error {
	b := &burstResult{Stored: r.o.stored, Tokens: r.o.burst}
	r.res.Burst = b
	logs := r.logMark()
	defer func() { b.Log = r.logSince(logs) }()
	from := r.load.now()
	// A canary: a token whose revocation is written with the stored ones, to show that they
	// were loaded.
	canary, err := r.gws[0].mintTokens(ctx, clusterTokenService, 1)
	if err != nil {
		return err
	}
	if _, wrong, first := r.acceptedEverywhere(canary, true); wrong > 0 {
		return fmt.Errorf("the canary token is not accepted everywhere before its revocation: %s", first)
	}
	t0 := time.Now()
	if err := r.storeRevocations(ctx, r.o.stored, canary[0]); err != nil {
		return fmt.Errorf("writing the stored revocations: %w", err)
	}
	b.StoreSeconds = time.Since(t0).Seconds()
	pre, err := r.scrapeAll(ctx)
	if err != nil {
		return err
	}
	if err := r.bumpGeneration(ctx); err != nil {
		return fmt.Errorf("bumping the generation: %w", err)
	}
	if _, took, err := r.waitReloaded(ctx, pre, 2*time.Minute); err != nil {
		return err
	} else {
		b.ReloadSeconds = took.Seconds()
	}
	// Let the reloads finish (each reads every revocation) before the canary check and the baseline.
	if err := r.waitCanary(ctx, canary[0], 30*time.Second); err != nil {
		return err
	}
	b.CanaryRefusedEverywhere = true
	base, err := r.scrapeAll(ctx)
	if err != nil {
		return err
	}

	t0 = time.Now()
	toks, err := r.mintSpread(ctx, r.o.burst)
	if err != nil {
		return err
	}
	b.MintSeconds = time.Since(t0).Seconds()
	_, b.NotAcceptedBefore, b.FirstNotAccepted = r.acceptedEverywhere(toks, true)
	startRev := r.load.now()
	out, err := r.revokeMeasured(ctx, toks, nil)
	b.revokeOutcome = out
	if err != nil {
		return err
	}
	endRev := r.load.now()
	after, err := r.scrapeAll(ctx)
	if err != nil {
		return err
	}
	b.Reloads = r.reloadDeltas(base, after)
	b.BurstSeconds = (endRev - startRev).Seconds()
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	b.Load = countStatuses(r.load.window(from, endRev))
	return nil
}

// waitCanary waits until every instance refuses the canary token.
func (r *clusterRun) waitCanary(ctx context.Context, canary string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	path := clusterServicePath(clusterTokenService)
	for i := range r.gws {
		for {
			st := r.poll.status(i, path, "Bearer "+canary)
			if st == http.StatusUnauthorized {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s still answers %d to the canary token, whose revocation was stored with the others: the stored revocations were not loaded", r.names[i], st)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// mintSpread mints n tokens for the token service as the Owner, through the instances in turn.
func (r *clusterRun) mintSpread(ctx context.Context, n int) ([]string, error) {
	per := (n + len(r.gws) - 1) / len(r.gws)
	var out []string
	for _, g := range r.gws {
		k := min(per, n-len(out))
		if k <= 0 {
			break
		}
		toks, err := g.mintTokens(ctx, clusterTokenService, k)
		if err != nil {
			return nil, err
		}
		out = append(out, toks...)
	}
	return out, nil
}

// pubsubCut revokes a smaller burst and, a third of the way through, kills every pub/sub
// connection on every master (CLIENT KILL TYPE pubsub): each instance must resubscribe and
// reload its copy once, and no revoked token may be accepted afterwards.
func (r *clusterRun) pubsubCut(ctx context.Context) error {
	c := &cutResult{Tokens: r.o.cutBurst, CutAfter: r.o.cutBurst / 3, ClientsKilled: map[string]int64{}}
	r.res.Cut = c
	logs := r.logMark()
	defer func() { c.Log = r.logSince(logs) }()
	from := r.load.now()
	toks, err := r.mintSpread(ctx, r.o.cutBurst)
	if err != nil {
		return err
	}
	_, c.NotAcceptedBefore, c.FirstNotAccepted = r.acceptedEverywhere(toks, true)
	base, err := r.scrapeAll(ctx)
	if err != nil {
		return err
	}
	var cutErr error
	out, err := r.revokeMeasured(ctx, toks, func(i int) {
		if i != c.CutAfter {
			return
		}
		c.CutAtSeconds = r.load.now().Seconds()
		for _, n := range r.cluster.nodes {
			k, err := n.do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Int64()
			if err != nil && cutErr == nil {
				cutErr = fmt.Errorf("%s: CLIENT KILL TYPE pubsub: %w", n.addr, err)
			}
			c.ClientsKilled[n.addr] = k
		}
	})
	c.revokeOutcome = out
	if err != nil {
		return err
	}
	if cutErr != nil {
		return cutErr
	}
	// Every instance resubscribes (and reloads, reason "reconnect"); then a few resync intervals
	// for any other reload the cut brings about to show.
	deadline := time.Now().Add(15 * time.Second)
	for {
		now, err := r.scrapeAll(ctx)
		if err != nil {
			return err
		}
		all := true
		for i := range r.gws {
			if now[i][authn.ReloadReconnect] <= base[i][authn.ReloadReconnect] {
				all = false
			}
		}
		if all {
			c.ReconnectedEverywhere = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	if err := sleepCtx(ctx, 3*config.DefaultResyncInterval); err != nil {
		return err
	}
	after, err := r.scrapeAll(ctx)
	if err != nil {
		return err
	}
	c.Reloads = r.reloadDeltas(base, after)
	to := r.load.now()
	c.CheckedAfter, c.AcceptedAfter, c.FirstAcceptedAfter = r.acceptedEverywhere(r.revoked, false)
	c.RevokedChecked = len(r.revoked)
	c.Load = countStatuses(r.load.window(from, to))
	return nil
}

// masterKill kills a master that does not hold the store's slot, under the steady load, for the
// outage, restarts it on the same port and folder (its nodes.conf: the same node, its data
// gone), and measures what the load saw: 401s, when 503s began, and how soon after the cluster
// was whole again requests succeeded.
func (r *clusterRun) masterKill(ctx context.Context) error {
	k := &killResult{StoreSlot: r.res.Cluster.StoreSlot, StoreNode: r.res.Cluster.StoreNode,
		OutageSeconds: r.o.outage.Seconds(), StalenessBoundSeconds: config.DefaultStalenessBound.Seconds()}
	r.res.Kill = k
	logs := r.logMark()
	defer func() { k.Log = r.logSince(logs) }()
	var victim *clusterNode
	var others []*clusterNode
	for i, n := range r.cluster.nodes {
		if victim == nil && !r.res.Cluster.Nodes[i].HoldsStore {
			victim = n
			k.Victim = r.res.Cluster.Nodes[i]
			continue
		}
		others = append(others, n)
	}
	if victim == nil {
		return errors.New("every master holds the store's slot")
	}
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	tKill := r.load.now()
	from := tKill - 2*time.Second
	victim.kill()
	// Watch the others' view of the cluster until it is whole again.
	var failSeen atomic.Int64
	failSeen.Store(-1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Go(func() {
		for watchCtx.Err() == nil {
			for _, n := range others {
				if st, err := n.clusterState(watchCtx); err == nil && st == "fail" && failSeen.Load() < 0 {
					failSeen.Store(int64(r.load.now() - tKill))
				}
			}
			_ = sleepCtx(watchCtx, 50*time.Millisecond)
		}
	})
	err := sleepCtx(ctx, r.o.outage)
	stopWatch()
	watch.Wait()
	if err != nil {
		return err
	}
	if f := failSeen.Load(); f >= 0 {
		s := time.Duration(f).Seconds()
		k.ClusterFailAfterKill = &s
	}
	tRestart := r.load.now()
	if err := r.h.runClusterNode(ctx, r.cluster, victim); err != nil {
		return fmt.Errorf("restarting %s: %w", victim.addr, err)
	}
	if _, err := r.cluster.waitState(ctx, time.Minute, "ok", others); err != nil {
		return err
	}
	k.OthersOKAfterRestart = (r.load.now() - tRestart).Seconds()
	if _, err := r.cluster.waitState(ctx, time.Minute, "ok", r.cluster.nodes); err != nil {
		return err
	}
	tOK := r.load.now()
	k.ClusterOKAfterRestart = (tOK - tRestart).Seconds()
	k.DownSeconds = (tOK - tKill).Seconds()
	// Keep the load on until every instance has answered 2 s of it without a failure, or 30 s.
	for {
		now := r.load.now()
		if now-tOK > 3*time.Second && r.allSucceeding(now-2500*time.Millisecond, now-500*time.Millisecond) {
			break
		}
		if now-tOK > 30*time.Second {
			break
		}
		if err := sleepCtx(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	to := r.load.now()
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	r.analyzeKill(k, r.load.window(from, to), tKill, tOK)
	return nil
}

// allSucceeding reports whether every instance answered 2xx to every hit due in [from, to), and
// had at least one.
func (r *clusterRun) allSucceeding(from, to time.Duration) bool {
	seen := make([]bool, len(r.gws))
	for _, rec := range r.load.window(from, to) {
		if rec.status/100 != 2 {
			return false
		}
		seen[rec.inst] = true
	}
	return !slices.Contains(seen, false)
}

// analyzeKill reads the load's records from the kill on: statuses, the first 503 of each
// instance, and when each succeeded for good after the cluster was whole again.
func (r *clusterRun) analyzeKill(k *killResult, all []hitRecord, tKill, tOK time.Duration) {
	var recs []hitRecord
	for _, rec := range all {
		if rec.at >= tKill {
			recs = append(recs, rec)
		}
	}
	k.Load = countStatuses(recs)
	k.Unauthorized = k.Load.S401
	type inst struct {
		first503, lastFail, firstOKAfter time.Duration
		has503, hasFail, hasOKAfter      bool
	}
	st := make([]inst, len(r.gws))
	for _, rec := range recs {
		s := &st[rec.inst]
		if rec.status == 503 && !s.has503 {
			s.first503, s.has503 = rec.at, true
		}
		if rec.status/100 != 2 {
			s.lastFail, s.hasFail = rec.at, true
		}
	}
	for _, rec := range recs {
		s := &st[rec.inst]
		if s.hasFail && rec.at > s.lastFail && rec.status/100 == 2 && !s.hasOKAfter {
			s.firstOKAfter, s.hasOKAfter = rec.at, true
		}
	}
	secs := func(d time.Duration) *float64 { v := d.Seconds(); return &v }
	for i, s := range st {
		ki := killInstance{Name: r.names[i]}
		if s.has503 {
			ki.First503AfterKill = secs(s.first503 - tKill)
			if k.First503AfterKill == nil || *ki.First503AfterKill < *k.First503AfterKill {
				k.First503AfterKill = ki.First503AfterKill
			}
		}
		switch {
		case !s.hasFail:
			ki.Recovery = "no failure"
		case !s.hasOKAfter:
			ki.Recovery = "still failing at the end"
			k.NotRecovered++
		default:
			ki.SucceedingAfterOK = secs(s.firstOKAfter - tOK)
			if k.SucceedingAfterOK == nil || *ki.SucceedingAfterOK > *k.SucceedingAfterOK {
				k.SucceedingAfterOK = ki.SucceedingAfterOK
			}
		}
		k.Instances = append(k.Instances, ki)
	}
	// A timeline in half seconds, from 2 s before the kill.
	const bucket = 500 * time.Millisecond
	var tl []timelineBucket
	for _, rec := range all {
		idx := int((rec.at - tKill + 2*time.Second) / bucket)
		if rec.at < tKill-2*time.Second {
			continue
		}
		for len(tl) <= idx {
			tl = append(tl, timelineBucket{FromSeconds: (time.Duration(len(tl))*bucket - 2*time.Second).Seconds()})
		}
		b := &tl[idx]
		switch {
		case rec.status/100 == 2:
			b.OK++
		case rec.status == 401:
			b.S401++
		case rec.status == 503:
			b.S503++
		default:
			b.Other++
		}
	}
	k.Timeline = tl
	k.ClusterOKAtSeconds = (tOK - tKill).Seconds()
}

// logMark is where each instance's log ends now.
func (r *clusterRun) logMark() []int64 {
	out := make([]int64, len(r.gws))
	for i, g := range r.gws {
		if fi, err := os.Stat(g.proc.log); err == nil {
			out[i] = fi.Size()
		}
	}
	return out
}

var (
	logAddrRE = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)
	logNumRE  = regexp.MustCompile(`\d+(\.\d+)?(ns|µs|ms|s)?`)
)

// logSince tallies what the instances logged (at warn and above: their log level) since mark, by
// level, message and error, with addresses and numbers left out so that alike lines count
// together; the most frequent first.
func (r *clusterRun) logSince(mark []int64) []logCount {
	type tally struct{ n, insts int }
	counts := map[string]*tally{}
	for i, g := range r.gws {
		f, err := os.Open(g.proc.log)
		if err != nil {
			continue
		}
		if _, err := f.Seek(mark[i], io.SeekStart); err != nil {
			f.Close()
			continue
		}
		seen := map[string]bool{}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			level, _ := line["level"].(string)
			msg, _ := line["msg"].(string)
			key := level + " " + msg
			for _, f := range []string{"problem", "err", "error"} {
				if v, ok := line[f].(string); ok {
					key += ": " + logNumRE.ReplaceAllString(logAddrRE.ReplaceAllString(v, "ADDR"), "N")
					break
				}
			}
			t := counts[key]
			if t == nil {
				t = &tally{}
				counts[key] = t
			}
			t.n++
			if !seen[key] {
				seen[key] = true
				t.insts++
			}
		}
		f.Close()
	}
	var out []logCount
	for k, t := range counts {
		out = append(out, logCount{Line: k, Count: t.n, Instances: t.insts})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Line < out[j].Line
	})
	return out
}

// Command bench is scoregate's load harness. On loopback, with bounded durations, it starts a
// sample model upstream and, in one run, measures the upstream alone (the ceiling), a minimal
// fasthttp proxy (the floor), scoregate in tiers (no auth, key, cached and uncached token,
// telemetry at 100% and 1%, the Redis-backed store) and the peers that are installed (HAProxy,
// nginx), each with one worker, interleaved and repeated; then it sweeps scoregate over the
// number of keys, revocations, services, connections and the body size. It writes a Markdown
// report, a JSON file with every number and PNG plots under bench/results/<timestamp>/.
//
//	go run ./bench            # the full run (about 15 minutes)
//	go run ./bench -quick     # a smoke run of about a minute
//	go run ./bench -cluster   # instead: scoregate instances on a Redis Cluster (bench/README.md)
//
// It never measures a peer that fails its 401/200 check, and reports peers that are not
// installed as absent. It does not tune or profile the gateway: that is the hot path's business.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	quick       bool
	out         string         // folder the timestamped results folder is made in
	duration    time.Duration  // one closed-loop measurement (wrk takes whole seconds)
	openFor     time.Duration  // one open-loop measurement
	rounds      int            // repetitions of every measurement
	conns       int            // closed-loop connections
	only        *regexp.Regexp // peers, sweeps and extra rows (grpc, the ghz rows, grpc stream delay, sse) to run, by name; nil runs all
	loadgen     string         // auto, wrk or builtin
	gateway     string         // a prebuilt gateway binary; "" builds ./cmd/gateway
	keep        bool           // keep the scratch folder (configs, logs)
	warmup      time.Duration  // load on each peer before its first measurement
	tokenPool   int            // distinct tokens sent in turn by the uncached token tier
	profiles    []string       // upstream profiles measured
	shares      []float64      // open-loop rates, as shares of the reference maximum
	sweepRounds int            // repetitions of every sweep step
	sweepSteps  sweepSteps
	progressOut io.Writer
	args        []string       // as given, for the report
	rerender    string         // a results folder whose report and plots are redrawn from its results.json
	cpuProfiles string         // a folder for a CPU profile of every gateway process; "" for none
	gatewayEnv  []string       // -gateway-env: NAME=VALUE pairs added to every gateway process's environment
	cluster     clusterOptions // -cluster and its flags: the Redis Cluster scale run instead of the comparison
	// syscounts > 0 runs the system-call and segment counts (syscounts.go) instead of the
	// comparison: about that many requests per measurement.
	syscounts        int
	syscountRates    []int         // -syscounts-rates: open-loop rates measured too
	syscountGateways []namedBinary // -syscounts-gateway: more "scoregate key" peers, each its own binary
}

// namedBinary is a NAME=PATH flag value.
type namedBinary struct{ name, bin string }

func main() {
	if handled, err := runRoleFromEnv(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseOptions(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if opts.syscounts > 0 {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runSyscounts(ctx, opts, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if opts.rerender != "" {
		if err := rerender(opts.rerender); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runner := run
	if opts.cluster.enabled {
		runner = runCluster
	}
	dir, err := runner(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Printf("report: %s\n", dir)
}

// parseOptions reads the flags; -quick changes the defaults of the flags that were not given.
func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var only string
	fs.BoolVar(&o.quick, "quick", false, "a smoke run of about a minute: short measurements, small sweep steps, the fast profile only")
	fs.StringVar(&o.out, "out", "", "`folder` for results (default: bench/results of the module)")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "one closed-loop measurement (whole seconds with wrk)")
	fs.DurationVar(&o.openFor, "open-duration", 2*time.Second, "one open-loop measurement")
	fs.IntVar(&o.rounds, "rounds", 3, "repetitions of every measurement (at least 3 for a real run)")
	fs.IntVar(&o.conns, "conns", 64, "closed-loop connections")
	fs.StringVar(&only, "only", "", "`regexp`: run only the peers, sweeps (sweep-keys, sweep-revocations, sweep-services, sweep-connections, sweep-body) and extra rows (grpc, ghz unary direct, ghz unary scoregate, ghz stream direct, ghz stream scoregate, grpc stream delay, sse) whose name matches")
	fs.StringVar(&o.loadgen, "loadgen", "auto", "closed-loop load generator: auto (wrk when installed), wrk or builtin")
	fs.StringVar(&o.gateway, "gateway", "", "a prebuilt gateway `binary` (default: go build ./cmd/gateway)")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch folder with configs and logs")
	fs.StringVar(&o.rerender, "rerender", "", "measure nothing: judge the targets again and redraw the report and plots of a results `folder` from its results.json")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "load on each peer before its first measurement")
	fs.IntVar(&o.tokenPool, "token-pool", 1024, "distinct tokens the uncached token tier sends in turn")
	profiles := fs.String("profiles", "fast,slow,large", "upstream profiles to measure")
	shares := fs.String("open-shares", "0.25,0.5", "open-loop rates, as shares of the reference peer's closed-loop maximum")
	fs.IntVar(&o.sweepRounds, "sweep-rounds", 3, "repetitions of every sweep step")
	fs.StringVar(&o.cpuProfiles, "gateway-cpuprofile", "", "`folder`: each gateway process writes a CPU profile of its whole life there (GATEWAY_CPUPROFILE), named after its peer or step")
	fs.Func("gateway-env", "`NAME=VALUE` added to every gateway process's environment (GOGC, GODEBUG, GATEWAY_*), for experiments; may be repeated, and the report's command line shows it", func(kv string) error {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return fmt.Errorf("%q is not NAME=VALUE", kv)
		}
		o.gatewayEnv = append(o.gatewayEnv, kv)
		return nil
	})
	o.cluster = defaultClusterOptions()
	fs.BoolVar(&o.cluster.enabled, "cluster", false, "run the Redis Cluster scale run instead of the comparison: a 3-master cluster, -instances gateways, steady load, a revocation burst, a pub/sub cut and a master kill (cluster.md and cluster.json)")
	fs.IntVar(&o.cluster.instances, "instances", o.cluster.instances, "-cluster: gateway instances")
	fs.IntVar(&o.cluster.rate, "cluster-rate", o.cluster.rate, "-cluster: steady load, requests a second over all instances")
	fs.DurationVar(&o.cluster.duration, "cluster-duration", o.cluster.duration, "-cluster: the steady phase")
	fs.IntVar(&o.cluster.stored, "cluster-stored", o.cluster.stored, "-cluster: revocations written straight into Redis before the burst")
	fs.IntVar(&o.cluster.burst, "cluster-burst", o.cluster.burst, "-cluster: tokens issued and revoked in the revocation burst")
	fs.IntVar(&o.cluster.cutBurst, "cluster-cut-burst", o.cluster.cutBurst, "-cluster: tokens issued and revoked in the pub/sub cut phase")
	fs.DurationVar(&o.cluster.outage, "cluster-outage", o.cluster.outage, "-cluster: how long the killed master stays down")
	fs.IntVar(&o.syscounts, "syscounts", 0, "count system calls and TCP segments per request instead of timing: about `N` requests per measurement through the model alone, the floor, scoregate key, HAProxy and nginx (-only, -profiles, -rounds, -conns apply)")
	fs.Func("syscounts-rates", "`LIST` of rates (requests a second): with -syscounts, each peer is also measured under the comparison's open loop at each rate, so that peers are compared at the same rate", func(v string) error {
		for _, r := range splitList(v) {
			n, err := strconv.Atoi(r)
			if err != nil || n < 1 {
				return fmt.Errorf("%q is not a rate", r)
			}
			o.syscountRates = append(o.syscountRates, n)
		}
		return nil
	})
	fs.Func("syscounts-gateway", "`NAME=BINARY`: with -syscounts, one more \"scoregate key NAME\" peer run from that gateway binary, measured interleaved with the others (before/after comparisons); may be repeated", func(kv string) error {
		name, bin, ok := strings.Cut(kv, "=")
		if !ok || name == "" || bin == "" {
			return fmt.Errorf("%q is not NAME=BINARY", kv)
		}
		abs, err := filepath.Abs(bin)
		if err != nil {
			return err
		}
		o.syscountGateways = append(o.syscountGateways, namedBinary{name, abs})
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.cpuProfiles != "" { // the gateways run in folders of their own
		var err error
		if o.cpuProfiles, err = filepath.Abs(o.cpuProfiles); err != nil {
			return o, fmt.Errorf("-gateway-cpuprofile: %w", err)
		}
		if err := os.MkdirAll(o.cpuProfiles, 0o755); err != nil {
			return o, fmt.Errorf("-gateway-cpuprofile: %w", err)
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.sweepSteps = fullSweepSteps()
	if o.quick {
		o.quickDefaults(set)
		if o.cluster.enabled {
			o.cluster.quickCluster(set)
		}
	}
	if o.cluster.enabled {
		if err := o.cluster.validate(); err != nil {
			return o, err
		}
	}
	if set["profiles"] || !o.quick {
		o.profiles = splitList(*profiles)
	}
	if o.syscounts > 0 && !set["profiles"] {
		o.profiles = []string{"fast"}
	}
	for _, v := range splitList(*shares) {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 2 {
			return o, fmt.Errorf("-open-shares: %q is not a share between 0 and 2", v)
		}
		o.shares = append(o.shares, f)
	}
	for _, p := range o.profiles {
		if _, ok := profileByName[p]; !ok {
			return o, fmt.Errorf("-profiles: unknown profile %q (fast, slow, chunked, medium, large, streamed)", p)
		}
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return o, fmt.Errorf("-only: %w", err)
		}
		o.only = re
	}
	switch o.loadgen {
	case "auto", "wrk", "builtin":
	default:
		return o, fmt.Errorf("-loadgen %q: use auto, wrk or builtin", o.loadgen)
	}
	if o.rounds < 1 || o.sweepRounds < 1 || o.conns < 1 || o.duration <= 0 || o.openFor <= 0 || o.tokenPool < 2 {
		return o, errors.New("-rounds, -conns, -duration, -open-duration must be positive and -token-pool at least 2")
	}
	o.progressOut = stderr
	o.args = args
	return o, nil
}

// quickDefaults shrinks what the flags left at their defaults, so that the whole run takes about a
// minute: every peer, tier and sweep still runs, with two rounds (one per sweep step) instead of
// three. It proves every piece works; it is not a measurement to quote.
func (o *options) quickDefaults(set map[string]bool) {
	if !set["rounds"] {
		o.rounds = 2
	}
	if !set["sweep-rounds"] {
		o.sweepRounds = 1
	}
	if !set["duration"] {
		o.duration = time.Second
	}
	if !set["open-duration"] {
		o.openFor = 250 * time.Millisecond
	}
	if !set["warmup"] {
		o.warmup = 200 * time.Millisecond
	}
	if !set["token-pool"] {
		o.tokenPool = 256
	}
	o.profiles = []string{"fast"}
	o.sweepSteps = quickSweepSteps()
}

// selected reports whether the -only pattern lets name run.
func (o options) selected(name string) bool {
	return o.only == nil || o.only.MatchString(name)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

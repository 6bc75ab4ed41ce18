package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The syscall-count mode (-syscounts N) measures what a request costs in system calls and TCP
// segments rather than in time: counts do not move with the load on a small shared machine the
// way CPU time does. For each selected peer (by default the model alone, the floor, the
// "scoregate key" tier, HAProxy and nginx, started exactly as the comparison starts them) and
// each profile, wrk sends about N requests over -conns connections, and perf counts, per request:
//
//   - the system calls of the client (wrk), the proxy and the model, by kind (perf stat on the
//     syscalls tracepoints of each process: sys_enter_*, and sys_exit_* with ret == -EAGAIN for
//     the reads that found nothing);
//   - the TCP segments carrying data on each leg and direction (the tcp:tcp_probe tracepoint,
//     which the kernel fires for every segment an established socket receives, filtered by the
//     receiving socket's ports and by data_len > 0), and the segments carrying none (pure ACKs).
//
// wrk stops each of its threads once it has had its share of the N answers (a Lua response
// hook) and the harness then interrupts it; the count it reports is the denominator. The
// requests still in flight when a thread stops (at most -conns) were handled by the proxy and
// the model but are not counted: an error of at most conns/N (0.3% for 64 over 20,000), the
// same for every peer. The 64 connections wrk opens are opened inside the measurement, and
// their set-up is counted too (the proxy's connections to the model were opened at warm-up).

// syscallColumn is one column of the system-call table: the sum of some tracepoints' counts.
type syscallColumn struct {
	name   string
	events []string // syscalls:sys_enter_X or sys_exit_X tracepoints
	filter string   // a perf filter on each of the events, "" for none
	named  bool     // a sys_enter count that the "other" column leaves out
	scale  float64  // what a count is multiplied by (0: 1)
}

// syscallColumns are the system calls counted one by one; "total" is every system call.
var syscallColumns = []syscallColumn{
	{name: "total", events: []string{"raw_syscalls:sys_enter"}},
	// perf's task-clock, in milliseconds: the process's CPU time, read at once with its counts.
	{name: "CPU µs", events: []string{"task-clock"}, scale: 1000},
	{name: "read", events: []string{"syscalls:sys_enter_read"}, named: true},
	{name: "read EAGAIN", events: []string{"syscalls:sys_exit_read"}, filter: "ret == -11"},
	{name: "recvfrom", events: []string{"syscalls:sys_enter_recvfrom"}, named: true},
	{name: "recvfrom EAGAIN", events: []string{"syscalls:sys_exit_recvfrom"}, filter: "ret == -11"},
	{name: "readv", events: []string{"syscalls:sys_enter_readv"}, named: true},
	{name: "recvmsg", events: []string{"syscalls:sys_enter_recvmsg"}, named: true},
	{name: "write", events: []string{"syscalls:sys_enter_write"}, named: true},
	{name: "sendto", events: []string{"syscalls:sys_enter_sendto"}, named: true},
	{name: "writev", events: []string{"syscalls:sys_enter_writev"}, named: true},
	{name: "sendmsg", events: []string{"syscalls:sys_enter_sendmsg"}, named: true},
	{name: "epoll_wait", events: []string{"syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_pwait2"}, named: true},
	{name: "epoll_ctl", events: []string{"syscalls:sys_enter_epoll_ctl"}, named: true},
	{name: "futex", events: []string{"syscalls:sys_enter_futex"}, named: true},
	{name: "nanosleep", events: []string{"syscalls:sys_enter_nanosleep", "syscalls:sys_enter_clock_nanosleep"}, named: true},
	{name: "setsockopt", events: []string{"syscalls:sys_enter_setsockopt", "syscalls:sys_enter_getsockopt"}, named: true},
	{name: "sched_yield", events: []string{"syscalls:sys_enter_sched_yield"}, named: true},
	{name: "signals", events: []string{"syscalls:sys_enter_tgkill", "syscalls:sys_enter_rt_sigreturn"}, named: true},
	{name: "clock_gettime", events: []string{"syscalls:sys_enter_clock_gettime"}, named: true},
	{name: "madvise/mmap", events: []string{"syscalls:sys_enter_madvise", "syscalls:sys_enter_mmap", "syscalls:sys_enter_munmap"}, named: true},
	{name: "accept/close", events: []string{"syscalls:sys_enter_accept4", "syscalls:sys_enter_close", "syscalls:sys_enter_shutdown"}, named: true},
}

// perfArgs are perf's -e (and --filter) arguments for the columns, and for each event in the
// order perf reports them, the column it adds to.
func perfArgs(cols []syscallColumn) (args []string, colOf []int) {
	for i, c := range cols {
		for _, e := range c.events {
			args = append(args, "-e", e)
			if c.filter != "" {
				args = append(args, "--filter", c.filter)
			}
			colOf = append(colOf, i)
		}
	}
	return args, colOf
}

// parsePerfCSV reads the counts of perf stat -x, output, in the order of its events (comment
// lines and blank lines skipped; "<not counted>" and "<not supported>" read as 0).
func parsePerfCSV(r io.Reader) ([]float64, error) {
	var out []float64
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		if strings.HasPrefix(f[0], "<") {
			out = append(out, 0)
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("perf stat line %q: %w", line, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// leg is one direction of one TCP connection class, counted by the receiving socket's ports.
type leg struct {
	name   string
	filter string // on tcp:tcp_probe's sport (the receiving socket's own port) and dport
}

// legsFor are the directions counted for a proxy listening on front in front of the model on
// model (front == model: the model reached directly).
func legsFor(front, model int) []leg {
	if front == model {
		return []leg{
			{"client→model", fmt.Sprintf("sport == %d", model)},
			{"model→client", fmt.Sprintf("dport == %d", model)},
		}
	}
	return []leg{
		{"client→proxy", fmt.Sprintf("sport == %d", front)},
		{"proxy→client", fmt.Sprintf("dport == %d", front)},
		{"proxy→model", fmt.Sprintf("sport == %d", model)},
		{"model→proxy", fmt.Sprintf("dport == %d", model)},
	}
}

// segmentArgs are perf's arguments counting, for every leg, the segments with data, then those
// without.
func segmentArgs(legs []leg) []string {
	var args []string
	for _, withData := range []bool{true, false} {
		cond := "data_len > 0"
		if !withData {
			cond = "data_len == 0"
		}
		for _, l := range legs {
			args = append(args, "-e", "tcp:tcp_probe", "--filter", l.filter+" && "+cond)
		}
	}
	return args
}

// countSample is one measurement of one peer and profile: per request.
type countSample struct {
	requests int64
	rps      float64              // requests per second of wall time, for context only (timings are noisy)
	procs    map[string][]float64 // client, proxy, model: per column of syscallColumns
	data     []float64            // per leg: data segments
	acks     []float64            // per leg: segments without data
}

// syscountPeers are the peers the mode measures unless -only says otherwise.
var syscountPeers = regexp.MustCompile(`^(upstream alone|floor \(fasthttp\)|scoregate key|scoregate key .+|haproxy|nginx)$`)

// runSyscounts is the -syscounts mode: it starts the peers, checks and warms each, then measures
// each peer and profile -rounds times, interleaved, and prints the tables.
func runSyscounts(ctx context.Context, opts options, out io.Writer) error {
	perf, ok := lookBinary("perf")
	if !ok {
		return errors.New("-syscounts needs perf (apt-get install -y linux-perf)")
	}
	if err := exec.Command(perf, "stat", "-x,", "-e", "syscalls:sys_enter_read", "-e", "tcp:tcp_probe", "-a", "--", "true").Run(); err != nil {
		return fmt.Errorf("-syscounts: perf cannot count tracepoints here (run as root, or lower kernel.perf_event_paranoid): %w", err)
	}
	h, err := newHarness(opts)
	if err != nil {
		return err
	}
	defer h.cleanup()
	if err := h.prepare(ctx); err != nil {
		return err
	}
	if h.wrk == "" {
		return errors.New("-syscounts needs wrk (apt-get install -y wrk)")
	}
	peers := h.startSyscountPeers(ctx)
	for _, p := range peers {
		if p.status != statusOK {
			fmt.Fprintf(opts.progressOut, "%s: %s: %s\n", p.name, p.status, p.detail)
		}
	}
	live := livePeers(peers)
	defer func() {
		for _, p := range peers {
			p.stop()
		}
	}()
	if len(live) == 0 {
		return errors.New("no peer to measure")
	}
	modelPort, err := portOf(h.upstreamAddr)
	if err != nil {
		return err
	}
	rates := []int{0} // wrk's closed loop
	rates = append(rates, opts.syscountRates...)
	samples := map[string][]countSample{} // by sampleKey
	for r := range opts.rounds {
		for _, p := range inTurn(peers, r) {
			for _, prof := range h.profiles() {
				for _, rate := range rates {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					fmt.Fprintf(opts.progressOut, "round %d/%d: %s, %s profile, %s\n", r+1, opts.rounds, p.name, prof.name, loadName(rate))
					s, err := h.countOnce(ctx, perf, p, prof, modelPort, opts.syscounts, rate)
					if err != nil {
						return fmt.Errorf("%s, %s profile, %s: %w", p.name, prof.name, loadName(rate), err)
					}
					k := sampleKey(prof.name, rate, p.name)
					samples[k] = append(samples[k], s)
				}
			}
		}
	}
	for _, rate := range rates {
		writeSyscountTables(out, opts, h, live, rate, samples)
	}
	return nil
}

// startSyscountPeers starts the peers of the mode: those of the comparison named by
// syscountPeers (and -only), and one "scoregate key NAME" per -syscounts-gateway binary.
func (h *harness) startSyscountPeers(ctx context.Context) []*peer {
	var peers []*peer
	add := func(name string, start func() *peer) {
		if !syscountPeers.MatchString(name) || !h.opts.selected(name) || ctx.Err() != nil {
			return
		}
		fmt.Fprintf(h.opts.progressOut, "starting %s\n", name)
		peers = append(peers, h.launch(ctx, name, start))
	}
	add("upstream alone", h.ceilingPeer)
	add("floor (fasthttp)", func() *peer { return h.floorPeer(ctx) })
	key := tiers[slices.IndexFunc(tiers, func(t tier) bool { return t.name == "scoregate key" })]
	add(key.name, func() *peer { return h.gatewayPeerWith(ctx, key, "") })
	for _, g := range h.opts.syscountGateways {
		t := key
		t.name = key.name + " " + g.name
		add(t.name, func() *peer { return h.gatewayPeerWith(ctx, t, g.bin) })
	}
	add("haproxy", func() *peer { return h.haproxyPeer(ctx, "haproxy") })
	add("nginx", func() *peer { return h.nginxPeer(ctx) })
	return peers
}

// portOf is the port of a host:port address.
func portOf(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(p)
}

// proxyPids are the processes whose system calls are the proxy's: the peer's process and its
// descendants (nginx's worker); none for the model alone.
func proxyPids(p *peer) []int {
	if p.proc == nil {
		return nil
	}
	return append([]int{p.proc.pid()}, descendants(p.proc.pid())...)
}

// countOnce measures p and prof once: wrk's closed loop, or with rate > 0 the open loop of the
// comparison at that rate, from this process (whose system calls are then the client's).
func (h *harness) countOnce(ctx context.Context, perf string, p *peer, prof profile, modelPort, n, rate int) (countSample, error) {
	dir, err := os.MkdirTemp(h.tmp, "syscounts-")
	if err != nil {
		return countSample{}, err
	}
	defer os.RemoveAll(dir)
	t := p.target(prof)
	front, err := portOf(strings.SplitN(strings.TrimPrefix(t.url, "http://"), "/", 2)[0])
	if err != nil {
		return countSample{}, err
	}
	legs := legsFor(front, modelPort)
	evArgs, colOf := perfArgs(syscallColumns)

	// The proxy, the model and the segments are counted by perf processes attached before the
	// load starts and interrupted after it ends.
	type attached struct {
		name string
		cmd  *exec.Cmd
		out  string
	}
	var bg []attached
	attach := func(name string, args ...string) error {
		outPath := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".csv")
		cmd := exec.CommandContext(ctx, perf, append([]string{"stat", "-x,", "-o", outPath}, args...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			return err
		}
		bg = append(bg, attached{name, cmd, outPath})
		return nil
	}
	defer func() {
		for _, a := range bg {
			if a.cmd.ProcessState == nil {
				_ = a.cmd.Process.Kill()
				_ = a.cmd.Wait()
			}
		}
	}()
	var ol *openLoop // the open loop at rate, in this process; nil for wrk's closed loop
	if rate > 0 {
		ol = newOpenLoop(t)
		defer ol.close()
		if _, err := ol.attack(ctx, rate, openWarmup); err != nil { // its connections opened, warm
			return countSample{}, err
		}
		if err := attach("client", append(evArgs, "-p", strconv.Itoa(os.Getpid()))...); err != nil {
			return countSample{}, err
		}
	}
	if pids := proxyPids(p); len(pids) > 0 {
		if err := attach("proxy", append(evArgs, "-p", joinInts(pids))...); err != nil {
			return countSample{}, err
		}
	}
	if err := attach("model", append(evArgs, "-p", strconv.Itoa(h.upstream.pid()))...); err != nil {
		return countSample{}, err
	}
	if err := attach("segments", append(segmentArgs(legs), "-a")...); err != nil {
		return countSample{}, err
	}
	time.Sleep(300 * time.Millisecond) // perf has attached (it says nothing until it ends)

	began := time.Now()
	var requests int64
	if ol != nil {
		r, err := ol.attack(ctx, rate, time.Duration(float64(n)/float64(rate)*float64(time.Second)))
		switch {
		case err != nil:
			return countSample{}, err
		case r.errors > 0:
			return countSample{}, fmt.Errorf("%d errors in %d requests, the first: %s", r.errors, r.requests, r.firstErr)
		case r.requests == 0:
			return countSample{}, errors.New("no request answered")
		}
		requests = r.requests
	} else if requests, err = h.runCountedWrk(ctx, perf, dir, t, n, evArgs); err != nil {
		return countSample{}, err
	}
	s := countSample{requests: requests, rps: float64(requests) / time.Since(began).Seconds(), procs: map[string][]float64{}}
	if ol == nil {
		clientCounts, err := readPerfFile(filepath.Join(dir, "client.csv"), len(colOf))
		if err != nil {
			return countSample{}, fmt.Errorf("client: %w", err)
		}
		s.procs["client"] = perRequestColumns(clientCounts, colOf, requests)
	}
	for _, a := range bg {
		_ = a.cmd.Process.Signal(syscall.SIGINT)
		// perf stat writes its counts on SIGINT, then dies of it.
		if err := a.cmd.Wait(); err != nil && !interrupted(err) {
			return countSample{}, fmt.Errorf("perf stat for the %s: %w", a.name, err)
		}
		want := len(colOf)
		if a.name == "segments" {
			want = 2 * len(legs)
		}
		counts, err := readPerfFile(a.out, want)
		if err != nil {
			return countSample{}, fmt.Errorf("%s: %w", a.name, err)
		}
		if a.name == "segments" {
			for i := range legs {
				s.data = append(s.data, counts[i]/float64(requests))
				s.acks = append(s.acks, counts[len(legs)+i]/float64(requests))
			}
			continue
		}
		s.procs[a.name] = perRequestColumns(counts, colOf, requests)
	}
	return s, nil
}

// loadName says how the load was sent.
func loadName(rate int) string {
	if rate == 0 {
		return "wrk closed loop"
	}
	return fmt.Sprintf("open loop at %d/s", rate)
}

func sampleKey(prof string, rate int, peer string) string {
	return prof + "\x00" + strconv.Itoa(rate) + "\x00" + peer
}

// readPerfFile reads a perf stat -x, output file that must hold want counts.
func readPerfFile(path string, want int) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	counts, err := parsePerfCSV(f)
	if err != nil {
		return nil, err
	}
	if len(counts) != want {
		return nil, fmt.Errorf("perf stat reported %d counts, want %d", len(counts), want)
	}
	return counts, nil
}

// perRequestColumns sums the events' counts into their columns, adds the "other" column (every
// system call not in a named column) and divides by requests.
func perRequestColumns(counts []float64, colOf []int, requests int64) []float64 {
	cols := make([]float64, len(syscallColumns)+1)
	for i, c := range counts {
		if sc := syscallColumns[colOf[i]].scale; sc != 0 {
			c *= sc
		}
		cols[colOf[i]] += c
	}
	other := cols[0]
	for i, c := range syscallColumns {
		if c.named {
			other -= cols[i]
		}
	}
	cols[len(syscallColumns)] = other
	for i := range cols {
		cols[i] /= float64(requests)
	}
	return cols
}

// countedWrkScript sends t's requests and stops each wrk thread once it has had quota answers,
// leaving a file behind so that the harness knows to interrupt wrk (which otherwise sleeps out its
// -d); done() prints the answers counted and the errors.
const countedWrkScript = wrkRequestFromFiles + `
local cred = %q
if cred ~= "" then wrk.headers["Authorization"] = cred end
local quota = %d
local marker = %q
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local n = 0
function response(status)
  n = n + 1
  if n == quota then
    local f = io.open(marker .. tid, "w")
    f:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SYSCOUNTS %%.0f %%.0f\n", summary.requests, e.connect + e.read + e.write + e.status + e.timeout))
end
`

// runCountedWrk runs wrk under perf stat (its counts go to dir/client.csv) until about n answers
// have come, and returns how many did.
func (h *harness) runCountedWrk(ctx context.Context, perf, dir string, t target, n int, evArgs []string) (int64, error) {
	threads := min(h.opts.conns, runtime.NumCPU())
	cred := ""
	if len(t.creds) > 0 {
		cred = t.creds[0]
	}
	bodyPath, script, marker := filepath.Join(dir, "body"), filepath.Join(dir, "counted.lua"), filepath.Join(dir, "done-")
	if err := os.WriteFile(bodyPath, t.body, 0o600); err != nil {
		return 0, err
	}
	quota := (n + threads - 1) / threads
	if err := os.WriteFile(script, fmt.Appendf(nil, countedWrkScript, bodyPath, t.contentType, cred, quota, marker), 0o600); err != nil {
		return 0, err
	}
	args := append([]string{"stat", "-x,", "-o", filepath.Join(dir, "client.csv")}, evArgs...)
	args = append(args, "--", h.wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(h.opts.conns),
		"-d", "600s", "--timeout", "10s", "-s", script, t.url)
	cmd := exec.CommandContext(ctx, perf, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stdout
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		done := 0
		for i := range threads {
			if _, err := os.Stat(marker + strconv.Itoa(i)); err == nil {
				done++
			}
		}
		if done == threads {
			break
		}
		select {
		case err := <-waited:
			return 0, fmt.Errorf("wrk ended early: %v: %s", err, clip([]byte(stdout.String())))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-waited
			return 0, errors.New("wrk did not get its answers within 5 minutes")
		}
	}
	// wrk is perf's child: interrupt it, and perf writes its counts when it exits.
	for _, pid := range descendants(cmd.Process.Pid) {
		_ = syscall.Kill(pid, syscall.SIGINT)
	}
	if err := <-waited; err != nil {
		return 0, fmt.Errorf("wrk: %w: %s", err, clip([]byte(stdout.String())))
	}
	for line := range strings.Lines(stdout.String()) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "SYSCOUNTS ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 {
			break
		}
		reqs, err1 := strconv.ParseInt(f[0], 10, 64)
		errs, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || reqs <= 0 {
			break
		}
		if errs > 0 {
			return 0, fmt.Errorf("wrk saw %d errors in %d requests", errs, reqs)
		}
		return reqs, nil
	}
	return 0, fmt.Errorf("wrk printed no count: %s", clip([]byte(stdout.String())))
}

// interrupted reports whether err is a process's death by SIGINT.
func interrupted(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGINT
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// writeSyscountTables prints, per profile, the system calls per request of every process of
// every peer, and the segments per request on every leg: medians over the rounds, and the
// total's range.
func writeSyscountTables(w io.Writer, opts options, h *harness, peers []*peer, rate int, samples map[string][]countSample) {
	fmt.Fprintf(w, "# System calls and TCP segments per request: %s\n\n", loadName(rate))
	if rate == 0 {
		fmt.Fprintf(w, "wrk -t %d -c %d, ", min(opts.conns, runtime.NumCPU()), opts.conns)
	} else {
		fmt.Fprintf(w, "The comparison's open loop at %d requests a second (the client is the harness's own process), ", rate)
	}
	fmt.Fprintf(w, "about %d requests per measurement, %d rounds interleaved; medians over the rounds (the total's min–max in brackets). "+
		"System calls counted by perf stat on each process's syscall tracepoints; \"EAGAIN\" columns are the reads that found nothing; "+
		"\"other\" is every system call not in a column; \"CPU µs\" is perf's task-clock (timed, not counted: it moves with the machine's load). Segments are the TCP segments each leg's receiving socket got (tcp:tcp_probe), with data and without (pure ACKs).\n\n",
		opts.syscounts, opts.rounds)
	header := []string{"peer", "process", "req/s"}
	for _, c := range syscallColumns {
		header = append(header, c.name)
	}
	header = append(header, "other")
	for _, prof := range h.profiles() {
		fmt.Fprintf(w, "## %s profile: system calls per request\n\n", prof.name)
		// Columns that are zero everywhere are left out.
		keep := make([]bool, len(syscallColumns)+1)
		keep[0], keep[len(keep)-1] = true, true
		for _, p := range peers {
			for _, s := range samples[sampleKey(prof.name, rate, p.name)] {
				for _, v := range s.procs {
					for i, x := range v {
						if x >= 0.005 {
							keep[i] = true
						}
					}
				}
			}
		}
		var hdr []string
		hdr = append(hdr, header[:3]...)
		for i, k := range keep {
			if k {
				hdr = append(hdr, header[3+i])
			}
		}
		fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
		for _, p := range peers {
			ss := samples[sampleKey(prof.name, rate, p.name)]
			if len(ss) == 0 {
				continue
			}
			var rps []float64
			for _, s := range ss {
				rps = append(rps, s.rps)
			}
			for _, proc := range []string{"client", "proxy", "model"} {
				if _, ok := ss[0].procs[proc]; !ok {
					continue
				}
				row := []string{p.name, proc, fmt.Sprintf("%.0f", median(rps))}
				for i, k := range keep {
					if !k {
						continue
					}
					var v []float64
					for _, s := range ss {
						v = append(v, s.procs[proc][i])
					}
					cell := fmt.Sprintf("%.2f", median(v))
					if i == 0 && len(v) > 1 {
						cell += fmt.Sprintf(" [%.2f–%.2f]", slices.Min(v), slices.Max(v))
					}
					row = append(row, cell)
				}
				fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
			}
		}
		fmt.Fprintf(w, "\n## %s profile: TCP segments per request (with data / without)\n\n", prof.name)
		fmt.Fprintf(w, "| peer | client→proxy | proxy→client | proxy→model | model→proxy |\n|---|---|---|---|---|\n")
		for _, p := range peers {
			ss := samples[sampleKey(prof.name, rate, p.name)]
			if len(ss) == 0 {
				continue
			}
			cells := []string{p.name}
			nlegs := len(ss[0].data)
			for i := range nlegs {
				var d, a []float64
				for _, s := range ss {
					d, a = append(d, s.data[i]), append(a, s.acks[i])
				}
				cells = append(cells, fmt.Sprintf("%.2f / %.2f", median(d), median(a)))
			}
			if nlegs == 2 { // the model reached directly: its legs are the client's
				cells = append(cells, "–", "–")
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
		fmt.Fprintln(w)
	}
}

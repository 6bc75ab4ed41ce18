package main

import (
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/valyala/fasthttp"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"empty is zero", nil, 0},
		{"odd count takes the middle", []float64{3, 1, 2}, 2},
		{"even count averages the middle two", []float64{4, 1, 3, 2}, 2.5},
		{"the input order does not matter", []float64{9, 1, 5}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestNum(t *testing.T) {
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{0, "0"}, {999.4, "999"}, {1000, "1,000"}, {1234567.8, "1,234,568"}, {-1500, "-1,500"},
	} {
		if got := num(tc.in); got != tc.want {
			t.Errorf("num(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		want    loadResult
		wantErr bool
	}{
		{
			name: "a clean run",
			out:  "Running 1s test\nBENCH-RESULT 1000 1000000 0 0 0 0 0 250 400 900 1500\n",
			want: loadResult{requests: 1000, elapsed: time.Second,
				lat: [4]time.Duration{250 * time.Microsecond, 400 * time.Microsecond, 900 * time.Microsecond, 1500 * time.Microsecond}},
		},
		{
			name: "errors of every kind are summed",
			out:  "BENCH-RESULT 10 2000000 1 2 3 4 5 1 1 1 1\n",
			want: loadResult{requests: 10, errors: 15, elapsed: 2 * time.Second,
				firstErr: "wrk: connect 1, read 2, write 3, non-2xx/3xx status 4, timeout 5",
				lat:      [4]time.Duration{time.Microsecond, time.Microsecond, time.Microsecond, time.Microsecond}},
		},
		{name: "no result line is an error", out: "unable to connect\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseWrk(tc.out)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(loadResult{})); diff != "" {
				t.Errorf("parseWrk (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStatFields(t *testing.T) {
	// A command name with spaces and parentheses must not shift the fields.
	line := []byte("42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 0 0")
	f, err := statFields(line)
	if err != nil {
		t.Fatal(err)
	}
	if f[1] != "1" || f[11] != "7" || f[12] != "3" {
		t.Errorf("ppid %s, utime %s, stime %s; want 1, 7, 3", f[1], f[11], f[12])
	}
}

func TestFillerIDs(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range []int64{0, 1, 61, 62, 999_999, 1_000_000} {
		id := fillerID(i)
		if len(id) != 12 || seen[id] {
			t.Errorf("fillerID(%d) = %q: wrong length or repeated", i, id)
		}
		seen[id] = true
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// openLoopServer serves /ok (200, after checking the request), /slow (200 after 20 ms) and /fail
// (503) on loopback, counting the credentials /ok sees.
func openLoopServer(t *testing.T, body string) (*countingListener, func() map[string]int) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: inner}
	var mu sync.Mutex
	creds := map[string]int{}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/fail":
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			return
		case "/slow":
			time.Sleep(20 * time.Millisecond)
			return
		}
		if !ctx.IsPost() || string(ctx.Request.Header.ContentType()) != "application/json" || string(ctx.PostBody()) != body {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		mu.Lock()
		creds[string(ctx.Request.Header.Peek("Authorization"))]++
		mu.Unlock()
		ctx.SetBodyString(`{"score":0.5}`)
	}}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown() })
	return ln, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range creds {
			out[k] = v
		}
		return out
	}
}

func TestOpenLoop(t *testing.T) {
	const body = `{"a":1,"b":2,"c":3,"d":4}`
	ln, seen := openLoopServer(t, body)
	base := "http://" + ln.Addr().String()
	ctx := context.Background()

	t.Run("sends at the rate, in turn, over connections kept between attacks", func(t *testing.T) {
		const rate = 2000
		o := newOpenLoop(target{url: base + "/ok", contentType: "application/json", body: []byte(body), creds: []string{"k1", "k2", "k3"}})
		defer o.close()
		before := ln.n.Load()
		if _, err := o.attack(ctx, rate, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		r, err := o.attack(ctx, rate, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if r.errors != 0 {
			t.Fatalf("%d errors, the first %q", r.errors, r.firstErr)
		}
		if want := int64(rate / 2); r.requests > want || r.requests < want*95/100 {
			t.Errorf("%d requests, want the schedule's %d", r.requests, want)
		}
		if got := float64(r.requests) / r.elapsed.Seconds(); got < 0.9*rate {
			t.Errorf("achieved %.0f r/s, want about %d", got, rate)
		}
		if r.lat[0] <= 0 || r.lat[0] > r.lat[3] {
			t.Errorf("latencies %v: want positive and ordered", r.lat)
		}
		if got, want := ln.n.Load()-before, int64(openSenders(rate)); got != want {
			t.Errorf("%d connections opened over two attacks, want the pool's %d", got, want)
		}
		counts := seen()
		lo, hi := counts["k1"], counts["k1"]
		for _, k := range []string{"k2", "k3"} {
			lo, hi = min(lo, counts[k]), max(hi, counts[k])
		}
		if len(counts) != 3 || hi-lo > 1 {
			t.Errorf("credentials seen %v: want the three in turn", counts)
		}
	})

	t.Run("waiting for a free connection counts in the latency", func(t *testing.T) {
		// The pool's 64 connections carry 3,200 answers a second of 20 ms: asked 4,800 a
		// second, the hits queue, and their latency, from their intended send time, grows well
		// past the 20 ms the peer takes.
		const rate = 4800
		o := newOpenLoop(target{url: base + "/slow", contentType: "application/json", body: []byte(body)})
		defer o.close()
		if n := openSenders(rate); n != 64 {
			t.Fatalf("pool of %d at %d r/s: this test expects 64", n, rate)
		}
		r, err := o.attack(ctx, rate, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(rate / 5); r.requests < want*9/10 || r.requests > want || r.errors != 0 {
			t.Errorf("%d requests, %d errors (%q): want about %d, without errors", r.requests, r.errors, r.firstErr, want)
		}
		if got := float64(r.requests) / r.elapsed.Seconds(); got > 0.8*rate {
			t.Errorf("achieved %.0f r/s: want the shortfall to show, under 80%% of %d", got, rate)
		}
		if r.lat[0] < 20*time.Millisecond || r.lat[2] < 50*time.Millisecond {
			t.Errorf("p50 %v, p99 %v: want the queueing counted, well over the peer's 20 ms", r.lat[0], r.lat[2])
		}
	})

	t.Run("a non-2xx answer is an error", func(t *testing.T) {
		o := newOpenLoop(target{url: base + "/fail", contentType: "application/json", body: []byte(body)})
		defer o.close()
		r, err := o.attack(ctx, 500, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if r.requests == 0 || r.errors != r.requests || r.firstErr != "status 503" {
			t.Errorf("%d requests, %d errors, the first %q: want every one a 503", r.requests, r.errors, r.firstErr)
		}
	})

	t.Run("a cancelled context ends the attack early", func(t *testing.T) {
		o := newOpenLoop(target{url: base + "/ok", contentType: "application/json", body: []byte(body)})
		defer o.close()
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		began := time.Now()
		r, err := o.attack(cctx, 1000, 10*time.Second)
		if err == nil || time.Since(began) > 2*time.Second {
			t.Errorf("err %v after %v: want the context's error, soon", err, time.Since(began))
		}
		if r.requests == 0 || r.errors != 0 {
			t.Errorf("%d requests, %d errors before the cancellation: want some, without errors", r.requests, r.errors)
		}
	})
}

// -gateway-env is repeatable, keeps commas inside a value, and refuses what is not NAME=VALUE.
func TestGatewayEnvFlag(t *testing.T) {
	o, err := parseOptions([]string{"-gateway-env", "GOGC=400", "-gateway-env", "GODEBUG=gctrace=1,madvdontneed=1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"GOGC=400", "GODEBUG=gctrace=1,madvdontneed=1"}
	if !slices.Equal(o.gatewayEnv, want) {
		t.Fatalf("gatewayEnv %q, want %q", o.gatewayEnv, want)
	}
	h := &harness{opts: o}
	if env := h.profileEnv("x"); !slices.Equal(env, want) {
		t.Fatalf("profileEnv %q, want %q", env, want)
	}
	for _, bad := range []string{"GOGC", "=1"} {
		if _, err := parseOptions([]string{"-gateway-env", bad}, io.Discard); err == nil {
			t.Errorf("-gateway-env %q accepted", bad)
		}
	}
}

// The targets of the HTTP/1.1 hot path are judged at their thresholds: throughput 0.9 of
// HAProxy's, CPU 1.1 times, the model's and the load generator's CPU 1.05 times, 12 KB per idle
// connection.
func TestHotPathTargets(t *testing.T) {
	closed := func(peer string, rps, proxy, model, gen float64) *row {
		return &row{Profile: targetProfile, Peer: peer, Mode: modeClosed, Samples: []sample{{}}, Summary: summary{
			RPS: stat{Median: rps}, ProxyCPUus: stat{Median: proxy}, UpstreamCPUus: stat{Median: model}, GeneratorCPUus: stat{Median: gen}}}
	}
	verdicts := func(r *results) map[string]string {
		out := map[string]string{}
		for _, c := range r.checkTargets() {
			out[c.Target] = c.Verdict
		}
		return out
	}
	at := func(word string, v map[string]string) string {
		for k, verdict := range v {
			if strings.HasPrefix(k, word) {
				return verdict
			}
		}
		return "absent"
	}
	idle := func(bytes, gatewayCPU float64) *sweepResult {
		return &sweepResult{Axis: "sweep-connections", Steps: []*sweepStep{{Value: 10000, Samples: []sample{{}}, IdleConnBytes: bytes,
			Summary: summary{ProxyCPUus: stat{Median: gatewayCPU}}, HAProxy: &summary{ProxyCPUus: stat{Median: 10}}}}}
	}
	met := &results{Rows: []*row{closed("haproxy", 1000, 10, 10, 10), closed(targetTier, 900, 11, 10.5, 10.5)},
		Sweeps: []*sweepResult{idle(12<<10, 13)}}
	missed := &results{Rows: []*row{closed("haproxy", 1000, 10, 10, 10), closed(targetTier, 899, 11.1, 10.6, 10.6)},
		Sweeps: []*sweepResult{idle(12<<10+1, 13.1)}}
	for _, word := range []string{"throughput of", "CPU per request of", "model CPU", "load-generator CPU", "memory per idle", "gateway CPU per request at 10,000"} {
		if got := at(word, verdicts(met)); got != verdictMet {
			t.Errorf("%q at its threshold: %s, want met", word, got)
		}
		if got := at(word, verdicts(missed)); got != verdictMissed {
			t.Errorf("%q past its threshold: %s, want missed", word, got)
		}
	}
}

// The connections sweep's table has as many cells in every line, with HAProxy's columns or not.
func TestSweepTableShape(t *testing.T) {
	step := func(v int64, hp bool, failed bool) *sweepStep {
		st := &sweepStep{Value: v, Conns: int(v), Summary: summary{ProxyCPUus: stat{Median: 20, N: 1}}}
		if failed {
			st.Failure = "boom"
			return st
		}
		st.Samples = []sample{{}}
		if hp {
			st.HAProxy = &summary{ProxyCPUus: stat{Median: 10, N: 1}}
		}
		return st
	}
	for _, withHP := range []bool{false, true} {
		var b strings.Builder
		writeSweep(&b, &sweepResult{Title: "t", Unit: "connections", Steps: []*sweepStep{step(100, withHP, false), step(1000, false, false), step(10000, withHP, true)}})
		var widths []int
		for line := range strings.Lines(b.String()) {
			if strings.HasPrefix(line, "|") {
				widths = append(widths, strings.Count(line, "|"))
			}
		}
		if len(widths) != 5 || slices.Min(widths) != slices.Max(widths) {
			t.Errorf("with HAProxy %v: cells per line %v\n%s", withHP, widths, b.String())
		}
		if got := strings.Contains(b.String(), "gateway CPU × HAProxy"); got != withHP {
			t.Errorf("with HAProxy %v: HAProxy columns shown %v", withHP, got)
		}
	}
}

// perf stat -x, output: counts in the order of the events, comment and blank lines skipped, a
// count perf could not take read as 0; the columns sum their events, "other" is what no named
// column holds, and everything is per request.
func TestSyscountParsing(t *testing.T) {
	out := "# started on Mon Dec  7 09:40:01 2026\n\n" +
		"100,,raw_syscalls:sys_enter,1000,100.00,,\n" +
		"40,,syscalls:sys_enter_read,1000,100.00,,\n" +
		"<not counted>,,syscalls:sys_exit_read,0,0.00,,\n" +
		"25,,syscalls:sys_enter_epoll_wait,1000,100.00,,\n" +
		"5,,syscalls:sys_enter_epoll_pwait,1000,100.00,,\n" +
		"0.25,msec,task-clock,250000,100.00,0.001,CPUs utilized\n"
	counts, err := parsePerfCSV(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]float64{100, 40, 0, 25, 5, 0.25}, counts); diff != "" {
		t.Fatalf("parsePerfCSV (-want +got):\n%s", diff)
	}
	if _, err := parsePerfCSV(strings.NewReader("lots,,raw_syscalls:sys_enter,1,1,,\n")); err == nil {
		t.Error("a count that is not a number was accepted")
	}

	cols := []syscallColumn{
		{name: "total", events: []string{"raw_syscalls:sys_enter"}},
		{name: "read", events: []string{"syscalls:sys_enter_read"}, named: true},
		{name: "read EAGAIN", events: []string{"syscalls:sys_exit_read"}, filter: "ret == -11"},
		{name: "epoll_wait", events: []string{"syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_pwait"}, named: true},
		{name: "CPU µs", events: []string{"task-clock"}, scale: 1000},
	}
	args, colOf := perfArgs(cols)
	wantArgs := []string{"-e", "raw_syscalls:sys_enter", "-e", "syscalls:sys_enter_read", "-e", "syscalls:sys_exit_read",
		"--filter", "ret == -11", "-e", "syscalls:sys_enter_epoll_wait", "-e", "syscalls:sys_enter_epoll_pwait", "-e", "task-clock"}
	if diff := cmp.Diff(wantArgs, args); diff != "" {
		t.Errorf("perfArgs (-want +got):\n%s", diff)
	}
	saved := syscallColumns
	syscallColumns = cols
	defer func() { syscallColumns = saved }()
	// total 100, read 40, EAGAIN 0, epoll 30, 250 µs of CPU, other 30; over 10 requests.
	if diff := cmp.Diff([]float64{10, 4, 0, 3, 25, 3}, perRequestColumns(counts, colOf, 10)); diff != "" {
		t.Errorf("perRequestColumns (-want +got):\n%s", diff)
	}

	if diff := cmp.Diff([]leg{{"client→proxy", "sport == 80"}, {"proxy→client", "dport == 80"},
		{"proxy→model", "sport == 90"}, {"model→proxy", "dport == 90"}}, legsFor(80, 90), cmp.AllowUnexported(leg{})); diff != "" {
		t.Errorf("legsFor (-want +got):\n%s", diff)
	}
	if got := len(legsFor(90, 90)); got != 2 {
		t.Errorf("the model reached directly has %d legs, want 2", got)
	}
}

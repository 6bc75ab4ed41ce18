package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestMain lets the test binary play the helper roles: the harness starts its own executable as
// the model, the floor proxy and the telemetry sink.
func TestMain(m *testing.M) {
	if handled, err := runRoleFromEnv(); handled {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// peerPrograms are what the quick run needs to measure every row.
var peerPrograms = []string{"nginx", "haproxy", "wrk", "redis-server"}

// requirePeers skips the test, loudly, when a peer program is missing; under CI=true it fails
// instead, since .ci/run installs them.
func requirePeers(t *testing.T) {
	t.Helper()
	var missing []string
	for _, p := range peerPrograms {
		if _, ok := lookBinary(p); !ok {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("%s not installed (apt-get install -y %s)", strings.Join(missing, ", "), strings.Join(peerPrograms, " "))
	if os.Getenv("CI") == "true" {
		t.Fatalf("the quick bench run needs its peers under CI: %s", msg)
	}
	t.Skipf("SKIPPING the quick bench run: %s; under CI=true this fails", msg)
}

// testLog passes the progress lines to t.Log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestQuickRun runs "bench -quick" whole and checks its results: every peer present and passing
// its check, every row and sweep step measured without errors, the report, the JSON and the plots
// written.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("the quick bench run takes about a minute")
	}
	requirePeers(t)
	out := t.TempDir()
	opts, err := parseOptions([]string{"-quick", "-out", out}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	opts.progressOut = testLog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir, err := run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var res results
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	checkPeersRan(t, &res)
	checkRows(t, &res, opts)
	checkSweeps(t, &res)
	checkFiles(t, dir, &res)
	checkGRPCRows(t, &res, opts)
	checkSSERows(t, &res, opts)
	checkExtraReport(t, dir)
}

// checkGRPCRows checks the gRPC rows: the check passed; the grpc-go client's, ghz's and the stream
// delay rows measured every round without errors, the gateway's CPU read; the gRPC targets judged.
func checkGRPCRows(t *testing.T, res *results, opts options) {
	t.Helper()
	g := res.GRPC
	if g == nil {
		t.Fatal("no gRPC rows in results.json")
	}
	if g.Status != statusOK {
		t.Fatalf("gRPC: %s: %s", g.Status, g.Check)
	}
	for _, c := range []struct {
		what  string
		rows  []*row
		peers []string
		proxy []string // the rows through the gateway
	}{
		{"grpc-go", g.Rows, []string{targetDirect, targetGateway}, []string{targetGateway}},
		{"ghz", g.Ghz, []string{ghzUnaryDirect, ghzUnaryGateway, ghzStreamDirect, ghzStreamGateway}, []string{ghzUnaryGateway, ghzStreamGateway}},
		{"stream delay", g.StreamDelay, []string{streamDelayDirect, streamDelayGateway}, []string{streamDelayGateway}},
	} {
		var peers []string
		for _, rw := range c.rows {
			peers = append(peers, rw.Peer)
		}
		if diff := cmp.Diff(c.peers, peers); diff != "" {
			t.Errorf("%s rows (-want +got):\n%s", c.what, diff)
		}
		for _, rw := range c.rows {
			if len(rw.Samples) != opts.rounds || len(rw.Failures) > 0 {
				t.Errorf("gRPC %s: %d samples, want %d; failures %q", rw.Peer, len(rw.Samples), opts.rounds, rw.Failures)
			}
			for _, s := range rw.Samples {
				if s.Requests == 0 || s.Errors > 0 {
					t.Errorf("gRPC %s: %d calls, %d errors, the first: %s", rw.Peer, s.Requests, s.Errors, s.FirstError)
				}
				if slices.Contains(c.proxy, rw.Peer) && s.ProxyCPUus <= 0 {
					t.Errorf("gRPC %s: no gateway CPU time measured", rw.Peer)
				}
				if s.GeneratorCPUus <= 0 {
					t.Errorf("gRPC %s: no client CPU time measured", rw.Peer)
				}
			}
		}
	}
	judged := 0
	for _, tc := range res.Targets {
		if strings.Contains(tc.Target, "gRPC") || strings.Contains(tc.Target, "server-streaming") {
			judged++
			if tc.Verdict != verdictMet && tc.Verdict != verdictMissed {
				t.Errorf("target %q: %s", tc.Target, tc.Verdict)
			}
		}
	}
	if judged != 3 {
		t.Errorf("%d gRPC targets, want 3", judged)
	}
}

// checkSSERows checks the SSE rows: the check passed, every stream of every round read whole.
func checkSSERows(t *testing.T, res *results, opts options) {
	t.Helper()
	s := res.SSE
	if s == nil {
		t.Fatal("no SSE rows in results.json")
	}
	if s.Status != statusOK {
		t.Fatalf("SSE: %s: %s", s.Status, s.Check)
	}
	if len(s.Rows) != 2 {
		t.Errorf("%d SSE rows, want 2", len(s.Rows))
	}
	for _, rw := range s.Rows {
		if len(rw.Samples) != opts.rounds || len(rw.Failures) > 0 {
			t.Errorf("SSE %s: %d samples, want %d; failures %q", rw.Target, len(rw.Samples), opts.rounds, rw.Failures)
		}
		for _, smp := range rw.Samples {
			if smp.Streams != int64(s.Streams) || smp.Errors > 0 {
				t.Errorf("SSE %s: %d streams of %d, %d errors, the first: %s", rw.Target, smp.Streams, s.Streams, smp.Errors, smp.FirstError)
			}
			if smp.TTFBp50ms <= 0 || smp.TotalP50ms < smp.TTFBp50ms {
				t.Errorf("SSE %s: first event p50 %.3f ms, stream p50 %.3f ms", rw.Target, smp.TTFBp50ms, smp.TotalP50ms)
			}
		}
	}
}

// checkExtraReport checks that the report shows the gRPC and SSE tables.
func checkExtraReport(t *testing.T, dir string) {
	t.Helper()
	report, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## gRPC: the gateway against a direct call", "## Server-sent events: time to first event",
		"| " + targetDirect + " |", "| " + targetGateway + " |", "### ghz: unary and server-streaming calls",
		"| " + ghzUnaryDirect + " |", "| " + ghzUnaryGateway + " |", "| " + ghzStreamDirect + " |", "| " + ghzStreamGateway + " |",
		"### Server-streaming: message delay", "| " + streamDelayDirect + " |", "| " + streamDelayGateway + " |"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

func checkPeersRan(t *testing.T, res *results) {
	t.Helper()
	if want := 2 + len(tiers) + 2; len(res.Peers) != want {
		t.Errorf("%d peers in the results, want %d", len(res.Peers), want)
	}
	for _, p := range res.Peers {
		if p.Status != statusOK {
			t.Errorf("peer %s: %s: %s", p.Name, p.Status, p.Detail)
		}
	}
}

func checkRows(t *testing.T, res *results, opts options) {
	t.Helper()
	want := len(res.Peers) * len(opts.profiles) * (1 + len(opts.shares))
	if len(res.Rows) != want {
		t.Errorf("%d rows, want %d", len(res.Rows), want)
	}
	for _, rw := range res.Rows {
		name := fmt.Sprintf("%s/%s/%s/%g", rw.Profile, rw.Peer, rw.Mode, rw.Share)
		if len(rw.Samples) != opts.rounds || len(rw.Failures) > 0 {
			t.Errorf("%s: %d samples, want %d; failures %q", name, len(rw.Samples), opts.rounds, rw.Failures)
		}
		for _, s := range rw.Samples {
			if s.Requests == 0 {
				t.Errorf("%s: a sample with no requests", name)
			}
			if rw.Mode == modeClosed && s.Errors > 0 {
				t.Errorf("%s: %d errors, the first: %s", name, s.Errors, s.FirstError)
			}
			if rw.Mode == modeOpen && s.Errors > 0 { // an overloaded open loop may time out
				t.Logf("%s: %d errors at %d r/s, the first: %s", name, s.Errors, s.TargetRate, s.FirstError)
			}
			if rw.Peer != "upstream alone" && s.ProxyCPUus <= 0 {
				t.Errorf("%s: no proxy CPU time measured", name)
			}
		}
	}
}

func checkSweeps(t *testing.T, res *results) {
	t.Helper()
	if len(res.Sweeps) != 5 {
		t.Errorf("%d sweeps, want 5", len(res.Sweeps))
	}
	for _, s := range res.Sweeps {
		for _, st := range s.Steps {
			if st.Failure != "" || len(st.Samples) == 0 {
				t.Errorf("%s %d: %d samples, failure %q", s.Axis, st.Value, len(st.Samples), st.Failure)
			}
			for _, smp := range st.Samples {
				if smp.Errors > 0 {
					t.Errorf("%s %d: %d errors, the first: %s", s.Axis, st.Value, smp.Errors, smp.FirstError)
				}
			}
			if st.RSSIdleKB <= 0 || st.RSSPeakKB < st.RSSIdleKB {
				t.Errorf("%s %d: RSS idle %d kB, peak %d kB", s.Axis, st.Value, st.RSSIdleKB, st.RSSPeakKB)
			}
		}
	}
}

func checkFiles(t *testing.T, dir string, res *results) {
	t.Helper()
	report, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Peers {
		if !strings.Contains(string(report), "| "+p.Name+" |") {
			t.Errorf("report.md has no row for %s", p.Name)
		}
	}
	pngs, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	if want := 1 + len(res.Settings.OpenShares) + 2*len(res.Sweeps); len(pngs) != want {
		t.Errorf("%d plots, want %d", len(pngs), want)
	}
	for _, p := range pngs {
		if !strings.Contains(string(report), "("+filepath.Base(p)+")") {
			t.Errorf("report.md does not show %s", filepath.Base(p))
		}
	}
}

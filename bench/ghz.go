package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bojand/ghz/runner"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The ghz rows: ghz (github.com/bojand/ghz, the gRPC load tester), built into this executable
// from its Go module and run as a child process of the harness, as wrk is, so that its CPU time
// is its own and the gateway's is read apart from it. It calls the gRPC model's unary ModelInfer
// and its server-streaming ModelInferStream, directly and through the gateway, closed loop.
const (
	roleGhz = "ghz"
	ghzEnv  = "SCOREGATE_BENCH_GHZ" // the child's job, as JSON

	ghzStreamMessages = 10 // messages a ModelInferStream call of the ghz rows answers, back to back

	// ghzMaxRate bounds the calls of a ghz run, per second of it, well above what ghz reaches on
	// a small machine (about 15,000 a second on two cores); a run that got there would end early,
	// its rate still right.
	ghzMaxRate = 50_000

	// ghzOverhead is about how long a ghz child takes beyond its run: start, parse the .proto,
	// connect, write its outcome.
	ghzOverhead = 0.2
)

// Names of the ghz rows, which -only selects one by one.
const (
	ghzUnaryDirect   = "ghz unary direct"
	ghzUnaryGateway  = "ghz unary scoregate"
	ghzStreamDirect  = "ghz stream direct"
	ghzStreamGateway = "ghz stream scoregate"
)

// ghzJob is what a ghz child runs.
type ghzJob struct {
	Call          string        `json:"call"` // package.Service.Method
	Host          string        `json:"host"`
	Proto         string        `json:"proto"` // the .proto file describing the call
	Data          []byte        `json:"data"`  // the request message, protobuf-encoded
	Authorization string        `json:"authorization,omitempty"`
	Concurrency   int           `json:"concurrency"`
	Connections   int           `json:"connections"`
	Duration      time.Duration `json:"duration"`
	Out           string        `json:"out"` // where the child writes its ghzOutcome
}

// ghzOutcome is what a ghz child saw, read from ghz's report.
type ghzOutcome struct {
	Calls      int64            `json:"calls"`
	Errors     int64            `json:"errors"`
	FirstError string           `json:"firstError,omitempty"` // the most frequent error
	Elapsed    time.Duration    `json:"elapsed"`
	Latency    [4]time.Duration `json:"latency"` // p50, p90, p99, p99.9 over every call
	EndReason  string           `json:"endReason"`
	// CPU is the child's user and system time over runner.Run (parsing the .proto, connecting and
	// the load), without the process's own start, about 50 ms for an executable this size.
	CPU time.Duration `json:"cpu"`
}

// runGhzRole is the ghz child: it runs the job in the environment and writes the outcome.
func runGhzRole(spec string) error {
	var job ghzJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		return fmt.Errorf("%s: %w", ghzEnv, err)
	}
	opts := []runner.Option{
		runner.WithProtoFile(job.Proto, nil),
		runner.WithBinaryData(job.Data),
		runner.WithInsecure(true),
		runner.WithConcurrency(uint(job.Concurrency)),
		runner.WithConnections(uint(job.Connections)),
		runner.WithTotalRequests(uint(ghzMaxRate * job.Duration.Seconds())),
		// At the end, calls still in flight are left out rather than counted as cancelled.
		runner.WithDurationStopAction("ignore"),
		runner.WithTimeout(10 * time.Second),
		runner.WithDisableTemplateFuncs(true),
		runner.WithDisableTemplateData(true),
	}
	if job.Authorization != "" {
		opts = append(opts, runner.WithMetadata(map[string]string{"authorization": job.Authorization}))
	}
	before := selfCPU()
	// runner.Run with WithRunDuration would do the same, but it sets the number of calls to 2^31,
	// and ghz's report then keeps room for a million calls' details: a 64 MB array of pointers
	// that the garbage collector scans again and again, a third of ghz's CPU. So the number of
	// calls is bounded above what ghz reaches here, and the run stopped after its duration.
	c, err := runner.NewConfig(job.Call, job.Host, opts...)
	if err != nil {
		return fmt.Errorf("ghz: %w", err)
	}
	reqr, err := runner.NewRequester(c)
	if err != nil {
		return fmt.Errorf("ghz: %w", err)
	}
	stop := time.AfterFunc(job.Duration, func() { reqr.Stop(runner.ReasonTimeout) })
	defer stop.Stop()
	rep, err := reqr.Run()
	if err != nil {
		return fmt.Errorf("ghz: %w", err)
	}
	o := outcomeOf(rep)
	o.CPU = selfCPU() - before
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return os.WriteFile(job.Out, b, 0o600)
}

// outcomeOf reads ghz's report: calls, errors, and the latency percentiles of every call (failed
// ones too, as the other closed loops count them), from its per-call details.
func outcomeOf(rep *runner.Report) ghzOutcome {
	o := ghzOutcome{Calls: int64(rep.Count), Elapsed: rep.Total, EndReason: rep.EndReason.String()}
	most := 0
	for msg, n := range rep.ErrorDist {
		o.Errors += int64(n)
		if n > most || (n == most && msg < o.FirstError) {
			o.FirstError, most = msg, n
		}
	}
	h := newHistogram()
	for _, d := range rep.Details {
		h.RecordValue(int64(d.Latency / time.Microsecond))
	}
	o.Latency = percentiles(h)
	return o
}

// selfCPU is this process's user and system time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ghzVersion is the version of ghz built into this executable.
func ghzVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/bojand/ghz" {
				return d.Version
			}
		}
	}
	return "unknown"
}

// ghzCall is the name ghz takes for a method path: "/pkg.Service/Method" is "pkg.Service.Method".
func ghzCall(method string) string {
	return strings.Replace(strings.TrimPrefix(method, "/"), "/", ".", 1)
}

// ghzRow is one ghz row: its name, whom it calls and what ghz runs.
type ghzRow struct {
	name   string
	target *grpcTarget
	job    ghzJob
}

// ghzRows are the ghz rows against the model directly and through the gateway (with its key), in
// the order the report shows them; protoPath is where inference.proto was written.
func ghzRows(protoPath string, direct, gateway *grpcTarget) ([]ghzRow, error) {
	unary, err := proto.Marshal(wrapperspb.Bytes(fastBody))
	if err != nil {
		return nil, err
	}
	stream, err := proto.Marshal(wrapperspb.String(streamRequest(ghzStreamMessages, 0)))
	if err != nil {
		return nil, err
	}
	row := func(name, method string, data []byte, t *grpcTarget) ghzRow {
		j := ghzJob{Call: ghzCall(method), Host: t.addr, Proto: protoPath, Data: data, Concurrency: grpcConcurrency, Connections: grpcConns}
		if t.key != "" {
			j.Authorization = "Bearer " + t.key
		}
		return ghzRow{name: name, target: t, job: j}
	}
	return []ghzRow{
		row(ghzUnaryDirect, grpcMethodInfer, unary, direct),
		row(ghzUnaryGateway, grpcMethodInfer, unary, gateway),
		row(ghzStreamDirect, grpcMethodInferStream, stream, direct),
		row(ghzStreamGateway, grpcMethodInferStream, stream, gateway),
	}, nil
}

// ghzSelected reports whether -only lets any ghz row run.
func (o options) ghzSelected() bool {
	return slices.ContainsFunc([]string{ghzUnaryDirect, ghzUnaryGateway, ghzStreamDirect, ghzStreamGateway}, o.selected)
}

// runGhz runs one ghz child for d and waits for it. The generator's CPU time is the child's own
// over its run, as wrk's is its rusage (ghz's includes parsing the .proto and connecting).
func (h *harness) runGhz(ctx context.Context, name string, job ghzJob, d time.Duration) (loadResult, error) {
	dir := filepath.Join(h.tmp, "ghz")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return loadResult{}, err
	}
	slug := strings.ReplaceAll(name, " ", "-")
	job.Duration, job.Out = d, filepath.Join(dir, slug+".json")
	os.Remove(job.Out)
	spec, err := json.Marshal(job)
	if err != nil {
		return loadResult{}, err
	}
	p, err := startProcess(dir, slug, []string{roleEnv + "=" + roleGhz, ghzEnv + "=" + string(spec)}, h.self)
	if err != nil {
		return loadResult{}, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		p.stop()
		return loadResult{}, ctx.Err()
	case <-time.After(d + time.Minute):
		p.stop()
		return loadResult{}, fmt.Errorf("ghz did not finish within %s of its %s: %s", time.Minute, d, p.tail())
	}
	if p.err != nil {
		return loadResult{}, fmt.Errorf("ghz: %w: %s", p.err, p.tail())
	}
	b, err := os.ReadFile(job.Out)
	if err != nil {
		return loadResult{}, fmt.Errorf("ghz wrote no outcome: %w: %s", err, p.tail())
	}
	var o ghzOutcome
	if err := json.Unmarshal(b, &o); err != nil {
		return loadResult{}, fmt.Errorf("ghz outcome %s: %w", job.Out, err)
	}
	r := loadResult{requests: o.Calls, errors: o.Errors, firstErr: o.FirstError, elapsed: o.Elapsed, lat: o.Latency, genCPU: o.CPU}
	if r.genCPU <= 0 { // zero would read as "in this process" to measureWith
		r.genCPU = p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	}
	if r.requests == 0 {
		return r, errors.New("ghz completed no call")
	}
	return r, nil
}

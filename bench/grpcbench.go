package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gRPC rows: grpc-go clients call the gRPC model's unary ModelInfer directly, and through a
// scoregate whose h2 listener fronts it as a key-auth `protocol: grpc` service, closed loop.
const (
	grpcConns       = 2  // HTTP/2 connections (one grpc.ClientConn each)
	grpcConcurrency = 32 // goroutines calling in a closed loop, spread over the connections
	grpcSelect      = "grpc"
)

// Names of the gRPC and SSE targets.
const (
	targetDirect  = "direct"
	targetGateway = "scoregate key"
)

// grpcBench is the gRPC comparison: how it ran and its rows, all of profile "grpc" and mode
// closed. Rows are the grpc-go client's (peers "direct" and "scoregate key"), Ghz ghz's (peers
// named after the rows), StreamDelay the paced streams' (requests are messages there, latencies
// the messages' delays).
type grpcBench struct {
	Method      string   `json:"method"`
	Connections int      `json:"connections"`
	Concurrency int      `json:"concurrency"`
	Seconds     float64  `json:"seconds"`
	Status      string   `json:"status"` // statusOK or statusFailed
	Check       string   `json:"check"`  // what the check saw, or why it failed
	Rows        []*row   `json:"rows"`
	Notes       []string `json:"notes,omitempty"`

	ExtraSeconds      float64 `json:"extraSeconds,omitempty"` // one measurement of the ghz and stream delay rows
	GhzVersion        string  `json:"ghzVersion,omitempty"`
	GhzStreamMessages int     `json:"ghzStreamMessages,omitempty"` // messages per ModelInferStream call of the ghz rows
	Ghz               []*row  `json:"ghz,omitempty"`

	DelayStreams  int     `json:"streamDelayStreams,omitempty"` // streams open at once
	DelayMessages int     `json:"streamDelayMessages,omitempty"`
	DelayEveryMs  float64 `json:"streamDelayEveryMs,omitempty"`
	StreamDelay   []*row  `json:"streamDelay,omitempty"`
}

// allRows are the section's rows: the grpc-go client's, ghz's and the paced streams'.
func (g *grpcBench) allRows() []*row {
	return slices.Concat(g.Rows, g.Ghz, g.StreamDelay)
}

// grpcSelected reports whether -only lets any of the gRPC section's rows run.
func (o options) grpcSelected() bool {
	return o.selected(grpcSelect) || o.selected(streamDelaySelect) || o.ghzSelected()
}

// grpcExtraDuration is one measurement of the ghz and stream delay rows: -duration, but at most
// 300 ms in a quick run, so that the smoke test stays quick with six more rows.
func (o options) grpcExtraDuration() time.Duration {
	if o.quick {
		return min(o.duration, 300*time.Millisecond)
	}
	return o.duration
}

// grpcMeasurement is one row of the gRPC section and how to measure it for a while.
type grpcMeasurement struct {
	row       *row
	gateway   *process // nil when the model is called directly
	generator string
	duration  time.Duration
	overhead  float64 // seconds a measurement takes beyond its duration, for the progress line
	load      func(d time.Duration) (loadResult, error)
	// warmFailed is set when the warm-up failed: the row is reported with why, and not measured.
	warmFailed bool
}

// grpcTarget is one side of the gRPC comparison.
type grpcTarget struct {
	name  string
	addr  string
	key   string   // "" for the model itself
	proc  *process // the gateway, nil for the model itself
	conns []*grpc.ClientConn
}

func (t *grpcTarget) close() {
	for _, c := range t.conns {
		c.Close()
	}
}

// dialGRPC opens n h2c client connections to addr (grpc-go connects on the first call).
func dialGRPC(addr string, n int) ([]*grpc.ClientConn, error) {
	var out []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// writeGRPCGatewayConfig writes a gateway configuration with the h2 listener and one key-auth
// gRPC service, "bench", in front of the gRPC model (h2c).
func writeGRPCGatewayConfig(path, data, admin, h2, dir, model string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\nadmin_listen: %q\ncompute_type: \"bench\"\n", data, admin)
	fmt.Fprintf(&b, "h2:\n  listen: %q\n  tls: false\n", h2)
	fmt.Fprintf(&b, "store:\n  dir: %q\n", filepath.Join(dir, "data"))
	b.WriteString("log:\n  level: warn\nserver:\n  shutdown_timeout: 2s\n")
	fmt.Fprintf(&b, "services:\n  - name: bench\n    auth: key\n    protocol: grpc\n    upstreams: [\"http://%s\"]\n", model)
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// startGatewayWith starts "gateway serve" (GOMAXPROCS=1, tracing off) on n free addresses, the
// first the admin API's and the second the data plane's; write writes its configuration.
func (h *harness) startGatewayWith(ctx context.Context, name string, n int, write func(path, dir string, addrs []string) error) (*gatewayInstance, []string, error) {
	dir := filepath.Join(h.tmp, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	env := append([]string{"GOMAXPROCS=1", "GATEWAY_ADMIN_KEY=" + h.adminKey}, h.telemetryEnv("")...)
	proc, addrs, err := startOnFreePorts(ctx, n, 2*time.Minute, func(a []string) (*process, error) {
		if err := write(cfgPath, dir, a); err != nil {
			return nil, err
		}
		return h.start(name, append(env, h.profileEnv(name)...), h.gatewayBin, "serve", "-config", cfgPath)
	})
	if err != nil {
		return nil, nil, err
	}
	return &gatewayInstance{proc: proc, data: addrs[1], admin: addrs[0], adminKey: h.adminKey, dir: dir}, addrs, nil
}

// grpcRows starts the gRPC model and its gateway, checks both, and measures them in turn.
func (h *harness) grpcRows(ctx context.Context) {
	gb := &grpcBench{Method: grpcMethodInfer, Connections: grpcConns, Concurrency: grpcConcurrency, Seconds: h.opts.duration.Seconds()}
	h.res.GRPC = gb
	fail := func(err error) {
		gb.Status, gb.Check = statusFailed, err.Error()
	}
	h.progress.say("starting the gRPC model and its gateway")
	model, addrs, err := startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		return h.startSelf("grpc-model", roleGRPCModel, a[0])
	})
	if err != nil {
		fail(err)
		return
	}
	defer model.stop()
	modelAddr := addrs[0]
	gw, gwAddrs, err := h.startGatewayWith(ctx, "scoregate-grpc", 3, func(path, dir string, a []string) error {
		return writeGRPCGatewayConfig(path, a[1], a[0], a[2], dir, modelAddr)
	})
	if err != nil {
		fail(err)
		return
	}
	defer gw.proc.stop()
	key, err := gw.regenerateKey(ctx, "bench")
	if err != nil {
		fail(err)
		return
	}
	targets := []*grpcTarget{{name: targetDirect, addr: modelAddr}, {name: targetGateway, addr: gwAddrs[2], key: key, proc: gw.proc}}
	for _, t := range targets {
		if t.conns, err = dialGRPC(t.addr, grpcConns); err != nil {
			fail(err)
			return
		}
		defer t.close()
	}
	if gb.Check, err = checkGRPC(ctx, targets[0], targets[1]); err != nil {
		fail(fmt.Errorf("check: %w", err))
		return
	}
	gb.Status = statusOK
	gb.ExtraSeconds = h.opts.grpcExtraDuration().Seconds()
	measurements, err := h.grpcMeasurements(ctx, gb, targets[0], targets[1])
	if err != nil {
		fail(err)
		return
	}
	for _, m := range measurements { // the connections, the gateway's pool to the model, its heap
		if _, err := m.load(h.opts.warmup); err != nil {
			m.row.Failures = append(m.row.Failures, fmt.Sprintf("warm-up: %v", err))
			m.warmFailed = true
		}
	}
	for r := range h.opts.rounds {
		for i := range measurements {
			m := measurements[(i+r)%len(measurements)]
			if ctx.Err() != nil {
				return
			}
			if m.warmFailed {
				continue
			}
			h.progress.step(fmt.Sprintf("round %d/%d, gRPC: %s (%s)", r+1, h.opts.rounds, m.row.Peer, m.generator), m.duration.Seconds()+m.overhead)
			s, err := h.measureWith(m.gateway, model, m.generator, func() (loadResult, error) { return m.load(m.duration) })
			if err != nil {
				m.row.Failures = append(m.row.Failures, err.Error())
			} else {
				m.row.Samples = append(m.row.Samples, s)
			}
		}
	}
	if gw.proc.exited() {
		gb.Notes = append(gb.Notes, fmt.Sprintf("the gateway exited during the run (%v): %s", gw.proc.err, gw.proc.tail()))
	}
}

// grpcMeasurements lists the selected rows of the gRPC section, in the order the rounds visit them:
// the grpc-go client's, ghz's and the paced streams'.
func (h *harness) grpcMeasurements(ctx context.Context, gb *grpcBench, direct, gateway *grpcTarget) ([]*grpcMeasurement, error) {
	var out []*grpcMeasurement
	add := func(rows *[]*row, peer string, t *grpcTarget, generator string, d time.Duration, overhead float64, load func(time.Duration) (loadResult, error)) {
		rw := &row{Profile: "grpc", Peer: peer, Mode: modeClosed}
		*rows = append(*rows, rw)
		out = append(out, &grpcMeasurement{row: rw, gateway: t.proc, generator: generator, duration: d, overhead: overhead, load: load})
	}
	if h.opts.selected(grpcSelect) {
		for _, t := range []*grpcTarget{direct, gateway} {
			add(&gb.Rows, t.name, t, "grpc-go", h.opts.duration, 0.1, func(d time.Duration) (loadResult, error) {
				return grpcClosedLoop(ctx, t, grpcConcurrency, d)
			})
		}
	}
	if h.opts.ghzSelected() {
		protoPath := filepath.Join(h.tmp, "inference.proto")
		if err := os.WriteFile(protoPath, inferenceProto, 0o600); err != nil {
			return nil, err
		}
		rows, err := ghzRows(protoPath, direct, gateway)
		if err != nil {
			return nil, err
		}
		gb.GhzVersion, gb.GhzStreamMessages = ghzVersion(), ghzStreamMessages
		for _, g := range rows {
			if h.opts.selected(g.name) {
				add(&gb.Ghz, g.name, g.target, "ghz", h.opts.grpcExtraDuration(), ghzOverhead, func(d time.Duration) (loadResult, error) {
					return h.runGhz(ctx, g.name, g.job, d)
				})
			}
		}
	}
	if h.opts.selected(streamDelaySelect) {
		gb.DelayStreams, gb.DelayMessages, gb.DelayEveryMs = streamDelayStreams, streamDelayMessages, ms(streamDelayEvery)
		for _, c := range []struct {
			name string
			t    *grpcTarget
		}{{streamDelayDirect, direct}, {streamDelayGateway, gateway}} {
			add(&gb.StreamDelay, c.name, c.t, "grpc-go", h.opts.grpcExtraDuration(), 0.1, func(d time.Duration) (loadResult, error) {
				return grpcStreamDelays(ctx, c.t, d)
			})
		}
	}
	return out, nil
}

// grpcSeconds is about how long a round of the gRPC section takes, for the progress line.
func (o options) grpcSeconds() float64 {
	var secs float64
	if o.selected(grpcSelect) {
		secs += 2 * (o.duration.Seconds() + 0.1)
	}
	for _, name := range []string{ghzUnaryDirect, ghzUnaryGateway, ghzStreamDirect, ghzStreamGateway} {
		if o.selected(name) {
			secs += o.grpcExtraDuration().Seconds() + ghzOverhead
		}
	}
	if o.selected(streamDelaySelect) {
		secs += 2 * (o.grpcExtraDuration().Seconds() + 0.1)
	}
	return secs
}

// checkGRPC makes sure the model answers a unary call and a stream directly, and the gateway
// refuses both without a key and with a wrong one (UNAUTHENTICATED) and passes both with its key
// (OK, the model's answer, every message of the stream).
func checkGRPC(ctx context.Context, direct, gateway *grpcTarget) (string, error) {
	withAuth := func(auth string) (context.Context, context.CancelFunc) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if auth != "" {
			cctx = metadata.AppendToOutgoingContext(cctx, "authorization", auth)
		}
		return cctx, cancel
	}
	call := func(t *grpcTarget, auth string) (*wrapperspb.BytesValue, error) {
		cctx, cancel := withAuth(auth)
		defer cancel()
		out := new(wrapperspb.BytesValue)
		return out, t.conns[0].Invoke(cctx, grpcMethodInfer, wrapperspb.Bytes(fastBody), out)
	}
	stream := func(t *grpcTarget, auth string) error {
		cctx, cancel := withAuth(auth)
		defer cancel()
		return readStamped(cctx, t.conns[0], 3, 0, func(time.Duration) {})
	}
	want := []byte(`"probabilities"`)
	if out, err := call(direct, ""); err != nil || !bytes.Contains(out.GetValue(), want) {
		return "", fmt.Errorf("direct call: %v (answer %s)", err, clip(out.GetValue()))
	}
	if err := stream(direct, ""); err != nil {
		return "", fmt.Errorf("direct stream: %w", err)
	}
	for _, c := range []struct{ what, auth string }{{"without a key", ""}, {"with a wrong key", wrongKey()}} {
		if _, err := call(gateway, c.auth); status.Code(err) != codes.Unauthenticated {
			return "", fmt.Errorf("through the gateway %s: %v, want UNAUTHENTICATED", c.what, err)
		}
		if err := stream(gateway, c.auth); status.Code(err) != codes.Unauthenticated {
			return "", fmt.Errorf("a stream through the gateway %s: %v, want UNAUTHENTICATED", c.what, err)
		}
	}
	if out, err := call(gateway, "Bearer "+gateway.key); err != nil || !bytes.Contains(out.GetValue(), want) {
		return "", fmt.Errorf("through the gateway with its key: %v (answer %s)", err, clip(out.GetValue()))
	}
	if err := stream(gateway, "Bearer "+gateway.key); err != nil {
		return "", fmt.Errorf("a stream through the gateway with its key: %w", err)
	}
	return "direct: OK, a stream with every message; gateway: UNAUTHENTICATED without a key and with a wrong one, OK with the model's answer and a stream with every message with its key", nil
}

// grpcClosedLoop keeps concurrency calls in flight on t's connections for d, each goroutine
// calling again as soon as its call returns.
func grpcClosedLoop(ctx context.Context, t *grpcTarget, concurrency int, d time.Duration) (loadResult, error) {
	// One deadline for the whole loop: a stalled call ends with it instead of hanging the run.
	lctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	if t.key != "" {
		lctx = metadata.AppendToOutgoingContext(lctx, "authorization", "Bearer "+t.key)
	}
	in := wrapperspb.Bytes(fastBody)
	r := closedLoop(ctx, concurrency, d, func(g int) (func() string, func()) {
		conn, out := t.conns[g%len(t.conns)], new(wrapperspb.BytesValue)
		return func() string {
			if err := conn.Invoke(lctx, grpcMethodInfer, in, out); err != nil {
				return status.Code(err).String() + ": " + status.Convert(err).Message()
			}
			return ""
		}, nil
	})
	if r.requests == 0 {
		return r, errors.New("no call completed")
	}
	return r, ctx.Err()
}

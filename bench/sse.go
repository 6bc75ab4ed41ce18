package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The SSE rows: a model that streams server-sent events, read directly and through a key-auth
// scoregate, each stream timed from the request to its first event and to its end.
const (
	sseEvents   = 10                    // events per stream, the first at once
	sseEvery    = 10 * time.Millisecond // between two events
	ssePath     = "/sse"
	sseSelect   = "sse"
	sseParallel = 8 // streams open at once
)

// sseStreams is the number of streams per measurement.
func (o options) sseStreams() int {
	if o.quick {
		return 80
	}
	return 200
}

// sseBench is the SSE comparison: how it ran and its rows.
type sseBench struct {
	Events      int       `json:"eventsPerStream"`
	EveryMs     float64   `json:"eventEveryMs"`
	Streams     int       `json:"streamsPerMeasurement"`
	Concurrency int       `json:"concurrency"`
	Status      string    `json:"status"`
	Check       string    `json:"check"`
	Rows        []*sseRow `json:"rows"`
	Notes       []string  `json:"notes,omitempty"`
}

// sseRow is one target's repeated measurement.
type sseRow struct {
	Target   string      `json:"target"`
	Samples  []sseSample `json:"samples"`
	Failures []string    `json:"failures,omitempty"`
	Summary  sseSummary  `json:"summary"`
}

// sseSample is one measurement: streams read in full, their times, the delay of each event.
type sseSample struct {
	Streams         int64   `json:"streams"`
	Errors          int64   `json:"errors"`
	FirstError      string  `json:"firstError,omitempty"`
	Seconds         float64 `json:"seconds"`
	TTFBp50ms       float64 `json:"firstEventP50Ms"`
	TTFBp99ms       float64 `json:"firstEventP99Ms"`
	TotalP50ms      float64 `json:"streamP50Ms"`
	TotalP99ms      float64 `json:"streamP99Ms"`
	EventDelayP50ms float64 `json:"eventDelayP50Ms"` // client read time minus model write time
	EventDelayP99ms float64 `json:"eventDelayP99Ms"`
	GatewayCPUus    float64 `json:"gatewayCpuUsPerStream,omitempty"`
}

type sseSummary struct {
	TTFBp50ms       stat  `json:"firstEventP50Ms"`
	TTFBp99ms       stat  `json:"firstEventP99Ms"`
	TotalP50ms      stat  `json:"streamP50Ms"`
	TotalP99ms      stat  `json:"streamP99Ms"`
	EventDelayP50ms stat  `json:"eventDelayP50Ms"`
	EventDelayP99ms stat  `json:"eventDelayP99Ms"`
	GatewayCPUus    stat  `json:"gatewayCpuUsPerStream"`
	Streams         int64 `json:"streams"`
	Errors          int64 `json:"errors"`
}

func summarizeSSE(ss []sseSample) sseSummary {
	f := func(get func(sseSample) float64) stat {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = get(s)
		}
		return newStat(v)
	}
	out := sseSummary{
		TTFBp50ms:       f(func(s sseSample) float64 { return s.TTFBp50ms }),
		TTFBp99ms:       f(func(s sseSample) float64 { return s.TTFBp99ms }),
		TotalP50ms:      f(func(s sseSample) float64 { return s.TotalP50ms }),
		TotalP99ms:      f(func(s sseSample) float64 { return s.TotalP99ms }),
		EventDelayP50ms: f(func(s sseSample) float64 { return s.EventDelayP50ms }),
		EventDelayP99ms: f(func(s sseSample) float64 { return s.EventDelayP99ms }),
		GatewayCPUus:    f(func(s sseSample) float64 { return s.GatewayCPUus }),
	}
	for _, s := range ss {
		out.Streams += s.Streams
		out.Errors += s.Errors
	}
	return out
}

// sseModel streams the events from inside the harness, so that the model's write times and the
// client's read times are read from the same (monotonic) clock: each event carries the time it
// was written, as nanoseconds since epoch.
type sseModel struct {
	epoch time.Time
	srv   *http.Server
	addr  string
}

func startSSEModel() (*sseModel, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &sseModel{epoch: time.Now(), addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc(ssePath, m.serve)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go m.srv.Serve(ln)
	return m, nil
}

func (m *sseModel) close() { m.srv.Close() }

// serve writes sseEvents events sseEvery apart (on a schedule from the first, so that the
// sleeps' overshoot does not add up), each flushed at once.
func (m *sseModel) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	start := time.Now()
	for i := range sseEvents {
		if wait := time.Until(start.Add(time.Duration(i) * sseEvery)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "id: %d\ndata: %d %d\n\n", i, i, time.Since(m.epoch).Nanoseconds())
		if fl != nil {
			fl.Flush()
		}
	}
}

// sseTarget is one side of the SSE comparison.
type sseTarget struct {
	name   string
	url    string
	auth   string   // Authorization value, "" for none
	proc   *process // the gateway, nil for the model itself
	client *http.Client
}

func newSSEClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 64, DisableCompression: true, IdleConnTimeout: time.Minute,
	}}
}

// sseRead is what reading one stream saw.
type sseRead struct {
	status int
	ctype  string
	events int
	ttfb   time.Duration   // request sent to first event read whole
	total  time.Duration   // request sent to the end of the stream
	delays []time.Duration // per event: read time minus write time
}

// readStream sends one GET and reads its events to the end.
func (m *sseModel) readStream(ctx context.Context, t *sseTarget, auth string) (sseRead, error) {
	var out sseRead
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return out, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	began := time.Now()
	resp, err := t.client.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	out.status, out.ctype = resp.StatusCode, resp.Header.Get("Content-Type")
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return out, nil
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, io.EOF) && len(line) == 0 {
			break
		}
		if err != nil {
			return out, fmt.Errorf("after %d events: %w", out.events, err)
		}
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		now := time.Since(m.epoch)
		if out.events == 0 {
			out.ttfb = time.Since(began)
		}
		f := bytes.Fields(data)
		if len(f) != 2 {
			return out, fmt.Errorf("event %d: malformed data %q", out.events, data)
		}
		wrote, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil {
			return out, fmt.Errorf("event %d: %w", out.events, err)
		}
		out.delays = append(out.delays, now-time.Duration(wrote))
		out.events++
	}
	out.total = time.Since(began)
	if out.events != sseEvents {
		return out, fmt.Errorf("%d events, want %d", out.events, sseEvents)
	}
	return out, nil
}

// sseRows starts the SSE model and a gateway in front of it, checks both, and measures them in turn.
func (h *harness) sseRows(ctx context.Context) {
	sb := &sseBench{Events: sseEvents, EveryMs: ms(sseEvery), Streams: h.opts.sseStreams(), Concurrency: sseParallel}
	h.res.SSE = sb
	fail := func(err error) { sb.Status, sb.Check = statusFailed, err.Error() }
	h.progress.say("starting the SSE model and its gateway")
	m, err := startSSEModel()
	if err != nil {
		fail(err)
		return
	}
	defer m.close()
	gw, _, err := h.startGatewayWith(ctx, "scoregate-sse", 2, func(path, dir string, a []string) error {
		return writeGatewayConfig(path, gatewayConfig{name: "scoregate sse", auth: "key"}, a[1], a[0], dir, m.addr)
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
	targets := []*sseTarget{
		{name: targetDirect, url: "http://" + m.addr + ssePath, client: newSSEClient()},
		{name: targetGateway, url: "http://" + gw.data + servicePrefix + ssePath, auth: "Bearer " + key, proc: gw.proc, client: newSSEClient()},
	}
	for _, t := range targets {
		defer t.client.CloseIdleConnections()
	}
	if sb.Check, err = m.check(ctx, targets[0], targets[1]); err != nil {
		fail(fmt.Errorf("check: %w", err))
		return
	}
	sb.Status = statusOK
	for _, t := range targets { // warm-up: the connections and the gateway's first streams
		if _, err := m.load(ctx, t, sseParallel, sseParallel); err != nil {
			fail(fmt.Errorf("warm-up of %s: %w", t.name, err))
			return
		}
	}
	rows := map[string]*sseRow{}
	for _, t := range targets {
		rows[t.name] = &sseRow{Target: t.name}
		sb.Rows = append(sb.Rows, rows[t.name])
	}
	for r := range h.opts.rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			if ctx.Err() != nil {
				return
			}
			h.progress.step(fmt.Sprintf("round %d/%d, SSE streams: %s", r+1, h.opts.rounds, t.name), h.sseSeconds())
			s, err := h.measureSSE(ctx, m, t, sb.Streams)
			if err != nil {
				rows[t.name].Failures = append(rows[t.name].Failures, err.Error())
			} else {
				rows[t.name].Samples = append(rows[t.name].Samples, s)
			}
		}
	}
	if gw.proc.exited() {
		sb.Notes = append(sb.Notes, fmt.Sprintf("the gateway exited during the run (%v): %s", gw.proc.err, gw.proc.tail()))
	}
}

// sseSeconds is about how long one SSE measurement lasts.
func (h *harness) sseSeconds() float64 {
	waves := (h.opts.sseStreams() + sseParallel - 1) / sseParallel
	return float64(waves) * (float64(sseEvents-1)*sseEvery.Seconds() + 0.005)
}

// check makes sure the model streams its events directly, and the gateway refuses a stream
// without a key and with a wrong one (401) and passes it with its key (200, text/event-stream,
// every event).
func (m *sseModel) check(ctx context.Context, direct, gateway *sseTarget) (string, error) {
	one := func(t *sseTarget, auth string, want int) error {
		r, err := m.readStream(ctx, t, auth)
		if err != nil {
			return err
		}
		if r.status != want {
			return fmt.Errorf("GET %s: status %d, want %d", t.url, r.status, want)
		}
		if want == http.StatusOK && r.ctype != "text/event-stream" {
			return fmt.Errorf("GET %s: Content-Type %q, want text/event-stream", t.url, r.ctype)
		}
		return nil
	}
	if err := one(direct, "", http.StatusOK); err != nil {
		return "", fmt.Errorf("direct: %w", err)
	}
	if err := one(gateway, "", http.StatusUnauthorized); err != nil {
		return "", fmt.Errorf("through the gateway without a key: %w", err)
	}
	if err := one(gateway, wrongKey(), http.StatusUnauthorized); err != nil {
		return "", fmt.Errorf("through the gateway with a wrong key: %w", err)
	}
	if err := one(gateway, gateway.auth, http.StatusOK); err != nil {
		return "", fmt.Errorf("through the gateway with its key: %w", err)
	}
	return fmt.Sprintf("direct: 200 with %d events; gateway: 401 without a key and with a wrong one, 200 text/event-stream with %d events with its key", sseEvents, sseEvents), nil
}

// sseLoad is what reading many streams saw.
type sseLoad struct {
	streams, errors   int64
	firstErr          string
	elapsed           time.Duration
	ttfb, total, dely *hdrhistogram.Histogram
}

// load reads n streams from t, parallel at a time.
func (m *sseModel) load(ctx context.Context, t *sseTarget, n, parallel int) (sseLoad, error) {
	out := sseLoad{ttfb: newHistogram(), total: newHistogram(), dely: newHistogram()}
	var (
		next atomic.Int64
		errs errorTally
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range parallel {
		wg.Go(func() {
			for ctx.Err() == nil && next.Add(1) <= int64(n) {
				r, err := m.readStream(ctx, t, t.auth)
				switch {
				case err != nil:
					errs.add(err.Error())
					continue
				case r.status != http.StatusOK:
					errs.add(fmt.Sprintf("status %d", r.status))
					continue
				}
				mu.Lock()
				out.streams++
				out.ttfb.RecordValue(int64(r.ttfb / time.Microsecond))
				out.total.RecordValue(int64(r.total / time.Microsecond))
				for _, d := range r.delays {
					out.dely.RecordValue(max(int64(d/time.Microsecond), 0))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out.elapsed = time.Since(start)
	out.errors, out.firstErr = errs.n, errs.first
	return out, ctx.Err()
}

// measureSSE reads n streams from t and the gateway's CPU time around them.
func (h *harness) measureSSE(ctx context.Context, m *sseModel, t *sseTarget, n int) (sseSample, error) {
	var before, after usage
	var err error
	if t.proc != nil {
		if before, err = readUsage(t.proc.pid()); err != nil {
			return sseSample{}, fmt.Errorf("reading the gateway's CPU time: %w", err)
		}
	}
	l, err := m.load(ctx, t, n, sseParallel)
	if err != nil {
		return sseSample{}, err
	}
	if t.proc != nil {
		if after, err = readUsage(t.proc.pid()); err != nil {
			return sseSample{}, fmt.Errorf("the gateway is gone: %w (%s)", err, t.proc.tail())
		}
	}
	q := func(hg *hdrhistogram.Histogram, p float64) float64 {
		return ms(time.Duration(hg.ValueAtQuantile(p)) * time.Microsecond)
	}
	s := sseSample{
		Streams: l.streams, Errors: l.errors, FirstError: l.firstErr, Seconds: l.elapsed.Seconds(),
		TTFBp50ms: q(l.ttfb, 50), TTFBp99ms: q(l.ttfb, 99), TotalP50ms: q(l.total, 50), TotalP99ms: q(l.total, 99),
		EventDelayP50ms: q(l.dely, 50), EventDelayP99ms: q(l.dely, 99),
	}
	if t.proc != nil && l.streams > 0 {
		s.GatewayCPUus = perRequestUs(after.cpu-before.cpu, l.streams)
	}
	return s, nil
}

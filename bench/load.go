package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// target is what a load generator sends: POST of a body to one URL, with the credentials (if any)
// sent in turn, one per request.
type target struct {
	url         string
	contentType string
	body        []byte
	creds       []string
}

// loadResult is what a load generator saw.
type loadResult struct {
	requests int64 // answered, whatever the status
	errors   int64 // non-2xx answers and transport errors
	firstErr string
	elapsed  time.Duration
	lat      [4]time.Duration // p50, p90, p99, p99.9
	genCPU   time.Duration    // CPU time of an external generator (wrk); 0 for one in this process
}

// newHistogram records latencies in microseconds, from 1 µs to a minute, to three digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
}

// percentiles reads p50, p90, p99 and p99.9 from h.
func percentiles(h *hdrhistogram.Histogram) [4]time.Duration {
	var out [4]time.Duration
	for i, q := range []float64{50, 90, 99, 99.9} {
		out[i] = time.Duration(h.ValueAtQuantile(q)) * time.Microsecond
	}
	return out
}

// errorTally counts failed requests and keeps the first reason.
type errorTally struct {
	mu    sync.Mutex
	n     int64
	first string
}

func (e *errorTally) add(reason string) {
	e.mu.Lock()
	if e.n == 0 {
		e.first = reason
	}
	e.n++
	e.mu.Unlock()
}

// builtinClosedLoop keeps conns connections busy for d with fasthttp: the closed-loop generator
// when wrk is not installed.
func builtinClosedLoop(ctx context.Context, t target, conns int, d time.Duration) (loadResult, error) {
	u, err := url.Parse(t.url)
	if err != nil {
		return loadResult{}, err
	}
	client := &fasthttp.HostClient{
		Addr: u.Host, MaxConns: conns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxResponseBodySize: 64 << 20, MaxConnWaitTimeout: 10 * time.Second,
	}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	r := closedLoop(ctx, conns, d, func(int) (func() string, func()) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(t.url)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType(t.contentType)
		req.SetBodyRaw(t.body)
		call := func() string {
			if len(t.creds) > 0 {
				req.Header.Set("Authorization", t.creds[int(next.Add(1)-1)%len(t.creds)])
			}
			switch err := client.Do(req, resp); {
			case err != nil:
				return err.Error()
			case resp.StatusCode()/100 != 2:
				return fmt.Sprintf("status %d", resp.StatusCode())
			}
			return ""
		}
		return call, func() { fasthttp.ReleaseRequest(req); fasthttp.ReleaseResponse(resp) }
	})
	return r, ctx.Err()
}

// closedLoop runs workers goroutines until d has passed or ctx ends, each calling again as soon
// as its call returns, and counts the calls, their latencies (in an HDR histogram a worker, merged
// at the end) and their failures. newWorker makes worker i's call, which returns "" or why it
// failed, and what to do when the worker ends (nil: nothing).
func closedLoop(ctx context.Context, workers int, d time.Duration, newWorker func(i int) (call func() string, done func())) loadResult {
	var (
		requests atomic.Int64
		errs     errorTally
		mu       sync.Mutex
		total    = newHistogram()
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for i := range workers {
		wg.Go(func() {
			call, done := newWorker(i)
			if done != nil {
				defer done()
			}
			h := newHistogram()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				began := time.Now()
				failure := call()
				h.RecordValue(int64(time.Since(began) / time.Microsecond))
				requests.Add(1)
				if failure != "" {
					errs.add(failure)
				}
			}
			mu.Lock()
			total.Merge(h)
			mu.Unlock()
		})
	}
	wg.Wait()
	return loadResult{requests: requests.Load(), errors: errs.n, firstErr: errs.first,
		elapsed: time.Since(start), lat: percentiles(total)}
}

// sample is one measurement of one peer.
type sample struct {
	Requests        int64   `json:"requests"`
	Errors          int64   `json:"errors"`
	FirstError      string  `json:"firstError,omitempty"`
	Seconds         float64 `json:"seconds"`
	RPS             float64 `json:"rps"`
	ProxyCPUus      float64 `json:"proxyCpuUsPerRequest,omitempty"` // absent for the model alone
	UpstreamCPUus   float64 `json:"upstreamCpuUsPerRequest"`        // the model's
	ProxyRSSKB      int64   `json:"proxyRssKb,omitempty"`           // after the measurement
	ProxyCPUPercent float64 `json:"proxyCpuPercent,omitempty"`      // of one core, over the measurement
	GeneratorCPUus  float64 `json:"generatorCpuUsPerRequest"`       // the load generator's
	P50ms           float64 `json:"p50Ms"`
	P90ms           float64 `json:"p90Ms"`
	P99ms           float64 `json:"p99Ms"`
	P999ms          float64 `json:"p999Ms"`
	TargetRate      int     `json:"targetRate,omitempty"` // open loop only
	Generator       string  `json:"generator"`
}

// measure runs load and reads the CPU time of the proxy (when there is one) and of the model
// around it, so that CPU per request is the processes' own, not the load generator's. The
// generator's own CPU is read too (wrk's from its rusage, an in-process one's from this
// process), since on a small machine it competes with the proxy for the same cores.
func (h *harness) measure(proxy *process, generator string, load func() (loadResult, error)) (sample, error) {
	return h.measureWith(proxy, h.upstream, generator, load)
}

// measureWith is measure with the model process given: the gRPC rows have a model of their own.
func (h *harness) measureWith(proxy, upstream *process, generator string, load func() (loadResult, error)) (sample, error) {
	var pb, pa, ub, ua usage
	var err error
	self := os.Getpid()
	sb, _ := readCPU(self)
	if proxy != nil {
		if pb, err = readUsage(proxy.pid()); err != nil {
			return sample{}, fmt.Errorf("reading %s's CPU time: %w", proxy.name, err)
		}
	}
	if ub, err = readUsage(upstream.pid()); err != nil {
		return sample{}, fmt.Errorf("reading the model's CPU time: %w", err)
	}
	began := time.Now()
	r, err := load()
	wall := time.Since(began)
	if err != nil {
		return sample{}, err
	}
	if proxy != nil {
		if pa, err = readUsage(proxy.pid()); err != nil {
			return sample{}, fmt.Errorf("%s is gone: %w (%s)", proxy.name, err, proxy.tail())
		}
	}
	ua, _ = readUsage(upstream.pid())
	sa, _ := readCPU(self)
	if r.genCPU == 0 {
		r.genCPU = sa - sb
	}
	s := sample{
		Requests: r.requests, Errors: r.errors, FirstError: r.firstErr, Seconds: r.elapsed.Seconds(),
		Generator: generator,
		P50ms:     ms(r.lat[0]), P90ms: ms(r.lat[1]), P99ms: ms(r.lat[2]), P999ms: ms(r.lat[3]),
	}
	if r.elapsed > 0 {
		s.RPS = float64(r.requests) / r.elapsed.Seconds()
	}
	if r.requests > 0 {
		s.UpstreamCPUus = perRequestUs(ua.cpu-ub.cpu, r.requests)
		s.GeneratorCPUus = perRequestUs(r.genCPU, r.requests)
		if proxy != nil {
			s.ProxyCPUus = perRequestUs(pa.cpu-pb.cpu, r.requests)
		}
	}
	if proxy != nil {
		s.ProxyRSSKB = pa.rssKB
		s.ProxyCPUPercent = 100 * (pa.cpu - pb.cpu).Seconds() / wall.Seconds()
	}
	return s, nil
}

func perRequestUs(cpu time.Duration, requests int64) float64 {
	return float64(cpu) / float64(time.Microsecond) / float64(requests)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// closedLoop runs the closed-loop generator the options chose: wrk when installed, else the
// built-in one.
func (h *harness) closedLoop(ctx context.Context, t target, conns int, d time.Duration) (loadResult, string, error) {
	if h.wrk != "" {
		r, err := runWrk(ctx, h.wrk, h.tmp, t, conns, d)
		return r, "wrk", err
	}
	r, err := builtinClosedLoop(ctx, t, conns, d)
	return r, "builtin", err
}

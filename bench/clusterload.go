package main

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// clusterCred is one credential of the cluster run's steady load: the scoring path of its service
// and the Authorization value.
type clusterCred struct {
	path string
	auth string
}

// hitRecord is one request of the steady load.
type hitRecord struct {
	at     time.Duration // when it fell due, from the load's start
	done   time.Duration // when its answer, or its failure, came
	inst   int16         // the instance it went to
	status int16         // the HTTP status; statusTransport for a failure without one, statusDropped for a hit never sent
}

const (
	statusTransport = 0  // no answer: connection refused or reset, timeout
	statusDropped   = -1 // the instance's queue was full: the generator could not keep up
)

// clusterLoadTimeout bounds one steady-load request, from its send to its answer.
const clusterLoadTimeout = 5 * time.Second

// clusterLoad sends rate requests a second, open loop, spread over the instances in turn and, on
// each instance, over the credentials in turn, until it is stopped. It runs across the phases of
// the cluster run; each answer is recorded with its due time, so that a phase is the records of
// its window. A hit's due time is its place on a constant schedule (released every tick by a
// timerfd, as the open loop of the comparison is); a pool of workers per instance sends them over
// keep-alive connections, so that a slow instance does not hold back the others, and a hit that
// finds its instance's queue full is recorded as dropped rather than sent late.
type clusterLoad struct {
	insts   []string // data-plane addresses
	creds   []clusterCred
	rate    int
	start   time.Time
	clients []*fasthttp.HostClient
	queues  []chan uint64 // hit numbers, per instance
	stopped chan struct{}
	wg      sync.WaitGroup
	sched   sync.WaitGroup

	mu   sync.Mutex
	recs []hitRecord
	sent atomic.Int64
}

// clusterWorkers is the number of senders per instance: at 100 requests a second an instance
// holds a handful at once, unless it stalls.
const clusterWorkers = 32

// startClusterLoad starts the load at once.
func startClusterLoad(insts []string, creds []clusterCred, rate int) *clusterLoad {
	l := &clusterLoad{insts: insts, creds: creds, rate: rate, stopped: make(chan struct{})}
	for _, a := range insts {
		l.clients = append(l.clients, &fasthttp.HostClient{Addr: a, MaxConns: clusterWorkers, ReadTimeout: clusterLoadTimeout,
			WriteTimeout: clusterLoadTimeout, MaxIdleConnDuration: time.Minute})
		l.queues = append(l.queues, make(chan uint64, 4*clusterWorkers))
	}
	l.start = time.Now()
	for i := range insts {
		for range clusterWorkers {
			l.wg.Go(func() { l.work(i) })
		}
	}
	l.sched.Go(l.schedule)
	return l
}

// now is the time since the load started.
func (l *clusterLoad) now() time.Duration { return time.Since(l.start) }

// interval is the schedule's spacing of hits.
func (l *clusterLoad) interval() time.Duration { return time.Second / time.Duration(l.rate) }

// schedule releases the hits that fell due, every tick, until stopped.
func (l *clusterLoad) schedule() {
	interval := l.interval()
	tick := max(openTick, interval)
	tk := newTicker(tick)
	defer tk.stop()
	var released uint64
	n := uint64(len(l.insts))
	for {
		select {
		case <-l.stopped:
			return
		default:
		}
		due := uint64(l.now() / interval)
		for ; released < due; released++ {
			i := released % n
			select {
			case l.queues[i] <- released:
			default:
				at := time.Duration(released) * interval
				l.record(hitRecord{at: at, done: l.now(), inst: int16(i), status: statusDropped})
			}
		}
		tk.wait()
	}
}

// work sends the hits of instance i.
func (l *clusterLoad) work(i int) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	interval := l.interval()
	n := uint64(len(l.insts))
	for hit := range l.queues[i] {
		c := l.creds[(hit/n)%uint64(len(l.creds))]
		req.Reset()
		req.SetRequestURI("http://" + l.insts[i] + c.path)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", c.auth)
		req.SetBodyRaw(fastBody)
		status := int16(statusTransport)
		if err := l.clients[i].DoTimeout(req, resp, clusterLoadTimeout); err == nil {
			status = int16(resp.StatusCode())
		}
		l.sent.Add(1)
		l.record(hitRecord{at: time.Duration(hit) * interval, done: l.now(), inst: int16(i), status: status})
	}
}

func (l *clusterLoad) record(r hitRecord) {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
}

// stop ends the load and waits for the requests in flight.
func (l *clusterLoad) stop() {
	select {
	case <-l.stopped:
		return
	default:
	}
	close(l.stopped)
	l.sched.Wait()
	for _, q := range l.queues {
		close(q)
	}
	l.wg.Wait()
	for _, c := range l.clients {
		c.CloseIdleConnections()
	}
}

// window returns the records of the hits that fell due in [from, to), in due order.
func (l *clusterLoad) window(from, to time.Duration) []hitRecord {
	l.mu.Lock()
	var out []hitRecord
	for _, r := range l.recs {
		if r.at >= from && r.at < to {
			out = append(out, r)
		}
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// statusCounts tallies answers by kind.
type statusCounts struct {
	Sent      int64 `json:"sent"`
	OK        int64 `json:"ok"` // 2xx
	S401      int64 `json:"unauthorized401"`
	S429      int64 `json:"rateLimited429"`
	S503      int64 `json:"unavailable503"`
	Other     int64 `json:"otherStatus"`
	Transport int64 `json:"transportErrors"`
	Dropped   int64 `json:"dropped"`
	// FirstOther is the first status that is none of the above, for the report.
	FirstOther int `json:"firstOtherStatus,omitempty"`
}

// failed is every hit that did not end 2xx.
func (s statusCounts) failed() int64 { return s.Sent - s.OK }

func (s *statusCounts) add(r hitRecord) {
	s.Sent++
	switch {
	case r.status == statusDropped:
		s.Dropped++
	case r.status == statusTransport:
		s.Transport++
	case r.status/100 == 2:
		s.OK++
	case r.status == 401:
		s.S401++
	case r.status == 429:
		s.S429++
	case r.status == 503:
		s.S503++
	default:
		if s.Other == 0 {
			s.FirstOther = int(r.status)
		}
		s.Other++
	}
}

func countStatuses(recs []hitRecord) statusCounts {
	var s statusCounts
	for _, r := range recs {
		s.add(r)
	}
	return s
}

// latencies returns the p50 and p99 (ms) of the answered hits, each from its due time.
func latencies(recs []hitRecord) (p50, p99 float64) {
	h := newHistogram()
	for _, r := range recs {
		if r.status > 0 {
			_ = h.RecordValue(min(max(int64((r.done-r.at)/time.Microsecond), 1), h.HighestTrackableValue()))
		}
	}
	if h.TotalCount() == 0 {
		return 0, 0
	}
	return float64(h.ValueAtQuantile(50)) / 1000, float64(h.ValueAtQuantile(99)) / 1000
}

// poller sends single requests to the instances outside the steady load: the revocation probes
// and the checks, each instance over connections of its own.
type poller struct {
	insts   []string
	clients []*fasthttp.HostClient
}

func newPoller(insts []string) *poller {
	p := &poller{insts: insts}
	for _, a := range insts {
		p.clients = append(p.clients, &fasthttp.HostClient{Addr: a, MaxConns: 512, ReadTimeout: clusterLoadTimeout,
			WriteTimeout: clusterLoadTimeout, MaxIdleConnDuration: time.Minute})
	}
	return p
}

// status sends one scoring request with auth to instance i and returns the status (0 when it
// failed without one).
func (p *poller) status(i int, path, auth string) int {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + p.insts[i] + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set("Authorization", auth)
	req.SetBodyRaw(fastBody)
	if err := p.clients[i].DoTimeout(req, resp, clusterLoadTimeout); err != nil {
		return 0
	}
	return resp.StatusCode()
}

func (p *poller) close() {
	for _, c := range p.clients {
		c.CloseIdleConnections()
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/HdrHistogram/hdrhistogram-go"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/valyala/fasthttp"
)

// The open loop's knobs.
const (
	// openTick is how often the scheduler wakes to release the hits that fell due. On a small VM
	// each wake-up of an idle process costs tens of µs of CPU (some 22 µs for a bare timerfd
	// read on the two-core machine this was written on, more through the Go runtime), so waking
	// once per hit at tens of thousands of hits a second would take much of a core from the proxy
	// being measured; waking every openTick releases a few hits at once instead (a handful at
	// 25,000 a second), each counted from that tick, its intended send time.
	openTick = 250 * time.Microsecond
	// openSenderWindow sizes the connection pool: enough connections to carry the asked rate
	// at this latency, so that the pool is not what holds the requests back.
	openSenderWindow = 10 * time.Millisecond
	openMinSenders   = 64
	openMaxSenders   = 256
	// openTimeout bounds a request, from its send to the end of its answer; it fails beyond it.
	openTimeout = 10 * time.Second
)

// openLoop sends requests at a fixed rate whatever the answers' pace, so that latency is
// measured without the closed loop's coordinated omission. vegeta's constant pacer sets the
// schedule; one scheduler goroutine, woken by a timer every openTick, releases the hits that fell
// due to a fixed pool of sender goroutines, each with a long-lived HTTP/1.1 keep-alive connection
// of its own, one request at a time, written and read with fasthttp from requests serialized once
// per credential, answers' bodies dropped. A hit's latency runs from its intended send time (the
// tick that released it), so that time spent waiting for a free sender, when the answers come
// slowly, is counted rather than omitted, and is recorded in each sender's HDR histogram, merged
// at the end. The connections are opened before the clock starts and kept from one attack to
// the next, so that a warm-up attack leaves them open for the measured one.
//
// It replaces vegeta's Attacker, which, over a fasthttp round tripper, cost 35–120 µs of CPU per
// request on a two-core machine: more than the proxy could spare at half of HAProxy's maximum.
type openLoop struct {
	addr    string
	heads   [][]byte // the request line and headers, one per credential, sent in turn
	body    []byte
	next    atomic.Uint64 // the next credential
	senders []*sender
}

// newOpenLoop serializes t's request once per credential (once if it has none).
func newOpenLoop(t target) *openLoop {
	u, _ := url.Parse(t.url) // made by the harness
	o := &openLoop{addr: u.Host, body: t.body}
	creds := t.creds
	if len(creds) == 0 {
		creds = []string{""}
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	var buf bytes.Buffer
	for _, c := range creds {
		req.Reset()
		req.SetRequestURI(t.url)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType(t.contentType)
		if c != "" {
			req.Header.Set("Authorization", c)
		}
		req.SetBodyRaw(t.body)
		buf.Reset()
		if _, err := req.WriteTo(&buf); err != nil {
			panic(fmt.Sprintf("serializing a request to %s: %v", t.url, err)) // a bytes.Buffer does not fail
		}
		full := buf.Bytes()
		o.heads = append(o.heads, bytes.Clone(full[:len(full)-len(t.body)]))
	}
	return o
}

// openSenders is the pool size for rate: rate × openSenderWindow, within the bounds.
func openSenders(rate int) int {
	return min(max(int(float64(rate)*openSenderWindow.Seconds()), openMinSenders), openMaxSenders)
}

// close drops the kept connections.
func (o *openLoop) close() {
	for _, s := range o.senders {
		s.drop()
	}
}

// attack sends rate requests a second for d and records every answer's latency. The hits fall
// due on vegeta's constant schedule and are released every openTick (every hit's own time when
// they are further apart); each is counted from its release tick. Should the peer answer so
// slowly that the schedule falls behind by more than d, the hits left are not sent, and the
// achieved rate (requests over the elapsed time) shows the shortfall.
func (o *openLoop) attack(ctx context.Context, rate int, d time.Duration) (loadResult, error) {
	if rate < 1 {
		return loadResult{}, fmt.Errorf("open loop at %d requests a second", rate)
	}
	for len(o.senders) < openSenders(rate) {
		o.senders = append(o.senders, &sender{o: o})
	}
	o.connect(ctx)
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}

	var stopped atomic.Bool
	defer context.AfterFunc(ctx, func() { stopped.Store(true) })()
	var start time.Time // set before the first hit is released, read by the senders after
	limit := 2 * d      // nothing is sent past it
	disp := &dispatcher{}
	var wg sync.WaitGroup
	for i := len(o.senders) - 1; i >= 0; i-- {
		s := o.senders[i]
		s.reset()
		s.wake = make(chan time.Duration, 1)
		disp.idle = append(disp.idle, s)
		wg.Go(func() {
			for at := range s.wake {
				for ok := true; ok; at, ok = disp.done(s) {
					if !stopped.Load() && time.Since(start) <= limit {
						s.hit(start, at)
					}
				}
			}
		})
	}

	pacer := vegeta.ConstantPacer{Freq: rate, Per: time.Second}
	interval := max(pacer.Per/time.Duration(pacer.Freq), 1) // what the pacer waits between hits
	tick := interval * max(time.Duration(math.Round(float64(openTick)/float64(interval))), 1)
	start = time.Now()
	tk := newTicker(tick)
	var released uint64
	for at := tick; at-tick < d; at += tick {
		for time.Since(start) < at {
			tk.wait()
		}
		if stopped.Load() || time.Since(start) > limit {
			break
		}
		for {
			wait, stop := pacer.Pace(min(at, d), released)
			if stop || wait > 0 {
				break
			}
			disp.release(at)
			released++
		}
	}
	tk.stop()
	disp.pending.Wait()
	for _, s := range o.senders {
		close(s.wake)
	}
	wg.Wait()

	r := loadResult{elapsed: time.Since(start)}
	total := newHistogram()
	var firstAt time.Duration
	for _, s := range o.senders {
		if s.requests > 0 {
			total.Merge(s.hist)
		}
		r.requests += s.requests
		if s.errors > 0 && (r.errors == 0 || s.firstAt < firstAt) {
			r.firstErr, firstAt = s.firstErr, s.firstAt
		}
		r.errors += s.errors
	}
	r.lat = percentiles(total)
	return r, ctx.Err()
}

// connect opens the senders' missing connections, all at once, before the clock starts. One that
// cannot be opened is tried again by its first request, which fails if it still cannot.
func (o *openLoop) connect(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range o.senders {
		if s.conn == nil {
			wg.Go(func() { _ = s.dial(ctx) })
		}
	}
	wg.Wait()
}

// dispatcher hands the released hits to the senders: to the one that fell idle last, so that the
// fewest connections stay busy and warm, or, when none is idle, to a queue the senders empty
// oldest first as they finish, the queueing counted in the hits' latency.
type dispatcher struct {
	mu      sync.Mutex
	idle    []*sender
	queue   []time.Duration
	head    int            // queue[head:] are waiting
	pending sync.WaitGroup // hits released and not yet done
}

// release hands the hit meant for at to a sender, or queues it.
func (d *dispatcher) release(at time.Duration) {
	d.pending.Add(1)
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		s := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		s.wake <- at
		return
	}
	d.queue = append(d.queue, at)
	d.mu.Unlock()
}

// done marks s's hit done and gives it the oldest queued hit, if any; else s becomes idle.
func (d *dispatcher) done(s *sender) (time.Duration, bool) {
	d.pending.Done()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.head < len(d.queue) {
		at := d.queue[d.head]
		d.head++
		if d.head == len(d.queue) {
			d.queue, d.head = d.queue[:0], 0
		}
		return at, true
	}
	d.idle = append(d.idle, s)
	return 0, false
}

// sender sends one request at a time over a connection of its own and records the answers. Its
// fields are its own goroutine's during an attack, and the attack's between attacks.
type sender struct {
	o    *openLoop
	wake chan time.Duration // the next hit, from the dispatcher
	conn net.Conn
	br   *bufio.Reader
	resp fasthttp.Response
	vec  [2][]byte   // the request: head and body
	bufs net.Buffers // vec, written at once

	hist     *hdrhistogram.Histogram // latencies in µs
	requests int64
	errors   int64
	firstErr string
	firstAt  time.Duration // when firstErr was seen, from the start
}

// reset readies s for an attack. Its histogram is made by its first hit and kept for the next
// attacks: with the dispatcher's preference for the last idle sender, most senders of a large pool
// never send, and a histogram is some 140 KB.
func (s *sender) reset() {
	if s.hist != nil {
		s.hist.Reset()
	}
	s.requests, s.errors, s.firstErr, s.firstAt = 0, 0, "", 0
}

func (s *sender) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: openTimeout}
	c, err := d.DialContext(ctx, "tcp", s.o.addr)
	if err != nil {
		return err
	}
	s.conn = c
	if s.br == nil {
		s.br = bufio.NewReaderSize(c, 4096)
	} else {
		s.br.Reset(c)
	}
	return nil
}

func (s *sender) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

// hit sends one request meant to leave at start+at and records its latency from then.
func (s *sender) hit(start time.Time, at time.Duration) {
	err := s.roundTrip()
	now := time.Since(start)
	us := int64((now - at) / time.Microsecond)
	if s.hist == nil {
		s.hist = newHistogram()
	}
	_ = s.hist.RecordValue(min(max(us, 0), s.hist.HighestTrackableValue()))
	s.requests++
	if err == nil && s.resp.StatusCode()/100 != 2 {
		err = fmt.Errorf("status %d", s.resp.StatusCode())
	}
	if err != nil {
		if s.errors == 0 {
			s.firstErr, s.firstAt = err.Error(), now
		}
		s.errors++
	}
}

// roundTrip writes the next request and reads its answer, whose body is dropped. A connection
// that fails, or that the peer closes, is dropped, and the next request opens another.
func (s *sender) roundTrip() error {
	if s.conn == nil {
		if err := s.dial(context.Background()); err != nil {
			return err
		}
	}
	heads := s.o.heads
	s.vec = [2][]byte{heads[(s.o.next.Add(1)-1)%uint64(len(heads))], s.o.body}
	s.bufs = s.vec[:]
	if err := s.conn.SetDeadline(time.Now().Add(openTimeout)); err != nil {
		s.drop()
		return err
	}
	if _, err := s.bufs.WriteTo(s.conn); err != nil {
		s.drop()
		return err
	}
	if err := s.resp.Read(s.br); err != nil {
		s.drop()
		return err
	}
	if s.resp.ConnectionClose() {
		s.drop()
	}
	return nil
}

// ticker wakes the scheduler every period. It reads a timerfd through the runtime's network
// poller, which wakes to the microsecond: Go's own timers wake a process that sleeps in the poller
// only to the millisecond, which would send the hits in bursts a millisecond apart, each late. If
// no timerfd can be had, it falls back to a time.Ticker.
type ticker struct {
	period time.Duration
	f      *os.File // the timerfd
	t      *time.Ticker
	buf    [8]byte
}

// newTicker starts a ticker: the first tick one period from now.
func newTicker(period time.Duration) *ticker {
	t := &ticker{period: period}
	const clockMonotonic = 1
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, clockMonotonic, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		t.t = time.NewTicker(period)
		return t
	}
	t.f = os.NewFile(fd, "timerfd")
	ts := syscall.NsecToTimespec(int64(period))
	spec := struct{ interval, value syscall.Timespec }{ts, ts}
	if _, _, errno = syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, fd, 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); errno != 0 {
		t.fallBack()
	}
	return t
}

func (t *ticker) fallBack() {
	_ = t.f.Close()
	t.f = nil
	t.t = time.NewTicker(t.period)
}

// wait returns at the next tick, or at once if one passed unread.
func (t *ticker) wait() {
	if t.f != nil {
		if _, err := t.f.Read(t.buf[:]); err != nil {
			t.fallBack()
		}
		return
	}
	<-t.t.C
}

func (t *ticker) stop() {
	if t.f != nil {
		_ = t.f.Close()
	}
	if t.t != nil {
		t.t.Stop()
	}
}

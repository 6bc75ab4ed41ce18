package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeClock is moved by hand; reading it from several goroutines is fine while nobody moves it.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)} }

var allow = Decision{Allowed: true}

func refuse(retryAfter time.Duration) Decision { return Decision{RetryAfter: retryAfter} }

func TestLocalGCRA(t *testing.T) {
	ctx := t.Context()
	type step struct {
		at   time.Duration // since the first request
		key  string        // "k" when empty
		want Decision
	}
	tests := []struct {
		name  string
		limit Limit
		steps []step
	}{
		{
			name:  "a burst, then the steady rate, then a full burst again after idling",
			limit: Limit{Rate: 10, Burst: 3}, // one request per 100ms, window 300ms
			steps: []step{
				{at: 0, want: allow},
				{at: 0, want: allow},
				{at: 0, want: allow},
				{at: 0, want: refuse(100 * time.Millisecond)},
				{at: 40 * time.Millisecond, want: refuse(60 * time.Millisecond)},
				{at: 100 * time.Millisecond, want: allow},
				{at: 100 * time.Millisecond, want: refuse(100 * time.Millisecond)},
				{at: 250 * time.Millisecond, want: allow},
				{at: 250 * time.Millisecond, want: refuse(50 * time.Millisecond)},
				{at: time.Second, want: allow},
				{at: time.Second, want: allow},
				{at: time.Second, want: allow},
				{at: time.Second, want: refuse(100 * time.Millisecond)},
			},
		},
		{
			name:  "refused requests use none of the allowance",
			limit: Limit{Rate: 10, Burst: 1},
			steps: []step{
				{at: 0, want: allow},
				{at: 10 * time.Millisecond, want: refuse(90 * time.Millisecond)},
				{at: 20 * time.Millisecond, want: refuse(80 * time.Millisecond)},
				{at: 99 * time.Millisecond, want: refuse(time.Millisecond)},
				{at: 100 * time.Millisecond, want: allow},
			},
		},
		{
			name:  "burst 0 counts as 1",
			limit: Limit{Rate: 1, Burst: 0},
			steps: []step{
				{at: 0, want: allow},
				{at: 0, want: refuse(time.Second)},
				{at: 999 * time.Millisecond, want: refuse(time.Millisecond)},
				{at: time.Second, want: allow},
			},
		},
		{
			name:  "a negative burst counts as 1",
			limit: Limit{Rate: 1, Burst: -5},
			steps: []step{{at: 0, want: allow}, {at: 0, want: refuse(time.Second)}},
		},
		{
			name:  "a rate that does not divide a second rounds the interval down to the nanosecond",
			limit: Limit{Rate: 3, Burst: 1},
			steps: []step{
				{at: 0, want: allow},
				{at: 0, want: refuse(333333333)},
				{at: 333333333, want: allow},
			},
		},
		{
			name:  "keys are independent",
			limit: Limit{Rate: 1, Burst: 1},
			steps: []step{
				{at: 0, key: "key:a", want: allow},
				{at: 0, key: "key:a", want: refuse(time.Second)},
				{at: 0, key: "principal:a", want: allow},
				{at: 500 * time.Millisecond, key: "principal:a", want: refuse(500 * time.Millisecond)},
				{at: 500 * time.Millisecond, key: "key:a", want: refuse(500 * time.Millisecond)},
			},
		},
		{
			name:  "an absurdly slow rate is capped at a ten-year window, not overflowed",
			limit: Limit{Rate: 1e-12, Burst: 1000},
			steps: []step{{at: 0, want: allow}, {at: 0, want: refuse(maxWindow)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			start := clock.t
			l := NewLocal(WithClock(clock.now))
			var got, want []Decision
			for _, s := range tt.steps {
				clock.t = start.Add(s.at)
				key := s.key
				if key == "" {
					key = "k"
				}
				got = append(got, l.Allow(ctx, key, tt.limit))
				want = append(want, s.want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decisions, step by step (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLocalNoRateMeansNoLimit(t *testing.T) {
	ctx := t.Context()
	for _, lim := range []Limit{{}, {Rate: 0, Burst: 5}, {Rate: -1, Burst: 1}, {Rate: math.NaN(), Burst: 1}, {Rate: math.Inf(1)}} {
		t.Run(fmt.Sprint(lim), func(t *testing.T) {
			l := NewLocal()
			for i := range 100 {
				if d := l.Allow(ctx, "k", lim); d != allow {
					t.Fatalf("request %d: %+v, want allowed", i, d)
				}
			}
			if n := l.len(); n != 0 {
				t.Errorf("%d keys stored for a limit that limits nothing", n)
			}
		})
	}
}

// Memory must not grow with keys that are used once: every second a thousand new keys, for 100
// seconds. A shard drops its idle keys at most sweepEvery after they went idle, so at most the
// keys of the last 11 seconds can be held (the window, 500ms, is shorter than a round).
func TestLocalDropsIdleKeys(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	l := NewLocal(WithClock(clock.now))
	lim := Limit{Rate: 10, Burst: 5}
	const rounds, perRound = 100, 1000
	for r := range rounds {
		for i := range perRound {
			if d := l.Allow(ctx, fmt.Sprintf("key:%d-%d", r, i), lim); !d.Allowed {
				t.Fatalf("a new key was refused: %+v", d)
			}
		}
		clock.advance(time.Second)
	}
	n := l.len()
	if limit := int(sweepEvery/time.Second+1) * perRound; n > limit {
		t.Errorf("%d keys held after %d one-off keys; want at most %d", n, rounds*perRound, limit)
	}
	t.Logf("%d keys held after %d one-off keys", n, rounds*perRound)
}

// A sweep drops only keys whose TAT has passed: one still ahead keeps its state.
func TestLocalSweepKeepsBusyKeys(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock()
	l := NewLocal(WithClock(clock.now))
	lim := Limit{Rate: 0.01, Burst: 1} // one request per 100s
	if d := l.Allow(ctx, "principal:slow", lim); d != allow {
		t.Fatalf("first request: %+v", d)
	}
	clock.advance(sweepEvery + 5*time.Second) // the shard sweeps on the next call
	if d, want := l.Allow(ctx, "principal:slow", lim), refuse(100*time.Second-sweepEvery-5*time.Second); d != want {
		t.Errorf("after a sweep: %+v, want %+v", d, want)
	}
}

// However many goroutines ask at one instant, exactly the burst gets through.
func TestLocalConcurrentCallersShareOneBurst(t *testing.T) {
	ctx := t.Context()
	clock := newFakeClock() // never moved: read concurrently only
	l := NewLocal(WithClock(clock.now))
	lim := Limit{Rate: 1, Burst: 50}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if l.Allow(ctx, "key:shared", lim).Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 50 {
		t.Errorf("%d of 8000 simultaneous requests allowed, want the burst, 50", n)
	}
}

// The hot path allocates nothing once a key is known.
func TestLocalAllowDoesNotAllocate(t *testing.T) {
	ctx := t.Context()
	l := NewLocal()
	lim := Limit{Rate: 1e6, Burst: 100}
	l.Allow(ctx, "key:abc", lim)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(ctx, "key:abc", lim) }); n != 0 {
		t.Errorf("Local.Allow on a known key: %v allocations, want 0", n)
	}
}

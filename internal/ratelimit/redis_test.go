package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

const testPrefix = "{scoregate}:"

// newClient connects the way authn.OpenRedis does: no retries, and the context's deadline
// bounds every call.
func newClient(t testing.TB, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSharedGCRA(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	s := NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(time.Second))
	lim := Limit{Rate: 1, Burst: 3}

	start := time.Now()
	for i := range 3 {
		if d := s.Allow(ctx, "key:abc", lim); d != allow {
			t.Fatalf("request %d of the burst: %+v", i, d)
		}
	}
	d := s.Allow(ctx, "key:abc", lim)
	// Redis's clock has moved on by at most the time since start: RetryAfter is one interval less that.
	if elapsed := time.Since(start); d.Allowed || d.RetryAfter > time.Second || d.RetryAfter < time.Second-elapsed-time.Millisecond {
		t.Errorf("request after the burst: %+v, want refused, retry after (%v, 1s]", d, time.Second-elapsed)
	}
	if d := s.Allow(ctx, "principal:abc", lim); d != allow {
		t.Errorf("another key: %+v, want allowed", d)
	}

	// The TAT is 3 s ahead and expires when it is reached.
	pttl, err := strconv.Atoi(srv.Do(t, "PTTL", testPrefix+"rl:key:abc"))
	if err != nil || pttl <= 2000 || pttl > 3000 {
		t.Errorf("PTTL of the key's TAT = %d (%v), want in (2000, 3000]", pttl, err)
	}
	// No limit, no Redis key.
	if d := s.Allow(ctx, "key:unlimited", Limit{}); d != allow {
		t.Errorf("no limit: %+v", d)
	}
	if n := srv.Do(t, "EXISTS", testPrefix+"rl:key:unlimited"); n != "0" {
		t.Errorf("a key without a limit was stored (EXISTS = %s)", n)
	}

	// A Redis that has forgotten the script (restart, SCRIPT FLUSH) gets it again with EVAL.
	srv.Do(t, "SCRIPT", "FLUSH")
	if d := s.Allow(ctx, "key:after-flush", lim); d != allow {
		t.Errorf("after SCRIPT FLUSH: %+v", d)
	}
	if s.Degraded() || s.Fallbacks() != 0 {
		t.Errorf("Degraded() = %v, Fallbacks() = %d with Redis up; want false, 0", s.Degraded(), s.Fallbacks())
	}
}

// A caller that gives up (a client that hung up) gets a local decision, and Redis is not blamed.
func TestSharedCallerCancelIsNotAnOutage(t *testing.T) {
	srv := redistest.Start(t)
	s := NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(time.Second))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if d := s.Allow(ctx, "key:gone", Limit{Rate: 1, Burst: 1}); d != allow {
		t.Errorf("cancelled caller: %+v, want the local decision, allowed", d)
	}
	if s.Degraded() || s.Fallbacks() != 1 {
		t.Errorf("Degraded() = %v, Fallbacks() = %d; want false, 1", s.Degraded(), s.Fallbacks())
	}
	if d := s.Allow(t.Context(), "key:gone", Limit{Rate: 1, Burst: 1}); d != allow || s.Fallbacks() != 1 {
		t.Errorf("next call: %+v, Fallbacks() = %d; want allowed by Redis, which has not seen the key", d, s.Fallbacks())
	}
}

// Acceptance 6: two instances (two clients) on one Redis, 50 req/s with a burst of 5, both
// hammering one key from several goroutines: together they get the burst plus 50 a second,
// within 10%.
func TestSharedAcrossInstances(t *testing.T) {
	for _, tt := range []struct {
		name     string
		duration time.Duration
	}{
		{"2s, the quick check", 2 * time.Second},
		{"10s, the acceptance", 10 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.duration > 5*time.Second && testing.Short() {
				t.Skip("takes", tt.duration)
			}
			ctx := t.Context()
			srv := redistest.Start(t)
			lim := Limit{Rate: 50, Burst: 5}
			// A generous timeout: CI runs every package's tests at once, and a call decided
			// locally would not test the shared limit.
			instances := []*Shared{
				NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(2*time.Second)),
				NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(2*time.Second)),
			}
			var allowed, calls [2]atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			deadline := start.Add(tt.duration)
			for i, s := range instances {
				for range 4 {
					wg.Go(func() {
						for time.Now().Before(deadline) {
							calls[i].Add(1)
							if s.Allow(ctx, "key:acceptance", lim).Allowed {
								allowed[i].Add(1)
							}
						}
					})
				}
			}
			wg.Wait()
			elapsed := time.Since(start)

			total := allowed[0].Load() + allowed[1].Load()
			offered := calls[0].Load() + calls[1].Load()
			want := float64(lim.Burst) + lim.Rate*elapsed.Seconds()
			t.Logf("%d of %d requests allowed in %v (instance 1: %d of %d, instance 2: %d of %d); want %.0f",
				total, offered, elapsed.Round(time.Millisecond), allowed[0].Load(), calls[0].Load(), allowed[1].Load(), calls[1].Load(), want)
			if tolerance := 0.1 * lim.Rate * tt.duration.Seconds(); float64(total) < want-tolerance || float64(total) > want+tolerance {
				t.Errorf("%d requests allowed, want %.0f ± %.0f", total, want, tolerance)
			}
			if float64(offered) < 10*want {
				t.Errorf("only %d requests offered: not enough to test a limit of %.0f", offered, want)
			}
			for i, s := range instances {
				if s.Fallbacks() != 0 {
					t.Errorf("instance %d decided %d calls locally", i+1, s.Fallbacks())
				}
				if calls[i].Load() == 0 {
					t.Errorf("instance %d made no calls", i+1)
				}
			}
		})
	}
}

// Redis goes away (refusing connections, or accepting them and never answering): every call
// still returns within the timeout, decided by the local limiter, and the first answer after
// Redis is back ends the outage.
func TestSharedOutage(t *testing.T) {
	const timeout, probe = 100 * time.Millisecond, 300 * time.Millisecond
	const slack = 250 * time.Millisecond // a loaded CI machine
	for _, tt := range []struct {
		name     string
		down, up func(*redistest.Server, testing.TB)
	}{
		{"stopped: connections refused", (*redistest.Server).Stop, (*redistest.Server).Restart},
		{"paused: connections accepted, nothing answers", (*redistest.Server).Pause, (*redistest.Server).Resume},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			srv := redistest.Start(t)
			var logs bytes.Buffer
			s := NewShared(newClient(t, srv.URL()), testPrefix, nil,
				WithTimeout(timeout), WithProbeInterval(probe), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			lim := Limit{Rate: 1, Burst: 2}
			allowTimed := func() (Decision, time.Duration) {
				start := time.Now()
				d := s.Allow(ctx, "key:outage", lim)
				return d, time.Since(start)
			}

			if d := s.Allow(ctx, "key:warm-up", lim); d != allow || s.Degraded() {
				t.Fatalf("with Redis up: %+v, Degraded() = %v", d, s.Degraded())
			}
			tt.down(srv, t)

			// The first call finds Redis gone and falls back; the local limiter, which has not
			// seen the key, allows a burst of 2 and then refuses. The calls after the first
			// skip Redis for the probe interval, so they do not wait for it.
			want := []Decision{allow, allow, refuse(time.Second)}
			for i, w := range want {
				d, took := allowTimed()
				if d.Allowed != w.Allowed || d.RetryAfter > w.RetryAfter || (!d.Allowed && d.RetryAfter < w.RetryAfter-slack) {
					t.Errorf("call %d during the outage: %+v, want about %+v", i+1, d, w)
				}
				if limit := timeout + slack; i == 0 && took > limit {
					t.Errorf("call %d during the outage took %v, want at most %v", i+1, took, limit)
				}
				if i > 0 && took >= timeout {
					t.Errorf("call %d during the outage took %v: it waited for Redis within the probe interval", i+1, took)
				}
				if !s.Degraded() || s.Fallbacks() != int64(i+1) {
					t.Errorf("after call %d: Degraded() = %v, Fallbacks() = %d; want true, %d", i+1, s.Degraded(), s.Fallbacks(), i+1)
				}
			}
			// Probes keep failing, and keep returning in time, while Redis is down.
			time.Sleep(probe)
			if _, took := allowTimed(); took > timeout+slack || !s.Degraded() {
				t.Errorf("a probe with Redis down: took %v, Degraded() = %v", took, s.Degraded())
			}

			tt.up(srv, t)
			recovered := time.Now()
			for s.Degraded() {
				if time.Since(recovered) > 3*probe+slack {
					t.Fatalf("still degraded %v after Redis came back", time.Since(recovered))
				}
				if _, took := allowTimed(); took > timeout+slack {
					t.Errorf("a call while recovering took %v", took)
				}
				time.Sleep(10 * time.Millisecond)
			}
			fallbacks := s.Fallbacks()
			for i := range 3 {
				s.Allow(ctx, fmt.Sprintf("key:after-%d", i), lim)
			}
			if s.Degraded() || s.Fallbacks() != fallbacks {
				t.Errorf("after recovery: Degraded() = %v, Fallbacks() went from %d to %d", s.Degraded(), fallbacks, s.Fallbacks())
			}
			// The outage is reported once when it starts and once when it ends.
			if down, up := strings.Count(logs.String(), "level=WARN"), strings.Count(logs.String(), "level=INFO"); down != 1 || up != 1 {
				t.Errorf("log has %d warnings and %d infos, want 1 and 1:\n%s", down, up, logs.String())
			}
		})
	}
}

// On a Cluster, every instance's calls for a key go to the node owning the prefix's hash slot,
// which holds all the limiter's keys.
func TestSharedCluster(t *testing.T) {
	ctx := t.Context()
	c := redistest.Cluster(t, 3)
	newInstance := func() *Shared {
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, MaxRetries: -1, ContextTimeoutEnabled: true})
		t.Cleanup(func() { client.Close() })
		return NewShared(client, testPrefix, nil, WithTimeout(2*time.Second))
	}
	a, b := newInstance(), newInstance()
	lim := Limit{Rate: 1, Burst: 2}
	keys := []string{"key:one", "key:two", "principal:three", "principal:four"}
	for _, key := range keys {
		got := []Decision{a.Allow(ctx, key, lim), b.Allow(ctx, key, lim), a.Allow(ctx, key, lim), b.Allow(ctx, key, lim)}
		for i, d := range got {
			if d.Allowed != (i < 2) {
				t.Errorf("%s, call %d (alternating instances): %+v; want the burst of 2 allowed, then refused", key, i+1, d)
			}
		}
	}
	if a.Degraded() || b.Degraded() || a.Fallbacks()+b.Fallbacks() != 0 {
		t.Errorf("Degraded() = %v, %v; Fallbacks() = %d, %d; want false and 0", a.Degraded(), b.Degraded(), a.Fallbacks(), b.Fallbacks())
	}
	// All the keys are in the prefix's slot, on the one node that owns it.
	slot := c.Do(t, "CLUSTER", "KEYSLOT", testPrefix)
	for _, key := range keys {
		name := testPrefix + "rl:" + key
		if got := c.Do(t, "CLUSTER", "KEYSLOT", name); got != slot {
			t.Errorf("%s is in slot %s, want the prefix's, %s", name, got, slot)
		}
	}
	var holders []string
	for _, n := range c.Nodes {
		if n.Do(t, "DBSIZE") != "0" {
			holders = append(holders, n.Addr)
		}
	}
	if len(holders) != 1 {
		t.Errorf("nodes holding keys: %v, want exactly one", holders)
	}
}

package ratelimit

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// newRedisTokenLimiter starts a Redis and returns a token limiter counting in it, and a client
// to look into it.
func newRedisTokenLimiter(t *testing.T) (*TokenLimiter, *redis.Client) {
	srv := redistest.Start(t)
	rc := newClient(t, srv.URL())
	return NewSharedTokenLimiter(NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(2*time.Second))), rc
}

// windowSum is the tokens in key's window in Redis, whatever their age.
func windowSum(t *testing.T, rc *redis.Client, key string) int64 {
	t.Helper()
	var sum int64
	for _, v := range rc.HGetAll(t.Context(), testBase+"tpm:{"+key+"}").Val() {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("window field %q: %v", v, err)
		}
		sum += n
	}
	return sum
}

// The window in Redis slides on Redis's clock: moving a second's tokens back in time (as time
// passing would) changes Retry-After, and once they are 61 seconds old they no longer count and
// are dropped.
func TestSharedTokenWindowSlides(t *testing.T) {
	ctx := t.Context()
	tl, rc := newRedisTokenLimiter(t)
	lim := TokenLimit{PerMinute: 1000}
	const key = "chat:key:primary"
	window := testBase + "tpm:{" + key + "}"
	first := tl.Reserve(ctx, key, lim, 600)
	if !first.Allowed() {
		t.Fatalf("first call: %+v", viewOf(first))
	}
	age := func(by int64) {
		t.Helper()
		f := strconv.FormatInt(first.second, 10)
		n := rc.HGet(ctx, window, f).Val()
		rc.HDel(ctx, window, f)
		first.second -= by
		rc.HSet(ctx, window, strconv.FormatInt(first.second, 10), n)
	}
	for _, tt := range []struct {
		name                 string
		age                  int64 // seconds the first call's tokens are moved back
		wantMin, wantMax     time.Duration
		wantAllowed          bool
		wantFieldsAfterwards int
	}{
		{name: "taken just now: they leave in 60 to 61 s", wantMin: 59 * time.Second, wantMax: 61 * time.Second, wantFieldsAfterwards: 1},
		{name: "taken 30 s ago: they leave in 30 to 31 s", age: 30, wantMin: 29 * time.Second, wantMax: 31 * time.Second, wantFieldsAfterwards: 1},
		{name: "taken 61 s ago: gone", age: 31, wantAllowed: true, wantFieldsAfterwards: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			age(tt.age)
			r := tl.Reserve(ctx, key, lim, 600)
			switch {
			case tt.wantAllowed && (!r.Allowed() || r.Remaining != 400):
				t.Errorf("%+v, want allowed with 400 left", viewOf(r))
			case !tt.wantAllowed && (r.Outcome != TokensRateLimited || r.RetryAfter <= tt.wantMin || r.RetryAfter > tt.wantMax):
				t.Errorf("%v, RetryAfter %v; want rate limited, RetryAfter in (%v, %v]", r.Outcome, r.RetryAfter, tt.wantMin, tt.wantMax)
			}
			if n := len(rc.HGetAll(ctx, window).Val()); n != tt.wantFieldsAfterwards {
				t.Errorf("the window has %d seconds, want %d", n, tt.wantFieldsAfterwards)
			}
		})
	}
	// A refund to a second that has left the window changes nothing.
	rc.Del(ctx, window)
	first = tl.Reserve(ctx, key, lim, 500)
	age(61)
	tl.Settle(ctx, first, 0)
	if sum := windowSum(t, rc, key); sum != 500 {
		t.Errorf("the window holds %d, want the 500 of a second 61 s old, untouched", sum)
	}
}

// Two instances on one Redis, calls from several goroutines on each, with streamed answers that
// use less or a little more than their estimate: together they stay within one minute's budget,
// plus at most each goroutine's last overrun, and Redis's counts are exactly the tokens served.
func TestSharedTokensAcrossInstances(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	rc := newClient(t, srv.URL())
	const limit, perInstance, overrun = 20000, 4, 1.1
	lim := TokenLimit{PerMinute: limit, Quota: 1_000_000, Period: Daily}
	instances := []*TokenLimiter{
		NewSharedTokenLimiter(NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(2*time.Second))),
		NewSharedTokenLimiter(NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(2*time.Second))),
	}
	var served, allowed, refused [2]atomic.Int64
	maxEstimate := EstimateTokens(799, 149)
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second) // nothing leaves the window meanwhile
	for i, tl := range instances {
		for g := range perInstance {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for time.Now().Before(deadline) {
					estimate := EstimateTokens(400+rng.Int64N(400), 50+rng.Int64N(100))
					r := tl.Reserve(ctx, "chat:key:primary", lim, estimate)
					if !r.Allowed() {
						refused[i].Add(1)
						time.Sleep(time.Millisecond)
						continue
					}
					allowed[i].Add(1)
					time.Sleep(time.Duration(1+rng.IntN(5)) * time.Millisecond) // the answer streams
					actual := int64(float64(estimate) * (0.3 + rng.Float64()*(overrun-0.3)))
					tl.Settle(ctx, r, actual)
					served[i].Add(actual)
				}
			})
		}
	}
	wg.Wait()
	total := served[0].Load() + served[1].Load()
	maxOverrun := int64(float64(maxEstimate) * (overrun - 1))
	ceiling := int64(limit) + 2*perInstance*maxOverrun
	t.Logf("%d tokens served in %d calls (instance 1: %d, instance 2: %d), %d refused; ceiling %d",
		total, allowed[0].Load()+allowed[1].Load(), served[0].Load(), served[1].Load(), refused[0].Load()+refused[1].Load(), ceiling)
	if total > ceiling {
		t.Errorf("%d tokens served, more than the minute's %d plus each goroutine's overrun (%d)", total, limit, ceiling)
	}
	if floor := int64(limit) - 2*perInstance*maxEstimate; total < floor {
		t.Errorf("%d tokens served: the budget of %d was not used (want at least %d)", total, limit, floor)
	}
	for i, tl := range instances {
		if allowed[i].Load() == 0 || refused[i].Load() == 0 {
			t.Errorf("instance %d: %d calls allowed, %d refused; want some of each", i+1, allowed[i].Load(), refused[i].Load())
		}
		if f := tl.shared.Fallbacks(); f != 0 {
			t.Errorf("instance %d decided %d calls alone", i+1, f)
		}
	}
	if sum := windowSum(t, rc, "chat:key:primary"); sum != total {
		t.Errorf("the window in Redis holds %d tokens, want the %d served", sum, total)
	}
	qkey := testBase + "tq:{chat:key:primary}:" + time.Now().UTC().Format("2006-01-02")
	if got := rc.Get(ctx, qkey).Val(); got != strconv.FormatInt(total, 10) {
		t.Errorf("the quota's counter in Redis = %s, want the %d served", got, total)
	}
}

// Redis goes away: calls are decided by this instance's counts within the timeout (a quota
// Redis said was spent stays spent; the minute's budget is counted from the outage's start), a
// reservation taken in Redis is settled here, and the first answer after Redis is back makes
// Redis decide again.
func TestSharedTokensOutage(t *testing.T) {
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
			s := NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(timeout), WithProbeInterval(probe))
			tl := NewSharedTokenLimiter(s)
			quota := TokenLimit{Quota: 1000, Period: Daily}
			minute := TokenLimit{PerMinute: 1000}
			timed := func(key string, l TokenLimit, estimate int64) (TokenReservation, time.Duration) {
				start := time.Now()
				r := tl.Reserve(ctx, key, l, estimate)
				return r, time.Since(start)
			}

			tl.Reserve(ctx, "chat:key:spent", quota, 1000)
			open := tl.Reserve(ctx, "chat:key:open", quota, 100)
			if r := tl.Reserve(ctx, "chat:key:spent", quota, 1); r.Outcome != TokensQuotaSpent || s.Degraded() {
				t.Fatalf("with Redis up: %v, Degraded() = %v; want quota spent, false", r.Outcome, s.Degraded())
			}
			tt.down(srv, t)

			r, took := timed("chat:key:spent", quota, 1)
			if r.Outcome != TokensQuotaSpent || !s.Degraded() || s.Fallbacks() != 1 {
				t.Errorf("first call of the outage: %v, Degraded() = %v, Fallbacks() = %d; want quota spent (learnt from Redis), true, 1",
					r.Outcome, s.Degraded(), s.Fallbacks())
			}
			if took > timeout+slack {
				t.Errorf("first call of the outage took %v, want at most %v", took, timeout+slack)
			}
			for i, want := range []TokenOutcome{TokensAllowed, TokensRateLimited} {
				r, took := timed("chat:key:minute", minute, 600)
				if r.Outcome != want {
					t.Errorf("call %d of 600 tokens on the minute's budget: %v, want %v", i+1, r.Outcome, want)
				}
				if took >= timeout {
					t.Errorf("call %d took %v: it waited for Redis within the probe interval", i+1, took)
				}
			}
			start := time.Now()
			tl.Settle(ctx, open, 40) // taken in Redis: the 60 given back are counted here
			if took := time.Since(start); took >= timeout {
				t.Errorf("Settle during the outage took %v", took)
			}
			if r, _ := timed("chat:key:open", quota, 1); !r.Allowed() || r.QuotaRemaining != 959 {
				t.Errorf("after settling during the outage: %+v, want allowed, 959 left", viewOf(r))
			}

			tt.up(srv, t)
			recovered := time.Now()
			for s.Degraded() {
				if time.Since(recovered) > 3*probe+slack {
					t.Fatalf("still degraded %v after Redis came back", time.Since(recovered))
				}
				if _, took := timed("chat:key:probe", minute, 1); took > timeout+slack {
					t.Errorf("a call while recovering took %v", took)
				}
				time.Sleep(10 * time.Millisecond)
			}
			fallbacks := s.Fallbacks()
			r = tl.Reserve(ctx, "chat:key:minute", minute, 600)
			if s.Degraded() || s.Fallbacks() != fallbacks {
				t.Errorf("after recovery: Degraded() = %v, Fallbacks() went from %d to %d", s.Degraded(), fallbacks, s.Fallbacks())
			}
			// Redis counts again: after a restart without persistence it has forgotten the
			// minute; paused, it still holds nothing of the outage's calls.
			if !r.Allowed() || r.Remaining != 400 {
				t.Errorf("after recovery: %+v, want Redis's decision, allowed with 400 left", viewOf(r))
			}
		})
	}
}

// Acceptance 3 of the token limits, on the library: 2000 tokens per minute on one key, shared by
// two instances on one Redis, streamed calls from both for over a minute, each caller waiting
// for Retry-After when refused. Every 60 seconds serve at most the limit plus one call's worth,
// and the first minute serves the limit within 10%. It takes 70 seconds: run it with
// SCOREGATE_TOKEN_MINUTE=1.
func TestSharedTokensAcceptanceMinute(t *testing.T) {
	if os.Getenv("SCOREGATE_TOKEN_MINUTE") != "1" {
		t.Skip("takes 70 s; set SCOREGATE_TOKEN_MINUTE=1")
	}
	ctx := t.Context()
	srv := redistest.Start(t)
	const limit = 2000
	lim := TokenLimit{PerMinute: limit}
	type call struct {
		at     time.Time
		tokens int64
	}
	var mu sync.Mutex
	var calls []call
	var biggest int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(70 * time.Second)
	for i := range 2 {
		tl := NewSharedTokenLimiter(NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(2*time.Second)))
		for g := range 2 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(g)))
				for time.Now().Before(deadline) {
					prompt := 200 + rng.Int64N(400)
					r := tl.Reserve(ctx, "chat:key:primary", lim, EstimateTokens(prompt, 0))
					if !r.Allowed() {
						time.Sleep(min(r.RetryAfter, time.Until(deadline)))
						continue
					}
					at := time.Now()
					time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond) // the stream
					actual := EstimatePromptTokens(prompt) + 50 + rng.Int64N(250)
					tl.Settle(ctx, r, actual)
					mu.Lock()
					calls = append(calls, call{at, actual})
					biggest = max(biggest, actual)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	slices.SortFunc(calls, func(a, b call) int { return a.at.Compare(b.at) })
	var first, peak int64
	for i, c := range calls {
		var sum int64
		for _, d := range calls[i:] {
			if d.at.Sub(c.at) >= time.Minute {
				break
			}
			sum += d.tokens
		}
		peak = max(peak, sum)
		if c.at.Sub(start) < time.Minute {
			first += c.tokens
		}
	}
	t.Logf("%d calls; first minute %d tokens, busiest minute %d, biggest call %d", len(calls), first, peak, biggest)
	if peak > limit+biggest {
		t.Errorf("a minute served %d tokens, over %d plus one call (%d)", peak, limit, biggest)
	}
	if first < limit*9/10-biggest || first > limit*11/10+biggest {
		t.Errorf("the first minute served %d tokens, want %d within 10%% (plus one call, %d)", first, limit, biggest)
	}
}

// documentedACL is the least-privilege Redis user docs/shared-state.md documents for the
// gateway; clusterACL is what the docs add to it for a Cluster.
const (
	documentedACL = "user gateway on >gateway-secret-0123456789 ~{scoregate}:* ~scoregate:rl:* &{scoregate}:changes " +
		"-@all +@read +@write +@pubsub +@transaction +@scripting -@dangerous +ping +hello +wait +time"
	clusterACL = " +cluster|slots +command"
)

// The scripts run as the documented least-privilege user, on the limiters' keys outside the
// store's hash tag: a command or a key it may not use would make every call fall back to local
// decisions. The user is the one docs/shared-state.md shows.
func TestSharedTokensAsTheDocumentedUser(t *testing.T) {
	doc, err := os.ReadFile("../../docs/shared-state.md")
	if err != nil {
		t.Fatal(err)
	}
	if line := strings.Replace(documentedACL, ">gateway-secret-0123456789", ">PASSWORD", 1); !strings.Contains(string(doc), line) {
		t.Errorf("docs/shared-state.md does not show the user this test runs as:\n%s", line)
	}
	if !strings.Contains(string(doc), "On a Cluster, add `"+strings.TrimSpace(clusterACL)+"`") {
		t.Errorf("docs/shared-state.md does not say what TestSharedClusterSpreadsCounters adds for a Cluster: %q", clusterACL)
	}
	ctx := t.Context()
	srv := redistest.Start(t, redistest.WithACL("user default on nopass ~* &* +@all", documentedACL))
	url := strings.Replace(srv.URL(), "redis://", "redis://gateway:gateway-secret-0123456789@", 1)
	s := NewShared(newClient(t, url), testPrefix, nil, WithTimeout(2*time.Second))
	tl := NewSharedTokenLimiter(s)
	lim := TokenLimit{PerMinute: 1000, Quota: 5000, Period: Daily}
	r := tl.Reserve(ctx, "chat:key:primary", lim, 600)
	tl.Settle(ctx, r, 100)
	if d := s.Allow(ctx, "key:chat:primary", Limit{Rate: 1, Burst: 1}); !d.Allowed {
		t.Errorf("request rate: %+v", d)
	}
	f := NewSharedFailures(s)
	if st := f.Fail(ctx, "auth:principal:192.0.2.1", FailureLimit{Failures: 3, Window: time.Minute}); st.Count != 1 {
		t.Errorf("failure count: %+v", st)
	}
	if s.Degraded() || s.Fallbacks() != 0 {
		t.Errorf("Degraded() = %v, Fallbacks() = %d; want false, 0", s.Degraded(), s.Fallbacks())
	}
	if got := strings.Fields(srv.Do(t, "KEYS", "scoregate:rl:*")); len(got) != 4 {
		t.Errorf("the limiters' keys: %q, want 4", got)
	}
	// The pattern is the limiters' alone: not the rest of the untagged prefix.
	for _, key := range []string{"scoregate:secret", "scoregate:other"} {
		if out := srv.Do(t, "ACL", "DRYRUN", "gateway", "SET", key, "1"); out == "OK" {
			t.Errorf("the gateway user may write %s", key)
		}
	}
}

package ratelimit

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

func TestEstimateTokens(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		bodyBytes, maxCompletion int64
		want                     int64
	}{
		{"a prompt of 400 bytes and max_tokens 100", 400, 100, 100 + 100},
		{"bytes round up to a token", 401, 100, 101 + 100},
		{"no max_tokens: the default completion", 400, 0, 100 + DefaultCompletionTokens},
		{"a negative max_tokens is none", 400, -5, 100 + DefaultCompletionTokens},
		{"an empty body", 0, 10, 10},
		{"an absurd max_tokens is bounded", 400, 1 << 62, maxTokens},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := EstimateTokens(tt.bodyBytes, tt.maxCompletion); got != tt.want {
				t.Errorf("EstimateTokens(%d, %d) = %d, want %d", tt.bodyBytes, tt.maxCompletion, got, tt.want)
			}
		})
	}
	if got := EstimatePromptTokens(4000); got != 1000 {
		t.Errorf("EstimatePromptTokens(4000) = %d, want 1000 (embeddings: the prompt alone)", got)
	}
}

func TestPeriodBounds(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi int) time.Time { return time.Date(y, mo, d, h, mi, 0, 0, time.UTC) }
	for _, tt := range []struct {
		name       string
		p          Period
		at         time.Time
		start, end time.Time
		stamp      string
	}{
		{"hourly, the last second of an hour", Hourly, utc(2026, 12, 7, 10, 59).Add(59 * time.Second), utc(2026, 12, 7, 10, 0), utc(2026, 12, 7, 11, 0), "2026-12-07T10"},
		{"hourly, on the hour", Hourly, utc(2026, 12, 7, 11, 0), utc(2026, 12, 7, 11, 0), utc(2026, 12, 7, 12, 0), "2026-12-07T11"},
		{"daily is the UTC day, whatever the clock's zone", Daily, time.Date(2026, 12, 8, 1, 30, 0, 0, time.FixedZone("CET", 3600)), utc(2026, 12, 8, 0, 0), utc(2026, 12, 9, 0, 0), "2026-12-08"},
		{"monthly, across a year", Monthly, utc(2026, 12, 31, 23, 59), utc(2026, 12, 1, 0, 0), utc(2027, 1, 1, 0, 0), "2026-12"},
		{"monthly, a leap February", Monthly, utc(2028, 2, 29, 12, 0), utc(2028, 2, 1, 0, 0), utc(2028, 3, 1, 0, 0), "2028-02"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start, end, ok := tt.p.bounds(tt.at)
			if !ok || !start.Equal(tt.start) || !end.Equal(tt.end) {
				t.Errorf("bounds = %v, %v, %v; want %v, %v", start, end, ok, tt.start, tt.end)
			}
			if got := tt.p.stamp(start); got != tt.stamp {
				t.Errorf("stamp = %q, want %q", got, tt.stamp)
			}
		})
	}
	if _, _, ok := Period("weekly").bounds(time.Now()); ok {
		t.Error(`Period("weekly") has bounds`)
	}
}

// view is what a reservation tells its caller, for comparing.
type view struct {
	Outcome                    TokenOutcome
	Limit, Remaining           int64
	QuotaLimit, QuotaRemaining int64
}

func viewOf(r TokenReservation) view {
	return view{r.Outcome, r.Limit, r.Remaining, r.QuotaLimit, r.QuotaRemaining}
}

// limiterKinds are the two ways of counting: in memory, and in Redis (a Redis of its own for
// each test, and a client to look into it; nil in memory).
func limiterKinds() map[string]func(t *testing.T) (*TokenLimiter, *redis.Client) {
	return map[string]func(t *testing.T) (*TokenLimiter, *redis.Client){
		"memory": func(*testing.T) (*TokenLimiter, *redis.Client) { return NewLocalTokenLimiter(), nil },
		"redis":  newRedisTokenLimiter,
	}
}

// Reserve takes the estimate from the minute's budget and the quota; Settle gives back what was
// not used and charges an overrun; a refused call takes nothing.
func TestTokenReserveAndSettle(t *testing.T) {
	for kind, newLimiter := range limiterKinds() {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			tl, rc := newLimiter(t)
			lim := TokenLimit{PerMinute: 1000, Quota: 5000, Period: Daily}
			reserve := func(estimate int64, want view) TokenReservation {
				t.Helper()
				r := tl.Reserve(ctx, "chat:key:primary", lim, estimate)
				if diff := cmp.Diff(want, viewOf(r)); diff != "" {
					t.Errorf("Reserve(%d) (-want +got):\n%s", estimate, diff)
				}
				if r.Allowed() != (want.Outcome == TokensAllowed) || (r.RetryAfter > 0) != (want.Outcome == TokensRateLimited) {
					t.Errorf("Reserve(%d): Allowed() = %v, RetryAfter = %v for outcome %v", estimate, r.Allowed(), r.RetryAfter, r.Outcome)
				}
				return r
			}
			a := reserve(300, view{TokensAllowed, 1000, 700, 5000, 4700})
			if a.Reset <= 59*time.Second || a.Reset > 61*time.Second {
				t.Errorf("Reset = %v, want (59s, 61s]: the tokens just taken leave the window in 60 to 61 s", a.Reset)
			}
			if q := a.QuotaReset; q <= 0 || q > 24*time.Hour {
				t.Errorf("QuotaReset = %v, want until the next UTC midnight", q)
			}
			b := reserve(600, view{TokensAllowed, 1000, 100, 5000, 4100})
			refused := reserve(200, view{TokensRateLimited, 1000, 100, 5000, 4100})
			// 100 more tokens must leave the window: the first call's 300, taken moments ago.
			if refused.RetryAfter <= 59*time.Second || refused.RetryAfter > 61*time.Second {
				t.Errorf("RetryAfter = %v, want (59s, 61s]", refused.RetryAfter)
			}
			tl.Settle(ctx, refused, 10_000) // a refused call has nothing to settle

			tl.Settle(ctx, a, 100) // 200 back: 100 + 600 in the window
			c := reserve(200, view{TokensAllowed, 1000, 100, 5000, 4100})
			tl.Settle(ctx, c, 200)
			tl.Settle(ctx, b, 750) // 150 over: 100 + 750 + 200 = 1050
			reserve(1, view{TokensRateLimited, 1000, 0, 5000, 3950})

			if rc != nil {
				if sum := windowSum(t, rc, "chat:key:primary"); sum != 1050 {
					t.Errorf("the window in Redis holds %d tokens, want 1050", sum)
				}
				qkey := testBase + "tq:{chat:key:primary}:" + time.Now().UTC().Format("2006-01-02")
				if got := rc.Get(ctx, qkey).Val(); got != "1050" {
					t.Errorf("the quota's counter in Redis = %q, want 1050", got)
				}
				if ttl := rc.PTTL(ctx, qkey).Val(); ttl <= 0 || ttl > 24*time.Hour {
					t.Errorf("the quota's counter expires in %v, want at the next UTC midnight", ttl)
				}
				if ttl := rc.PTTL(ctx, testBase+"tpm:{chat:key:primary}").Val(); ttl <= 61*time.Second || ttl > 62*time.Second {
					t.Errorf("the window expires in %v, want (61s, 62s]", ttl)
				}
			}
		})
	}
}

// A limit of nothing counts nothing; an estimate above the whole minute's budget is admitted
// into an empty window only, and taken whole.
func TestTokenLimitEdges(t *testing.T) {
	for kind, newLimiter := range limiterKinds() {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			tl, rc := newLimiter(t)
			if r := tl.Reserve(ctx, "chat:key:free", TokenLimit{Period: Monthly}, 1e9); !r.Allowed() || r.Limit != 0 || r.settle {
				t.Errorf("no limit: %+v, want allowed with nothing counted", r)
			}
			if rc != nil {
				if keys := rc.Keys(ctx, "*").Val(); len(keys) != 0 {
					t.Errorf("no limit, yet Redis holds %q", keys)
				}
			}
			lim := TokenLimit{PerMinute: 1000}
			big := tl.Reserve(ctx, "chat:key:big", lim, 5000)
			if diff := cmp.Diff(view{Outcome: TokensAllowed, Limit: 1000}, viewOf(big)); diff != "" {
				t.Errorf("an estimate of 5000 into an empty window of 1000 (-want +got):\n%s", diff)
			}
			if r := tl.Reserve(ctx, "chat:key:big", lim, 1); r.Outcome != TokensRateLimited {
				t.Errorf("after it: %+v, want rate limited", r)
			}
			tl.Settle(ctx, big, 900) // 900 of 1000 used: 100 left
			if r := tl.Reserve(ctx, "chat:key:big", lim, 5000); r.Outcome != TokensRateLimited || r.Remaining != 100 {
				t.Errorf("another estimate of 5000 beside 900 tokens: %+v, want refused until the window is empty", r)
			}
			if r := tl.Reserve(ctx, "chat:key:big", lim, 100); !r.Allowed() || r.Remaining != 0 {
				t.Errorf("an estimate of 100 beside 900 tokens: %+v, want allowed, nothing left", r)
			}
			// A zero estimate counts as one token.
			if r := tl.Reserve(ctx, "chat:key:big", lim, 0); r.Outcome != TokensRateLimited {
				t.Errorf("an estimate of 0 with nothing left: %+v, want rate limited", r)
			}
			// The largest limits and counts are kept exactly.
			huge := TokenLimit{PerMinute: 2 * maxTokens, Quota: 2 * maxTokens, Period: Daily}
			h := tl.Reserve(ctx, "chat:key:huge", huge, 1<<62)
			if diff := cmp.Diff(view{TokensAllowed, 2 * maxTokens, maxTokens, 2 * maxTokens, maxTokens}, viewOf(h)); diff != "" {
				t.Errorf("an absurd estimate, bounded (-want +got):\n%s", diff)
			}
			tl.Settle(ctx, h, maxTokens-1) // one back, taken again below
			if r := tl.Reserve(ctx, "chat:key:huge", huge, 1); r.Remaining != maxTokens || r.QuotaRemaining != maxTokens {
				t.Errorf("after settling: %+v, want %d left of both", viewOf(r), int64(maxTokens))
			}
		})
	}
}

// The quota: spent is a distinct outcome, even for the smallest call; the next period starts
// afresh; a settlement after the period has ended does not touch the new one.
func TestTokenQuota(t *testing.T) {
	for kind, newLimiter := range limiterKinds() {
		t.Run(kind, func(t *testing.T) {
			ctx := t.Context()
			tl, rc := newLimiter(t)
			clock := &fakeClock{t: time.Date(2026, 12, 7, 10, 59, 0, 0, time.UTC)}
			tl.clock = clock.now
			lim := TokenLimit{Quota: 1000, Period: Hourly}
			const key = "chat:principal:https://idp.example|alice"

			a := tl.Reserve(ctx, key, lim, 900)
			if diff := cmp.Diff(view{Outcome: TokensAllowed, QuotaLimit: 1000, QuotaRemaining: 100}, viewOf(a)); diff != "" {
				t.Errorf("first call (-want +got):\n%s", diff)
			}
			if a.QuotaReset != time.Minute {
				t.Errorf("QuotaReset = %v at 10:59, want 1m0s", a.QuotaReset)
			}
			if rc != nil {
				qkey := testBase + "tq:{" + key + "}:2026-12-07T10"
				if got, ttl := rc.Get(ctx, qkey).Val(), rc.PTTL(ctx, qkey).Val(); got != "900" || ttl <= 59*time.Second || ttl > time.Minute {
					t.Errorf("%s = %q, expiring in %v; want 900, when the hour ends (1m0s)", qkey, got, ttl)
				}
			}
			// Not spent yet: a call estimated beyond what is left still goes, and is charged.
			b := tl.Reserve(ctx, key, lim, 300)
			if diff := cmp.Diff(view{Outcome: TokensAllowed, QuotaLimit: 1000}, viewOf(b)); diff != "" {
				t.Errorf("second call (-want +got):\n%s", diff)
			}
			spent := tl.Reserve(ctx, key, lim, 1)
			if diff := cmp.Diff(view{Outcome: TokensQuotaSpent, QuotaLimit: 1000}, viewOf(spent)); diff != "" {
				t.Errorf("third call (-want +got):\n%s", diff)
			}
			if spent.Allowed() || spent.RetryAfter != 0 || spent.QuotaReset != time.Minute {
				t.Errorf("quota spent: Allowed() = %v, RetryAfter = %v, QuotaReset = %v; want false, 0, 1m0s", spent.Allowed(), spent.RetryAfter, spent.QuotaReset)
			}
			tl.Settle(ctx, b, 50) // 250 back: 950 used, the quota is open again
			c := tl.Reserve(ctx, key, lim, 10)
			if diff := cmp.Diff(view{Outcome: TokensAllowed, QuotaLimit: 1000, QuotaRemaining: 40}, viewOf(c)); diff != "" {
				t.Errorf("after a refund (-want +got):\n%s", diff)
			}
			tl.Settle(ctx, c, 500) // 490 over: 1440 used
			if r := tl.Reserve(ctx, key, lim, 1); r.Outcome != TokensQuotaSpent {
				t.Errorf("after an overrun: %v, want quota spent", r.Outcome)
			}

			clock.advance(time.Minute) // 11:00: a new hour
			d := tl.Reserve(ctx, key, lim, 100)
			if diff := cmp.Diff(view{Outcome: TokensAllowed, QuotaLimit: 1000, QuotaRemaining: 900}, viewOf(d)); diff != "" {
				t.Errorf("the next hour (-want +got):\n%s", diff)
			}
			if d.QuotaReset != time.Hour {
				t.Errorf("QuotaReset = %v at 11:00, want 1h0m0s", d.QuotaReset)
			}
			tl.Settle(ctx, a, 0) // the 10:00 hour's call ends now: its refund is not the new hour's
			if r := tl.Reserve(ctx, key, lim, 100); r.QuotaRemaining != 800 {
				t.Errorf("after settling a call of the past hour: %d left, want 800", r.QuotaRemaining)
			}

			monthly := TokenLimit{Quota: 500, Period: Monthly}
			clock.t = time.Date(2027, 1, 31, 23, 59, 0, 0, time.UTC)
			tl.Reserve(ctx, key, monthly, 500)
			if r := tl.Reserve(ctx, key, monthly, 1); r.Outcome != TokensQuotaSpent || r.QuotaReset != time.Minute {
				t.Errorf("January spent: %v, renews in %v; want quota spent, 1m0s", r.Outcome, r.QuotaReset)
			}
			clock.advance(time.Minute)
			if r := tl.Reserve(ctx, key, monthly, 1); !r.Allowed() || r.QuotaRemaining != 499 || r.QuotaReset != 28*24*time.Hour {
				t.Errorf("February 1st: %+v, want allowed, 499 left, for 28 days", viewOf(r))
			}
		})
	}
}

// The window slides: the tokens of a second leave it 61 seconds after that second began, and
// Retry-After says when enough have left.
func TestLocalTokenWindowSlides(t *testing.T) {
	ctx := t.Context()
	tl := NewLocalTokenLimiter()
	clock := &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 250e6, time.UTC)} // 5.25 s past the minute
	tl.clock = clock.now
	lim := TokenLimit{PerMinute: 1000}
	const key = "chat:key:primary"

	tl.Reserve(ctx, key, lim, 400) // second 5
	clock.advance(20 * time.Second)
	tl.Reserve(ctx, key, lim, 500) // second 25
	clock.advance(10 * time.Second)
	r := tl.Reserve(ctx, key, lim, 300) // second 35: 200 must leave, so second 5's 400
	if r.Outcome != TokensRateLimited || r.RetryAfter != 30750*time.Millisecond || r.Reset != 50750*time.Millisecond {
		t.Errorf("at 35.25 s: %v, RetryAfter %v, Reset %v; want rate limited, 30.75s (second 5 leaves at 66 s), 50.75s (second 25 at 86 s)",
			r.Outcome, r.RetryAfter, r.Reset)
	}
	clock.advance(r.RetryAfter - time.Millisecond)
	if r := tl.Reserve(ctx, key, lim, 300); r.Outcome != TokensRateLimited || r.RetryAfter != time.Millisecond {
		t.Errorf("a millisecond early: %v, RetryAfter %v; want rate limited, 1ms", r.Outcome, r.RetryAfter)
	}
	clock.advance(time.Millisecond)
	if r := tl.Reserve(ctx, key, lim, 300); !r.Allowed() || r.Remaining != 200 {
		t.Errorf("at 66 s: %+v, want allowed with 200 left", viewOf(r))
	}
	clock.advance(2 * time.Minute)
	if r := tl.Reserve(ctx, key, lim, 1000); !r.Allowed() {
		t.Errorf("after two idle minutes: %+v, want the whole budget", viewOf(r))
	}
	if n := tl.local.len(); n != 1 {
		t.Errorf("%d windows and counts kept, want 1", n)
	}
	clock.advance(windowSeconds * time.Second)
	tl.local.sweepAll(clock.t.UnixMilli())
	if n := tl.local.len(); n != 0 {
		t.Errorf("%d windows and counts kept after a sweep a minute later, want 0", n)
	}
}

// Whatever the arrivals, estimates and usage, the tokens used in any 60 seconds stay within the
// limit, when calls use no more than their estimate; and the budget is used: a call is refused
// only when it would not fit.
func TestLocalTokenWindowHoldsInEveryMinute(t *testing.T) {
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 22))
	tl := NewLocalTokenLimiter()
	clock := newFakeClock()
	tl.clock = clock.now
	const limit = 2000
	lim := TokenLimit{PerMinute: limit}
	type use struct {
		at     time.Time
		tokens int64
	}
	var used []use
	type inflight struct {
		r    TokenReservation
		ends time.Time
		use  int
	}
	var open []inflight
	end := clock.t.Add(10 * time.Minute)
	for clock.t.Before(end) {
		clock.advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		for i := 0; i < len(open); {
			if f := open[i]; !f.ends.After(clock.t) {
				actual := rng.Int64N(f.r.estimate + 1)
				tl.Settle(ctx, f.r, actual)
				used[f.use].tokens = actual
				open = append(open[:i], open[i+1:]...)
				continue
			}
			i++
		}
		estimate := 50 + rng.Int64N(600)
		r := tl.Reserve(ctx, "k", lim, estimate)
		if !r.Allowed() {
			if r.Remaining >= estimate {
				t.Fatalf("at %v: %d left, an estimate of %d refused", clock.t, r.Remaining, estimate)
			}
			continue
		}
		used = append(used, use{clock.t, estimate})
		open = append(open, inflight{r, clock.t.Add(time.Duration(rng.IntN(20000)) * time.Millisecond), len(used) - 1})
	}
	if len(used) < 100 {
		t.Fatalf("only %d calls allowed", len(used))
	}
	peak := int64(0)
	for i, u := range used {
		var sum int64
		for _, v := range used[i:] {
			if v.at.Sub(u.at) >= time.Minute {
				break
			}
			sum += v.tokens
		}
		peak = max(peak, sum)
		if sum > limit {
			t.Errorf("%d tokens used in the minute from %v, limit %d", sum, u.at, limit)
		}
	}
	t.Logf("%d calls allowed; the busiest minute used %d tokens", len(used), peak)
}

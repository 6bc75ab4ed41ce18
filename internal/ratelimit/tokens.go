package ratelimit

import (
	"context"
	"time"
)

// Token limits are for requests of variable cost: a language model's calls, counted in tokens.
// A TokenLimiter takes an estimate of a call's tokens before it is forwarded (Reserve) and
// corrects it by the model's own count once the answer has ended (Settle).
//
// The minute's budget is a sliding window: the tokens taken in the current second and the 60
// before it, kept per second, may not exceed TokenLimit.PerMinute. A second's tokens leave the
// window 61 seconds after that second began, so each token counts for at least 60 seconds and
// the tokens taken in any 60 seconds never exceed the limit, except by what settling adds (a
// call that used more than its estimate) and by a call estimated above the whole budget, which
// is admitted only when the window is empty. A token bucket (or GCRA) whose burst is one
// minute's tokens would let twice the limit through in the first minute after a pause; with a
// smaller burst, no caller could send one large prompt. The window allows the whole minute's
// budget at once and never more within a minute, which is what "tokens per minute" says.
//
// The quota is a counter per fixed period (hour, day, calendar month; in UTC, from this
// instance's clock), kept until the period ends.

// Period is how long a token quota lasts.
type Period string

// Quota periods. Each begins on the hour, at midnight, or on the first of the month, in UTC.
const (
	Hourly  Period = "hourly"
	Daily   Period = "daily"
	Monthly Period = "monthly"
)

// TokenLimit is a caller's allowance in tokens.
type TokenLimit struct {
	// PerMinute is how many tokens may be taken in any 60 seconds. Not positive: no limit.
	PerMinute int64
	// Quota is how many tokens may be taken in each Period. Not positive: no quota.
	Quota int64
	// Period is the quota's period; any other value than Hourly, Daily or Monthly means no quota.
	Period Period
}

// TokenOutcome is what Reserve decided.
type TokenOutcome uint8

// Outcomes of Reserve.
const (
	// TokensAllowed: forward the call; its estimate has been taken.
	TokensAllowed TokenOutcome = iota
	// TokensRateLimited: the minute's budget cannot cover the estimate; answer 429 with
	// Retry-After (TokenReservation.RetryAfter).
	TokensRateLimited
	// TokensQuotaSpent: the quota of the current period is used up; answer 403. It renews in
	// TokenReservation.QuotaReset.
	TokensQuotaSpent
)

func (o TokenOutcome) String() string {
	switch o {
	case TokensAllowed:
		return "allowed"
	case TokensRateLimited:
		return "rate_limited"
	case TokensQuotaSpent:
		return "quota_spent"
	}
	return "unknown"
}

// TokenReservation is Reserve's answer: the decision, the numbers a response's rate-limit
// headers show, and what Settle needs to correct the estimate afterwards.
type TokenReservation struct {
	// Outcome is the decision.
	Outcome TokenOutcome
	// RetryAfter is, when Outcome is TokensRateLimited, how long until the minute's budget can
	// cover the estimate (always > 0); 0 otherwise.
	RetryAfter time.Duration

	// Limit is the tokens per minute (x-ratelimit-limit-tokens); 0 when there is no such limit,
	// and then the three headers are not sent.
	Limit int64
	// Remaining is what is left of the minute's budget once this call's estimate is taken, or,
	// for a refused call, without it (x-ratelimit-remaining-tokens). Never negative.
	Remaining int64
	// Reset is how long until the minute's budget is whole again, every token taken having left
	// the window (x-ratelimit-reset-tokens).
	Reset time.Duration

	// QuotaLimit is the quota of the period; 0 when there is none.
	QuotaLimit int64
	// QuotaRemaining is what is left of it after this call's estimate (never negative).
	QuotaRemaining int64
	// QuotaReset is how long until the next period begins and the quota renews.
	QuotaReset time.Duration

	settle   bool   // the estimate was taken: Settle corrects it
	shared   bool   // taken in Redis (else in this instance's memory)
	key      string // the caller's key
	qkey     string // the quota counter's key: key and period
	limit    TokenLimit
	estimate int64
	second   int64 // the Unix second (of Redis's clock when shared) the estimate was taken in
}

// Allowed reports whether the call may be forwarded.
func (r TokenReservation) Allowed() bool { return r.Outcome == TokensAllowed }

// Estimating a call's tokens before the model has counted them.
const (
	// BytesPerToken is how many bytes of a request body count as one prompt token: about four
	// characters of English text make a token for GPT-style tokenizers. The JSON around the
	// prompt (keys, roles, quotes) counts too, so the estimate errs high for English and low
	// for scripts of several bytes per character; settling corrects either.
	BytesPerToken = 4
	// DefaultCompletionTokens is the completion a call is assumed to ask for when it sets no
	// limit of its own (max_tokens, max_completion_tokens, max_output_tokens).
	DefaultCompletionTokens = 256
	// maxTokens bounds an estimate and a settled count, against absurd values from a client or a
	// model: far above any real call, and exact in a Redis script's numbers (doubles).
	maxTokens = 1 << 50
)

// EstimatePromptTokens estimates the prompt tokens of a request body of bodyBytes bytes:
// ceil(bodyBytes / BytesPerToken). For calls that generate nothing (embeddings) it is the
// whole estimate.
func EstimatePromptTokens(bodyBytes int64) int64 {
	if bodyBytes <= 0 {
		return 0
	}
	return min((bodyBytes+BytesPerToken-1)/BytesPerToken, maxTokens)
}

// EstimateTokens estimates a call's tokens before it is forwarded: its prompt
// (EstimatePromptTokens of the body's size) plus the completion it allows, maxCompletion (the
// request's max_tokens, max_completion_tokens or max_output_tokens, times n when it asks for
// several choices), or DefaultCompletionTokens when it sets none (maxCompletion ≤ 0).
func EstimateTokens(bodyBytes, maxCompletion int64) int64 {
	if maxCompletion <= 0 {
		maxCompletion = DefaultCompletionTokens
	}
	return min(EstimatePromptTokens(bodyBytes)+min(maxCompletion, maxTokens), maxTokens)
}

// TokenLimiter enforces token limits per key. With Redis (NewSharedTokenLimiter) every instance
// counts together, and decides with its own counts while Redis does not answer, by Shared's
// rule; alone (NewLocalTokenLimiter) it counts in memory. It is safe for concurrent use, and
// starts no goroutine.
//
// Keys are identifiers, never secrets, and name the service with the caller, since limits are
// set per service: for example "chat:key:primary" or "chat:principal:<issuer>|<subject>".
type TokenLimiter struct {
	shared *Shared // nil: this instance counts alone
	local  *tokenCounts
	clock  func() time.Time // the quota periods' clock, and the memory windows'
}

// NewLocalTokenLimiter returns a token limiter that counts in this process's memory.
func NewLocalTokenLimiter() *TokenLimiter {
	return &TokenLimiter{local: newTokenCounts(), clock: time.Now}
}

// NewSharedTokenLimiter returns a token limiter that counts in Redis, through s's client, with
// s's timeout, under keys "<base>tpm:{<key>}" (the minute's window, a hash of tokens per second)
// and "<base>tq:{<key>}:<period>" (the quota's counter), for example
// "scoregate:rl:tpm:{chat:key:primary}" and "scoregate:rl:tq:{chat:key:primary}:2026-12" for a
// monthly quota (see NewShared for base, and tokenKeys): both in the Cluster slot of the caller's
// key, one script taking both. It shares s's view of whether Redis is up: while Redis does
// not answer, calls are decided with this instance's own counts, as s's are, and Redis is tried
// again once per probe interval.
//
// During such an outage each instance enforces the whole minute's budget on its own, counting
// from the outage's start (so N instances pass up to N times the budget, as with Shared's
// request rates), and counts the quota on from the last count Redis gave it for the caller, so
// that a spent quota stays spent; what is used during the outage is not added to Redis's counts
// afterwards.
func NewSharedTokenLimiter(s *Shared) *TokenLimiter {
	return &TokenLimiter{shared: s, local: newTokenCounts(), clock: time.Now}
}

// Reserve decides, before a call under key is forwarded, whether its estimate (EstimateTokens)
// fits l, and if so takes it from both the minute's budget and the quota. The quota is checked
// first: once it is spent (nothing left, however small the estimate) the outcome is
// TokensQuotaSpent; otherwise a call whose estimate the minute's budget cannot cover is
// TokensRateLimited. An estimate above the whole minute's budget is admitted when the window is
// empty, and then taken whole. A limit of nothing (zero) allows without counting.
//
// With Redis it returns within the timeout (plus the local decision) whatever Redis does; ctx
// may shorten that further. A reservation that is allowed must be settled once (Settle).
func (tl *TokenLimiter) Reserve(ctx context.Context, key string, l TokenLimit, estimate int64) TokenReservation {
	if l.PerMinute <= 0 {
		l.PerMinute = 0
	}
	now := tl.clock()
	start, end, ok := l.Period.bounds(now)
	if !ok || l.Quota <= 0 {
		l.Quota, l.Period = 0, ""
	}
	if l.PerMinute == 0 && l.Quota == 0 {
		return TokenReservation{}
	}
	r := TokenReservation{key: key, limit: l, estimate: min(max(estimate, 1), maxTokens)}
	if l.Quota > 0 {
		r.qkey = key + ":" + l.Period.stamp(start)
		r.QuotaLimit, r.QuotaReset = l.Quota, end.Sub(now)
	}
	if s := tl.shared; s != nil {
		if s.tryRedis() {
			used, err := tl.reserveRedis(ctx, &r)
			if err == nil {
				s.markUp()
				if l.Quota > 0 {
					tl.local.learnQuota(key, r.qkey, used, now, end)
				}
				return r
			}
			if ctx.Err() == nil {
				s.markDown(err)
			}
		}
		s.fallbacks.Add(1)
	}
	tl.local.reserve(&r, now, end)
	return r
}

// Settle corrects a reservation by the tokens the call actually used, once its answer has
// ended: actual − estimate is given back when negative, and charged when positive (then the
// minute's budget may run over, and later calls wait until the excess has left the window; the
// overrun counts in the second it is settled in). Settle does nothing for a reservation that
// was refused or counted nothing; call it at most once per reservation.
//
// Settle(r, 0) suits a call the model refused or never received. A call whose answer was cut,
// or gave no usage, is best left unsettled: its estimate then stays taken.
//
// A reservation taken in Redis is settled in Redis; if Redis does not answer, the correction is
// made to this instance's own counts instead (a refund of the minute's budget is then lost).
func (tl *TokenLimiter) Settle(ctx context.Context, r TokenReservation, actual int64) {
	if !r.settle {
		return
	}
	delta := min(max(actual, 0), maxTokens) - r.estimate
	if delta == 0 {
		return
	}
	if s := tl.shared; s != nil && r.shared {
		if s.tryRedis() {
			err := tl.settleRedis(ctx, r, delta)
			if err == nil {
				s.markUp()
				if r.qkey != "" {
					tl.local.adjustQuota(r.key, r.qkey, delta, tl.clock())
				}
				return
			}
			if ctx.Err() == nil {
				s.markDown(err)
			}
		}
	}
	tl.local.settle(r, delta, tl.clock())
}

// bounds returns the period around t: when it began and when it ends; ok is false for a
// Period that is none of the three.
func (p Period) bounds(t time.Time) (start, end time.Time, ok bool) {
	t = t.UTC()
	switch p {
	case Hourly:
		start = t.Truncate(time.Hour)
		return start, start.Add(time.Hour), true
	case Daily:
		start = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 0, 1), true
	case Monthly:
		start = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, 1, 0), true
	}
	return time.Time{}, time.Time{}, false
}

// stamp names the period that began at start, in its counter's key: "2026-12-07T09" (hourly),
// "2026-12-07" (daily), "2026-12" (monthly).
func (p Period) stamp(start time.Time) string {
	switch p {
	case Hourly:
		return start.Format("2006-01-02T15")
	case Daily:
		return start.Format("2006-01-02")
	}
	return start.Format("2006-01")
}

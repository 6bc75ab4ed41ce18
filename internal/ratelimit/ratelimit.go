// Package ratelimit decides whether one more request fits a rate limit: a steady number of requests
// per second with a burst, per key (a service key, a principal, anything the caller names). Local
// keeps the state in memory, for one gateway instance; Shared keeps it in Redis, so that every
// instance pointed at the same Redis enforces one limit together, and decides locally for as long
// as Redis does not answer.
//
// Both run GCRA, the generic cell rate algorithm: one "theoretical arrival time" (TAT) per key,
// the time at which the key's allowance would be fully used again if requests arrived exactly at
// the steady rate. A request is allowed when it does not push the TAT further than one burst
// window ahead of now.
//
// TokenLimiter limits requests of variable cost, a language model's calls, in tokens: a budget
// per minute (a sliding window) and a quota per hour, day or month, per key. A call's estimate
// is reserved before it is forwarded and settled by the model's own count once the answer has
// ended; in Redis (through a Shared, and by its fallback rule) or in memory.
//
// Failures counts failed attempts (of authentication) per key in fixed windows, with the same
// split between Redis and memory, to brake the guessing of credentials; ClientAddr and AddrKey
// name the client address such counts are kept for.
//
// It serves no HTTP: callers pass plain strings and turn a refused Decision (or
// TokenReservation) into a 429 and a Retry-After header themselves. It does not choose which limit applies to a request, and it
// does not read configuration.
//
// Keys are identifiers, never secrets: "key:<key id>" or "principal:<name>", not the service key
// or the bearer token itself. Shared stores them in Redis as part of a key name, and Local keeps
// them in memory as long as they are in use.
package ratelimit

import (
	"context"
	"time"
)

// Limit is a steady rate with a burst.
type Limit struct {
	// Rate is the steady number of requests per second. A Rate that is not positive (zero, the
	// zero Limit, or NaN) means no limit: every request is allowed and nothing is stored.
	Rate float64
	// Burst is how many requests may arrive at once after the key has been idle. Less than 1
	// counts as 1.
	Burst int
}

// Decision is the answer for one request.
type Decision struct {
	// Allowed reports whether the request fits the limit; a refused request uses none of it.
	Allowed bool
	// RetryAfter is, for a refused request, how long until the next request would be allowed
	// (always > 0). It is 0 for an allowed request.
	RetryAfter time.Duration
}

// Limiter decides, for one request under key, whether it fits l. Implementations are safe for
// concurrent use.
type Limiter interface {
	Allow(ctx context.Context, key string, l Limit) Decision
}

var (
	_ Limiter = (*Local)(nil)
	_ Limiter = (*Shared)(nil)
)

// maxWindow caps a burst window (and so how far ahead a TAT can be), so that absurd limits (one
// request a century) cannot overflow the arithmetic.
const maxWindow = 10 * 365 * 24 * time.Hour

// gcra returns l's emission interval (the time one request uses up) and its burst window
// (interval × burst: how far ahead of now the TAT may run); ok is false when l means no limit.
func (l Limit) gcra() (interval, window time.Duration, ok bool) {
	if !(l.Rate > 0) { // also NaN
		return 0, 0, false
	}
	iv := float64(time.Second) / l.Rate
	if iv < 1 { // more than 10⁹ requests a second: nothing a clock can tell apart
		return 0, 0, false
	}
	w := iv * float64(max(l.Burst, 1))
	return time.Duration(min(iv, float64(maxWindow))), time.Duration(min(w, float64(maxWindow))), true
}

// decide is GCRA for one request at now, for a key whose TAT is tat (tat ≤ now for a key
// without history): it returns the decision and the key's TAT afterwards. All times are in
// nanoseconds on one clock.
func decide(tat, now int64, interval, window time.Duration) (Decision, int64) {
	next := max(tat, now) + int64(interval)
	if allowAt := next - int64(window); allowAt > now {
		return Decision{RetryAfter: time.Duration(allowAt - now)}, tat
	}
	return Decision{Allowed: true}, next
}

package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for Shared.
const (
	DefaultTimeout       = 50 * time.Millisecond
	DefaultProbeInterval = time.Second
)

// gcraScript is GCRA for one request on Redis's clock, so that every instance measures time
// alike. The TAT is a float in microseconds since the Unix epoch (exact: Redis writes numbers with
// 17 significant digits), and expires when it passes, since a key without one decides the same.
// A refused request writes nothing.
//
//	KEYS[1]  the key's TAT
//	ARGV[1]  emission interval, microseconds
//	ARGV[2]  burst window, microseconds
//	returns  {1, 0} when allowed, {0, microseconds until the next request would be}
var gcraScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: allow writes after TIME
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local newtat = math.max(tat, now) + tonumber(ARGV[1])
local allowAt = newtat - tonumber(ARGV[2])
if allowAt > now then
  return {0, math.ceil(allowAt - now)}
end
redis.call('SET', KEYS[1], newtat, 'PX', math.ceil((newtat - now) / 1000))
return {1, 0}`)

// Shared is a Limiter whose state lives in Redis, so that every gateway instance using the same
// Redis and prefix enforces one limit together. Each call is one script run (EVALSHA) bounded by
// its own timeout.
//
// When Redis fails or does not answer in time, the call is decided by the fallback Local instead,
// and so are the calls of the next probe interval, without trying Redis (which would add the
// timeout to each of them); then one call tries Redis again, and the first answer ends the
// outage. During an outage every instance enforces the full limit on its own, so across N
// instances up to N times the rate gets through: a limit that holds loosely for a while rather
// than a gateway that refuses, or stalls, everything while Redis is away.
type Shared struct {
	client        redis.UniversalClient
	prefix        string
	local         *Local
	timeout       time.Duration
	probeInterval time.Duration
	log           *slog.Logger
	epoch         time.Time

	downUntil atomic.Int64 // nanoseconds since epoch before which calls skip Redis; 0 when up
	degraded  atomic.Bool
	fallbacks atomic.Int64
}

// SharedOption configures a Shared.
type SharedOption func(*Shared)

// WithTimeout bounds each Redis call (default DefaultTimeout; d ≤ 0 keeps it). It takes effect
// only if the client was built with ContextTimeoutEnabled, as authn.OpenRedis builds it;
// otherwise go-redis waits for its own read timeout.
func WithTimeout(d time.Duration) SharedOption {
	return func(s *Shared) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithProbeInterval sets how long after a failed Redis call the limiter decides locally without
// trying Redis (default DefaultProbeInterval; d ≤ 0 keeps it).
func WithProbeInterval(d time.Duration) SharedOption {
	return func(s *Shared) {
		if d > 0 {
			s.probeInterval = d
		}
	}
}

// WithLogger reports the start and the end of each Redis outage to log (default: nowhere).
func WithLogger(log *slog.Logger) SharedOption { return func(s *Shared) { s.log = log } }

// NewShared returns a limiter that keeps its state in client under keys "<prefix>rl:<key>".
// prefix is the store's key prefix (store.redis_prefix, "{scoregate}:" by default): its hash tag
// puts these keys in the same Cluster slot as the rest of the gateway's. fallback decides while
// Redis is unreachable, under the same key strings; nil means a NewLocal of its own. The client
// stays the caller's to close.
func NewShared(client redis.UniversalClient, prefix string, fallback *Local, opts ...SharedOption) *Shared {
	s := &Shared{
		client:        client,
		prefix:        prefix + "rl:",
		local:         fallback,
		timeout:       DefaultTimeout,
		probeInterval: DefaultProbeInterval,
		log:           slog.New(slog.DiscardHandler),
		epoch:         time.Now(),
	}
	for _, o := range opts {
		o(s)
	}
	if s.local == nil {
		s.local = NewLocal()
	}
	return s
}

// Allow implements Limiter. It returns within the timeout (plus the local decision) whatever
// Redis does; ctx may shorten that further. A call whose ctx ends before Redis answers is decided
// locally too, but does not count as a Redis failure.
func (s *Shared) Allow(ctx context.Context, key string, l Limit) Decision {
	interval, window, ok := l.gcra()
	if !ok {
		return Decision{Allowed: true}
	}
	if !s.tryRedis() {
		s.fallbacks.Add(1)
		return s.local.Allow(ctx, key, l)
	}
	d, err := s.allowRedis(ctx, key, interval, window)
	if err != nil {
		if ctx.Err() == nil { // else the caller gave up (a client hung up): not Redis's fault
			s.markDown(err)
		}
		s.fallbacks.Add(1)
		return s.local.Allow(ctx, key, l)
	}
	s.markUp()
	return d
}

func (s *Shared) allowRedis(ctx context.Context, key string, interval, window time.Duration) (Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := gcraScript.Run(ctx, s.client, []string{s.prefix + key}, micros(interval), micros(window)).Int64Slice()
	if err != nil {
		return Decision{}, err
	}
	if len(res) != 2 {
		return Decision{}, fmt.Errorf("the rate limit script answered %v", res)
	}
	if res[0] == 1 {
		return Decision{Allowed: true}, nil
	}
	return Decision{RetryAfter: time.Duration(res[1]) * time.Microsecond}, nil
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// tryRedis reports whether this call should ask Redis: always while Redis is up; during an
// outage, once per probe interval (the first call after it passes, and only that one).
func (s *Shared) tryRedis() bool {
	until := s.downUntil.Load()
	if until == 0 {
		return true
	}
	now := s.now()
	return now >= until && s.downUntil.CompareAndSwap(until, now+int64(s.probeInterval))
}

func (s *Shared) markDown(err error) {
	s.downUntil.Store(max(s.now()+int64(s.probeInterval), 1))
	if !s.degraded.Swap(true) {
		s.log.Warn("rate limits are enforced by each instance alone until Redis answers",
			"error", err, "probe_interval", s.probeInterval)
	}
}

func (s *Shared) markUp() {
	if s.downUntil.Load() != 0 {
		s.downUntil.Store(0)
	}
	if s.degraded.Load() && s.degraded.Swap(false) {
		s.log.Info("rate limits are shared through Redis again")
	}
}

func (s *Shared) now() int64 { return int64(time.Since(s.epoch)) }

// Degraded reports whether Redis is considered unreachable: the last call that asked it failed,
// so calls are being decided by the fallback Local.
func (s *Shared) Degraded() bool { return s.degraded.Load() }

// Fallbacks counts the calls decided by the fallback Local since NewShared, for metrics.
func (s *Shared) Fallbacks() int64 { return s.fallbacks.Load() }

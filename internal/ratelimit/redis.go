package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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
	base          string // every counter key starts with it: counterBase(prefix)
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

// NewShared returns a limiter that keeps its state in client under keys "<base>{<key>}", where
// base is prefix, the store's key prefix (store.redis_prefix, "{scoregate}:" by default), without
// its braces, then "rl:": "scoregate:rl:{key:abc}" for the key "key:abc" (see counterKey). Each
// key is thus in the Cluster slot of its own id, not in the store's one slot, so that the
// limiters' calls, one or two per request, spread over every master of a Cluster; a single Redis
// and Sentinel do not care. fallback decides while Redis is unreachable, under the same key
// strings; nil means a NewLocal of its own. The client stays the caller's to close.
//
// Earlier releases kept these counters under "<prefix>rl:<key>", in the store's slot. Nothing
// reads those any more: they are left to expire by their own TTLs (a rate limit's within its
// burst window, a token window's within a minute, a token quota's when its period ends), and
// the counts start afresh under the new names.
func NewShared(client redis.UniversalClient, prefix string, fallback *Local, opts ...SharedOption) *Shared {
	s := &Shared{
		client:        client,
		base:          counterBase(prefix),
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
	res, err := gcraScript.Run(ctx, s.client, []string{s.counterKey("", key, "")}, micros(interval), micros(window)).Int64Slice()
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

// counterBase is where every counter key of the store prefix starts: the prefix with its braces
// removed, so that it holds no hash tag ("{scoregate}:" becomes "scoregate:"; a prefix without
// braces stays as it is), then "rl:".
func counterBase(prefix string) string {
	return strings.NewReplacer("{", "", "}", "").Replace(prefix) + "rl:"
}

// counterKey is the Redis key of a counter: base, kind ("" for a request rate, "fail:",
// "tpm:", "tq:"), the id as a hash tag (hashTag), then suffix. Since base and kind hold no
// brace, Redis hashes such a key by the tag alone: every key of one id, whatever its kind and
// suffix, is in one slot, as a script that takes two of them needs, and different ids spread
// over the slots.
func (s *Shared) counterKey(kind, id, suffix string) string {
	return s.base + kind + "{" + hashTag(id) + "}" + suffix
}

// hashTag is id written so that, in braces, Redis takes all of it as the hash tag: '%', '{' and
// '}' become "%25", "%7B" and "%7D" (Redis would end the tag at the first '}', and a tag that
// ends where it begins would hash the whole key), and the empty id becomes "%", which no other
// id's tag is. Different ids have different tags, so their keys differ too.
func hashTag(id string) string {
	if id == "" {
		return "%"
	}
	if !strings.ContainsAny(id, "%{}") {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) + 8)
	for i := range len(id) {
		switch c := id[i]; c {
		case '%':
			b.WriteString("%25")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
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

package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailureLimit is how many failed attempts a key (a client address, say) may make in a window:
// the attempts after that are refused until the window ends. The window is fixed and starts at
// the key's first failure.
type FailureLimit struct {
	// Failures a window allows. Not positive: no limit.
	Failures int
	// Window is how long the count lasts from the first failure. Not positive: no limit.
	Window time.Duration
}

func (l FailureLimit) on() bool { return l.Failures > 0 && l.Window > 0 }

// Strike is the count of a key's window after one more failure.
type Strike struct {
	// Count is the failures counted in the window, this one included.
	Count int
	// Blocked is how long the key stays blocked (until its window ends) when Count has reached
	// the limit; 0 otherwise.
	Blocked time.Duration
	// Tripped reports that this failure is the one that reached the limit: one per key and
	// window (while Redis is away, one per instance that counts alone).
	Tripped bool
}

// Failures counts failed attempts per key in fixed windows and says which keys are blocked.
// With Redis (NewSharedFailures) every instance counts together; it decides with its own
// counts while Redis does not answer, as Shared does, so an outage neither blocks everyone nor
// stops the counting. Alone (NewLocalFailures) it counts in memory.
//
// Besides the counts, each instance remembers the blocks it has learned of (from its own
// failures, or from Blocked), so that BlockedHere answers from memory, for paths too busy to
// ask Redis on every request.
type Failures struct {
	shared *Shared // nil: this instance counts alone
	local  *counts
}

// NewLocalFailures returns failure counts kept in this process's memory.
func NewLocalFailures() *Failures { return &Failures{local: newCounts(time.Now)} }

// NewSharedFailures returns failure counts kept in Redis, under keys "<base>fail:{<key>}" (for
// example "scoregate:rl:fail:{auth:principal:192.0.2.1}"; see NewShared for base and the key
// in braces, which puts each count in the Cluster slot of its own key), through s's client, with
// s's timeout and its view of whether Redis is up.
func NewSharedFailures(s *Shared) *Failures { return &Failures{shared: s, local: newCounts(time.Now)} }

// failScript counts one failure of KEYS[1] in a window of ARGV[1] milliseconds that starts at
// its first failure; it returns the count and the milliseconds left in the window.
var failScript = redis.NewScript(`
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}`)

// blockedScript returns KEYS[1]'s count and, when it has reached ARGV[1], the milliseconds left
// in its window (else 0). It writes nothing.
var blockedScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n < tonumber(ARGV[1]) then return {n, 0} end
return {n, redis.call('PTTL', KEYS[1])}`)

// Fail counts one failure under key.
func (f *Failures) Fail(ctx context.Context, key string, l FailureLimit) Strike {
	if !l.on() {
		return Strike{}
	}
	if s := f.shared; s != nil {
		if s.tryRedis() {
			n, ttl, err := s.runFailures(ctx, failScript, key, l.Window.Milliseconds())
			if err == nil {
				s.markUp()
				f.local.learn(key, n, ttl, l)
				return strikeOf(n, ttl, l)
			}
			if ctx.Err() == nil {
				s.markDown(err)
			}
		}
		s.fallbacks.Add(1)
	}
	return f.local.add(key, l)
}

// Blocked reports how long key stays blocked: 0 when one more attempt may be made. With Redis
// it asks Redis (one call); while Redis is away, this instance's counts answer.
func (f *Failures) Blocked(ctx context.Context, key string, l FailureLimit) time.Duration {
	if !l.on() {
		return 0
	}
	if s := f.shared; s != nil {
		if s.tryRedis() {
			n, ttl, err := s.runFailures(ctx, blockedScript, key, int64(l.Failures))
			if err == nil {
				s.markUp()
				if n < l.Failures || ttl <= 0 {
					return 0
				}
				f.local.learn(key, n, ttl, l)
				return ttl
			}
			if ctx.Err() == nil {
				s.markDown(err)
			}
		}
		s.fallbacks.Add(1)
	}
	return f.local.blocked(key, l)
}

// BlockedHere is Blocked from this instance's memory alone: its own counts and the blocks it
// has learned of. It never calls Redis, and costs one atomic load while no key is blocked.
func (f *Failures) BlockedHere(key func() string, l FailureLimit) time.Duration {
	if !l.on() || f.local.nblocked.Load() == 0 {
		return 0
	}
	return f.local.blocked(key(), l)
}

func (s *Shared) runFailures(ctx context.Context, script *redis.Script, key string, arg int64) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := script.Run(ctx, s.client, []string{s.counterKey("fail:", key, "")}, arg).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("the failure count script answered %v", res)
	}
	return int(res[0]), time.Duration(res[1]) * time.Millisecond, nil
}

func strikeOf(n int, left time.Duration, l FailureLimit) Strike {
	st := Strike{Count: n, Tripped: n == l.Failures}
	if n >= l.Failures {
		st.Blocked = max(left, time.Millisecond)
	}
	return st
}

// maxCountKeys bounds the keys one shard of counts holds (so about 130,000 in all, a few MB).
const maxCountKeys = 2048

// counts is one instance's failure counts, sharded as Local is.
type counts struct {
	shards   [localShards]countShard
	seed     maphash.Seed
	clock    func() time.Time
	epoch    time.Time
	nblocked atomic.Int64 // keys held whose count had reached their limit when last written
}

type countShard struct {
	mu        sync.Mutex
	m         map[string]failWindow
	nextSweep int64
}

// failWindow is one key's count and the end of its window, in nanoseconds since counts.epoch.
type failWindow struct {
	n       int
	end     int64
	blocked bool // n had reached the limit when written; counted in nblocked
}

func newCounts(clock func() time.Time) *counts {
	c := &counts{seed: maphash.MakeSeed(), clock: clock}
	c.epoch = clock()
	for i := range c.shards {
		c.shards[i].m = map[string]failWindow{}
	}
	return c
}

// shard returns key's shard, locked, and the time now; the caller unlocks it.
func (c *counts) shard(key string) (*countShard, int64) {
	now := int64(c.clock().Sub(c.epoch))
	sh := &c.shards[maphash.String(c.seed, key)&(localShards-1)]
	sh.mu.Lock()
	if now >= sh.nextSweep {
		c.sweep(sh, now)
		sh.nextSweep = now + int64(sweepEvery)
	}
	return sh, now
}

func (c *counts) sweep(sh *countShard, now int64) {
	for k, w := range sh.m {
		if w.end <= now {
			c.drop(sh, k, w)
		}
	}
}

func (c *counts) drop(sh *countShard, key string, w failWindow) {
	delete(sh.m, key)
	if w.blocked {
		c.nblocked.Add(-1)
	}
}

// put stores w under key, making room when the shard is full.
func (c *counts) put(sh *countShard, key string, w failWindow, now int64) {
	old, had := sh.m[key]
	if !had && len(sh.m) >= maxCountKeys {
		// Of a few keys at random (map order), the first whose window has ended, else the least
		// counted, goes: bounded work however many keys an attacker makes up.
		victim, least, seen := "", 0, 0
		for k, v := range sh.m {
			if v.end <= now {
				victim = k
				break
			}
			if seen == 0 || v.n < least {
				victim, least = k, v.n
			}
			if seen++; seen == 8 {
				break
			}
		}
		c.drop(sh, victim, sh.m[victim])
	}
	if had && old.blocked {
		c.nblocked.Add(-1)
	}
	if w.blocked {
		c.nblocked.Add(1)
	}
	sh.m[key] = w
}

func (c *counts) add(key string, l FailureLimit) Strike {
	sh, now := c.shard(key)
	defer sh.mu.Unlock()
	w := sh.m[key]
	if w.end <= now {
		w = failWindow{end: now + int64(l.Window)}
	}
	w.n++
	w.blocked = w.n >= l.Failures
	c.put(sh, key, w, now)
	return strikeOf(w.n, time.Duration(w.end-now), l)
}

// learn keeps what Redis answered for key: its count n, and left of its window.
func (c *counts) learn(key string, n int, left time.Duration, l FailureLimit) {
	if n <= 0 || left <= 0 {
		return
	}
	sh, now := c.shard(key)
	defer sh.mu.Unlock()
	c.put(sh, key, failWindow{n: n, end: now + int64(left), blocked: n >= l.Failures}, now)
}

func (c *counts) blocked(key string, l FailureLimit) time.Duration {
	sh, now := c.shard(key)
	defer sh.mu.Unlock()
	w, ok := sh.m[key]
	if !ok || w.end <= now || w.n < l.Failures {
		return 0
	}
	return time.Duration(w.end - now)
}

package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

const (
	// localShards splits Local's keys over this many maps, each behind its own mutex, so that
	// requests on several cores rarely wait for one another. A power of two.
	localShards = 64
	// sweepEvery is how often each shard drops its idle keys, on the first call that finds the
	// time has come: memory then holds the keys used in the last sweepEvery plus one burst window.
	sweepEvery = 10 * time.Second
)

// Local is a Limiter that keeps its state in this process's memory: each gateway instance
// enforces the limits on its own. Allow takes no allocation once a key is known, and starts no
// goroutine: a key whose TAT has passed is dropped by a later call to the same shard, so one-off
// keys do not pile up. The zero Local is not usable; call NewLocal.
type Local struct {
	shards [localShards]localShard
	seed   maphash.Seed
	clock  func() time.Time
	epoch  time.Time // times are kept as nanoseconds since epoch
}

type localShard struct {
	mu        sync.Mutex
	tat       map[string]int64 // key → TAT, nanoseconds since Local.epoch
	nextSweep int64            // nanoseconds since Local.epoch
	_         [64 - 24]byte    // a cache line of its own: neighbours' locks do not share it
}

// LocalOption configures a Local.
type LocalOption func(*Local)

// WithClock makes Local read the time from now instead of time.Now; for tests.
func WithClock(now func() time.Time) LocalOption { return func(l *Local) { l.clock = now } }

// NewLocal returns an empty in-memory limiter.
func NewLocal(opts ...LocalOption) *Local {
	l := &Local{seed: maphash.MakeSeed(), clock: time.Now}
	for _, o := range opts {
		o(l)
	}
	l.epoch = l.clock() // with time.Now, a monotonic reading: later times are immune to clock steps
	for i := range l.shards {
		l.shards[i].tat = map[string]int64{}
	}
	return l
}

// Allow implements Limiter. It never blocks on anything but other calls for keys of the same
// shard, and ignores ctx. It keeps key (the string itself) for as long as the key is in use.
func (l *Local) Allow(_ context.Context, key string, lim Limit) Decision {
	interval, window, ok := lim.gcra()
	if !ok {
		return Decision{Allowed: true}
	}
	now := int64(l.clock().Sub(l.epoch))
	sh := &l.shards[maphash.String(l.seed, key)&(localShards-1)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now >= sh.nextSweep {
		sh.sweep(now)
		sh.nextSweep = now + int64(sweepEvery)
	}
	tat, seen := sh.tat[key]
	if !seen {
		tat = now
	}
	d, next := decide(tat, now, interval, window)
	if d.Allowed {
		sh.tat[key] = next
	}
	return d
}

// sweep drops the keys whose TAT is not after now: for such a key GCRA decides exactly as for
// a key never seen, so dropping it changes no decision.
func (sh *localShard) sweep(now int64) {
	for key, tat := range sh.tat {
		if tat <= now {
			delete(sh.tat, key)
		}
	}
}

// len counts the keys held, for tests.
func (l *Local) len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.tat)
		sh.mu.Unlock()
	}
	return n
}

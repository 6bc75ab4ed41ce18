package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"
)

// windowSeconds is how many seconds a second's tokens stay in the minute's window, from the
// start of that second: a token taken at any moment counts for at least 60 seconds.
const windowSeconds = 61

// tokenCounts is one instance's token counts: the minute's windows and the quotas, sharded as
// Local is, both under the caller's key so that one lock covers a reservation.
type tokenCounts struct {
	shards [localShards]tokenShard
	seed   maphash.Seed
}

type tokenShard struct {
	mu        sync.Mutex
	windows   map[string]*tokenWindow // caller key → the tokens of its last windowSeconds seconds
	quotas    map[string]quotaCount   // quota key (caller key and period) → its count
	nextSweep int64                   // Unix milliseconds
}

// tokenWindow is a ring of windowSeconds seconds: the tokens taken in each, by Unix second.
type tokenWindow struct {
	second [windowSeconds]int64
	tokens [windowSeconds]int64
	newest int64 // the latest second charged
}

// quotaCount is a quota's count for one period, which ends at end (Unix milliseconds).
type quotaCount struct {
	used, end int64
}

func newTokenCounts() *tokenCounts {
	c := &tokenCounts{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].windows = map[string]*tokenWindow{}
		c.shards[i].quotas = map[string]quotaCount{}
	}
	return c
}

// shard returns key's shard, locked; the caller unlocks it. Now and then it first drops the
// windows and counts that no longer hold anything.
func (c *tokenCounts) shard(key string, nowMs int64) *tokenShard {
	sh := &c.shards[maphash.String(c.seed, key)&(localShards-1)]
	sh.mu.Lock()
	if nowMs >= sh.nextSweep {
		sh.sweep(nowMs)
		sh.nextSweep = nowMs + sweepEvery.Milliseconds()
	}
	return sh
}

// sweep drops the windows whose tokens have all left, and the counts of ended periods.
func (sh *tokenShard) sweep(nowMs int64) {
	sec := floorDiv(nowMs, 1000)
	for k, w := range sh.windows {
		if w.newest <= sec-windowSeconds {
			delete(sh.windows, k)
		}
	}
	for k, q := range sh.quotas {
		if q.end <= nowMs {
			delete(sh.quotas, k)
		}
	}
}

// sweepAll sweeps every shard now, and len counts the windows and counts held; for tests.
func (c *tokenCounts) sweepAll(nowMs int64) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.sweep(nowMs)
		sh.mu.Unlock()
	}
}

func (c *tokenCounts) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.windows) + len(sh.quotas)
		sh.mu.Unlock()
	}
	return n
}

// reserve is Reserve on this instance's counts, at now; the quota's period ends at end.
func (c *tokenCounts) reserve(r *TokenReservation, now, end time.Time) {
	nowMs := now.UnixMilli()
	sec := floorDiv(nowMs, 1000)
	sh := c.shard(r.key, nowMs)
	defer sh.mu.Unlock()
	l := r.limit
	var used, sum int64
	var reset time.Duration
	if l.Quota > 0 {
		if q, ok := sh.quotas[r.qkey]; ok && q.end > nowMs {
			used = q.used
		}
	}
	w := sh.windows[r.key]
	if l.PerMinute > 0 && w != nil {
		sum, reset = w.sum(sec), w.reset(nowMs, sec)
	}
	if l.Quota > 0 && used >= l.Quota {
		r.fill(TokensQuotaSpent, 0, sum, reset, used)
		return
	}
	if l.PerMinute > 0 {
		if excess := sum + min(r.estimate, l.PerMinute) - l.PerMinute; excess > 0 {
			r.fill(TokensRateLimited, w.wait(nowMs, sec, excess), sum, reset, used)
			return
		}
		if w == nil {
			w = &tokenWindow{}
			sh.windows[r.key] = w
		}
		w.add(sec, r.estimate)
		sum, reset = sum+r.estimate, time.Duration((sec+windowSeconds)*1000-nowMs)*time.Millisecond
	}
	if l.Quota > 0 {
		used += r.estimate
		sh.quotas[r.qkey] = quotaCount{used: used, end: end.UnixMilli()}
	}
	r.second = sec
	r.fill(TokensAllowed, 0, sum, reset, used)
}

// settle is Settle on this instance's counts, at now. An overrun counts in the current second;
// a refund goes back to the second the estimate was taken in, if that is still in the window
// and the estimate was taken here.
func (c *tokenCounts) settle(r TokenReservation, delta int64, now time.Time) {
	nowMs := now.UnixMilli()
	sec := floorDiv(nowMs, 1000)
	sh := c.shard(r.key, nowMs)
	defer sh.mu.Unlock()
	if r.limit.PerMinute > 0 {
		w := sh.windows[r.key]
		switch {
		case delta > 0:
			if w == nil {
				w = &tokenWindow{}
				sh.windows[r.key] = w
			}
			w.add(sec, delta)
		case w != nil && !r.shared:
			w.refund(r.second, delta, sec)
		}
	}
	if r.qkey != "" {
		sh.adjustQuota(r.qkey, delta, nowMs)
	}
}

// learnQuota keeps the count Redis gave for a quota, so that while Redis is away this instance
// counts on from it.
func (c *tokenCounts) learnQuota(key, qkey string, used int64, now, end time.Time) {
	nowMs := now.UnixMilli()
	sh := c.shard(key, nowMs)
	defer sh.mu.Unlock()
	sh.quotas[qkey] = quotaCount{used: used, end: end.UnixMilli()}
}

// adjustQuota follows a settlement made in Redis in the count learnt from it.
func (c *tokenCounts) adjustQuota(key, qkey string, delta int64, now time.Time) {
	nowMs := now.UnixMilli()
	sh := c.shard(key, nowMs)
	defer sh.mu.Unlock()
	sh.adjustQuota(qkey, delta, nowMs)
}

func (sh *tokenShard) adjustQuota(qkey string, delta, nowMs int64) {
	if q, ok := sh.quotas[qkey]; ok && q.end > nowMs {
		q.used = max(q.used+delta, 0)
		sh.quotas[qkey] = q
	}
}

func slot(sec int64) int { return int(((sec % windowSeconds) + windowSeconds) % windowSeconds) }

// sum is the tokens in the window at second sec.
func (w *tokenWindow) sum(sec int64) int64 {
	var n int64
	for s := sec - windowSeconds + 1; s <= sec; s++ {
		if i := slot(s); w.second[i] == s {
			n += w.tokens[i]
		}
	}
	return n
}

// wait is how long, from nowMs (in second sec), until excess tokens have left the window.
func (w *tokenWindow) wait(nowMs, sec, excess int64) time.Duration {
	var freed int64
	for s := sec - windowSeconds + 1; s <= sec; s++ {
		if i := slot(s); w.second[i] == s {
			if freed += w.tokens[i]; freed >= excess {
				return time.Duration((s+windowSeconds)*1000-nowMs) * time.Millisecond
			}
		}
	}
	return windowSeconds * time.Second // not reached: the excess is never more than the sum
}

// reset is how long, from nowMs (in second sec), until every token has left the window.
func (w *tokenWindow) reset(nowMs, sec int64) time.Duration {
	for s := sec; s > sec-windowSeconds; s-- {
		if i := slot(s); w.second[i] == s && w.tokens[i] > 0 {
			return time.Duration((s+windowSeconds)*1000-nowMs) * time.Millisecond
		}
	}
	return 0
}

func (w *tokenWindow) add(sec, n int64) {
	i := slot(sec)
	if w.second[i] != sec {
		w.second[i], w.tokens[i] = sec, 0
	}
	w.tokens[i] += n
	w.newest = max(w.newest, sec)
}

// refund gives delta (< 0) back to second s, at second sec, if s is still in the window.
func (w *tokenWindow) refund(s, delta, sec int64) {
	if i := slot(s); s > sec-windowSeconds && w.second[i] == s {
		w.tokens[i] = max(w.tokens[i]+delta, 0)
	}
}

// fill sets r's outcome and the numbers its headers show, from the window's sum of tokens, the
// time until the window is empty, and the quota's count.
func (r *TokenReservation) fill(o TokenOutcome, wait time.Duration, sum int64, reset time.Duration, used int64) {
	r.Outcome = o
	r.settle = o == TokensAllowed
	if o == TokensRateLimited {
		r.RetryAfter = max(wait, time.Millisecond)
	}
	if l := r.limit.PerMinute; l > 0 {
		r.Limit, r.Remaining, r.Reset = l, max(l-sum, 0), max(reset, 0)
	}
	if q := r.limit.Quota; q > 0 {
		r.QuotaRemaining = max(q-used, 0)
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

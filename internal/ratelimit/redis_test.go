package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
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

const testPrefix = "{scoregate}:"

// testBase starts the limiters' keys under testPrefix: its braces gone, so that each key is
// hashed by its own id in braces.
const testBase = "scoregate:rl:"

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
	pttl, err := strconv.Atoi(srv.Do(t, "PTTL", testBase+"{key:abc}"))
	if err != nil || pttl <= 2000 || pttl > 3000 {
		t.Errorf("PTTL of the key's TAT = %d (%v), want in (2000, 3000]", pttl, err)
	}
	// No limit, no Redis key.
	if d := s.Allow(ctx, "key:unlimited", Limit{}); d != allow {
		t.Errorf("no limit: %+v", d)
	}
	if n := srv.Do(t, "EXISTS", testBase+"{key:unlimited}"); n != "0" {
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

// clusterIDs are the 60 ids the Cluster test counts under: key slots and principals of 15
// services, as the gateway names them, then ids with braces and percent signs, whose keys would
// leave their own slot (or hash by the whole key) if written into a hash tag as they are.
func clusterIDs() []string {
	var ids []string
	for i := range 15 {
		svc := fmt.Sprintf("svc%02d", i)
		ids = append(ids, svc+":key:primary", svc+":key:secondary",
			svc+":principal:https://idp.example|user"+strconv.Itoa(i), svc+":principal:scoregate|rita")
	}
	return append(ids[:56], "}", "{", "chat:principal:https://idp.example|{alice}}", "")
}

// On a 3-master Cluster, the limiters' counters are spread over every master, each id's in the
// slot of the id itself (a token reservation's window and quota together), and two instances
// sharing the Cluster enforce each limit together exactly as on one Redis: a rate's burst, a
// token budget and a quota, and failure counts. They run as the documented Redis user, with what
// it adds for a Cluster.
func TestSharedClusterSpreadsCounters(t *testing.T) {
	ctx := t.Context()
	c := redistest.Cluster(t, 3, redistest.WithACL("user default on nopass ~* &* +@all", documentedACL+clusterACL))
	type instance struct {
		s        *Shared
		tokens   *TokenLimiter
		failures *Failures
	}
	newInstance := func() instance {
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, MaxRetries: -1, ContextTimeoutEnabled: true,
			Username: "gateway", Password: "gateway-secret-0123456789"})
		t.Cleanup(func() { client.Close() })
		s := NewShared(client, testPrefix, nil, WithTimeout(2*time.Second))
		return instance{s, NewSharedTokenLimiter(s), NewSharedFailures(s)}
	}
	a, b := newInstance(), newInstance()
	rate := Limit{Rate: 1, Burst: 2}
	tokens := TokenLimit{PerMinute: 1000, Quota: 5000, Period: Monthly}
	fails := FailureLimit{Failures: 3, Window: time.Minute}
	ids := clusterIDs()
	reservations := map[string]TokenReservation{}
	for _, id := range ids {
		got := []Decision{a.s.Allow(ctx, id, rate), b.s.Allow(ctx, id, rate), a.s.Allow(ctx, id, rate), b.s.Allow(ctx, id, rate)}
		for i, d := range got {
			if d.Allowed != (i < 2) {
				t.Errorf("%q, call %d (alternating instances): %+v; want the burst of 2 allowed, then refused", id, i+1, d)
			}
		}
		r := a.tokens.Reserve(ctx, id, tokens, 600)
		reservations[id] = r
		if got := b.tokens.Reserve(ctx, id, tokens, 600); !r.Allowed() || got.Outcome != TokensRateLimited {
			t.Errorf("%q: %v on one instance then %v on the other, want allowed then rate limited", id, r.Outcome, got.Outcome)
		}
		a.tokens.Settle(ctx, r, 100)
		if got := b.tokens.Reserve(ctx, id, tokens, 600); !got.Allowed() || got.Remaining != 300 || got.QuotaRemaining != 4300 {
			t.Errorf("%q after settling: %+v, want allowed with 300 and 4300 left", id, viewOf(got))
		}
		a.failures.Fail(ctx, id, fails)
		if st := b.failures.Fail(ctx, id, fails); st.Count != 2 {
			t.Errorf("%q: the second failure counts %d, want 2", id, st.Count)
		}
	}
	for i, in := range []instance{a, b} {
		if in.s.Degraded() || in.s.Fallbacks() != 0 {
			t.Errorf("instance %d: Degraded() = %v, Fallbacks() = %d; want false, 0 (a script whose keys are in two slots fails)",
				i+1, in.s.Degraded(), in.s.Fallbacks())
		}
	}

	// Every id has its four counters, and they share the id's slot, as Redis computes it.
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs}) // the default user
	t.Cleanup(func() { client.Close() })
	want := map[string]bool{}
	for _, id := range ids {
		r := reservations[id]
		keys := append([]string{a.s.counterKey("", id, ""), a.s.counterKey("fail:", id, "")}, a.s.tokenKeys(&r)...)
		var slots []int64
		for _, k := range keys {
			want[k] = true
			slot, err := client.ClusterKeySlot(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if int(slot) != keySlot(k) {
				t.Errorf("CLUSTER KEYSLOT %q = %d; the test's keySlot says %d", k, slot, keySlot(k))
			}
			slots = append(slots, slot)
		}
		if slices.Min(slots) != slices.Max(slots) {
			t.Errorf("%q: the keys %q are in slots %v, want one", id, keys, slots)
		}
	}
	// They are spread over all three masters, and nothing else is there.
	var all []string
	for _, n := range c.Nodes {
		keys := strings.Fields(n.Do(t, "KEYS", "*"))
		t.Logf("%s holds %d keys", n.Addr, len(keys))
		if len(keys) < len(want)/6 {
			t.Errorf("%s holds %d of the %d keys: not spread over the masters", n.Addr, len(keys), len(want))
		}
		all = append(all, keys...)
	}
	if len(all) != len(want) {
		t.Errorf("the masters hold %d keys, want %d (4 per id)", len(all), len(want))
	}
	for _, k := range all {
		if !want[k] {
			t.Errorf("unexpected key %q", k)
		}
	}
}

// keySlot is Redis Cluster's slot of key, as cluster.c's keyHashSlot computes it: CRC16 (XMODEM)
// of the hash tag, the text between the first '{' and the next '}' when it is not empty, or else
// of the whole key; modulo 16384.
func keySlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := range len(key) {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc & 16383)
}

// The keys of one id (a request rate's, a failure count's, a token reservation's window and
// quota) are always in one slot, the id's own, whatever the id holds; different ids have
// different keys, and plain ids spread over the slots of every master of a 3-master Cluster.
func TestCounterKeysHashByTheirID(t *testing.T) {
	if got := keySlot("123456789"); got != 0x31C3 { // CRC16/XMODEM's check value, below 16384
		t.Fatalf("keySlot(123456789) = %#x, want 0x31c3", got)
	}
	if got := keySlot(testPrefix); got != 4812 {
		t.Fatalf("keySlot(%q) = %d, want 4812", testPrefix, got)
	}
	for prefix, base := range map[string]string{testPrefix: testBase, "gw:": "gw:rl:", "{a}b{c}:": "abc:rl:", "": "rl:"} {
		if got := counterBase(prefix); got != base {
			t.Errorf("counterBase(%q) = %q, want %q", prefix, got, base)
		}
	}
	s := NewShared(nil, testPrefix, nil)
	month := Monthly.stamp(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	keysOf := func(id string, l TokenLimit) []string {
		r := TokenReservation{key: id, limit: l}
		if l.Quota > 0 {
			r.qkey = id + ":" + month
		}
		return s.tokenKeys(&r)
	}
	both := TokenLimit{PerMinute: 1000, Quota: 5000, Period: Monthly}
	for _, tt := range []struct {
		id                     string
		rate, fail, window, tq string
	}{
		{"chat:key:primary", "scoregate:rl:{chat:key:primary}", "scoregate:rl:fail:{chat:key:primary}",
			"scoregate:rl:tpm:{chat:key:primary}", "scoregate:rl:tq:{chat:key:primary}:2026-12"},
		{"a}b{c", "scoregate:rl:{a%7Db%7Bc}", "scoregate:rl:fail:{a%7Db%7Bc}",
			"scoregate:rl:tpm:{a%7Db%7Bc}", "scoregate:rl:tq:{a%7Db%7Bc}:2026-12"},
		{"50%7D", "scoregate:rl:{50%257D}", "scoregate:rl:fail:{50%257D}",
			"scoregate:rl:tpm:{50%257D}", "scoregate:rl:tq:{50%257D}:2026-12"},
		{"", "scoregate:rl:{%}", "scoregate:rl:fail:{%}", "scoregate:rl:tpm:{%}", "scoregate:rl:tq:{%}:2026-12"},
	} {
		got := append([]string{s.counterKey("", tt.id, ""), s.counterKey("fail:", tt.id, "")}, keysOf(tt.id, both)...)
		if want := []string{tt.rate, tt.fail, tt.window, tt.tq}; !slices.Equal(got, want) {
			t.Errorf("keys of %q: %q, want %q", tt.id, got, want)
		}
	}
	// A reservation with only a window or only a quota names its one key twice.
	if got := keysOf("x", TokenLimit{PerMinute: 1}); got[0] != "scoregate:rl:tpm:{x}" || got[1] != got[0] {
		t.Errorf("window only: %q", got)
	}
	if got := keysOf("x", TokenLimit{Quota: 1, Period: Monthly}); got[0] != "scoregate:rl:tq:{x}:2026-12" || got[1] != got[0] {
		t.Errorf("quota only: %q", got)
	}

	ids := append(clusterIDs(), "{}", "}{", "{x}", "%", "%25", "%7D", "}}}", "{{{", "a{b}c", "%}{")
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "{}%:|ab"
	for range 2000 {
		b := make([]byte, rng.IntN(8))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ids = append(ids, string(b))
	}
	owner := map[string]string{} // key → the id it counts
	for _, id := range ids {
		keys := append([]string{s.counterKey("", id, ""), s.counterKey("fail:", id, "")}, keysOf(id, both)...)
		for _, k := range keys {
			if keySlot(k) != keySlot(keys[0]) {
				t.Fatalf("id %q: %q is in slot %d, %q in %d", id, k, keySlot(k), keys[0], keySlot(keys[0]))
			}
			if other, ok := owner[k]; ok && other != id {
				t.Fatalf("ids %q and %q share the key %q", other, id, k)
			}
			owner[k] = id
		}
		if id != "" && !strings.ContainsAny(id, "{}%") && keySlot(keys[0]) != keySlot("{"+id+"}") {
			t.Errorf("id %q: slot %d, want the id's own, %d", id, keySlot(keys[0]), keySlot("{"+id+"}"))
		}
	}
	// The 60 ids of the Cluster test fall in the slot ranges of all three masters that
	// redis-cli --cluster create makes (0-5460, 5461-10922, 10923-16383).
	var thirds [3]int
	for _, id := range clusterIDs() {
		switch slot := keySlot(s.counterKey("", id, "")); {
		case slot <= 5460:
			thirds[0]++
		case slot <= 10922:
			thirds[1]++
		default:
			thirds[2]++
		}
	}
	if slices.Min(thirds[:]) < 10 {
		t.Errorf("ids per third of the slots: %v, want them spread", thirds)
	}
}

package ratelimit

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

func TestFailuresLocal(t *testing.T) {
	ctx := t.Context()
	now := time.Unix(1000, 0)
	f := &Failures{local: newCounts(func() time.Time { return now })}
	lim := FailureLimit{Failures: 3, Window: time.Minute}

	if d := f.BlockedHere(func() string { t.Fatal("BlockedHere named a key while nothing is blocked"); return "" }, lim); d != 0 {
		t.Fatalf("nothing counted yet: blocked %v", d)
	}
	for i := 1; i <= 2; i++ {
		if st := f.Fail(ctx, "a", lim); st != (Strike{Count: i}) {
			t.Fatalf("failure %d: %+v", i, st)
		}
	}
	if d := f.Blocked(ctx, "a", lim); d != 0 {
		t.Fatalf("after 2 of 3 failures: blocked %v", d)
	}
	now = now.Add(10 * time.Second)
	if st := f.Fail(ctx, "a", lim); st != (Strike{Count: 3, Blocked: 50 * time.Second, Tripped: true}) {
		t.Fatalf("third failure: %+v, want the limit tripped, blocked until the window (from the first failure) ends", st)
	}
	for _, d := range []time.Duration{f.Blocked(ctx, "a", lim), f.BlockedHere(func() string { return "a" }, lim)} {
		if d != 50*time.Second {
			t.Errorf("blocked for %v, want 50s", d)
		}
	}
	if st := f.Fail(ctx, "a", lim); st.Tripped || st.Count != 4 {
		t.Errorf("a failure past the limit: %+v, want counted, not tripped again", st)
	}
	if d := f.Blocked(ctx, "b", lim); d != 0 {
		t.Errorf("another key: blocked %v", d)
	}
	if st := f.Fail(ctx, "off", FailureLimit{}); st != (Strike{}) {
		t.Errorf("no limit: %+v", st)
	}

	now = now.Add(50 * time.Second)
	if d := f.Blocked(ctx, "a", lim); d != 0 {
		t.Errorf("after the window: blocked %v", d)
	}
	if st := f.Fail(ctx, "a", lim); st != (Strike{Count: 1}) {
		t.Errorf("a failure after the window: %+v, want a new window", st)
	}
	now = now.Add(sweepEvery + time.Minute)
	f.Blocked(ctx, "a", lim) // sweeps a's shard
	if n := f.local.nblocked.Load(); n != 0 {
		t.Errorf("%d keys counted as blocked after every window ended", n)
	}
}

// The keys an attacker can make up are bounded: a full shard drops a key to take a new one.
func TestFailuresLocalBounded(t *testing.T) {
	f := NewLocalFailures()
	lim := FailureLimit{Failures: 5, Window: time.Minute}
	for i := range localShards * maxCountKeys * 2 {
		f.Fail(t.Context(), strconv.Itoa(i), lim)
	}
	n := 0
	for i := range f.local.shards {
		n += len(f.local.shards[i].m)
	}
	if n > localShards*maxCountKeys {
		t.Errorf("%d keys held, want at most %d", n, localShards*maxCountKeys)
	}
}

// Two instances on one Redis count together; while Redis is away each counts alone, and no key
// is blocked for want of Redis.
func TestFailuresShared(t *testing.T) {
	ctx := t.Context()
	srv := redistest.Start(t)
	a := NewSharedFailures(NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(time.Second), WithProbeInterval(time.Hour)))
	b := NewSharedFailures(NewShared(newClient(t, srv.URL()), testPrefix, nil, WithTimeout(time.Second)))
	lim := FailureLimit{Failures: 4, Window: time.Minute}

	for i, f := range []*Failures{a, b, a} {
		if st := f.Fail(ctx, "auth:admin:192.0.2.1", lim); st.Count != i+1 || st.Blocked != 0 {
			t.Fatalf("failure %d: %+v", i+1, st)
		}
	}
	if d := b.BlockedHere(func() string { return "auth:admin:192.0.2.1" }, lim); d != 0 {
		t.Fatalf("BlockedHere before the limit: %v", d)
	}
	st := b.Fail(ctx, "auth:admin:192.0.2.1", lim)
	if st.Count != 4 || !st.Tripped || st.Blocked <= 59*time.Second || st.Blocked > time.Minute {
		t.Fatalf("the fourth failure, on the other instance: %+v, want the limit tripped for about a minute", st)
	}
	if d := a.Blocked(ctx, "auth:admin:192.0.2.1", lim); d <= 59*time.Second {
		t.Errorf("the first instance sees the address blocked for %v", d)
	}
	if d := a.BlockedHere(func() string { return "auth:admin:192.0.2.1" }, lim); d <= 59*time.Second {
		t.Errorf("having asked Redis, the first instance remembers the block: %v", d)
	}
	if d := a.Blocked(ctx, "auth:admin:192.0.2.2", lim); d != 0 {
		t.Errorf("another address: blocked %v", d)
	}
	// The key names the address, never a secret, and ends with its window.
	pttl, err := strconv.Atoi(srv.Do(t, "PTTL", testBase+"fail:{auth:admin:192.0.2.1}"))
	if err != nil || pttl <= 59000 || pttl > 60000 {
		t.Errorf("PTTL of the count = %d (%v), want about a minute", pttl, err)
	}

	srv.Stop(t)
	if d := b.Blocked(ctx, "auth:admin:192.0.2.3", lim); d != 0 {
		t.Errorf("Redis away: an address without failures is blocked for %v", d)
	}
	for i := 1; i <= 4; i++ {
		st := a.Fail(ctx, "auth:admin:192.0.2.3", lim)
		if st.Count != i || st.Tripped != (i == 4) {
			t.Fatalf("Redis away, failure %d: %+v, want counted here", i, st)
		}
	}
	if d := a.Blocked(ctx, "auth:admin:192.0.2.3", lim); d <= 59*time.Second {
		t.Errorf("Redis away: blocked for %v after the limit counted here", d)
	}
	if !a.shared.Degraded() {
		t.Error("Redis away: not reported")
	}
}

func TestClientAddr(t *testing.T) {
	trusted := func(a netip.Addr) bool {
		return netip.MustParsePrefix("10.0.0.0/8").Contains(a) || a == netip.MustParseAddr("2001:db8::10")
	}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"an untrusted peer is the client, whatever it forwards", "192.0.2.7", []string{"198.51.100.1"}, "192.0.2.7"},
		{"a trusted proxy without X-Forwarded-For", "10.0.0.1", nil, "10.0.0.1"},
		{"a trusted proxy names the client", "10.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"entries the client made up, left of the proxy's, are not believed", "10.0.0.1", []string{"203.0.113.5, 198.51.100.1"}, "198.51.100.1"},
		{"through two trusted proxies", "10.0.0.1", []string{"198.51.100.1, 10.0.0.2"}, "198.51.100.1"},
		{"over several header lines", "10.0.0.1", []string{"203.0.113.5", "198.51.100.1,10.0.0.2"}, "198.51.100.1"},
		{"with ports", "10.0.0.1", []string{"198.51.100.1:4711"}, "198.51.100.1"},
		{"IPv6 with a port", "2001:db8::10", []string{"[2001:db8:1::5]:4711"}, "2001:db8:1::5"},
		{"an entry that is no address stops at the last trusted hop", "10.0.0.1", []string{"198.51.100.1, unknown, 10.0.0.2"}, "10.0.0.2"},
		{"a mapped IPv4 peer", "::ffff:192.0.2.7", nil, "192.0.2.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClientAddr(netip.MustParseAddr(tc.peer), tc.xff, trusted); got != netip.MustParseAddr(tc.want) {
				t.Errorf("ClientAddr = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAddrKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
	} {
		if got := AddrKey(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("AddrKey(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

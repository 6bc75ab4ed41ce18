package heapgoal

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{2 * mib, 64 * mib, 1600}, // a live heap under 4 MB counts as 4 MB
		{64 * mib, 64 * mib, 100},
		{100 * mib, 64 * mib, 100}, // never below GOGC=100
		{5 * mib, 64 * mib, 1280},
		{0, 64 * mib, 1600}, // before the first collection: the runtime's 4 MB floor
		{1, 64 * mib, 1600},
		{4 * mib, math.MaxUint64, math.MaxInt32},
	} {
		if got := Percent(c.live, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

// TestKeeperFollowsTheLiveHeap checks that the percentage is set at start and again after a
// collection once the live heap has grown.
func TestKeeperFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	const headroom = 256 << 20
	runtime.GC() // the live heap as it is now, not as an earlier test left it
	k := Start(headroom)
	defer k.Stop()
	first := gcPercent()
	t.Logf("live %d, percent %d", liveHeap(), first)
	if first <= 100 {
		t.Fatalf("after Start the GC percentage is %d; a small live heap should get more than 100", first)
	}
	// Grow the live heap to about the headroom: the percentage must come down towards 100.
	hold := make([][]byte, 0, 256)
	for range 256 {
		hold = append(hold, make([]byte, 1<<20))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		runtime.GC() // the finalizer of the first collection's sentinel has run by the second
		p := gcPercent()
		if p <= 110 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a live heap of about the headroom the GC percentage stayed at %d (started at %d)", p, first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(hold)
}

func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

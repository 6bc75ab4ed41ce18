// Package heapgoal lets a process's heap grow by at least a fixed headroom between garbage
// collections.
//
// Go's default (GOGC=100) collects whenever the heap has doubled since the last collection, with a
// 4 MB floor. A gateway's live heap is a few megabytes, so under load it collects every few
// milliseconds: on the gRPC path that was a fifth of its CPU, plus the stacks of its workers
// shrunk at every collection and grown again by the next call. Keeping the goal at
// live + headroom (and never below what GOGC=100 gives) makes collections rare while the live heap
// is small, and leaves large heaps (ten thousand open connections) exactly as GOGC=100 does.
// GOMEMLIMIT, when set, still bounds the heap: the runtime collects early as it nears the limit.
package heapgoal

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// Percent is the GOGC value that puts the heap goal at live+headroom bytes, and never below 100.
func Percent(live, headroom uint64) int {
	// Before the first collection the live heap reads 0; the runtime's 4 MB floor stands in.
	live = max(live, minHeap)
	headroom = min(headroom, 1<<56) // so that headroom*100 cannot overflow
	p := headroom * 100 / live
	if p > math.MaxInt32 {
		return math.MaxInt32
	}
	return max(int(p), 100)
}

// minHeap is the Go runtime's smallest heap goal at GOGC=100 (its defaultHeapMinimum).
const minHeap = 4 << 20

// Keeper adjusts the GC percentage after every collection; Stop ends that.
type Keeper struct {
	headroom uint64
	stopped  atomic.Bool
	last     int
	sample   []metrics.Sample
}

// Start sets the goal now and after every collection. The caller should not start one when the
// user set GOGC: theirs is the choice.
func Start(headroom uint64) *Keeper {
	k := &Keeper{headroom: headroom, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	k.adjust()
	k.arm()
	return k
}

// Stop leaves the GC percentage where it is and stops adjusting it.
func (k *Keeper) Stop() { k.stopped.Store(true) }

// sentinel is garbage from the moment it is made; its finalizer runs after the collection that
// finds it, which is the hook for "a collection has ended".
type sentinel struct{ _ [16]byte }

func (k *Keeper) arm() {
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) {
		if k.stopped.Load() {
			return
		}
		k.adjust()
		k.arm()
	})
}

// adjust runs on the finalizer goroutine only (and once in Start, before arm), so last needs no
// lock.
func (k *Keeper) adjust() {
	metrics.Read(k.sample)
	var live uint64
	if k.sample[0].Value.Kind() == metrics.KindUint64 {
		live = k.sample[0].Value.Uint64()
	}
	p := Percent(live, k.headroom)
	// Small changes are not worth a call: the goal moves with the live heap anyway.
	if k.last != 0 && p > k.last*7/8 && p < k.last*9/8 {
		return
	}
	k.last = p
	debug.SetGCPercent(p)
}

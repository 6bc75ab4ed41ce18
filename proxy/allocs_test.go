//go:build !race

package proxy_test

import "testing"

// The allocations of a key-authenticated request through the whole handler (client, gateway and
// model in this process) are a tracked number: BenchmarkProxyKeyRequest makes none, and a change
// that adds allocations per request fails here rather than only showing in a benchmark nobody
// reads. Built without the race detector only, which allocates on its own account; .ci/run runs
// it so.
func TestKeyRequestAllocations(t *testing.T) {
	const most = 0
	r := testing.Benchmark(BenchmarkProxyKeyRequest)
	if r.N == 0 {
		t.Fatal("the benchmark did not run")
	}
	if got := r.AllocsPerOp(); got > most {
		t.Errorf("a key request makes %d allocations (%d B); at most %d", got, r.AllocedBytesPerOp(), most)
	}
}

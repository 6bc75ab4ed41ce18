package ratelimit

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// One request's decision on a key already known: the per-request cost on one instance.
func BenchmarkLocalAllow(b *testing.B) {
	ctx := b.Context()
	l := NewLocal()
	lim := Limit{Rate: 1e6, Burst: 100}
	l.Allow(ctx, "key:bench", lim)
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(ctx, "key:bench", lim)
	}
}

// Every core deciding at once, over 1000 known keys spread across the shards.
func BenchmarkLocalAllowParallel(b *testing.B) {
	ctx := b.Context()
	l := NewLocal()
	lim := Limit{Rate: 1e6, Burst: 100}
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
		l.Allow(ctx, keys[i], lim)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			l.Allow(ctx, keys[i%len(keys)], lim)
			i++
		}
	})
}

// One request's decision through a redis-server on loopback: the script's round trip.
func BenchmarkSharedAllow(b *testing.B) {
	ctx := b.Context()
	srv := redistest.Start(b)
	s := NewShared(newClient(b, srv.URL()), testPrefix, nil, WithTimeout(time.Second))
	lim := Limit{Rate: 1e6, Burst: 100}
	s.Allow(ctx, "key:bench", lim)
	b.ReportAllocs()
	for b.Loop() {
		s.Allow(ctx, "key:bench", lim)
	}
	b.StopTimer()
	if s.Fallbacks() != 0 {
		b.Fatalf("%d calls fell back to the local limiter", s.Fallbacks())
	}
}

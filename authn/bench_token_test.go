package authn

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// benchTokenEnv is a gateway with a principal that may call services, whose verified-token cache
// holds about cacheEntries tokens.
func benchTokenEnv(b *testing.B, cacheEntries int) (*tokenEnv, Principal) {
	b.Helper()
	e := newTokenEnv(b, func(c *config.Config) { c.Tokens.CacheEntries = cacheEntries })
	p, _ := e.principal(b, "alice", "reader")
	return e, p
}

// BenchmarkVerifyTokenUncached times the full check of a token not seen before: splitting and
// decoding, the header and claim-name checks, golang-jwt's parse and Ed25519 verification, the
// claim checks, the revocation and principal lookups, and the cache insert.
//
// How every call misses the cache, honestly: the tokens are a pool of 1024 distinct valid ones,
// minted before the timer starts and verified in turn, and the cache is cut to one entry per
// shard (tokens.cache_entries: 1), so that by the time a token's turn comes again some 32 other
// tokens have replaced it in its shard. Minting a fresh token in the loop would time the signing
// too, and replacing the cache in the loop would time 32 map allocations.
func BenchmarkVerifyTokenUncached(b *testing.B) {
	e, p := benchTokenEnv(b, 1)
	svc := e.tokens.services["scoring"]
	pool := make([][]byte, 1024)
	for i := range pool {
		resp, err := e.tokens.mint(p, "scoring", svc)
		if err != nil {
			b.Fatal(err)
		}
		pool[i] = []byte(resp.AccessToken)
	}
	for _, tok := range pool {
		if _, err := e.tokens.Verify("scoring", tok); err != nil {
			b.Fatal(err)
		}
	}
	if n := e.tokens.cache.len(); n > tokenCacheShards {
		b.Fatalf("the cache holds %d tokens, want at most one per shard", n)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := e.tokens.Verify("scoring", pool[i%len(pool)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkVerifyTokenCached times a token already checked: a cache hit, plus the expiry,
// revocation and principal checks made on every hit.
func BenchmarkVerifyTokenCached(b *testing.B) {
	e, p := benchTokenEnv(b, config.DefaultTokenCacheEntries)
	tok := []byte(e.mint(b, p, "scoring").AccessToken)
	if _, err := e.tokens.Verify("scoring", tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.tokens.Verify("scoring", tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyTokenCachedParallel is BenchmarkVerifyTokenCached from every P, each with its
// own token (so that the shards, not one entry, are contended as in real traffic).
func BenchmarkVerifyTokenCachedParallel(b *testing.B) {
	e, p := benchTokenEnv(b, config.DefaultTokenCacheEntries)
	pool := make([][]byte, 64)
	for i := range pool {
		pool[i] = []byte(e.mint(b, p, "scoring").AccessToken)
		if _, err := e.tokens.Verify("scoring", pool[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tok := pool[rand.IntN(len(pool))]
		for pb.Next() {
			if _, err := e.tokens.Verify("scoring", tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRevocationCheck times the revocation lookup made for every token, with few and with
// a million revoked tokens, for a token that is not revoked and for one that is.
func BenchmarkRevocationCheck(b *testing.B) {
	for _, n := range []int{10, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			s := newRevocationSet()
			exp := time.Now().Add(time.Hour)
			r := rand.New(rand.NewPCG(1, uint64(n)))
			var jti [16]byte
			var revokedID string
			for i := range n {
				for j := range jti {
					jti[j] = byte(r.Uint32())
				}
				id := revocationID(config.DefaultTokenIssuer, b64url.EncodeToString(jti[:]))
				s.add(id, exp)
				if i == n/2 {
					revokedID = id
				}
			}
			if s.len() != n {
				b.Fatalf("%d entries, want %d", s.len(), n)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			perEntry := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
			for _, tt := range []struct {
				name string
				id   string
				want bool
			}{
				{"not revoked", revocationID(config.DefaultTokenIssuer, "bm90LXJldm9rZWQtMDEyMzQ1"), false},
				{"revoked", revokedID, true},
			} {
				b.Run(tt.name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if s.revoked(tt.id) != tt.want {
							b.Fatal("wrong answer")
						}
					}
					b.ReportMetric(perEntry, "heapB/entry")
				})
			}
		})
	}
}

package authn

import (
	"hash/maphash"
	"sync"
	"time"
)

// revocationSet is the in-memory set of revoked tokens, keyed by issuer and jti. Lookups take a
// read lock on one of many shards, so the check costs the same with ten entries or a million.
type revocationSet struct {
	shards [revocationShards]revocationShard
}

const revocationShards = 64

type revocationShard struct {
	mu sync.RWMutex
	m  map[string]int64 // key → expiry, unix seconds
}

var revocationSeed = maphash.MakeSeed()

func newRevocationSet() *revocationSet {
	s := &revocationSet{}
	for i := range s.shards {
		s.shards[i].m = map[string]int64{}
	}
	return s
}

// revocationID is the set's key for a token: its issuer and jti.
func revocationID(iss, jti string) string { return iss + "\x00" + jti }

func (s *revocationSet) shard(id string) *revocationShard {
	return &s.shards[maphash.String(revocationSeed, id)%revocationShards]
}

// add records a revocation until exp.
func (s *revocationSet) add(id string, exp time.Time) {
	sh := s.shard(id)
	sh.mu.Lock()
	if cur, ok := sh.m[id]; !ok || exp.Unix() > cur {
		sh.m[id] = exp.Unix()
	}
	sh.mu.Unlock()
}

// revoked reports whether the token id is revoked.
func (s *revocationSet) revoked(id string) bool {
	sh := s.shard(id)
	sh.mu.RLock()
	_, ok := sh.m[id]
	sh.mu.RUnlock()
	return ok
}

// prune drops revocations of tokens that expired before t.
func (s *revocationSet) prune(t time.Time) {
	cut := t.Unix()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for id, exp := range sh.m {
			if exp < cut {
				delete(sh.m, id)
			}
		}
		sh.mu.Unlock()
	}
}

// len counts the entries.
func (s *revocationSet) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

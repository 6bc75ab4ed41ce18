package authn

import (
	"hash/maphash"
	"sync"
)

// shardedMap is a string-keyed map split over shards, each with its own lock, so that readers on
// several cores rarely meet and a lookup costs the same at any size. The revocation set and the
// verified-token cache are both one.
type shardedMap[V any] struct {
	shards []mapShard[V]
	seed   maphash.Seed
}

type mapShard[V any] struct {
	mu sync.RWMutex
	m  map[string]V
}

func newShardedMap[V any](shards int) *shardedMap[V] {
	s := &shardedMap[V]{shards: make([]mapShard[V], shards), seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = map[string]V{}
	}
	return s
}

// shard is the shard of key (maphash.Bytes and maphash.String agree, so either form finds it).
func (s *shardedMap[V]) shard(key []byte) *mapShard[V] {
	return &s.shards[maphash.Bytes(s.seed, key)%uint64(len(s.shards))]
}

func (s *shardedMap[V]) shardString(key string) *mapShard[V] {
	return &s.shards[maphash.String(s.seed, key)%uint64(len(s.shards))]
}

// get looks key up without allocating.
func (s *shardedMap[V]) get(key []byte) (V, bool) {
	sh := s.shard(key)
	sh.mu.RLock()
	v, ok := sh.m[string(key)]
	sh.mu.RUnlock()
	return v, ok
}

func (s *shardedMap[V]) getString(key string) (V, bool) {
	sh := s.shardString(key)
	sh.mu.RLock()
	v, ok := sh.m[key]
	sh.mu.RUnlock()
	return v, ok
}

// deleteIf drops every entry for which drop is true.
func (s *shardedMap[V]) deleteIf(drop func(V) bool) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, v := range sh.m {
			if drop(v) {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

// len counts the entries.
func (s *shardedMap[V]) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

package authn

import (
	"hash/maphash"
	"sync"
	"time"
)

// tokenCache remembers tokens that passed the full check, keyed by their exact bytes, so that a
// repeated token costs a map lookup. It is bounded; an entry is only a shortcut past the
// signature and claim checks: expiry, revocation and the principal are checked on every hit.
type tokenCache struct {
	shards   [tokenCacheShards]tokenCacheShard
	perShard int
}

const tokenCacheShards = 32

type tokenCacheShard struct {
	mu sync.RWMutex
	m  map[string]*cachedToken
}

type cachedToken struct {
	service      string
	claims       TokenClaims
	pid          string
	own          bool
	revocationID string
	keyKnown     func() bool // for an external issuer's token: whether its key is still published
}

var tokenCacheSeed = maphash.MakeSeed()

func newTokenCache(entries int) *tokenCache {
	c := &tokenCache{perShard: max(1, entries/tokenCacheShards)}
	for i := range c.shards {
		c.shards[i].m = map[string]*cachedToken{}
	}
	return c
}

func (c *tokenCache) shard(tok []byte) *tokenCacheShard {
	return &c.shards[maphash.Bytes(tokenCacheSeed, tok)%tokenCacheShards]
}

func (c *tokenCache) get(tok []byte) *cachedToken {
	sh := c.shard(tok)
	sh.mu.RLock()
	e := sh.m[string(tok)]
	sh.mu.RUnlock()
	return e
}

func (c *tokenCache) put(tok []byte, e *cachedToken) {
	sh := c.shard(tok)
	sh.mu.Lock()
	if len(sh.m) >= c.perShard {
		// Full: drop a quarter of the shard (map order is random enough for an eviction).
		n := len(sh.m) / 4
		for k := range sh.m {
			if n <= 0 {
				break
			}
			delete(sh.m, k)
			n--
		}
		if len(sh.m) >= c.perShard { // a shard of one
			clear(sh.m)
		}
	}
	sh.m[string(tok)] = e
	sh.mu.Unlock()
}

// prune drops entries of tokens that expired before t.
func (c *tokenCache) prune(t time.Time) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.claims.ExpiresAt.Before(t) {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

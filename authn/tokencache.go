package authn

import "time"

// tokenCache remembers tokens that passed the full check, keyed by their exact bytes, so that a
// repeated token costs a map lookup. It is bounded; an entry is only a shortcut past the
// signature and claim checks: expiry, revocation and the principal are checked on every hit.
type tokenCache struct {
	m        *shardedMap[*cachedToken]
	perShard int
}

const tokenCacheShards = 32

type cachedToken struct {
	service      string
	claims       TokenClaims
	pid          string
	own          bool
	revocationID string
	caller       string      // "principal:<subject>", the caller's name (Caller.Name)
	keyKnown     func() bool // for an external issuer's token: whether its key is still published
}

func newTokenCache(entries int) *tokenCache {
	return &tokenCache{m: newShardedMap[*cachedToken](tokenCacheShards), perShard: max(1, entries/tokenCacheShards)}
}

func (c *tokenCache) get(tok []byte) *cachedToken {
	e, _ := c.m.get(tok)
	return e
}

func (c *tokenCache) put(tok []byte, e *cachedToken) {
	sh := c.m.shard(tok)
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
	c.m.deleteIf(func(e *cachedToken) bool { return e.claims.ExpiresAt.Before(t) })
}

func (c *tokenCache) len() int { return c.m.len() }

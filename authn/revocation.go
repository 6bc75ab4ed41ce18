package authn

import "time"

// revocationSet is the in-memory set of revoked tokens, keyed by issuer and jti, each kept until
// its token's expiry. Lookups take a read lock on one of many shards, so the check costs the same
// with ten entries or a million.
type revocationSet struct {
	m *shardedMap[int64] // id → expiry, unix seconds
}

const revocationShards = 64

func newRevocationSet() *revocationSet {
	return &revocationSet{m: newShardedMap[int64](revocationShards)}
}

// revocationID is the set's key for a token: its issuer and jti.
func revocationID(iss, jti string) string { return iss + "\x00" + jti }

// add records a revocation until exp (the later expiry wins).
func (s *revocationSet) add(id string, exp time.Time) {
	sh := s.m.shardString(id)
	sh.mu.Lock()
	if cur, ok := sh.m[id]; !ok || exp.Unix() > cur {
		sh.m[id] = exp.Unix()
	}
	sh.mu.Unlock()
}

// revoked reports whether the token id is revoked.
func (s *revocationSet) revoked(id string) bool {
	_, ok := s.m.getString(id)
	return ok
}

// prune drops revocations of tokens that expired before t.
func (s *revocationSet) prune(t time.Time) {
	cut := t.Unix()
	s.m.deleteIf(func(exp int64) bool { return exp < cut })
}

// len counts the entries.
func (s *revocationSet) len() int { return s.m.len() }

package authn

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Snapshot is everything a store holds, for moving an embedded store into Redis.
type Snapshot struct {
	Secret      []byte
	Keys        []KeyRecord
	Principals  []PrincipalRecord
	SigningKeys []SigningKeyRecord
	Revocations []Revocation
	Activity    []Activity // newest first
}

// Export reads a whole store.
func Export(ctx context.Context, s Store) (*Snapshot, error) {
	var snap Snapshot
	var err error
	if snap.Secret, err = s.Secret(ctx); err != nil {
		return nil, err
	}
	if snap.Keys, err = s.Keys(ctx); err != nil {
		return nil, err
	}
	if snap.Principals, err = s.Principals(ctx); err != nil {
		return nil, err
	}
	if snap.SigningKeys, err = s.SigningKeys(ctx); err != nil {
		return nil, err
	}
	if snap.Revocations, err = s.Revocations(ctx); err != nil {
		return nil, err
	}
	if snap.Activity, err = s.Activity(ctx, redisActivityLimit); err != nil {
		return nil, err
	}
	return &snap, nil
}

// ErrNotEmpty is returned by Import into a Redis that already holds a gateway's keys or principals.
var ErrNotEmpty = errors.New("the Redis store already holds keys or principals")

// Import writes snap into a Redis store that holds no keys or principals yet, replacing its hashing
// secret with the snapshot's (so that the copied key hashes still match their keys). Running
// gateways pick the change up through the usual change notice.
func (s *RedisStore) Import(ctx context.Context, snap *Snapshot) error {
	n1, err1 := s.client.HLen(ctx, s.key("keys")).Result()
	n2, err2 := s.client.HLen(ctx, s.key("principals")).Result()
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("checking the Redis store: %w", err)
	}
	if n1+n2 > 2 { // each holds its presence entry
		return ErrNotEmpty
	}
	for _, r := range snap.Keys {
		if err := s.PutKey(ctx, r); err != nil {
			return err
		}
	}
	used := map[string]int64{}
	for _, r := range snap.Keys {
		if !r.LastUsedAt.IsZero() {
			used[r.ID] = r.LastUsedAt.UnixNano()
		}
	}
	for _, p := range snap.Principals {
		if err := s.PutPrincipal(ctx, p); err != nil {
			return err
		}
	}
	for _, k := range snap.SigningKeys {
		if err := s.PutSigningKey(ctx, k); err != nil {
			return err
		}
	}
	for _, r := range snap.Revocations {
		if err := s.PutRevocation(ctx, r); err != nil {
			return err
		}
	}
	for i := len(snap.Activity) - 1; i >= 0; i-- { // oldest first, so the list keeps its order
		if err := s.AppendActivity(ctx, snap.Activity[i]); err != nil {
			return err
		}
	}
	// Last, the secret: until it is replaced, the copied hashes match nothing (fail closed).
	return s.write(ctx, "keys", "", func(p redis.Pipeliner) {
		p.Set(ctx, s.key(secretKey), snap.Secret, 0)
		for id, n := range used {
			p.HSet(ctx, s.key("keys-used"), id, n)
		}
	})
}

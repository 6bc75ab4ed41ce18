package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scoregate/scoregate/authn"
)

// The sweeps need up to a million keys or revocations in a gateway's store. Through the admin API
// that takes far too long (each write is its own fsynced transaction), so the harness writes them
// straight into the embedded store's file in large transactions, in the records' own JSON form
// (authn.KeyRecord, authn.Revocation) and under the bucket layout of authn/bolt.go. The fill is
// then read back through authn.OpenBolt and counted, and the peer check proves the gateway reads
// the measured key, so a layout that drifted from authn's fails loudly instead of measuring an
// empty store.
const (
	boltKeysBucket        = "keys"        // authn/bolt.go bucketKeys, records keyed "service/slot"
	boltRevocationsBucket = "revocations" // authn/bolt.go bucketRevocations, keyed "iss\x00jti"
	fillBatch             = 50000         // records per transaction
)

// fillKeys writes n keys into the embedded store in dir: the measured key of service "bench" and
// n-1 keys of services the configuration does not name (two slots each), as a store serving many
// services would hold. It returns the measured key.
func fillKeys(ctx context.Context, dir string, n int64) (string, error) {
	secret, err := storeSecret(ctx, dir)
	if err != nil {
		return "", err
	}
	key, id := authn.NewKey(authn.ServiceKeyPrefix)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(key))
	now := time.Now().UTC().Truncate(time.Millisecond)
	recs := func(i int64) (k []byte, v any) {
		if i == 0 {
			return []byte("bench/primary"), authn.KeyRecord{ID: id, Service: "bench", Slot: authn.SlotPrimary, Hash: mac.Sum(nil), CreatedAt: now}
		}
		svc, slot := fmt.Sprintf("filler-%07d", i/2), []string{authn.SlotPrimary, authn.SlotSecondary}[i%2]
		hash := make([]byte, sha256.Size)
		rand.Read(hash)
		return []byte(svc + "/" + slot), authn.KeyRecord{ID: fillerID(i), Service: svc, Slot: slot, Hash: hash, CreatedAt: now}
	}
	if err := fillBucket(dir, boltKeysBucket, n, recs); err != nil {
		return "", err
	}
	return key, countStore(ctx, dir, n, func(s *authn.BoltStore) (int, error) {
		r, err := s.Keys(ctx)
		return len(r), err
	})
}

// fillerID is a key id (12 base62 characters): "zzzz" and i in base 62. That a random id from
// NewKey equals one is as likely as guessing 71 bits.
func fillerID(i int64) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte("zzzz00000000")
	for p := len(b) - 1; i > 0 && p >= 4; p-- {
		b[p] = digits[i%62]
		i /= 62
	}
	return string(b)
}

// fillRevocations writes n more revocations of tokens of issuer into the embedded store in dir,
// each expiring in two hours.
func fillRevocations(ctx context.Context, dir, issuer string, n, already int64) error {
	if _, err := storeSecret(ctx, dir); err != nil {
		return err
	}
	exp := time.Now().Add(2 * time.Hour).UTC()
	recs := func(i int64) ([]byte, any) {
		jti := fmt.Sprintf("filler-%09d", i)
		return []byte(issuer + "\x00" + jti), authn.Revocation{Issuer: issuer, JTI: jti, Expires: exp}
	}
	if err := fillBucket(dir, boltRevocationsBucket, n, recs); err != nil {
		return err
	}
	return countStore(ctx, dir, n+already, func(s *authn.BoltStore) (int, error) {
		r, err := s.Revocations(ctx)
		return len(r), err
	})
}

// storeSecret opens the store once through authn, which creates its buckets and hashing secret.
func storeSecret(ctx context.Context, dir string) ([]byte, error) {
	s, err := authn.OpenBolt(dir)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Secret(ctx)
}

// fillBucket writes n records made by rec into bucket (which authn has created), fillBatch to a
// transaction, syncing once at the end.
func fillBucket(dir, bucket string, n int64, rec func(int64) ([]byte, any)) error {
	db, err := bolt.Open(filepath.Join(dir, authn.StoreFile), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		return err
	}
	defer db.Close()
	for start := int64(0); start < n; start += fillBatch {
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(bucket))
			if b == nil {
				return fmt.Errorf("the store has no bucket %q: authn's layout changed", bucket)
			}
			for i := start; i < min(n, start+fillBatch); i++ {
				k, v := rec(i)
				j, err := json.Marshal(v)
				if err != nil {
					return err
				}
				if err := b.Put(k, j); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("filling %s: %w", bucket, err)
		}
	}
	return db.Sync()
}

// countStore reads the filled store back through authn and checks it holds want records.
func countStore(ctx context.Context, dir string, want int64, count func(*authn.BoltStore) (int, error)) error {
	s, err := authn.OpenBolt(dir)
	if err != nil {
		return err
	}
	defer s.Close()
	n, err := count(s)
	if err != nil {
		return err
	}
	if int64(n) != want {
		return fmt.Errorf("the filled store holds %d records through authn, want %d: authn's layout changed", n, want)
	}
	return nil
}

package authn

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// BoltStore is the embedded store: a single bbolt file, for one gateway process.
type BoltStore struct {
	db *bolt.DB
}

var _ Store = (*BoltStore)(nil)

var (
	bucketMeta = []byte("meta")
	bucketKeys = []byte("keys")
	metaSecret = []byte("hash-secret")
)

// StoreFile is the embedded store's file name inside its folder.
const StoreFile = "store.db"

// OpenBolt opens (creating if needed) the embedded store in dir.
func OpenBolt(dir string) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating store folder: %w", err)
	}
	path := filepath.Join(dir, StoreFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("opening %s: %w", path, ErrStoreInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKeys} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return &BoltStore{db: db}, nil
}

// Secret implements Store.
func (s *BoltStore) Secret(context.Context) ([]byte, error) {
	var secret []byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if v := b.Get(metaSecret); v != nil {
			secret = append([]byte(nil), v...)
			return nil
		}
		secret = make([]byte, 32)
		rand.Read(secret)
		return b.Put(metaSecret, secret)
	})
	if err != nil {
		return nil, fmt.Errorf("reading the hashing secret: %w", err)
	}
	return secret, nil
}

// Keys implements Store.
func (s *BoltStore) Keys(context.Context) ([]KeyRecord, error) {
	var recs []KeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			var rec KeyRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("key record %q: %w", k, err)
			}
			recs = append(recs, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	return recs, nil
}

func slotKey(service, slot string) []byte {
	return []byte(service + "/" + slot)
}

// PutKey implements Store.
func (s *BoltStore) PutKey(_ context.Context, rec KeyRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).Put(slotKey(rec.Service, rec.Slot), v)
	})
	if err != nil {
		return fmt.Errorf("saving key %s/%s: %w", rec.Service, rec.Slot, err)
	}
	return nil
}

// TouchKeys implements Store.
func (s *BoltStore) TouchKeys(_ context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		type update struct{ k, v []byte }
		var updates []update
		err := b.ForEach(func(k, v []byte) error {
			var rec KeyRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			t, ok := used[rec.ID]
			if !ok || !t.After(rec.LastUsedAt) {
				return nil
			}
			rec.LastUsedAt = t
			nv, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			updates = append(updates, update{append([]byte(nil), k...), nv})
			return nil
		})
		if err != nil {
			return err
		}
		for _, u := range updates {
			if err := b.Put(u.k, u.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording key use: %w", err)
	}
	return nil
}

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }

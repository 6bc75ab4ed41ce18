package authn

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	bucketMeta        = []byte("meta")
	bucketKeys        = []byte("keys")
	bucketPrincipals  = []byte("principals")
	bucketSigningKeys = []byte("signing-keys")
	bucketRevocations = []byte("revocations")
	bucketActivity    = []byte("activity")
	metaSecret        = []byte("hash-secret")
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
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Path == path {
			err = pe.Err // the path is said once
		}
		return nil, fmt.Errorf("opening the embedded store %s: %w", path, err)
	}
	buckets := [][]byte{bucketMeta, bucketKeys, bucketPrincipals, bucketSigningKeys, bucketRevocations, bucketActivity}
	complete := true
	db.View(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			complete = complete && tx.Bucket(b) != nil
		}
		return nil
	})
	if !complete { // a new store: a store that has them opens without writing (say, on a full disk)
		err = db.Update(func(tx *bolt.Tx) error {
			for _, b := range buckets {
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
	}
	return &BoltStore{db: db}, nil
}

// Secret implements Store. Once the secret exists, reading it writes nothing.
func (s *BoltStore) Secret(context.Context) ([]byte, error) {
	var secret []byte
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaSecret); v != nil {
			secret = append([]byte(nil), v...)
		}
		return nil
	})
	if secret != nil {
		return secret, nil
	}
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

// Principals implements Store.
func (s *BoltStore) Principals(context.Context) ([]PrincipalRecord, error) {
	return readAll[PrincipalRecord](s.db, bucketPrincipals)
}

// PutPrincipal implements Store.
func (s *BoltStore) PutPrincipal(_ context.Context, rec PrincipalRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPrincipals)
		if b.Get([]byte(rec.Name)) != nil {
			return ErrPrincipalExists
		}
		return b.Put([]byte(rec.Name), v)
	})
	if err != nil && !errors.Is(err, ErrPrincipalExists) {
		return fmt.Errorf("saving principal %s: %w", rec.Name, err)
	}
	return err
}

// DeletePrincipal implements Store.
func (s *BoltStore) DeletePrincipal(_ context.Context, name string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPrincipals)
		if b.Get([]byte(name)) == nil {
			return ErrPrincipalUnknown
		}
		return b.Delete([]byte(name))
	})
	if err != nil && !errors.Is(err, ErrPrincipalUnknown) {
		return fmt.Errorf("deleting principal %s: %w", name, err)
	}
	return err
}

// SigningKeys implements Store.
func (s *BoltStore) SigningKeys(context.Context) ([]SigningKeyRecord, error) {
	return readAll[SigningKeyRecord](s.db, bucketSigningKeys)
}

// PutSigningKey implements Store.
func (s *BoltStore) PutSigningKey(_ context.Context, rec SigningKeyRecord) error {
	return putJSON(s.db, bucketSigningKeys, []byte(rec.KID), rec)
}

// DeleteSigningKey implements Store.
func (s *BoltStore) DeleteSigningKey(_ context.Context, kid string) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSigningKeys).Delete([]byte(kid)) })
	if err != nil {
		return fmt.Errorf("deleting signing key %s: %w", kid, err)
	}
	return nil
}

// Revocations implements Store. Expired revocations are dropped as they are read; when that
// cannot be written (a full or read-only disk), they are still left out, and dropped at a later
// read.
func (s *BoltStore) Revocations(context.Context) ([]Revocation, error) {
	all, err := readAll[Revocation](s.db, bucketRevocations)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	live := all[:0]
	var expired [][]byte
	for _, r := range all {
		if r.Expires.Before(now) {
			expired = append(expired, revocationKey(r))
			continue
		}
		live = append(live, r)
	}
	if len(expired) > 0 {
		// Housekeeping: a failure here must not stop the revocations from being read (and the
		// gateway from starting).
		s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketRevocations)
			for _, k := range expired {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return live, nil
}

func revocationKey(r Revocation) []byte { return []byte(r.Issuer + "\x00" + r.JTI) }

// PutRevocation implements Store.
func (s *BoltStore) PutRevocation(_ context.Context, r Revocation) error {
	return putJSON(s.db, bucketRevocations, revocationKey(r), r)
}

// activityLimit bounds the embedded activity log; older records are dropped.
const activityLimit = 100000

// AppendActivity implements Store.
func (s *BoltStore) AppendActivity(_ context.Context, a Activity) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketActivity)
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
			return err
		}
		if seq%1000 == 0 && seq > activityLimit { // trim now and then
			c := b.Cursor()
			for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= seq-activityLimit; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording activity: %w", err)
	}
	return nil
}

// Activity implements Store.
func (s *BoltStore) Activity(_ context.Context, limit int) ([]Activity, error) {
	var out []Activity
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketActivity).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var a Activity
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

func readAll[T any](db *bolt.DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec T
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bucket, err)
	}
	return out, nil
}

func putJSON(db *bolt.DB, bucket, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, b) })
	if err != nil {
		return fmt.Errorf("saving to %s: %w", bucket, err)
	}
	return nil
}

// Close implements Store.
func (s *BoltStore) Close() error { return s.db.Close() }

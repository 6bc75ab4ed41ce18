package authn

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The embedded store keeps usage in two buckets, made at the first usage written (so that a
// store without them still opens without writing):
//
//   - "usage": key = the hour's start (8 bytes, big-endian Unix seconds), then the service, the
//     caller and the model, separated by a zero byte (names never hold control characters);
//     value = input tokens, output tokens and calls, 8 bytes each, big-endian. Keys sort by
//     hour, service, caller and model, so the hours past retention are the first ones, and a
//     query reads one range in the order it answers in.
//   - "usage-batches": key = a batch's ID, value = when it was added (Unix seconds); an ID is
//     forgotten after UsageBatchMemory.
var (
	bucketUsage        = []byte("usage")
	bucketUsageBatches = []byte("usage-batches")
)

func boltUsageKey(hour time.Time, t usageTriple) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+2+len(t.service)+len(t.caller)+len(t.model)), uint64(hour.Unix()))
	return append(append(append(append(append(k, t.service...), 0), t.caller...), 0), t.model...)
}

var errBadUsageKey = errors.New("malformed usage record")

func parseBoltUsageKey(k []byte) (time.Time, usageTriple, error) {
	if len(k) < 8 {
		return time.Time{}, usageTriple{}, errBadUsageKey
	}
	parts := bytes.Split(k[8:], []byte{0})
	if len(parts) != 3 {
		return time.Time{}, usageTriple{}, errBadUsageKey
	}
	hour := time.Unix(int64(binary.BigEndian.Uint64(k)), 0).UTC()
	return hour, usageTriple{string(parts[0]), string(parts[1]), string(parts[2])}, nil
}

// AddUsage implements UsageStore, in one transaction: the batch's rows are added and its ID
// remembered, or nothing is.
func (s *BoltStore) AddUsage(_ context.Context, b UsageBatch) error {
	now := time.Now()
	cutoff := usageCutoff(now)
	rows := mergeUsage(b.Rows)
	err := s.db.Update(func(tx *bolt.Tx) error {
		batches, err := tx.CreateBucketIfNotExists(bucketUsageBatches)
		if err != nil {
			return err
		}
		usage, err := tx.CreateBucketIfNotExists(bucketUsage)
		if err != nil {
			return err
		}
		if b.ID != "" {
			if batches.Get([]byte(b.ID)) != nil {
				return nil // added before
			}
			if err := batches.Put([]byte(b.ID), binary.BigEndian.AppendUint64(nil, uint64(now.Unix()))); err != nil {
				return err
			}
			if seq, err := batches.NextSequence(); err == nil && seq%100 == 0 {
				if err := forgetBatches(batches, now.Add(-UsageBatchMemory)); err != nil {
					return err
				}
			}
		}
		for _, r := range rows {
			if r.Hour.Before(cutoff) {
				continue
			}
			k := boltUsageKey(r.Hour, usageTriple{r.Service, r.Caller, r.Model})
			v := make([]byte, 24)
			if old := usage.Get(k); len(old) == 24 {
				copy(v, old)
			}
			binary.BigEndian.PutUint64(v[0:], binary.BigEndian.Uint64(v[0:])+uint64(max(r.InputTokens, 0)))
			binary.BigEndian.PutUint64(v[8:], binary.BigEndian.Uint64(v[8:])+uint64(max(r.OutputTokens, 0)))
			binary.BigEndian.PutUint64(v[16:], binary.BigEndian.Uint64(v[16:])+uint64(max(r.Calls, 0)))
			if err := usage.Put(k, v); err != nil {
				return err
			}
		}
		// Retention: the hours before the cutoff come first.
		var old [][]byte
		c := usage.Cursor()
		for k, _ := c.First(); len(k) >= 8 && int64(binary.BigEndian.Uint64(k)) < cutoff.Unix(); k, _ = c.Next() {
			old = append(old, append([]byte(nil), k...))
		}
		for _, k := range old {
			if err := usage.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("saving token usage: %w", err)
	}
	return nil
}

// forgetBatches deletes the batch IDs added before cutoff.
func forgetBatches(b *bolt.Bucket, cutoff time.Time) error {
	var old [][]byte
	err := b.ForEach(func(k, v []byte) error {
		if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < cutoff.Unix() {
			old = append(old, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Usage implements UsageStore.
func (s *BoltStore) Usage(_ context.Context, q UsageQuery) ([]UsageRow, error) {
	first, end := q.hours(time.Now())
	var out []UsageRow
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsage)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, uint64(first.Unix()))); k != nil; k, v = c.Next() {
			hour, t, err := parseBoltUsageKey(k)
			if err != nil || len(v) != 24 {
				return fmt.Errorf("%w %x", errBadUsageKey, k)
			}
			if !hour.Before(end) {
				break
			}
			if !q.selects(t.service, t.caller) {
				continue
			}
			out = append(out, UsageRow{Hour: hour, Service: t.service, Caller: t.caller, Model: t.model,
				InputTokens: int64(binary.BigEndian.Uint64(v[0:])), OutputTokens: int64(binary.BigEndian.Uint64(v[8:])),
				Calls: int64(binary.BigEndian.Uint64(v[16:]))})
			if q.Limit > 0 && len(out) == q.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading token usage: %w", err)
	}
	return out, nil
}

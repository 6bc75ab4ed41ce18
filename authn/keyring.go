package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Keyring holds every service key's hash in memory, so that checking a key needs no store round
// trip. Changes go to the store first, then to the in-memory index, which is replaced whole
// (copy on write) so that readers never lock.
type Keyring struct {
	store  Store
	hasher *hasher
	log    *slog.Logger

	index atomic.Pointer[map[string]*keyEntry] // key id → entry
	mu    sync.Mutex                           // serialises changes
	// writes counts the changes made here (guarded by mu). Reload reads the store without mu,
	// so a change made meanwhile could be older in what it read: it reads again then.
	writes uint64
}

type keyEntry struct {
	rec      KeyRecord // Hash and LastUsedAt of rec are not read on the hot path
	caller   string    // "key:<id>", the caller's name (Caller.Name), built once
	hash     [sha256.Size]byte
	lastUsed atomic.Int64 // unix nanoseconds of the last successful use, 0 if never
	flushed  int64        // lastUsed as last written to the store (guarded by Keyring.mu)
}

// KeyMeta describes a key without its secret.
type KeyMeta struct {
	ID         string     `json:"id"`
	CreatedAt  time.Time  `json:"createdAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
}

// ErrUnknownSlot is returned for a slot other than primary or secondary.
var ErrUnknownSlot = errors.New("the key slot must be primary or secondary")

// NewKeyring loads every key from store.
func NewKeyring(ctx context.Context, store Store, log *slog.Logger) (*Keyring, error) {
	secret, err := store.Secret(ctx)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &Keyring{store: store, hasher: newHasher(secret), log: log}
	if err := k.Reload(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload replaces the in-memory index with the store's keys, keeping last-use times.
func (k *Keyring) Reload(ctx context.Context) error {
	return reloadStable(ctx, &k.mu, &k.writes, k.store.Keys, k.install)
}

// reloadStable reads the store with read, then, holding mu, installs what it read, unless
// *writes (the changes made on this instance, guarded by mu) moved meanwhile: the read may not
// hold that change, and installing it would undo it (bring back a replaced key or a deleted
// principal). Then it reads again. The store is read without mu, so that changes and the
// request path do not wait on it.
func reloadStable[R any](ctx context.Context, mu *sync.Mutex, writes *uint64, read func(context.Context) (R, error), install func(R) error) error {
	for {
		mu.Lock()
		seen := *writes
		mu.Unlock()
		recs, err := read(ctx)
		if err != nil {
			return err
		}
		mu.Lock()
		if *writes == seen {
			err := install(recs)
			mu.Unlock()
			return err
		}
		mu.Unlock()
	}
}

// install makes recs the index (mu held).
func (k *Keyring) install(recs []KeyRecord) error {
	old := k.snapshot()
	idx := make(map[string]*keyEntry, len(recs))
	for _, rec := range recs {
		if len(rec.Hash) != sha256.Size {
			return fmt.Errorf("key %s/%s: stored hash has %d bytes, want %d", rec.Service, rec.Slot, len(rec.Hash), sha256.Size)
		}
		e := newEntry(rec)
		if prev := old[rec.ID]; prev != nil && prev.lastUsed.Load() > e.lastUsed.Load() {
			e.lastUsed.Store(prev.lastUsed.Load())
		}
		idx[rec.ID] = e
	}
	k.index.Store(&idx)
	return nil
}

func newEntry(rec KeyRecord) *keyEntry {
	e := &keyEntry{rec: rec, caller: "key:" + rec.ID}
	copy(e.hash[:], rec.Hash)
	if !rec.LastUsedAt.IsZero() {
		e.lastUsed.Store(rec.LastUsedAt.UnixNano())
		e.flushed = rec.LastUsedAt.UnixNano()
	}
	return e
}

func (k *Keyring) snapshot() map[string]*keyEntry {
	if p := k.index.Load(); p != nil {
		return *p
	}
	return nil
}

// Verify reports whether key is a current key of service, and returns its slot. It allocates
// nothing; a key of the wrong shape or checksum is refused before any lookup.
func (k *Keyring) Verify(service string, key []byte) (slot string, ok bool) {
	if e := k.verify(service, key); e != nil {
		return e.rec.Slot, true
	}
	return "", false
}

// verify is Verify, returning the key's entry (nil when the key is not good).
func (k *Keyring) verify(service string, key []byte) *keyEntry {
	id, ok := parseKey(key, ServiceKeyPrefix)
	if !ok {
		return nil
	}
	e := k.snapshot()[string(id)]
	if e == nil || e.rec.Service != service {
		return nil
	}
	var sum [sha256.Size]byte
	k.hasher.sum(&sum, key)
	if subtle.ConstantTimeCompare(sum[:], e.hash[:]) != 1 {
		return nil
	}
	now := time.Now().UnixNano()
	if now-e.lastUsed.Load() > int64(time.Second) { // keep the cache line quiet under load
		e.lastUsed.Store(now)
	}
	return e
}

// Regenerate makes a new key for service's slot, replacing the old one at once, and returns the
// new key. This is the only time the key exists outside the caller's hands.
func (k *Keyring) Regenerate(ctx context.Context, service, slot string) (string, error) {
	if slot != SlotPrimary && slot != SlotSecondary {
		return "", ErrUnknownSlot
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.snapshot()
	var key, id string
	for {
		key, id = NewKey(ServiceKeyPrefix)
		if old[id] == nil {
			break
		}
	}
	rec := KeyRecord{ID: id, Service: service, Slot: slot, CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
	var sum [sha256.Size]byte
	k.hasher.sum(&sum, []byte(key))
	rec.Hash = sum[:]
	if err := k.store.PutKey(ctx, rec); err != nil {
		return "", err
	}
	idx := make(map[string]*keyEntry, len(old)+1)
	for eid, e := range old {
		if e.rec.Service == service && e.rec.Slot == slot {
			continue
		}
		idx[eid] = e
	}
	idx[id] = newEntry(rec)
	k.index.Store(&idx)
	k.writes++
	return key, nil
}

// Keys returns the metadata of service's keys by slot; a slot with no key is absent.
func (k *Keyring) Keys(service string) map[string]KeyMeta {
	out := map[string]KeyMeta{}
	for _, e := range k.snapshot() {
		if e.rec.Service != service {
			continue
		}
		m := KeyMeta{ID: e.rec.ID, CreatedAt: e.rec.CreatedAt}
		if n := e.lastUsed.Load(); n != 0 {
			t := time.Unix(0, n).UTC()
			m.LastUsedAt = &t
		}
		out[e.rec.Slot] = m
	}
	return out
}

// Flush writes last-use times that changed since the previous flush to the store.
func (k *Keyring) Flush(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	used := map[string]time.Time{}
	var touched []*keyEntry
	for id, e := range k.snapshot() {
		if n := e.lastUsed.Load(); n > e.flushed {
			used[id] = time.Unix(0, n).UTC()
			touched = append(touched, e)
		}
	}
	if len(used) == 0 {
		return nil
	}
	if err := k.store.TouchKeys(ctx, used); err != nil {
		return err
	}
	for _, e := range touched {
		e.flushed = used[e.rec.ID].UnixNano()
	}
	return nil
}

// RunFlusher flushes last-use times every interval until ctx ends, then once more. Once the
// store has lost data (ErrStoreLost), the times stay in memory and the loss is logged once.
func (k *Keyring) RunFlusher(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	loggedLost := false
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := k.Flush(fctx); err != nil {
				k.log.Warn("recording key use at shutdown", "err", err)
			}
			return
		case <-t.C:
			err := k.Flush(ctx)
			switch {
			case err == nil:
			case errors.Is(err, ErrStoreLost):
				if !loggedLost {
					loggedLost = true
					k.log.Warn("recording key use: the store lost data; last-use times are kept in memory", "err", err)
				}
			default:
				k.log.Warn("recording key use", "err", err)
			}
		}
	}
}

package authn

import (
	"context"
	"errors"
	"time"
)

// Store is what authn keeps durably. The embedded backend (bbolt, one node) satisfies it; a shared
// backend for several instances satisfies the same methods. Only keyed hashes of keys are stored.
type Store interface {
	// Secret returns the per-installation secret that keys are hashed with, creating and saving
	// a random one on first use. Every instance sharing the store gets the same secret.
	Secret(ctx context.Context) ([]byte, error)
	// Keys returns every stored service key record.
	Keys(ctx context.Context) ([]KeyRecord, error)
	// PutKey saves rec, replacing the key in the same service and slot.
	PutKey(ctx context.Context, rec KeyRecord) error
	// TouchKeys records when keys were last used, by key id. Unknown ids are ignored, and a time
	// older than the one stored does not replace it.
	TouchKeys(ctx context.Context, used map[string]time.Time) error
	// Close releases the store.
	Close() error
}

// Key slots of a key-mode service. Both are valid at once, so clients rotate without downtime.
const (
	SlotPrimary   = "primary"
	SlotSecondary = "secondary"
)

// KeyRecord is a stored service key: never the key, only its keyed hash.
type KeyRecord struct {
	ID         string    `json:"id"`
	Service    string    `json:"service"`
	Slot       string    `json:"slot"`
	Hash       []byte    `json:"hash"`
	CreatedAt  time.Time `json:"createdAt"`
	LastUsedAt time.Time `json:"lastUsedAt,omitzero"`
}

// ErrStoreInUse is returned when another process holds the embedded store.
var ErrStoreInUse = errors.New("the store is in use by another gateway process")

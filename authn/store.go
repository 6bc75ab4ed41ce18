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

	// Principals returns every stored principal.
	Principals(ctx context.Context) ([]PrincipalRecord, error)
	// PutPrincipal saves a new principal; ErrPrincipalExists if the name is taken.
	PutPrincipal(ctx context.Context, rec PrincipalRecord) error
	// DeletePrincipal removes a principal; ErrPrincipalUnknown if there is none of that name.
	DeletePrincipal(ctx context.Context, name string) error

	// SigningKeys returns every token signing key.
	SigningKeys(ctx context.Context) ([]SigningKeyRecord, error)
	// PutSigningKey saves a signing key.
	PutSigningKey(ctx context.Context, rec SigningKeyRecord) error
	// DeleteSigningKey removes the signing key kid, if present.
	DeleteSigningKey(ctx context.Context, kid string) error

	// Revocations returns every revocation that has not expired.
	Revocations(ctx context.Context) ([]Revocation, error)
	// PutRevocation saves a revocation; it is kept until its Expires has passed.
	PutRevocation(ctx context.Context, rev Revocation) error

	// AppendActivity records an administrative operation.
	AppendActivity(ctx context.Context, a Activity) error
	// Activity returns up to limit records, newest first.
	Activity(ctx context.Context, limit int) ([]Activity, error)

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

// SigningKeyRecord is a token signing key (Ed25519). The private half never leaves the store and
// the gateway's memory.
type SigningKeyRecord struct {
	KID       string    `json:"kid"`
	Seed      []byte    `json:"seed"` // ed25519 private key seed
	CreatedAt time.Time `json:"createdAt"`
}

// Revocation refuses one token, named by its issuer and id (never by its bytes, which an attacker
// can vary without changing the token's meaning).
type Revocation struct {
	Issuer  string    `json:"iss"`
	JTI     string    `json:"jti"`
	Expires time.Time `json:"exp"` // when the token expires; the revocation is dropped after that
}

// Activity is one administrative operation in the activity log.
type Activity struct {
	Time      time.Time `json:"time"`
	Operation string    `json:"operation"`
	Initiator string    `json:"initiator"` // principal name, never its key
	Target    string    `json:"target"`
	Result    string    `json:"result"`
}

// Activity results.
const (
	ResultSuccess = "success"
	ResultDenied  = "denied"
	ResultFailed  = "failed"
	// ResultUnknown: the store did not answer in time, so the change may or may not have been
	// saved; it may still take effect.
	ResultUnknown = "unknown"
)

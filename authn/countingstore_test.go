package authn

import (
	"context"
	"sync/atomic"
	"time"
)

// countingStore counts every call that reaches the store, to show what never does.
type countingStore struct {
	Store
	calls atomic.Int64
}

func (s *countingStore) Secret(ctx context.Context) ([]byte, error) {
	s.calls.Add(1)
	return s.Store.Secret(ctx)
}

func (s *countingStore) Keys(ctx context.Context) ([]KeyRecord, error) {
	s.calls.Add(1)
	return s.Store.Keys(ctx)
}

func (s *countingStore) PutKey(ctx context.Context, r KeyRecord) error {
	s.calls.Add(1)
	return s.Store.PutKey(ctx, r)
}

func (s *countingStore) TouchKeys(ctx context.Context, u map[string]time.Time) error {
	s.calls.Add(1)
	return s.Store.TouchKeys(ctx, u)
}

func (s *countingStore) Principals(ctx context.Context) ([]PrincipalRecord, error) {
	s.calls.Add(1)
	return s.Store.Principals(ctx)
}

func (s *countingStore) PutPrincipal(ctx context.Context, r PrincipalRecord) error {
	s.calls.Add(1)
	return s.Store.PutPrincipal(ctx, r)
}

func (s *countingStore) DeletePrincipal(ctx context.Context, name string) error {
	s.calls.Add(1)
	return s.Store.DeletePrincipal(ctx, name)
}

func (s *countingStore) SigningKeys(ctx context.Context) ([]SigningKeyRecord, error) {
	s.calls.Add(1)
	return s.Store.SigningKeys(ctx)
}

func (s *countingStore) PutSigningKey(ctx context.Context, r SigningKeyRecord) error {
	s.calls.Add(1)
	return s.Store.PutSigningKey(ctx, r)
}

func (s *countingStore) DeleteSigningKey(ctx context.Context, kid string) error {
	s.calls.Add(1)
	return s.Store.DeleteSigningKey(ctx, kid)
}

func (s *countingStore) Revocations(ctx context.Context) ([]Revocation, error) {
	s.calls.Add(1)
	return s.Store.Revocations(ctx)
}

func (s *countingStore) PutRevocation(ctx context.Context, r Revocation) error {
	s.calls.Add(1)
	return s.Store.PutRevocation(ctx, r)
}

func (s *countingStore) AppendActivity(ctx context.Context, a Activity) error {
	s.calls.Add(1)
	return s.Store.AppendActivity(ctx, a)
}

func (s *countingStore) Activity(ctx context.Context, limit int) ([]Activity, error) {
	s.calls.Add(1)
	return s.Store.Activity(ctx, limit)
}

package authn

import (
	"context"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// pausingStore holds the first read of keys or principals that starts after armed is set: it
// takes the store's records, then waits on release before returning them, so that a change can
// be made in between, as a change notice's reload can overlap a change made on this instance.
type pausingStore struct {
	Store
	armed                  bool
	read, release          chan struct{}
	keyRead, pRead, skRead bool
}

func newPausingStore(s Store) *pausingStore {
	return &pausingStore{Store: s, read: make(chan struct{}), release: make(chan struct{})}
}

func (s *pausingStore) Keys(ctx context.Context) ([]KeyRecord, error) {
	recs, err := s.Store.Keys(ctx)
	if s.armed && !s.keyRead {
		s.keyRead = true
		s.read <- struct{}{}
		<-s.release
	}
	return recs, err
}

func (s *pausingStore) Principals(ctx context.Context) ([]PrincipalRecord, error) {
	recs, err := s.Store.Principals(ctx)
	if s.armed && !s.pRead {
		s.pRead = true
		s.read <- struct{}{}
		<-s.release
	}
	return recs, err
}

func (s *pausingStore) SigningKeys(ctx context.Context) ([]SigningKeyRecord, error) {
	recs, err := s.Store.SigningKeys(ctx)
	if s.armed && !s.skRead {
		s.skRead = true
		s.read <- struct{}{}
		<-s.release
	}
	return recs, err
}

// A reload whose read of the signing keys began before a rotation on this instance must not put
// the older set back: the tokens this instance signs with the new key would be refused here
// until the next reload.
func TestReloadDoesNotUndoARotation(t *testing.T) {
	e := newTokenEnv(t, nil)
	ctx := context.Background()
	s := newPausingStore(e.store)
	tk, err := NewTokens(ctx, e.cfg, s, e.principals, nil, WithClock(e.clock))
	if err != nil {
		t.Fatal(err)
	}
	before := tk.signing.Load().active.rec.KID
	e.advance(e.cfg.Tokens.KeyRotation) // the next Rotate makes a new key

	s.armed = true
	reloaded := make(chan error, 1)
	go func() { reloaded <- tk.Reload(ctx) }()
	<-s.read // the reload has the signing keys, without the next one
	rotated := make(chan error, 1)
	go func() { rotated <- tk.Rotate(ctx) }()
	// Let the rotation finish first if it does not wait for the reload; either order is valid.
	select {
	case err := <-rotated:
		rotated <- err
	case <-time.After(100 * time.Millisecond):
	}
	close(s.release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if err := <-rotated; err != nil {
		t.Fatal(err)
	}
	s.armed = false

	if after := tk.signing.Load().active.rec.KID; after == before {
		t.Fatalf("the active signing key is still %s: the reload undid the rotation", before)
	}
	p, _ := e.principal(t, "alice", "reader")
	resp, err := tk.Mint(ctx, p, "scoring")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Verify("scoring", []byte(resp.AccessToken)); err != nil {
		t.Errorf("a token signed after the rotation is refused: %v", err)
	}
}

// A reload whose read of the store began before a change made on this instance must not put the
// older records back: a replaced key would be accepted again, and the new one refused, until the
// next reload.
func TestReloadDoesNotUndoALocalChange(t *testing.T) {
	ctx := context.Background()
	bolt, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	s := newPausingStore(bolt)
	k, err := NewKeyring(ctx, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	old, err := k.Regenerate(ctx, "iris", SlotPrimary)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("keys", func(t *testing.T) {
		s.armed = true
		done := make(chan error)
		go func() { done <- k.Reload(ctx) }()
		<-s.read // the reload has the records with the old key
		fresh, err := k.Regenerate(ctx, "iris", SlotPrimary)
		if err != nil {
			t.Fatal(err)
		}
		close(s.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		s.armed = false
		if _, ok := k.Verify("iris", []byte(fresh)); !ok {
			t.Error("the key made during the reload is refused after it")
		}
		if _, ok := k.Verify("iris", []byte(old)); ok {
			t.Error("the key replaced during the reload is accepted again after it")
		}
	})

	t.Run("principals", func(t *testing.T) {
		ps, err := NewPrincipals(ctx, s, k, NewRoles(&config.Config{}), testOwnerKey)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ps.Create(ctx, "rita", "reader"); err != nil {
			t.Fatal(err)
		}
		s.armed, s.read, s.release = true, make(chan struct{}), make(chan struct{})
		done := make(chan error)
		go func() { done <- ps.Reload(ctx) }()
		<-s.read // the reload has the records with rita
		if err := ps.Delete(ctx, "rita"); err != nil {
			t.Fatal(err)
		}
		close(s.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, ok := ps.Lookup("rita"); ok {
			t.Error("the principal deleted during the reload is back after it")
		}
	})
}

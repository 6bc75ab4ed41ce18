package authn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// Instances started at the same moment on an empty store agree on one signing key: exactly one
// is made, every instance signs with it, and a token minted by any verifies at all (issue 23).
func TestInstancesStartedTogetherAgreeOnOneSigningKey(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	ctx := context.Background()
	const n = 8
	stores := make([]*RedisStore, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for deadline := time.Now().Add(10 * time.Second); ; {
				s, err := OpenRedis(ctx, cfg.Store)
				if errors.Is(err, errStoreBeingMade) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				stores[i] = s
				t.Cleanup(func() { s.Close() })
				return
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	principals := make([]*Principals, n)
	tokens := make([]*Tokens, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			keys, err := NewKeyring(ctx, stores[i], nil)
			if err != nil {
				t.Error(err)
				return
			}
			if principals[i], err = NewPrincipals(ctx, stores[i], keys, NewRoles(cfg), testOwnerKey); err != nil {
				t.Error(err)
				return
			}
			<-start
			if tokens[i], err = NewTokens(ctx, cfg, stores[i], principals[i], nil); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	recs, err := stores[0].SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d signing keys in the store after %d instances started together, want 1", len(recs), n)
	}
	for i, tk := range tokens {
		if kid := tk.signing.Load().active.rec.KID; kid != recs[0].KID {
			t.Errorf("instance %d signs with %s, want %s", i, kid, recs[0].KID)
		}
	}
	p, _, err := principals[0].Create(ctx, "rita", "reader")
	if err != nil {
		t.Fatal(err)
	}
	for _, ps := range principals { // as a change notice would
		if err := ps.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, tk := range tokens {
		tok, err := tk.Mint(ctx, p, "scoring")
		if err != nil {
			t.Fatal(err)
		}
		for j, other := range tokens {
			if _, err := other.Verify("scoring", []byte(tok.AccessToken)); err != nil {
				t.Errorf("a token minted by instance %d does not verify at %d: %v", i, j, err)
			}
		}
	}
}

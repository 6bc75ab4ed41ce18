package authn

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// fullReloads is an instance's full reloads by reason, those that are not 0.
func (in *instance) fullReloads() map[string]int64 {
	out := map[string]int64{}
	for _, why := range ReloadReasons {
		if n := in.replica.FullReloads(why); n != 0 {
			out[why] = n
		}
	}
	return out
}

// Change notices that arrive in order cost no full reload; a subscription killed by Redis
// (CLIENT KILL TYPE pubsub) costs exactly one per instance, counted as "reconnect", and the
// notices after it are applied one by one again (issue 23).
func TestFullReloadsAreCountedByReason(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	cfg.Store.ResyncInterval = 200 * time.Millisecond
	a, b := startInstance(t, cfg), startInstance(t, cfg)
	ctx := context.Background()
	for _, in := range []*instance{a, b} {
		eventually(t, 5*time.Second, "the reload after the first subscription", func() bool { return in.replica.FullReloads(ReloadStart) == 1 })
	}
	startOnly := map[string]int64{ReloadStart: 1}

	p, _, err := a.principals.Create(ctx, "rita", "reader")
	if err != nil {
		t.Fatal(err)
	}
	var toks []string
	for range 40 {
		tok, err := a.tokens.Mint(ctx, p, "scoring")
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok.AccessToken)
	}
	revoke := func(toks []string) {
		t.Helper()
		for i, tok := range toks {
			if _, err := a.tokens.RevokeToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
			if i%5 == 0 {
				if _, err := a.keys.Regenerate(ctx, "iris", SlotSecondary); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, tok := range toks {
			eventually(t, 2*time.Second, "b refuses a revoked token", func() bool { return errors.Is(b.checkToken(tok), ErrInvalidCredential) })
		}
	}
	revoke(toks[:20])
	time.Sleep(3 * cfg.Store.ResyncInterval) // a few generation checks
	for name, in := range map[string]*instance{"a": a, "b": b} {
		if diff := cmp.Diff(startOnly, in.fullReloads()); diff != "" {
			t.Errorf("%s's full reloads after notices that all arrived (-want +got):\n%s", name, diff)
		}
	}

	if n := srv.Do(t, "CLIENT", "KILL", "TYPE", "pubsub"); n != "2" {
		t.Fatalf("CLIENT KILL TYPE pubsub killed %q connections, want 2", n)
	}
	want := map[string]int64{ReloadStart: 1, ReloadReconnect: 1}
	for name, in := range map[string]*instance{"a": a, "b": b} {
		eventually(t, 5*time.Second, name+" reloads after its subscription was killed", func() bool { return in.replica.FullReloads(ReloadReconnect) > 0 })
	}
	revoke(toks[20:])
	time.Sleep(3 * cfg.Store.ResyncInterval)
	for name, in := range map[string]*instance{"a": a, "b": b} {
		if diff := cmp.Diff(want, in.fullReloads()); diff != "" {
			t.Errorf("%s's full reloads after its subscription was killed once (-want +got):\n%s", name, diff)
		}
	}
	for i, tok := range toks {
		if err := b.checkToken(tok); !errors.Is(err, ErrInvalidCredential) {
			t.Errorf("revoked token %d on b: %v", i, fmt.Sprint(err))
		}
	}
}

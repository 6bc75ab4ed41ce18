package authn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

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
	a, b, toks := twoWithTokens(t, cfg, 40)
	ctx := context.Background()
	startOnly := map[string]int64{ReloadStart: 1}
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

// twoWithTokens starts two instances on cfg, waits for both to have made their first reload, and
// has a mint n tokens of one principal, which b then accepts.
func twoWithTokens(t *testing.T, cfg *config.Config, n int) (a, b *instance, toks []string) {
	t.Helper()
	a, b = startInstance(t, cfg), startInstance(t, cfg)
	for _, in := range []*instance{a, b} {
		eventually(t, 5*time.Second, "the reload after the first subscription", func() bool { return in.replica.FullReloads(ReloadStart) == 1 })
	}
	ctx := context.Background()
	p, _, err := a.principals.Create(ctx, "rita", "reader")
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		tok, err := a.tokens.Mint(ctx, p, "scoring")
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok.AccessToken)
	}
	eventually(t, 2*time.Second, "b has the principal", func() bool { return b.checkToken(toks[0]) == nil })
	return a, b, toks
}

// revokeQuietly stores the revocation of tok as PutRevocation does, bumping the generation, but
// publishes nothing: it returns the change notice, for the test to send when and if it likes.
func revokeQuietly(t *testing.T, s *RedisStore, tok string) string {
	t.Helper()
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	member := claims.Issuer + "\x00" + claims.ID
	exp := claims.ExpiresAt.UnixMilli()
	var gen *redis.IntCmd
	if _, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAddGT(ctx, s.key("revoked"), redis.Z{Score: float64(exp), Member: member})
		gen = p.Incr(ctx, s.key(genKey))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d revoke %d %s", gen.Val(), exp, member)
}

// Notices that arrive out of order (two writers publish in the order they finish, not in the
// order of their generations) are applied as they come, and cost no full reload; a notice that
// never arrives costs exactly one, counted as "gap", once the wait for it is over (issue 23).
func TestOutOfOrderNoticesAreHeldAndALostOneReloadsOnce(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	cfg.Store.ResyncInterval = time.Second // the generation check stays out of the way
	cfg.Store.StalenessBound = 5 * time.Second
	a, b, toks := twoWithTokens(t, cfg, 30)
	ctx := context.Background()

	// Twenty revocations, their notices sent in pairs swapped: 2 1 4 3 ...
	var notices []string
	for _, tok := range toks[:20] {
		notices = append(notices, revokeQuietly(t, a.store, tok))
	}
	for i := 0; i < len(notices); i += 2 {
		for _, n := range []string{notices[i+1], notices[i]} {
			if err := a.store.publish(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, tok := range toks[:20] {
		eventually(t, time.Second, fmt.Sprintf("b refuses revoked token %d", i), func() bool { return errors.Is(b.checkToken(tok), ErrInvalidCredential) })
	}
	gen, err := a.store.Generation(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "b's copy reflects the last generation", func() bool { return b.replica.applied.Load() == gen })
	time.Sleep(2 * gapWait)
	if diff := cmp.Diff(map[string]int64{ReloadStart: 1}, b.fullReloads()); diff != "" {
		t.Errorf("full reloads after notices out of order (-want +got):\n%s", diff)
	}

	// One notice lost: the next one is applied at once, and the gap costs one reload.
	revokeQuietly(t, a.store, toks[20]) // its notice is never sent
	next := revokeQuietly(t, a.store, toks[21])
	if err := a.store.publish(ctx, next); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "b refuses the token whose notice came", func() bool { return errors.Is(b.checkToken(toks[21]), ErrInvalidCredential) })
	eventually(t, 3*time.Second, "b reloads once the lost notice's wait is over", func() bool { return b.replica.FullReloads(ReloadGap) == 1 })
	// The count moves when the reload begins.
	eventually(t, time.Second, "b refuses the token whose notice was lost, after the reload", func() bool { return errors.Is(b.checkToken(toks[20]), ErrInvalidCredential) })
	time.Sleep(2 * cfg.Store.ResyncInterval) // generation checks
	if diff := cmp.Diff(map[string]int64{ReloadStart: 1, ReloadGap: 1}, b.fullReloads()); diff != "" {
		t.Errorf("full reloads after one lost notice (-want +got):\n%s", diff)
	}
	for i, tok := range toks[22:] {
		if err := b.checkToken(tok); err != nil {
			t.Errorf("unrevoked token %d: %v", i, err)
		}
	}
}

// On a Redis Cluster the notices go by sharded pub/sub from the master of the store's slot, so
// back-to-back revocations from several writers at once all arrive, and none costs a reload
// (issue 23: a keyless PUBLISH relayed over the cluster bus reordered 23 of 200).
func TestClusterNoticesArriveInOrder(t *testing.T) {
	cl := redistest.Cluster(t, 3)
	cfg := redisConfig(t, config.Store{RedisAddrs: cl.Addrs})
	cfg.Store.ResyncInterval = 500 * time.Millisecond
	cfg.Store.StalenessBound = 5 * time.Second
	a, b, toks := twoWithTokens(t, cfg, 200)
	if !a.store.sharded {
		t.Fatal("a Cluster client does not use sharded pub/sub")
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 { // four writers at once, as four admin calls on two instances
		in := []*instance{a, b}[w%2]
		wg.Go(func() {
			for i := w; i < len(toks); i += 4 {
				if _, err := in.tokens.RevokeToken(ctx, toks[i]); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for name, in := range map[string]*instance{"a": a, "b": b} {
		for i, tok := range toks {
			eventually(t, time.Second, fmt.Sprintf("%s refuses revoked token %d", name, i), func() bool { return errors.Is(in.checkToken(tok), ErrInvalidCredential) })
		}
	}
	time.Sleep(3 * cfg.Store.ResyncInterval)
	for name, in := range map[string]*instance{"a": a, "b": b} {
		if diff := cmp.Diff(map[string]int64{ReloadStart: 1}, in.fullReloads()); diff != "" {
			t.Errorf("%s's full reloads after 200 revocations (-want +got):\n%s", name, diff)
		}
	}
}

// When the store's slot moves to another master (a resharding), Redis ends every sharded
// subscription to its channel; each instance subscribes again where the slot is now, reloads
// once, and revocations keep reaching it (REV-17).
func TestClusterSlotMovesUnderTheSubscription(t *testing.T) {
	cl := redistest.Cluster(t, 3)
	cfg := redisConfig(t, config.Store{RedisAddrs: cl.Addrs})
	cfg.Store.ResyncInterval = 200 * time.Millisecond
	cfg.Store.StalenessBound = 5 * time.Second
	a, b, toks := twoWithTokens(t, cfg, 2)
	ctx := context.Background()

	// Move the store's slot from its master to another: IMPORTING, MIGRATING, MIGRATE every key,
	// then NODE on every master.
	slot := cl.Do(t, "CLUSTER", "KEYSLOT", a.store.key(genKey))
	ids := map[string]string{} // addr -> node id
	var from, to *redistest.Server
	for _, n := range cl.Nodes {
		ids[n.Addr] = n.Do(t, "CLUSTER", "MYID")
	}
	for _, n := range cl.Nodes {
		if n.Do(t, "CLUSTER", "COUNTKEYSINSLOT", slot) != "0" {
			from = n
		}
	}
	for _, n := range cl.Nodes {
		if n != from {
			to = n
			break
		}
	}
	if from == nil {
		t.Fatal("no node holds the store's keys")
	}
	to.Do(t, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from.Addr])
	from.Do(t, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to.Addr])
	keys := strings.Fields(from.Do(t, "CLUSTER", "GETKEYSINSLOT", slot, "1000"))
	host, port, _ := strings.Cut(to.Addr, ":")
	from.Do(t, append([]string{"MIGRATE", host, port, "", "0", "5000", "KEYS"}, keys...)...)
	for _, n := range cl.Nodes {
		n.Do(t, "CLUSTER", "SETSLOT", slot, "NODE", ids[to.Addr])
	}

	for name, in := range map[string]*instance{"a": a, "b": b} {
		eventually(t, 5*time.Second, name+" subscribes again where the slot is", func() bool { return in.replica.FullReloads(ReloadReconnect) == 1 })
	}
	if _, err := a.tokens.RevokeToken(ctx, toks[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "b refuses the token revoked after the move", func() bool { return errors.Is(b.checkToken(toks[0]), ErrInvalidCredential) })
	if err := b.checkToken(toks[1]); err != nil {
		t.Errorf("the token not revoked, after the move: %v", err)
	}
	time.Sleep(3 * cfg.Store.ResyncInterval)
	for name, in := range map[string]*instance{"a": a, "b": b} {
		if diff := cmp.Diff(map[string]int64{ReloadStart: 1, ReloadReconnect: 1}, in.fullReloads()); diff != "" {
			t.Errorf("%s's full reloads after the slot moved (-want +got):\n%s", name, diff)
		}
	}
}

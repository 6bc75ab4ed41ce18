package authn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

func init() { SetRedisLogger(slog.New(slog.DiscardHandler)) } // go-redis would write to stderr

// instance is one gateway's authn stack over a shared store, as `gateway serve` builds it.
type instance struct {
	store      *RedisStore
	keys       *Keyring
	principals *Principals
	tokens     *Tokens
	replica    *Replica
	auth       *Authenticator
	cancel     context.CancelFunc
	done       chan struct{}
}

func redisConfig(t testing.TB, storeCfg config.Store) *config.Config {
	t.Helper()
	cfg := &config.Config{
		Store: storeCfg,
		Services: []config.Service{
			{Name: "iris", Auth: config.AuthKey, Upstreams: []string{"http://127.0.0.1:1"}},
			{Name: "scoring", Auth: config.AuthToken, Upstreams: []string{"http://127.0.0.1:2"}},
		},
	}
	cfg.Store.ResyncInterval = 100 * time.Millisecond
	cfg.Store.StalenessBound = time.Second
	cfg.Store.RedisTimeout = time.Second // generous: CI runs every package's tests at once
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startInstance(t testing.TB, cfg *config.Config) *instance {
	t.Helper()
	return startLoggedInstance(t, cfg, nil)
}

// startLoggedInstance is startInstance with the replica's, keyring's and tokens' log going to
// log (nil: none).
func startLoggedInstance(t testing.TB, cfg *config.Config, log *slog.Logger) *instance {
	t.Helper()
	ctx := context.Background()
	store, err := OpenRedis(ctx, cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{store: store, done: make(chan struct{})}
	if in.keys, err = NewKeyring(ctx, store, log); err != nil {
		t.Fatal(err)
	}
	if in.principals, err = NewPrincipals(ctx, store, in.keys, NewRoles(cfg), testOwnerKey); err != nil {
		t.Fatal(err)
	}
	if in.tokens, err = NewTokens(ctx, cfg, store, in.principals, log); err != nil {
		t.Fatal(err)
	}
	in.replica = NewReplica(store, in.keys, in.principals, in.tokens, cfg.Store.ResyncInterval, cfg.Store.StalenessBound, log)
	in.auth = NewAuthenticator(in.keys, WithTokens(in.tokens), WithFreshness(in.replica.Fresh))
	rctx, cancel := context.WithCancel(ctx)
	in.cancel = cancel
	go func() { defer close(in.done); in.replica.Run(rctx) }()
	t.Cleanup(in.stop)
	return in
}

func (in *instance) stop() {
	if in.cancel != nil {
		in.cancel()
		<-in.done
		in.cancel = nil
		in.store.Close()
	}
}

func (in *instance) checkKey(key string) error {
	_, err := in.auth.Authenticate("iris", config.AuthKey, [][]byte{[]byte("Bearer " + key)})
	return err
}

func (in *instance) checkToken(tok string) error {
	_, err := in.auth.Authenticate("scoring", config.AuthToken, [][]byte{[]byte("Bearer " + tok)})
	return err
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, within)
	return 0
}

// sharedStateSuite runs the shared-state cases against one Redis deployment.
func sharedStateSuite(t *testing.T, storeCfg config.Store) {
	cfg := redisConfig(t, storeCfg)
	a, b, c := startInstance(t, cfg), startInstance(t, cfg), startInstance(t, cfg)
	ctx := context.Background()

	t.Run("a key regenerated on one instance fails on the others", func(t *testing.T) {
		old, err := a.keys.Regenerate(ctx, "iris", SlotPrimary)
		if err != nil {
			t.Fatal(err)
		}
		secondary, err := a.keys.Regenerate(ctx, "iris", SlotSecondary)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []*instance{b, c} {
			eventually(t, 2*time.Second, "new key accepted elsewhere", func() bool { return in.checkKey(old) == nil && in.checkKey(secondary) == nil })
		}
		if _, err := a.keys.Regenerate(ctx, "iris", SlotPrimary); err != nil {
			t.Fatal(err)
		}
		for _, in := range []*instance{b, c} {
			eventually(t, 2*time.Second, "old key refused elsewhere", func() bool { return errors.Is(in.checkKey(old), ErrInvalidCredential) })
			if err := in.checkKey(secondary); err != nil {
				t.Fatalf("secondary refused after the primary rotated: %v", err)
			}
		}
	})

	t.Run("a token revoked on one instance fails on the others", func(t *testing.T) {
		p, _, err := a.principals.Create(ctx, "rita-"+fmt.Sprint(time.Now().UnixNano()), "reader")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []*instance{b, c} {
			eventually(t, 2*time.Second, "principal known elsewhere", func() bool { _, ok := in.principals.Lookup(p.Name); return ok })
		}
		tok, err := b.tokens.Mint(ctx, p, "scoring")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []*instance{a, b, c} {
			eventually(t, 2*time.Second, "token accepted", func() bool { return in.checkToken(tok.AccessToken) == nil })
		}
		if _, err := a.tokens.RevokeToken(ctx, tok.AccessToken); err != nil {
			t.Fatal(err)
		}
		for _, in := range []*instance{b, c} {
			eventually(t, 2*time.Second, "revoked token refused elsewhere", func() bool { return errors.Is(in.checkToken(tok.AccessToken), ErrInvalidCredential) })
		}
		// Deleting the principal elsewhere stops a fresh token of it too.
		tok2, _ := b.tokens.Mint(ctx, p, "scoring")
		if err := a.principals.Delete(ctx, p.Name); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "deleted principal's token refused elsewhere", func() bool { return errors.Is(c.checkToken(tok2.AccessToken), ErrInvalidCredential) })
	})
}

func TestSharedStateSingleRedis(t *testing.T) {
	srv := redistest.Start(t)
	sharedStateSuite(t, config.Store{RedisURL: srv.URL()})
}

// REV-17 on a Cluster, as the documented user with what docs/shared-state.md adds for a Cluster.
func TestSharedStateRedisCluster(t *testing.T) {
	cl := redistest.Cluster(t, 3, redistest.WithACL("user default on nopass ~* &* +@all", gatewayACL+clusterACL))
	sharedStateSuite(t, config.Store{RedisAddrs: cl.Addrs, RedisUsername: "gateway", RedisPassword: "gateway-secret-0123456789"})
}

func TestSharedStateRedisSentinel(t *testing.T) {
	sn := redistest.Sentinel(t)
	storeCfg := config.Store{RedisAddrs: sn.SentinelAddrs, RedisMasterName: sn.MasterName}
	sharedStateSuite(t, storeCfg)

	// REV-12 / REV-17: a revocation written just before a failover survives it (writes wait for
	// the replica), and instances follow the new master.
	cfg := redisConfig(t, storeCfg)
	cfg.Store.StalenessBound = 10 * time.Second
	a, b := startInstance(t, cfg), startInstance(t, cfg)
	ctx := context.Background()
	p, _, err := a.principals.Create(ctx, "failover-"+fmt.Sprint(time.Now().UnixNano()), "reader")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := a.tokens.Mint(ctx, p, "scoring")
	after, _ := a.tokens.Mint(ctx, p, "scoring")
	if _, err := a.tokens.RevokeToken(ctx, before.AccessToken); err != nil {
		t.Fatal(err)
	}
	sn.Failover(t)
	healed := eventually(t, 30*time.Second, "the old master rejoins as a replica", func() bool {
		return strings.Contains(sn.Master.Do(t, "INFO", "replication"), "connected_slaves:1")
	})
	t.Logf("the old master rejoined as a replica %s after the failover", healed.Round(time.Millisecond))
	fresh := startInstance(t, cfg) // loads everything from the new master
	if err := fresh.checkToken(before.AccessToken); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("the revocation was lost in the failover: %v", err)
	}
	eventually(t, 10*time.Second, "a write after the failover", func() bool {
		_, err := a.tokens.RevokeToken(ctx, after.AccessToken)
		return err == nil
	})
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(b.checkToken(after.AccessToken), ErrInvalidCredential) {
		if time.Now().After(deadline) {
			g, err := b.store.Generation(ctx, 0)
			t.Fatalf("the new revocation did not reach b through the new master: b applied %d, reads %d (%v), problem %q, age %s",
				b.replica.applied.Load(), g, err, b.replica.Problem(), b.replica.Age())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Acceptance 2, at the authn level: with Redis stopped, known credentials keep working for the
// staleness bound, revocations made before stay enforced, then every decision is ErrUnavailable
// (never ErrInvalidCredential for a good credential); when Redis is back the instance resumes.
func TestRedisOutageWithinAndPastTheBound(t *testing.T) {
	t.Run("stopped", func(t *testing.T) { redisOutage(t, false) })
	// REV-08: a black hole (the port accepts, nothing answers) must not stall decisions.
	t.Run("black-holed", func(t *testing.T) { redisOutage(t, true) })
}

func redisOutage(t *testing.T, blackHole bool) {
	srv := redistest.Start(t, redistest.WithAOF())
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	cfg.Store.StalenessBound = 1500 * time.Millisecond
	a := startInstance(t, cfg)
	ctx := context.Background()
	// Setup calls have store.redis_timeout each; on a busy machine one may time out, so each is
	// tried a few times and must succeed before the outage starts.
	retry := func(what string, f func() error) {
		t.Helper()
		var err error
		for range 5 {
			if err = f(); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: %v", what, err)
	}
	var key string
	var p Principal
	var revoked TokenResponse
	retry("regenerating the key", func() (err error) { key, err = a.keys.Regenerate(ctx, "iris", SlotPrimary); return })
	retry("creating the principal", func() (err error) { p, _, err = a.principals.Create(ctx, "rita", "reader"); return })
	retry("minting", func() (err error) { revoked, err = a.tokens.Mint(ctx, p, "scoring"); return })
	retry("revoking", func() error { _, err := a.tokens.RevokeToken(ctx, revoked.AccessToken); return err })

	if blackHole {
		srv.Pause(t)
	} else {
		srv.Stop(t)
	}
	stoppedAt := time.Now()
	// The window runs from the last successful check before the stop, not from the stop.
	window := cfg.Store.StalenessBound - a.replica.Age()
	sawUnavailable := false
	for time.Since(stoppedAt) < 4*time.Second && !sawUnavailable {
		err := a.checkKey(key)
		inBound := time.Since(stoppedAt) < window-10*time.Millisecond
		switch {
		case err == nil:
		case errors.Is(err, ErrUnavailable):
			if inBound {
				t.Fatalf("503 after %s, inside the bound", time.Since(stoppedAt))
			}
			sawUnavailable = true
		default:
			t.Fatalf("a good key got %v during the outage", err)
		}
		if err := a.checkToken(revoked.AccessToken); err == nil {
			t.Fatal("a revoked token was accepted during the outage")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawUnavailable {
		t.Fatal("the instance kept deciding past the staleness bound")
	}
	if blackHole {
		srv.Resume(t)
	} else {
		srv.Restart(t)
	}
	eventually(t, 5*time.Second, "deciding again after Redis returned", func() bool { return a.checkKey(key) == nil })
	if err := a.checkToken(revoked.AccessToken); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("revoked token after the outage: %v", err)
	}
}

// Acceptance 3: a revocation made while an instance was cut off from Redis is enforced by it
// within one resync after it reconnects. Instance b reaches Redis through a TCP relay the test
// cuts and restores.
func TestRevocationWhileCutOffIsEnforcedAfterReconnect(t *testing.T) {
	srv := redistest.Start(t)
	relay := newRelay(t, srv.Addr)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	cfgB := redisConfig(t, config.Store{RedisURL: "redis://" + relay.addr + "/0"})
	cfgB.Store.StalenessBound = 10 * time.Second // b keeps deciding while cut off
	a, b := startInstance(t, cfg), startInstance(t, cfgB)
	ctx := context.Background()
	p, _, _ := a.principals.Create(ctx, "rita", "reader")
	eventually(t, 2*time.Second, "principal known to b", func() bool { _, ok := b.principals.Lookup("rita"); return ok })
	tok, _ := a.tokens.Mint(ctx, p, "scoring")
	if err := b.checkToken(tok.AccessToken); err != nil {
		t.Fatal(err)
	}

	relay.cut()
	if _, err := a.tokens.RevokeToken(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * cfgB.Store.ResyncInterval)
	if err := b.checkToken(tok.AccessToken); err != nil {
		t.Fatalf("b should still decide on its (stale, within bound) copy: %v", err)
	}
	resyncs := b.replica.Resyncs()
	relay.restore()
	d := eventually(t, 5*time.Second, "b enforces the revocation it missed", func() bool {
		return errors.Is(b.checkToken(tok.AccessToken), ErrInvalidCredential)
	})
	if b.replica.Resyncs() <= resyncs {
		t.Error("no full resync after reconnecting")
	}
	t.Logf("enforced %s after reconnecting (resync interval %s)", d.Round(time.Millisecond), cfgB.Store.ResyncInterval)
}

// A notice lost while the subscription looked healthy is caught by the generation check.
func TestMissedNoticeIsCaughtByTheGenerationCheck(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	a := startInstance(t, cfg)
	ctx := context.Background()
	p, _, _ := a.principals.Create(ctx, "rita", "reader")
	tok, _ := a.tokens.Mint(ctx, p, "scoring")
	claims, err := a.tokens.Verify("scoring", []byte(tok.AccessToken))
	if err != nil {
		t.Fatal(err)
	}
	// Write a revocation straight into Redis with no notice.
	exp := time.Now().Add(time.Hour).UnixMilli()
	rc := a.store.client
	if err := rc.ZAdd(ctx, cfg.Store.RedisPrefix+"revoked", redis.Z{Score: float64(exp), Member: claims.Issuer + "\x00" + claims.ID}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Incr(ctx, cfg.Store.RedisPrefix+"gen").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the missed revocation is enforced", func() bool {
		return errors.Is(a.checkToken(tok.AccessToken), ErrInvalidCredential)
	})
}

// relay forwards TCP connections to a target until cut; restore accepts again.
type relay struct {
	t      testing.TB
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newRelay(t testing.TB, target string) *relay {
	r := &relay{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.cut)
	return r
}

func (r *relay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", r.target)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			if r.ln != ln { // cut while this connection was being made: it must not outlive the cut
				r.mu.Unlock()
				c.Close()
				u.Close()
				continue
			}
			r.conns = append(r.conns, c, u)
			r.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
}

func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

func (r *relay) restore() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("relay: listening again on %s: %v", r.addr, err)
	}
	r.serve(ln)
}

// REV-11: Redis losing its data (FLUSHALL) makes the instance refuse to decide, not forget.
func TestRedisDataLossFailsClosed(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	a := startInstance(t, cfg)
	key, _ := a.keys.Regenerate(context.Background(), "iris", SlotPrimary)
	if err := a.checkKey(key); err != nil {
		t.Fatal(err)
	}
	srv.Do(t, "FLUSHALL")
	eventually(t, 5*time.Second, "undecidable after the data loss", func() bool { return errors.Is(a.checkKey(key), ErrUnavailable) })
	if a.replica.Problem() == "" {
		t.Error("no reason given for not deciding")
	}
}

// REV-05: a revocation stays in Redis at least until the token's expiry plus the leeway, and is
// gone after.
func TestRevocationLifetimeInRedis(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	a := startInstance(t, cfg)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := a.tokens.Revoke(ctx, "", "jti-1", exp); err != nil {
		t.Fatal(err)
	}
	if err := a.tokens.Revoke(ctx, "", "jti-old", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	revs, err := a.store.Revocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 1 || revs[0].JTI != "jti-1" || revs[0].Expires.Before(exp.Add(cfg.Tokens.Leeway)) {
		t.Fatalf("revocations = %+v", revs)
	}
}

// A large revocation set is read in pages, each within store.redis_timeout: read whole, a million
// revocations take Redis and the client longer than the default 250ms to send and read, and the
// reload that follows a missed notice (or a restart) would fail again and again (issue 23).
func TestLargeRevocationSetReadsWithinTheTimeout(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	cfg.Store.RedisTimeout = 250 * time.Millisecond // the default
	store, err := OpenRedis(context.Background(), cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	// Written by a client without the store's timeout: the test's set-up, not what it tests.
	filler := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second})
	defer filler.Close()
	const n = 1000000
	exp := float64(time.Now().Add(time.Hour).UnixMilli())
	for i := 0; i < n; i += 10000 {
		zs := make([]redis.Z, 0, 10000)
		for j := i; j < i+10000; j++ {
			zs = append(zs, redis.Z{Score: exp, Member: fmt.Sprintf("https://issuer.example\x00jti-%07d", j)})
		}
		if err := filler.ZAdd(ctx, store.key("revoked"), zs...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	revs, err := store.Revocations(ctx)
	if err != nil {
		t.Fatalf("reading %d revocations: %v", n, err)
	}
	seen := make(map[string]bool, len(revs))
	for _, r := range revs {
		seen[r.JTI] = true
	}
	if len(revs) != n || len(seen) != n || !seen["jti-0000000"] || !seen[fmt.Sprintf("jti-%07d", n-1)] {
		t.Errorf("read %d revocations (%d distinct), want %d", len(revs), len(seen), n)
	}
}

// gatewayACL is the least-privilege Redis user docs/shared-state.md documents; clusterACL is what
// it adds for a Cluster (go-redis reads the slot map, and the commands' key positions).
const (
	gatewayACL = "user gateway on >gateway-secret-0123456789 ~{scoregate}:* ~scoregate:rl:* &{scoregate}:changes " +
		"-@all +@read +@write +@pubsub +@transaction +@scripting -@dangerous +ping +hello +wait +time"
	clusterACL = " +cluster|slots +command"
)

// REV-15: the gateway works as the documented ACL user, and that user can do nothing else: its
// keys are the store's (under the prefix, with its hash tag) and the rate and token limiters'
// counters (under the prefix without its braces, then "rl:"; see ratelimit.NewShared).
func TestRedisLeastPrivilegeUser(t *testing.T) {
	doc, err := os.ReadFile("../docs/shared-state.md")
	if err != nil {
		t.Fatal(err)
	}
	if line := strings.Replace(gatewayACL, ">gateway-secret-0123456789", ">PASSWORD", 1); !strings.Contains(string(doc), line) {
		t.Errorf("docs/shared-state.md does not show the user this test runs as:\n%s", line)
	}
	if !strings.Contains(string(doc), "On a Cluster, add `"+strings.TrimSpace(clusterACL)+"`") {
		t.Errorf("docs/shared-state.md does not say what TestSharedStateRedisCluster adds for a Cluster: %q", clusterACL)
	}
	srv := redistest.Start(t, redistest.WithACL("user default on nopass ~* &* +@all", gatewayACL))
	url := strings.Replace(srv.URL(), "redis://", "redis://gateway:gateway-secret-0123456789@", 1)
	cfg := redisConfig(t, config.Store{RedisURL: url})
	a, b := startInstance(t, cfg), startInstance(t, cfg)
	ctx := context.Background()
	key, err := a.keys.Regenerate(ctx, "iris", SlotPrimary)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := a.principals.Create(ctx, "rita", "reader")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.tokens.Mint(ctx, p, "scoring")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.tokens.RevokeToken(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	NewActivityLog(a.store, nil).Record(ctx, OpTokenRevoke, "rita", "x", ResultSuccess)
	if recs, err := a.store.Activity(ctx, 5); err != nil || len(recs) != 1 {
		t.Fatalf("activity as the gateway user: %v, %v", recs, err)
	}
	if err := a.keys.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "b sees the key and the revocation", func() bool {
		return b.checkKey(key) == nil && errors.Is(b.checkToken(tok.AccessToken), ErrInvalidCredential)
	})
	for _, cmd := range [][]string{
		{"FLUSHALL"}, {"CONFIG", "GET", "*"}, {"KEYS", "*"}, {"SET", "other:key", "1"}, {"GET", "other:key"},
		{"SET", "scoregate:secret", "1"}, {"GET", "scoregate:gen"}, {"SUBSCRIBE", "other-channel"}, {"DEBUG", "SLEEP", "0"}, {"SHUTDOWN"},
	} {
		out := srv.Do(t, append([]string{"ACL", "DRYRUN", "gateway"}, cmd...)...)
		if out == "OK" {
			t.Errorf("the gateway user may run %v", cmd)
		}
	}
	for _, cmd := range [][]string{ // the check has teeth
		{"GET", "{scoregate}:gen"}, {"SET", "scoregate:rl:{key:abc}", "1"}, {"HINCRBY", "scoregate:rl:tpm:{chat:key:primary}", "1", "1"},
	} {
		if out := srv.Do(t, append([]string{"ACL", "DRYRUN", "gateway"}, cmd...)...); out != "OK" {
			t.Errorf("the gateway user may not run %v on its own keys: %s", cmd, out)
		}
	}
}

// Issue 17, finding 4: an instance restarted against a Redis that lost everything while no other
// instance ran knows, from the store id it remembers in store.dir, that the store existed: it
// makes no new store or secret, and marks the store lost for instances started later, which
// remember nothing. Only a deliberate re-initialisation makes a store they all accept again.
func TestRedisWipedWhileNoInstanceRan(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	ctx := context.Background()
	idFile := filepath.Join(t.TempDir(), StoreIDFile)
	s, err := OpenRedis(ctx, cfg.Store, WithStoreIDFile(idFile))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	srv.Do(t, "FLUSHALL")

	if _, err := OpenRedis(ctx, cfg.Store, WithStoreIDFile(idFile)); !errors.Is(err, ErrStoreLost) {
		t.Fatalf("reopened by the instance that knew the store: %v, want ErrStoreLost", err)
	}
	if _, err := OpenRedis(ctx, cfg.Store); !errors.Is(err, ErrStoreLost) {
		t.Fatalf("opened by an instance that knows nothing, after the loss was found: %v, want ErrStoreLost", err)
	}
	if out := srv.Do(t, "EXISTS", "{scoregate}:secret"); out != "0" {
		t.Fatalf("a secret was made: EXISTS %s", out)
	}
	if _, err := ReinitRedis(ctx, cfg.Store); err != nil {
		t.Fatal(err)
	}
	if _, err := ReinitRedis(ctx, cfg.Store); !errors.Is(err, ErrStoreHealthy) {
		t.Fatalf("re-initialising a store that lost nothing: %v", err)
	}
	for _, opts := range [][]RedisOption{{WithStoreIDFile(idFile)}, nil} {
		s, err := OpenRedis(ctx, cfg.Store, opts...)
		if err != nil {
			t.Fatalf("after the re-initialisation: %v", err)
		}
		s.Close()
	}
}

package authn

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// tokenEnv is a gateway's authn stack on a temporary store, with a settable clock.
type tokenEnv struct {
	cfg        *config.Config
	store      *BoltStore
	keys       *Keyring
	principals *Principals
	tokens     *Tokens
	activity   *ActivityLog
	auth       *Authenticator

	mu  sync.Mutex
	now time.Time
}

const testOwnerKey = "owner-key-for-tests-0123456789abcdefghij"

func (e *tokenEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *tokenEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func newTokenEnv(t testing.TB, edit func(*config.Config), opts ...TokensOption) *tokenEnv {
	t.Helper()
	cfg := &config.Config{
		Roles: []config.Role{{Name: "minter", Permissions: []string{config.PermTokensMint}}},
		Services: []config.Service{
			{Name: "scoring", Auth: config.AuthToken, Upstreams: []string{"http://127.0.0.1:1"}},
			{Name: "other", Auth: config.AuthToken, Upstreams: []string{"http://127.0.0.1:2"}},
			{Name: "keyed", Auth: config.AuthKey, Upstreams: []string{"http://127.0.0.1:3"}},
		},
	}
	if edit != nil {
		edit(cfg)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &tokenEnv{cfg: cfg, store: store, now: time.Now().Truncate(time.Second)}
	ctx := context.Background()
	if e.keys, err = NewKeyring(ctx, store, nil); err != nil {
		t.Fatal(err)
	}
	if e.principals, err = NewPrincipals(ctx, store, e.keys, NewRoles(cfg), testOwnerKey); err != nil {
		t.Fatal(err)
	}
	e.activity = NewActivityLog(store, nil)
	opts = append([]TokensOption{WithClock(e.clock), WithActivity(e.activity)}, opts...)
	if e.tokens, err = NewTokens(ctx, cfg, store, e.principals, nil, opts...); err != nil {
		t.Fatal(err)
	}
	e.auth = NewAuthenticator(e.keys, WithTokens(e.tokens))
	return e
}

func (e *tokenEnv) principal(t testing.TB, name, role string) (Principal, string) {
	t.Helper()
	p, key, err := e.principals.Create(context.Background(), name, role)
	if err != nil {
		t.Fatal(err)
	}
	return p, key
}

func (e *tokenEnv) mint(t testing.TB, p Principal, service string) TokenResponse {
	t.Helper()
	resp, err := e.tokens.Mint(context.Background(), p, service)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (e *tokenEnv) check(service, token string) error {
	_, err := e.auth.Authenticate(service, config.AuthToken, [][]byte{[]byte("Bearer " + token)})
	return err
}

func TestMintAndVerify(t *testing.T) {
	e := newTokenEnv(t, nil)
	reader, _ := e.principal(t, "alice", "reader")
	resp := e.mint(t, reader, "scoring")
	if resp.TokenType != "Bearer" || resp.ExpiryTimeUTC != e.clock().Add(time.Hour).Unix() || resp.RefreshAfterTimeUTC != e.clock().Add(30*time.Minute).Unix() {
		t.Fatalf("token response %+v", resp)
	}
	if err := e.check("scoring", resp.AccessToken); err != nil {
		t.Fatalf("fresh token refused: %v", err)
	}
	if err := e.check("scoring", resp.AccessToken); err != nil {
		t.Fatalf("fresh token refused from the cache: %v", err)
	}
	if err := e.check("other", resp.AccessToken); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("token on another service: %v", err)
	}
	// A key-mode service refuses tokens; a token-mode service refuses keys.
	if _, err := e.auth.Authenticate("keyed", config.AuthKey, [][]byte{[]byte("Bearer " + resp.AccessToken)}); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("key service took a token: %v", err)
	}
	key, _ := e.keys.Regenerate(context.Background(), "keyed", SlotPrimary)
	if err := e.check("scoring", key); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("token service took a key: %v", err)
	}
	// Minting for a key-mode service, or without tokens:mint.
	if _, err := e.tokens.Mint(context.Background(), reader, "keyed"); !errors.Is(err, ErrNotTokenService) {
		t.Fatalf("mint for a key service: %v", err)
	}
}

func TestTokenExpiryAndRefresh(t *testing.T) {
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	old := e.mint(t, p, "scoring")
	e.advance(31 * time.Minute) // past the refresh point: a fresh token, and the old one still works
	fresh := e.mint(t, p, "scoring")
	if fresh.AccessToken == old.AccessToken || fresh.ExpiryTimeUTC <= old.ExpiryTimeUTC {
		t.Fatal("the refreshed token is not newer")
	}
	if err := e.check("scoring", old.AccessToken); err != nil {
		t.Fatalf("old token before its expiry: %v", err)
	}
	e.advance(29*time.Minute + 29*time.Second) // a second short of exp + leeway (30s)
	if err := e.check("scoring", old.AccessToken); err != nil {
		t.Fatalf("old token inside the leeway: %v", err)
	}
	e.advance(time.Second)
	if err := e.check("scoring", old.AccessToken); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("old token past exp+leeway: %v", err)
	}
	if err := e.check("scoring", fresh.AccessToken); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
}

func TestTokenDiesWithItsPrincipal(t *testing.T) {
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	tok := e.mint(t, p, "scoring").AccessToken
	if err := e.check("scoring", tok); err != nil {
		t.Fatal(err)
	}
	if err := e.principals.Delete(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := e.check("scoring", tok); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("token of a deleted principal: %v", err)
	}
	// A new principal of the same name does not revive the old tokens.
	e.principal(t, "alice", "reader")
	if err := e.check("scoring", tok); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("token of a deleted principal after the name was reused: %v", err)
	}
}

func TestTokenOfRoleWithoutCallIsForbidden(t *testing.T) {
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "mint-only", "minter")
	tok := e.mint(t, p, "scoring").AccessToken
	for i := 0; i < 2; i++ { // uncached, then cached
		if err := e.check("scoring", tok); !errors.Is(err, ErrForbidden) {
			t.Fatalf("try %d: %v, want ErrForbidden", i, err)
		}
	}
}

func TestRevokedTokenIsRefusedAndStaysRevokedAfterRestart(t *testing.T) {
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	tok := e.mint(t, p, "scoring").AccessToken
	if err := e.check("scoring", tok); err != nil { // now cached
		t.Fatal(err)
	}
	c, err := e.tokens.RevokeToken(context.Background(), tok)
	if err != nil || c.ID == "" {
		t.Fatalf("RevokeToken = %+v, %v", c, err)
	}
	if err := e.check("scoring", tok); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("revoked token: %v", err)
	}
	// A fresh Tokens over the same store (a restart) still refuses it.
	t2, err := NewTokens(context.Background(), e.cfg, e.store, e.principals, nil, WithClock(e.clock))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := t2.Verify("scoring", []byte(tok)); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("revoked token after restart: %v", err)
	}
}

func TestSigningKeyRotation(t *testing.T) {
	e := newTokenEnv(t, func(c *config.Config) { c.Tokens.KeyRotation = time.Hour; c.Tokens.MaxLifetime = 2 * time.Hour })
	p, _ := e.principal(t, "alice", "reader")
	first := e.mint(t, p, "scoring").AccessToken
	e.advance(61 * time.Minute)
	if err := e.tokens.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := e.mint(t, p, "scoring").AccessToken
	if kid(first) == kid(second) {
		t.Fatal("no new signing key after the rotation interval")
	}
	// The old key still verifies what it signed (until that expires).
	e.advance(-59 * time.Minute) // back inside the first token's life, for the check only
	if err := e.check("scoring", first); err != nil {
		t.Fatalf("token of the previous key: %v", err)
	}
	e.advance(59 * time.Minute)
	// Past max_lifetime + leeway after it was replaced, the old key is dropped.
	e.advance(2*time.Hour + time.Minute)
	if err := e.tokens.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.tokens.signing.Load().byKID[kid(first)]; ok {
		t.Fatal("the retired key is still kept")
	}
}

func kid(tok string) string {
	parts := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(parts[0])
	i := strings.Index(string(b), `"kid":"`)
	rest := string(b)[i+7:]
	return rest[:strings.IndexByte(rest, '"')]
}

func TestActivityRecordsMintsAndRefusals(t *testing.T) {
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	e.mint(t, p, "scoring")
	nobody := Principal{Name: "nobody"} // no permissions
	if _, err := e.tokens.Mint(context.Background(), nobody, "scoring"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("mint without permission: %v", err)
	}
	recs, err := e.activity.List(context.Background(), 10)
	if err != nil || len(recs) != 2 {
		t.Fatalf("activity = %+v, %v", recs, err)
	}
	if recs[0].Initiator != "nobody" || recs[0].Result != ResultDenied || recs[1].Initiator != "alice" || recs[1].Result != ResultSuccess || recs[1].Operation != OpTokenMint {
		t.Fatalf("activity = %+v", recs)
	}
}

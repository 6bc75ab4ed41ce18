package authn

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scoregate/scoregate/config"
)

// TokenResponse is the answer to a token request, in Azure ML's shape.
type TokenResponse struct {
	AccessToken         string `json:"accessToken"`
	TokenType           string `json:"tokenType"`
	ExpiryTimeUTC       int64  `json:"expiryTimeUtc"`
	RefreshAfterTimeUTC int64  `json:"refreshAfterTimeUtc"`
}

// TokenClaims are the claims of a token that passed every check.
type TokenClaims struct {
	Issuer    string
	Subject   string
	Audience  []string
	ID        string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// ownClaims are the claims of the tokens the gateway mints: the registered ones, plus pid, the
// id of the principal's key, so that a token dies with its principal even if the name is reused.
type ownClaims struct {
	jwt.RegisteredClaims
	PID string `json:"pid,omitempty"`
}

// KeySource finds a token verification key by its kid. The gateway's own signing keys are one;
// an external issuer's JWKS is another.
type KeySource interface {
	// Key returns the key for kid and the one algorithm it may verify, or an error if there is
	// no such key.
	Key(ctx context.Context, kid string) (crypto.PublicKey, string, error)
}

// ErrUnknownKey is returned by a KeySource that has no key of that id.
var ErrUnknownKey = errors.New("no key with that kid")

// Tokens mints the gateway's tokens and checks tokens for token-mode services.
type Tokens struct {
	store      Store
	principals *Principals
	activity   *ActivityLog
	cfg        config.Tokens
	services   map[string]*tokenService
	log        *slog.Logger

	signing atomic.Pointer[signingKeys]
	revoked *revocationSet
	cache   *tokenCache
	mu      sync.Mutex // serialises key rotation and the reload of signing keys
	now     func() time.Time
}

type tokenService struct {
	lifetime, refreshAfter time.Duration
	issuers                map[string]*externalIssuer // by exact iss
}

type externalIssuer struct {
	audience   string
	algorithms []string
	keys       KeySource
}

// signingKeys is the gateway's current set of signing keys.
type signingKeys struct {
	active   *signingKey
	byKID    map[string]*signingKey
	ordered  []*signingKey // oldest first
	verifier map[string]ed25519.PublicKey
}

type signingKey struct {
	rec  SigningKeyRecord
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

// TokensOption adjusts Tokens.
type TokensOption func(*Tokens)

// WithActivity records every token minted or refused in log.
func WithActivity(log *ActivityLog) TokensOption { return func(t *Tokens) { t.activity = log } }

// WithClock makes Tokens read the time from now (for tests).
func WithClock(now func() time.Time) TokensOption { return func(t *Tokens) { t.now = now } }

// WithIssuerKeys sets the key source of an external issuer of a service, replacing the one that
// NewTokens would build from the issuer's jwks_url.
func WithIssuerKeys(service, issuer string, keys KeySource) TokensOption {
	return func(t *Tokens) {
		if svc := t.services[service]; svc != nil && svc.issuers[issuer] != nil {
			svc.issuers[issuer].keys = keys
		}
	}
}

// NewTokens loads the signing keys and revocations from store, making a first signing key if
// there is none. External issuers' keys come from their JWKS (see WithIssuerKeys).
func NewTokens(ctx context.Context, cfg *config.Config, store Store, principals *Principals, log *slog.Logger, opts ...TokensOption) (*Tokens, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Tokens{
		store:      store,
		principals: principals,
		cfg:        cfg.Tokens,
		services:   map[string]*tokenService{},
		log:        log,
		revoked:    newRevocationSet(),
		cache:      newTokenCache(cfg.Tokens.CacheEntries),
		now:        time.Now,
	}
	for _, svc := range cfg.Services {
		if svc.Auth != config.AuthToken {
			continue
		}
		ts := &tokenService{lifetime: svc.TokenLifetime, refreshAfter: svc.TokenRefreshAfter, issuers: map[string]*externalIssuer{}}
		for _, is := range svc.Issuers {
			ts.issuers[is.Issuer] = &externalIssuer{audience: is.Audience, algorithms: is.Algorithms}
		}
		t.services[svc.Name] = ts
	}
	for _, o := range opts {
		o(t)
	}
	for name, svc := range t.services {
		for iss, is := range svc.issuers {
			if is.keys == nil {
				url, setting, refresh := issuerSource(cfg, name, iss)
				src, err := newJWKSSource(iss, url, is.algorithms, setting, refresh, log)
				if err != nil {
					return nil, fmt.Errorf("service %s, issuer %s: %w", name, iss, err)
				}
				is.keys = src
			}
		}
	}
	if err := t.Reload(ctx); err != nil {
		return nil, err
	}
	if err := t.Rotate(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// issuerSource is the JWKS URL and refresh interval of issuer of service, and the configuration
// path of its algorithms.
func issuerSource(cfg *config.Config, service, issuer string) (url, algorithms string, refresh time.Duration) {
	for i, svc := range cfg.Services {
		if svc.Name != service {
			continue
		}
		for j, is := range svc.Issuers {
			if is.Issuer == issuer {
				return is.JWKSURL, fmt.Sprintf("services[%d].issuers[%d].algorithms", i, j), is.RefreshInterval
			}
		}
	}
	return "", "", 0
}

// Reload reads the signing keys and revocations from the store.
func (t *Tokens) Reload(ctx context.Context) error {
	if err := t.reloadSigningKeys(ctx); err != nil {
		return err
	}
	revs, err := t.store.Revocations(ctx)
	if err != nil {
		return err
	}
	for _, r := range revs {
		t.revoked.add(revocationID(r.Issuer, r.JTI), r.Expires)
	}
	return nil
}

// reloadSigningKeys replaces the signing keys with the store's. It holds the rotation lock from
// the read to the replacement, so that a rotation on this instance cannot happen in between and
// be undone by the older set (a change notice's reload often overlaps this instance's own change).
func (t *Tokens) reloadSigningKeys(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	recs, err := t.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	return t.setSigningKeys(recs)
}

func (t *Tokens) setSigningKeys(recs []SigningKeyRecord) error {
	ks := &signingKeys{byKID: map[string]*signingKey{}, verifier: map[string]ed25519.PublicKey{}}
	for _, r := range recs {
		if len(r.Seed) != ed25519.SeedSize {
			return fmt.Errorf("signing key %s: stored seed has %d bytes", r.KID, len(r.Seed))
		}
		priv := ed25519.NewKeyFromSeed(r.Seed)
		k := &signingKey{rec: r, priv: priv, pub: priv.Public().(ed25519.PublicKey)}
		ks.byKID[r.KID] = k
		ks.verifier[r.KID] = k.pub
		ks.ordered = append(ks.ordered, k)
	}
	slices.SortFunc(ks.ordered, func(a, b *signingKey) int { return a.rec.CreatedAt.Compare(b.rec.CreatedAt) })
	if n := len(ks.ordered); n > 0 {
		ks.active = ks.ordered[n-1]
	}
	t.signing.Store(ks)
	return nil
}

// signingKeyAdder is a store shared by several instances, which makes a new signing key only when
// no other instance made one meanwhile (RedisStore).
type signingKeyAdder interface {
	AddSigningKey(ctx context.Context, rec SigningKeyRecord, known []string) (bool, error)
}

// Rotate makes a new signing key when the active one is older than tokens.key_rotation (or there
// is none), and drops keys that can no longer have a valid token: those replaced more than
// tokens.max_lifetime plus the leeway ago.
func (t *Tokens) Rotate(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	ks := t.signing.Load()
	if ks.active == nil || now.Sub(ks.active.rec.CreatedAt) >= t.cfg.KeyRotation {
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		kidBytes := make([]byte, 12)
		rand.Read(kidBytes)
		rec := SigningKeyRecord{KID: base64.RawURLEncoding.EncodeToString(kidBytes), Seed: seed, CreatedAt: now.UTC()}
		added := true
		if shared, ok := t.store.(signingKeyAdder); ok {
			known := make([]string, 0, len(ks.byKID))
			for kid := range ks.byKID {
				known = append(known, kid)
			}
			var err error
			if added, err = shared.AddSigningKey(ctx, rec, known); err != nil {
				return fmt.Errorf("saving a new signing key: %w", err)
			}
		} else if err := t.store.PutSigningKey(ctx, rec); err != nil {
			return fmt.Errorf("saving a new signing key: %w", err)
		}
		if added {
			t.log.Info("new token signing key", "kid", rec.KID)
		} else {
			t.log.Info("another instance made a new token signing key; using it")
		}
	}
	recs, err := t.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b SigningKeyRecord) int { return a.CreatedAt.Compare(b.CreatedAt) })
	keep := recs[:0:0]
	for i, r := range recs {
		if i+1 < len(recs) && now.Sub(recs[i+1].CreatedAt) > t.cfg.MaxLifetime+t.cfg.Leeway {
			if err := t.store.DeleteSigningKey(ctx, r.KID); err != nil {
				return err
			}
			t.log.Info("retired token signing key", "kid", r.KID)
			continue
		}
		keep = append(keep, r)
	}
	return t.setSigningKeys(keep)
}

// RunMaintenance rotates signing keys, reloads them and revocations from the store, and prunes
// expired revocations, every interval until ctx ends.
func (t *Tokens) RunMaintenance(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := t.Rotate(cctx); err != nil {
			t.log.Warn("rotating token signing keys", "err", err)
		}
		if err := t.Reload(cctx); err != nil {
			t.log.Warn("reloading token state", "err", err)
		}
		cancel()
		t.revoked.prune(t.now().Add(-t.cfg.Leeway))
		t.cache.prune(t.now().Add(-t.cfg.Leeway))
	}
}

// Mint makes a token for principal p to call service, and records it in the activity log.
// p must hold tokens:mint (ErrForbidden); service must use token auth (ErrNotTokenService).
func (t *Tokens) Mint(ctx context.Context, p Principal, service string) (TokenResponse, error) {
	if !p.Can(TokensMint) {
		t.activity.Record(ctx, OpTokenMint, p.Name, service, ResultDenied)
		return TokenResponse{}, ErrForbidden
	}
	svc := t.services[service]
	if svc == nil {
		return TokenResponse{}, ErrNotTokenService
	}
	resp, err := t.mint(p, service, svc)
	result := ResultSuccess
	if err != nil {
		result = ResultFailed
	}
	t.activity.Record(ctx, OpTokenMint, p.Name, service, result)
	return resp, err
}

func (t *Tokens) mint(p Principal, service string, svc *tokenService) (TokenResponse, error) {
	ks := t.signing.Load()
	if ks.active == nil {
		return TokenResponse{}, errors.New("no signing key")
	}
	now := t.now().Truncate(time.Second)
	exp := now.Add(svc.lifetime)
	jti := make([]byte, 16)
	rand.Read(jti)
	pid := t.principals.keyID(p.Name)
	if pid == "" {
		return TokenResponse{}, ErrPrincipalUnknown
	}
	claims := ownClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    t.cfg.Issuer,
			Subject:   p.Name,
			Audience:  jwt.ClaimStrings{service},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
		PID: pid,
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = ks.active.rec.KID
	signed, err := tok.SignedString(ks.active.priv)
	if err != nil {
		return TokenResponse{}, fmt.Errorf("signing a token: %w", err)
	}
	return TokenResponse{
		AccessToken:         signed,
		TokenType:           "Bearer",
		ExpiryTimeUTC:       exp.Unix(),
		RefreshAfterTimeUTC: now.Add(svc.refreshAfter).Unix(),
	}, nil
}

// ErrNotTokenService is returned when tokens are asked for a service that does not use them.
var ErrNotTokenService = errors.New("the service does not use token auth")

// Verify checks token for service and returns its claims. A token the gateway has already
// checked is answered from a cache that never outlives the token's expiry, its revocation or its
// principal. Errors: ErrInvalidCredential, ErrForbidden (a valid token of a principal whose role
// may not call services).
func (t *Tokens) Verify(service string, token []byte) (TokenClaims, error) {
	claims, _, err := t.verifyCaller(service, token)
	return claims, err
}

// verifyCaller is Verify, with the caller's name for telemetry and usage ("principal:<subject>"),
// built once per token and kept in the cache beside its claims.
func (t *Tokens) verifyCaller(service string, token []byte) (TokenClaims, string, error) {
	if len(token) > t.cfg.MaxBytes {
		return TokenClaims{}, "", ErrInvalidCredential
	}
	now := t.now()
	if e := t.cache.get(token); e != nil {
		if e.service == service && now.Before(e.claims.ExpiresAt.Add(t.cfg.Leeway)) && !t.revoked.revoked(e.revocationID) &&
			(e.keyKnown == nil || e.keyKnown()) { // an external issuer may have withdrawn the key
			if err := t.checkPrincipal(e.claims, e.pid, e.own); err == nil || errors.Is(err, ErrForbidden) {
				return e.claims, e.caller, err
			}
		}
		// Not for this service, or no longer valid: check it afresh (and fail) below.
	}
	v, err := t.verify(service, token, now)
	if err != nil {
		return TokenClaims{}, "", err
	}
	claims, pid, own := v.claims, v.pid, v.own
	revID := revocationID(claims.Issuer, claims.ID)
	if t.revoked.revoked(revID) {
		return TokenClaims{}, "", ErrInvalidCredential
	}
	err = t.checkPrincipal(claims, pid, own)
	if err != nil && !errors.Is(err, ErrForbidden) {
		return TokenClaims{}, "", err
	}
	entry := &cachedToken{service: service, claims: claims, pid: pid, own: own, revocationID: revID,
		caller: "principal:" + claims.Subject}
	if k, ok := v.keys.(interface{ Known(kid string) bool }); ok && !own {
		entry.keyKnown = func() bool { return k.Known(v.kid) }
	}
	t.cache.put(token, entry)
	return claims, entry.caller, err
}

// checkPrincipal makes a token of the gateway's own die with its principal: the principal must
// still exist with the same key, and its role must allow calling services.
func (t *Tokens) checkPrincipal(c TokenClaims, pid string, own bool) error {
	if !own {
		return nil
	}
	p, ok := t.principals.Lookup(c.Subject)
	if !ok || t.principals.keyID(c.Subject) != pid {
		return ErrInvalidCredential
	}
	if !p.Can(ServicesCall) {
		return ErrForbidden
	}
	return nil
}

// registeredClaims are the claim names JWT defines; a token carrying one of them twice, or in
// another case, is refused (Go's JSON decoding would take the last, or match case-insensitively).
var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "pid"}

// verify does the full, uncached check of a compact JWS.
// verified is what the full check of a token found.
type verified struct {
	claims TokenClaims
	pid    string
	own    bool      // minted by this gateway
	kid    string    // the key that signed it
	keys   KeySource // where that key came from
}

func (t *Tokens) verify(service string, token []byte, now time.Time) (verified, error) {
	fail := func() (verified, error) { return verified{}, ErrInvalidCredential }
	svc := t.services[service]
	if svc == nil {
		return fail()
	}
	parts := bytes.SplitN(token, []byte("."), 4) // not Split: a flood of dots must not allocate a slice per dot
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return fail()
	}
	strict := base64.RawURLEncoding.Strict()
	headerJSON, err := strict.DecodeString(string(parts[0]))
	if err != nil {
		return fail()
	}
	payload, err := strict.DecodeString(string(parts[1]))
	if err != nil {
		return fail()
	}
	var header struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Typ  string          `json:"typ"`
		Crit json.RawMessage `json:"crit"`
		B64  json.RawMessage `json:"b64"`
		Zip  json.RawMessage `json:"zip"`
		Enc  json.RawMessage `json:"enc"`
		Cty  json.RawMessage `json:"cty"`
	}
	// No duplicate names; no critical extensions (none is understood), no unencoded payload,
	// compression, encryption or nested token; a kid that is a string.
	if !uniqueNames(headerJSON, nil) || json.Unmarshal(headerJSON, &header) != nil ||
		header.Crit != nil || header.B64 != nil || header.Zip != nil || header.Enc != nil || header.Cty != nil ||
		header.Alg == "" || header.Kid == "" {
		return fail()
	}
	if header.Typ != "" && !strings.EqualFold(header.Typ, "JWT") && !strings.EqualFold(header.Typ, "at+jwt") {
		return fail()
	}
	if !utf8.Valid(payload) || !uniqueNames(payload, registeredClaims) {
		return fail()
	}
	var peek struct {
		Iss string `json:"iss"`
		// golang-jwt's NumericDate also takes a number in a string; RFC 7519 allows only a number.
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
		Iat json.RawMessage `json:"iat"`
	}
	quoted := func(r json.RawMessage) bool { return len(r) > 0 && r[0] == '"' }
	if json.Unmarshal(payload, &peek) != nil || quoted(peek.Exp) || quoted(peek.Nbf) || quoted(peek.Iat) {
		return fail()
	}

	// The key set, algorithms and audience follow from the issuer; nothing in the token picks a
	// key except its kid within that set.
	var (
		keys     KeySource
		algs     []string
		audience string
		own      = peek.Iss == t.cfg.Issuer
	)
	if own {
		keys, algs, audience = ownKeys{t}, []string{jwt.SigningMethodEdDSA.Alg()}, service
	} else if is := svc.issuers[peek.Iss]; is != nil && peek.Iss != "" {
		keys, algs, audience = is.keys, is.algorithms, is.audience
	} else {
		return fail()
	}
	if !slices.Contains(algs, header.Alg) {
		return fail()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	parser := jwt.NewParser(
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithAudience(audience),
		jwt.WithIssuer(peek.Iss),
		jwt.WithLeeway(t.cfg.Leeway),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	var claims ownClaims
	_, err = parser.ParseWithClaims(string(token), &claims, func(tok *jwt.Token) (any, error) {
		key, alg, err := keys.Key(ctx, header.Kid)
		if err != nil {
			return nil, err
		}
		if alg != tok.Method.Alg() { // a key verifies one algorithm (RFC 8725 section 3.1)
			return nil, errors.New("key and token algorithms differ")
		}
		return key, nil
	})
	if err != nil {
		return fail()
	}
	c := claims.RegisteredClaims
	switch {
	case c.IssuedAt == nil, c.ExpiresAt == nil, c.ID == "", c.Subject == "":
		return fail()
	case c.ExpiresAt.Sub(c.IssuedAt.Time) > t.cfg.MaxLifetime:
		return fail()
	case !cleanClaim(c.Subject) || !cleanClaim(c.ID) || !cleanClaim(c.Issuer):
		return fail()
	}
	for _, a := range c.Audience {
		if !cleanClaim(a) {
			return fail()
		}
	}
	return verified{
		claims: TokenClaims{
			Issuer:    c.Issuer,
			Subject:   c.Subject,
			Audience:  c.Audience,
			ID:        c.ID,
			IssuedAt:  c.IssuedAt.Time,
			ExpiresAt: c.ExpiresAt.Time,
		},
		pid: claims.PID, own: own, kid: header.Kid, keys: keys,
	}, nil
}

// cleanClaim refuses claim values that decoding made lossy (U+FFFD from invalid UTF-8 or lone
// surrogates) or that carry control characters, which could split a header or a log line.
func cleanClaim(s string) bool {
	if len(s) > 1024 {
		return false
	}
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// uniqueNames reports whether the JSON object b has no member name twice, and no name that
// matches one of caseSensitive in another case.
func uniqueNames(b []byte, caseSensitive []string) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		name, ok := tok.(string)
		if !ok || seen[name] {
			return false
		}
		seen[name] = true
		for _, r := range caseSensitive {
			if name != r && strings.EqualFold(name, r) {
				return false
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return false
	}
	_, err := dec.Token()
	return errors.Is(err, io.EOF)
}

// ownKeys is the KeySource of the gateway's own signing keys.
type ownKeys struct{ t *Tokens }

func (o ownKeys) Key(_ context.Context, kid string) (crypto.PublicKey, string, error) {
	k := o.t.signing.Load().verifier[kid]
	if k == nil {
		return nil, "", ErrUnknownKey
	}
	return k, jwt.SigningMethodEdDSA.Alg(), nil
}

// Revoke refuses the token with this issuer and jti from now until exp, on every instance that
// shares the store.
func (t *Tokens) Revoke(ctx context.Context, iss, jti string, exp time.Time) error {
	if jti == "" {
		return errors.New("a revocation needs the token's jti")
	}
	if iss == "" {
		iss = t.cfg.Issuer
	}
	// Keep it a leeway past exp, so the token cannot come back while clocks disagree.
	exp = exp.Add(t.cfg.Leeway)
	if err := t.store.PutRevocation(ctx, Revocation{Issuer: iss, JTI: jti, Expires: exp}); err != nil {
		return err
	}
	t.revoked.add(revocationID(iss, jti), exp)
	return nil
}

// RevokeToken revokes the token given whole. Its signature is not checked (a forged token was
// never valid), but its issuer, jti and expiry are read from it; without an expiry it is revoked
// for tokens.max_lifetime.
func (t *Tokens) RevokeToken(ctx context.Context, token string) (TokenClaims, error) {
	var claims jwt.RegisteredClaims
	_, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	if err != nil || claims.ID == "" {
		return TokenClaims{}, errors.New("not a token with a jti")
	}
	exp := t.now().Add(t.cfg.MaxLifetime)
	if claims.ExpiresAt != nil && claims.ExpiresAt.Before(exp) {
		exp = claims.ExpiresAt.Time
	}
	c := TokenClaims{Issuer: claims.Issuer, Subject: claims.Subject, ID: claims.ID, ExpiresAt: exp}
	return c, t.Revoke(ctx, claims.Issuer, claims.ID, exp)
}

package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scoregate/scoregate/config"
)

// jwksServer is an external issuer's JWKS endpoint on loopback: it serves whatever key set (or
// failure status) the test sets, and counts the requests it gets.
type jwksServer struct {
	*httptest.Server
	requests atomic.Int64

	mu     sync.Mutex
	body   string
	status int
}

func newJWKSServer(t testing.TB, keys ...string) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.serve(keys...)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve makes the server answer 200 with a key set of keys (JWK JSON objects).
func (s *jwksServer) serve(keys ...string) {
	s.mu.Lock()
	s.body, s.status = `{"keys":[`+strings.Join(keys, ",")+`]}`, http.StatusOK
	s.mu.Unlock()
}

// fail makes the server answer status with an error body.
func (s *jwksServer) fail(status int) {
	s.mu.Lock()
	s.body, s.status = `{"error":"down"}`, status
	s.mu.Unlock()
}

func (s *jwksServer) url() string { return s.URL + "/.well-known/jwks.json" }

func rsaJWK(kid, use, alg string, pub *rsa.PublicKey) string {
	e := big.NewInt(int64(pub.E)).Bytes()
	return fmt.Sprintf(`{"kty":"RSA","kid":%s,"use":%s,"alg":%s,"n":"%s","e":"%s"}`,
		jstr(kid), jstr(use), jstr(alg), b64url.EncodeToString(pub.N.Bytes()), b64url.EncodeToString(e))
}

func ecJWK(kid, use string, pub *ecdsa.PublicKey) string {
	raw, err := pub.Bytes() // 0x04 || x || y
	if err != nil {
		panic(err)
	}
	n := (len(raw) - 1) / 2
	crv := map[int]string{32: "P-256", 48: "P-384", 66: "P-521"}[n]
	return fmt.Sprintf(`{"kty":"EC","kid":%s,"use":%s,"crv":%s,"x":"%s","y":"%s"}`,
		jstr(kid), jstr(use), jstr(crv), b64url.EncodeToString(raw[1:1+n]), b64url.EncodeToString(raw[1+n:]))
}

var idpRSA = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func newECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// idpToken is a token of testIdP for the service "scoring", signed by key under kid.
func (p *idp) token(t testing.TB, m jwt.SigningMethod, key any, kid string, c members) string {
	t.Helper()
	return signWith(t, m, key, p.header(m.Alg(), kid).String(), c.String())
}

// jwksEnv is a gateway whose "scoring" service accepts RS256 and ES256 tokens of testIdP, whose
// keys are served by srv.
func jwksEnv(t testing.TB, srv *jwksServer, edit func(*config.Config)) (*tokenEnv, *idp) {
	t.Helper()
	e := newTokenEnv(t, func(c *config.Config) {
		withIdP(srv.url(), "RS256", "ES256")(c)
		if edit != nil {
			edit(c)
		}
	})
	return e, &idp{e: e}
}

func TestJWKSExternalIssuer(t *testing.T) {
	rsaKey, ecKey := idpRSA(), newECKey(t, elliptic.P256())
	doc := []string{rsaJWK("rsa-1", "sig", "RS256", &rsaKey.PublicKey), ecJWK("ec-1", "sig", &ecKey.PublicKey)}
	srv := newJWKSServer(t, doc...)
	e, p := jwksEnv(t, srv, nil)

	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	bad := ErrInvalidCredential
	tests := []attack{
		{"RS256 token of the issuer", p.token(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", p.claims()), nil},
		{"ES256 token of the issuer", p.token(t, jwt.SigningMethodES256, ecKey, "ec-1", p.claims()), nil},
		{"JWT-25 wrong aud", p.token(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", p.claims().set("aud", `"api://other"`)), bad},
		{"JWT-25 aud the service's name", p.token(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", p.claims().set("aud", `"scoring"`)), bad},
		{"JWT-26 iss with a trailing slash", p.token(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", p.claims().set("iss", jstr(testIdP+"/"))), bad},
		{"JWT-26 iss http instead of https", p.token(t, jwt.SigningMethodRS256, rsaKey, "rsa-1", p.claims().set("iss", jstr(strings.Replace(testIdP, "https", "http", 1)))), bad},
		{"JWT-07 unknown kid", p.token(t, jwt.SigningMethodRS256, attackerRSA(), "rsa-2", p.claims()), bad},
		{"JWT-07 the issuer's kid, the attacker's key", p.token(t, jwt.SigningMethodRS256, attackerRSA(), "rsa-1", p.claims()), bad},
		{"JWT-04 PS256 with the issuer's RSA key, not configured", p.token(t, jwt.SigningMethodPS256, rsaKey, "rsa-1", p.claims()), bad},
		{"JWT-04 ES256 naming the RSA key", p.token(t, jwt.SigningMethodES256, ecKey, "rsa-1", p.claims()), bad},
		{"JWT-04 RS256 naming the EC key", p.token(t, jwt.SigningMethodRS256, rsaKey, "ec-1", p.claims()), bad},
		{"JWT-05 HS256 keyed with the issuer's RSA PEM", p.token(t, jwt.SigningMethodHS256, rsaPEM, "rsa-1", p.claims()), bad},
		{"JWT-05 HS256 keyed with the JWKS document", p.token(t, jwt.SigningMethodHS256, []byte(srv.body), "rsa-1", p.claims()), bad},
		{"JWT-40 HS256 with an empty secret", p.token(t, jwt.SigningMethodHS256, []byte{}, "rsa-1", p.claims()), bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := e.tokens.Verify("scoring", []byte(tt.token))
			if !errMatches(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if err == nil && (c.Issuer != testIdP || c.Subject != "client-1") {
				t.Fatalf("claims %+v", c)
			}
			if err := e.check("scoring", tt.token); !errMatches(err, tt.want) {
				t.Fatalf("Authenticate = %v, want %v", err, tt.want)
			}
			if _, err := e.tokens.Verify("other", []byte(tt.token)); !errors.Is(err, ErrInvalidCredential) {
				t.Fatalf("on a service without the issuer: %v", err)
			}
		})
	}
	// One fetch served all of that: a known kid needs none, and the unknown kid came less than
	// jwksMinRefetch after it.
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d JWKS requests, want 1", n)
	}
}

// JWT-07: unknown kids, however many and however concurrent, cause at most one fetch per
// jwksMinRefetch.
func TestJWKSUnknownKidRefetchIsBounded(t *testing.T) {
	ecKey := newECKey(t, elliptic.P256())
	srv := newJWKSServer(t, ecJWK("ec-1", "sig", &ecKey.PublicKey))
	e, p := jwksEnv(t, srv, nil)
	if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, ecKey, "ec-1", p.claims())); err != nil {
		t.Fatalf("control: %v", err)
	}
	before := srv.requests.Load()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				tok := p.token(t, jwt.SigningMethodES256, ecKey, fmt.Sprintf("unknown-%d-%d", g, i), p.claims())
				if err := e.check("scoring", tok); !errors.Is(err, ErrInvalidCredential) {
					t.Errorf("unknown kid: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if n := srv.requests.Load() - before; n > 1 {
		t.Errorf("200 tokens with unknown kids caused %d JWKS fetches, want at most 1", n)
	}
}

// After the issuer rotates its keys, a token of the new key is accepted as soon as a refetch is
// allowed, and the removed key verifies nothing new.
func TestJWKSIssuerKeyRotation(t *testing.T) {
	const minRefetch = 300 * time.Millisecond
	saved := jwksMinRefetch
	jwksMinRefetch = minRefetch
	t.Cleanup(func() { jwksMinRefetch = saved })

	keyA, keyB := newECKey(t, elliptic.P256()), newECKey(t, elliptic.P256())
	srv := newJWKSServer(t, ecJWK("key-a", "sig", &keyA.PublicKey))
	e, p := jwksEnv(t, srv, nil)
	if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, keyA, "key-a", p.claims())); err != nil {
		t.Fatalf("token of the first key: %v", err)
	}
	fetched := time.Now()

	srv.serve(ecJWK("key-b", "sig", &keyB.PublicKey))
	tokB := p.token(t, jwt.SigningMethodES256, keyB, "key-b", p.claims())
	err := e.check("scoring", tokB)
	if time.Since(fetched) < minRefetch { // else this machine was too slow to see the window
		if !errors.Is(err, ErrInvalidCredential) {
			t.Errorf("token of the new key within jwksMinRefetch of the last fetch: %v, want a refusal", err)
		}
		if n := srv.requests.Load(); n != 1 {
			t.Errorf("%d JWKS requests within jwksMinRefetch, want 1", n)
		}
	}
	time.Sleep(time.Until(fetched.Add(minRefetch + 20*time.Millisecond)))
	if err := e.check("scoring", tokB); err != nil {
		t.Fatalf("token of the new key once a refetch is allowed: %v", err)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("%d JWKS requests, want 2", n)
	}
	// A fresh token of the removed key (not in the cache) is refused.
	if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, keyA, "key-a", p.claims())); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("token of the removed key: %v", err)
	}
}

// A token of an external issuer, already checked and cached, stops working once the issuer's key
// set no longer has its key.
func TestJWKSCachedTokenDiesWithItsKey(t *testing.T) {
	saved := jwksMinRefetch
	jwksMinRefetch = 0
	t.Cleanup(func() { jwksMinRefetch = saved })
	keyA, keyB := newECKey(t, elliptic.P256()), newECKey(t, elliptic.P256())
	srv := newJWKSServer(t, ecJWK("key-a", "sig", &keyA.PublicKey))
	e, p := jwksEnv(t, srv, nil)
	tokA := p.token(t, jwt.SigningMethodES256, keyA, "key-a", p.claims())
	for i := 0; i < 2; i++ { // checked, then from the cache
		if err := e.check("scoring", tokA); err != nil {
			t.Fatalf("try %d: %v", i, err)
		}
	}
	srv.serve(ecJWK("key-b", "sig", &keyB.PublicKey))
	// A token of the new key makes the gateway fetch the set again (an unknown kid).
	if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, keyB, "key-b", p.claims())); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if err := e.check("scoring", tokA); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("cached token of a withdrawn key: %v, want a refusal", err)
	}
}

// When the issuer cannot be reached, the keys already fetched keep serving; the failing issuer
// is retried in the background, but not hammered.
func TestJWKSServedStaleWhileTheIssuerIsDown(t *testing.T) {
	const refresh = 20 * time.Millisecond
	for _, down := range []string{"500", "closed"} {
		t.Run(down, func(t *testing.T) {
			ecKey := newECKey(t, elliptic.P256())
			srv := newJWKSServer(t, ecJWK("ec-1", "sig", &ecKey.PublicKey))
			e, p := jwksEnv(t, srv, func(c *config.Config) { c.Services[0].Issuers[0].RefreshInterval = refresh })
			if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, ecKey, "ec-1", p.claims())); err != nil {
				t.Fatalf("control: %v", err)
			}
			if down == "500" {
				srv.fail(http.StatusInternalServerError)
			} else {
				srv.Close()
			}
			before := srv.requests.Load()
			start := time.Now()
			var refused int
			for time.Since(start) < 15*refresh {
				// A fresh token each time, so that the key, not the cache, is asked.
				if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, ecKey, "ec-1", p.claims())); err != nil {
					refused++
				}
				time.Sleep(time.Millisecond)
			}
			if refused > 0 {
				t.Errorf("%d tokens of a known key refused while the issuer was down", refused)
			}
			if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, ecKey, "ec-2", p.claims())); !errors.Is(err, ErrInvalidCredential) {
				t.Errorf("unknown kid while the issuer is down: %v", err)
			}
			if down == "500" {
				elapsed := time.Since(start)
				n := srv.requests.Load() - before
				if n == 0 {
					t.Error("the stale keys were never refreshed in the background")
				}
				if limit := int64(elapsed/refresh) + 2; n > limit {
					t.Errorf("%d JWKS requests in %v while the issuer failed, want at most %d (one per refresh interval)", n, elapsed.Round(time.Millisecond), limit)
				}
			}
		})
	}
}

// Keys too weak or not meant for signatures are never used, even when named by a token.
func TestJWKSWeakAndNonSignatureKeysAreNotUsed(t *testing.T) {
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	strong, sigEC, encEC := idpRSA(), newECKey(t, elliptic.P256()), newECKey(t, elliptic.P256())
	srv := newJWKSServer(t,
		rsaJWK("weak", "sig", "RS256", &weak.PublicKey),
		rsaJWK("enc-rsa", "enc", "RS256", &strong.PublicKey),
		ecJWK("enc-ec", "enc", &encEC.PublicKey),
		ecJWK("sig-ec", "sig", &sigEC.PublicKey),
	)
	e, p := jwksEnv(t, srv, nil)
	tests := []attack{
		{"control: the signature key", p.token(t, jwt.SigningMethodES256, sigEC, "sig-ec", p.claims()), nil},
		{"RSA 1024", p.token(t, jwt.SigningMethodRS256, weak, "weak", p.claims()), ErrInvalidCredential},
		{"RSA key with use enc", p.token(t, jwt.SigningMethodRS256, strong, "enc-rsa", p.claims()), ErrInvalidCredential},
		{"EC key with use enc", p.token(t, jwt.SigningMethodES256, encEC, "enc-ec", p.claims()), ErrInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.check("scoring", tt.token); !errMatches(err, tt.want) {
				t.Fatalf("Authenticate = %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("a key set with no usable key, or over 1 MiB, is not used", func(t *testing.T) {
		for name, body := range map[string]string{
			"only unusable keys": `{"keys":[` + rsaJWK("weak", "sig", "RS256", &weak.PublicKey) + `]}`,
			"over 1 MiB":         `{"keys":[` + ecJWK("sig-ec", "sig", &sigEC.PublicKey) + `],"pad":"` + strings.Repeat("a", jwksMaxBytes) + `"}`,
			"not JSON":           `<html>`,
		} {
			srv := newJWKSServer(t)
			srv.mu.Lock()
			srv.body = body
			srv.mu.Unlock()
			e, p := jwksEnv(t, srv, nil)
			if err := e.check("scoring", p.token(t, jwt.SigningMethodES256, sigEC, "sig-ec", p.claims())); !errors.Is(err, ErrInvalidCredential) {
				t.Errorf("%s: %v", name, err)
			}
			if srv.requests.Load() != 1 {
				t.Errorf("%s: %d requests", name, srv.requests.Load())
			}
		}
	})
}

func TestParseJWKS(t *testing.T) {
	rsaKey := idpRSA()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p256, p384 := newECKey(t, elliptic.P256()), newECKey(t, elliptic.P384())
	okp := fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","kid":"k","x":"%s"}`, b64url.EncodeToString(attackerEd().Public().(ed25519.PublicKey)))
	n := b64url.EncodeToString(rsaKey.N.Bytes())
	raw, err := p256.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	offCurve := slices.Clone(raw)
	offCurve[64] ^= 1
	tests := []struct {
		name string
		key  string // a JWK of kid "k"
		keep bool
		alg  string   // the one algorithm the kept key is limited to
		algs []string // the issuer's algorithms, if not every one
	}{
		{"RSA 2048 RS256", rsaJWK("k", "sig", "RS256", &rsaKey.PublicKey), true, "RS256", nil},
		{"RSA 2048 without alg or use, the issuer's one RSA algorithm", `{"kty":"RSA","kid":"k","n":"` + n + `","e":"AQAB"}`, true, "PS512", []string{"ES256", "PS512"}},
		{"RSA 2048 without alg, every RSA algorithm allowed", `{"kty":"RSA","kid":"k","n":"` + n + `","e":"AQAB"}`, false, "", nil},
		{"RSA 2048 RS256, the issuer's algorithms PS256", rsaJWK("k", "sig", "RS256", &rsaKey.PublicKey), false, "", []string{"PS256"}},
		{"EC P-256, the issuer's algorithms ES384", ecJWK("k", "sig", &p256.PublicKey), false, "", []string{"ES384"}},
		{"Ed25519, the issuer's algorithms RS256", okp, false, "", []string{"RS256"}},
		{"EC P-256", ecJWK("k", "sig", &p256.PublicKey), true, "ES256", nil},
		{"EC P-384 without use", ecJWK("k", "", &p384.PublicKey), true, "ES384", nil},
		{"Ed25519", okp, true, "EdDSA", nil},
		{"RSA 2048 PS384", rsaJWK("k", "sig", "PS384", &rsaKey.PublicKey), true, "PS384", nil},
		{"RSA claiming HS256", rsaJWK("k", "sig", "HS256", &rsaKey.PublicKey), false, "", nil},
		{"RSA claiming RSA-OAEP (an encryption algorithm)", rsaJWK("k", "", "RSA-OAEP", &rsaKey.PublicKey), false, "", nil},
		{"RSA claiming ES256", rsaJWK("k", "sig", "ES256", &rsaKey.PublicKey), false, "", nil},
		{"RSA 1024", rsaJWK("k", "sig", "RS256", &weak.PublicKey), false, "", nil},
		{"RSA e=1", `{"kty":"RSA","kid":"k","n":"` + n + `","e":"AQ"}`, false, "", nil},
		{"RSA e of 5 bytes", `{"kty":"RSA","kid":"k","n":"` + n + `","e":"AQAAAAE"}`, false, "", nil},
		{"RSA n not base64url", `{"kty":"RSA","kid":"k","n":"+/+/","e":"AQAB"}`, false, "", nil},
		{"use enc", ecJWK("k", "enc", &p256.PublicKey), false, "", nil},
		{"no kid", ecJWK("", "sig", &p256.PublicKey), false, "", nil},
		{"EC P-256 claiming ES384", strings.Replace(ecJWK("k", "sig", &p256.PublicKey), `"kty"`, `"alg":"ES384","kty"`, 1), false, "", nil},
		{"EC point off the curve", fmt.Sprintf(`{"kty":"EC","kid":"k","crv":"P-256","x":"%s","y":"%s"}`, b64url.EncodeToString(offCurve[1:33]), b64url.EncodeToString(offCurve[33:])), false, "", nil},
		{"EC short coordinate", fmt.Sprintf(`{"kty":"EC","kid":"k","crv":"P-256","x":"%s","y":"%s"}`, b64url.EncodeToString(raw[2:33]), b64url.EncodeToString(raw[33:])), false, "", nil},
		{"EC unknown curve", `{"kty":"EC","kid":"k","crv":"secp256k1","x":"AA","y":"AA"}`, false, "", nil},
		{"oct (an HMAC secret)", `{"kty":"oct","kid":"k","k":"c2VjcmV0"}`, false, "", nil},
		{"OKP X25519", `{"kty":"OKP","crv":"X25519","kid":"k","x":"` + b64url.EncodeToString(make([]byte, 32)) + `"}`, false, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			algs := tt.algs
			if algs == nil {
				algs = config.ExternalAlgorithms
			}
			keys, _, err := parseJWKS([]byte(`{"keys":[`+tt.key+`]}`), algs)
			if !tt.keep {
				if err == nil { // the only key skipped: no usable key
					t.Fatalf("parseJWKS kept %v, want the key skipped", keys)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k, ok := keys["k"]; !ok || k.alg != tt.alg {
				t.Fatalf("key k = %+v, %v; want one limited to %q", k, ok, tt.alg)
			}
		})
	}
	for _, body := range []string{``, `null`, `[]`, `{"keys":[]}`, `{"keys":{}}`, `not json`} {
		if _, _, err := parseJWKS([]byte(body), config.ExternalAlgorithms); err == nil {
			t.Errorf("parseJWKS(%q) succeeded", body)
		}
	}
}

// rsaJWKWithoutAlg is an RSA signing key published without alg, as Microsoft Entra ID publishes
// its keys.
func rsaJWKWithoutAlg(kid string, pub *rsa.PublicKey) string {
	return strings.Replace(rsaJWK(kid, "sig", "", pub), `"alg":"",`, "", 1)
}

func okpJWK(kid string, pub ed25519.PublicKey) string {
	return fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","kid":%s,"x":"%s"}`, jstr(kid), b64url.EncodeToString(pub))
}

// Issue 17, finding 6: every issuer key verifies exactly one algorithm (RFC 8725 section 3.1). A
// key without alg gets its one algorithm from its type and the issuer's algorithms; where those
// leave several (an RSA key, with RS256 and PS256 both allowed) the key is not used, and one log
// line says which setting fixes it. A key whose alg the issuer does not allow is not used either.
func TestJWKSKeyVerifiesOneAlgorithm(t *testing.T) {
	rsaKey, p256, p384 := idpRSA(), newECKey(t, elliptic.P256()), newECKey(t, elliptic.P384())
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A token signed with m by key, naming kid.
	type signed struct {
		m   jwt.SigningMethod
		key any
		kid string
	}
	rs256 := signed{jwt.SigningMethodRS256, rsaKey, "rsa"}
	ps256 := signed{jwt.SigningMethodPS256, rsaKey, "rsa"}
	rs384 := signed{jwt.SigningMethodRS384, rsaKey, "rsa"}
	es256 := signed{jwt.SigningMethodES256, p256, "ec"}
	es384 := signed{jwt.SigningMethodES384, p384, "ec"}
	eddsa := signed{jwt.SigningMethodEdDSA, ed, "ed"}
	// An ES256 token naming the P-384 key, an ES384 token naming the P-256 key.
	es256OtherCurve := signed{jwt.SigningMethodES256, p256, "ec"}
	es384OtherCurve := signed{jwt.SigningMethodES384, p384, "ec"}
	// Every set also publishes an unrelated Ed25519 key, and every issuer allows EdDSA, so that
	// the set always has a usable key.
	other := okpJWK("other", ed.Public().(ed25519.PublicKey))
	const fix = "services[0].issuers[0].algorithms"
	tests := []struct {
		name       string
		key        string // the JWK under test
		algorithms []string
		accepted   []signed
		refused    []signed
		logged     bool // one warning naming the key and the setting to change
	}{
		{"RSA without alg, issuer allows RS256: RS256 only", rsaJWKWithoutAlg("rsa", &rsaKey.PublicKey),
			[]string{"RS256"}, []signed{rs256}, []signed{ps256, rs384}, false},
		{"RSA without alg, issuer allows PS256: PS256 only", rsaJWKWithoutAlg("rsa", &rsaKey.PublicKey),
			[]string{"PS256"}, []signed{ps256}, []signed{rs256, rs384}, false},
		{"RSA without alg, issuer allows RS256 and ES256: RS256 only", rsaJWKWithoutAlg("rsa", &rsaKey.PublicKey),
			[]string{"RS256", "ES256"}, []signed{rs256}, []signed{ps256}, false},
		{"RSA without alg, issuer allows RS256 and PS256: not used", rsaJWKWithoutAlg("rsa", &rsaKey.PublicKey),
			[]string{"RS256", "PS256"}, nil, []signed{rs256, ps256}, true},
		{"RSA without alg, issuer allows RS256 and RS384: not used", rsaJWKWithoutAlg("rsa", &rsaKey.PublicKey),
			[]string{"RS256", "RS384", "EdDSA"}, nil, []signed{rs256, rs384}, true},
		{"RSA with alg PS256, issuer allows RS256 and PS256: PS256 only", rsaJWK("rsa", "sig", "PS256", &rsaKey.PublicKey),
			[]string{"RS256", "PS256"}, []signed{ps256}, []signed{rs256}, false},
		{"RSA with alg PS256, issuer allows RS256 only: not used", rsaJWK("rsa", "sig", "PS256", &rsaKey.PublicKey),
			[]string{"RS256"}, nil, []signed{rs256, ps256}, false},
		{"EC P-256 without alg: ES256 only", ecJWK("ec", "sig", &p256.PublicKey),
			[]string{"ES256", "ES384"}, []signed{es256}, []signed{es384OtherCurve}, false},
		{"EC P-384 without alg: ES384 only", ecJWK("ec", "sig", &p384.PublicKey),
			[]string{"ES256", "ES384"}, []signed{es384}, []signed{es256OtherCurve}, false},
		{"EC P-384 without alg, issuer allows ES256 only: not used", ecJWK("ec", "sig", &p384.PublicKey),
			[]string{"ES256"}, nil, []signed{es384}, false},
		{"Ed25519 without alg: EdDSA", okpJWK("ed", ed.Public().(ed25519.PublicKey)),
			[]string{"RS256", "PS256", "EdDSA"}, []signed{eddsa}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, tt.key, other)
			algorithms := tt.algorithms
			if !slices.Contains(algorithms, "EdDSA") {
				algorithms = append(slices.Clone(algorithms), "EdDSA") // for the other key
			}
			e := newTokenEnv(t, withIdP(srv.url(), algorithms...))
			var logBuf syncBuffer
			log := slog.New(slog.NewTextHandler(&logBuf, nil))
			tokens, err := NewTokens(context.Background(), e.cfg, e.store, e.principals, log, WithClock(e.clock))
			if err != nil {
				t.Fatal(err)
			}
			p := &idp{e: e}
			for _, s := range tt.accepted {
				if _, err := tokens.Verify("scoring", []byte(p.token(t, s.m, s.key, s.kid, p.claims()))); err != nil {
					t.Errorf("%s token naming kid %s: %v, want accepted", s.m.Alg(), s.kid, err)
				}
			}
			for _, s := range tt.refused {
				if _, err := tokens.Verify("scoring", []byte(p.token(t, s.m, s.key, s.kid, p.claims()))); !errors.Is(err, ErrInvalidCredential) {
					t.Errorf("%s token naming kid %s: %v, want refused", s.m.Alg(), s.kid, err)
				}
			}
			var lines []string
			for line := range strings.Lines(logBuf.String()) {
				if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
					lines = append(lines, line)
				}
			}
			switch {
			case !tt.logged && len(lines) != 0:
				t.Errorf("logged:\n%s", strings.Join(lines, ""))
			case tt.logged && (len(lines) != 1 || !strings.Contains(lines[0], "kid=rsa") || !strings.Contains(lines[0], fix) ||
				!strings.Contains(lines[0], srv.url()) || !strings.Contains(lines[0], strings.Join(algorithms, " "))):
				t.Errorf("want one line naming the JWKS URL, kid=rsa, the issuer's algorithms %v and %s; logged:\n%s", algorithms, fix, logBuf.String())
			}
		})
	}
}

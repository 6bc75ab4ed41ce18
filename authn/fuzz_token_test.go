package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// FuzzVerifyToken feeds arbitrary strings to (*Tokens).Verify. Invariants: no panic; every
// refusal is ErrInvalidCredential or ErrForbidden; and a token is accepted only if it is, byte
// for byte, what the gateway's signing key makes: its signature verifies under the key its kid
// names, equals the key's (deterministic) Ed25519 signature of the exact signing input, and every
// segment is the canonical base64url of its bytes. The key signs nothing but this setup's seeds,
// so nothing the fuzzer derives from them (a re-encoding, a twin signature, a spliced segment)
// may pass.
//
// The signing key is fixed, and the seeds are tokens of the built-in owner, so that a seed made
// by one fuzzing process is just as valid in another: each worker builds its own environment,
// which is also why the check is "signed by the key" rather than "in this process's seed set".
func FuzzVerifyToken(f *testing.F) {
	e := newTokenEnv(f, nil)
	ctx := context.Background()
	seed := sha256.Sum256([]byte("scoregate FuzzVerifyToken signing key"))
	rec := SigningKeyRecord{KID: "fuzz-key", Seed: seed[:], CreatedAt: e.clock().Add(time.Minute).UTC()}
	if err := e.store.PutSigningKey(ctx, rec); err != nil {
		f.Fatal(err)
	}
	if err := e.tokens.Reload(ctx); err != nil {
		f.Fatal(err)
	}
	fg := newForger(e, OwnerName)
	if fg.kid != rec.KID {
		f.Fatalf("active key %s, want the fixed one", fg.kid)
	}
	minted := e.mint(f, mustLookup(f, e, OwnerName), "scoring").AccessToken
	if _, err := e.tokens.Verify("scoring", []byte(minted)); err != nil {
		f.Fatalf("control: minted token refused: %v", err)
	}
	f.Add(minted)
	for _, m := range tokenMutations(minted) {
		f.Add(m)
	}
	for _, a := range jwtAttacks(f, fg) {
		if len(a.token) <= 16<<10 { // the large ones only slow the fuzzer; TestJWTAttacks runs them
			f.Add(a.token)
		}
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := e.tokens.Verify("scoring", []byte(tok))
		if err != nil {
			if !errors.Is(err, ErrInvalidCredential) && !errors.Is(err, ErrForbidden) {
				t.Fatalf("Verify(%q) = %v, want ErrInvalidCredential or ErrForbidden", tok, err)
			}
			return
		}
		if why := notGatewaySigned(e, tok); why != "" {
			t.Fatalf("Verify accepted %q: %s", tok, why)
		}
		if c.Issuer != e.cfg.Tokens.Issuer || c.ID == "" || c.Subject == "" || !slices.Contains(c.Audience, "scoring") {
			t.Fatalf("Verify accepted %q with claims %+v", tok, c)
		}
	})
}

// notGatewaySigned says why tok is not exactly a token signed by one of the gateway's keys, or "".
func notGatewaySigned(e *tokenEnv, tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Sprintf("%d segments", len(parts))
	}
	strict := b64url.Strict()
	var segs [3][]byte
	for i, p := range parts {
		b, err := strict.DecodeString(p)
		if err != nil {
			return fmt.Sprintf("segment %d is not strict base64url: %v", i, err)
		}
		if b64url.EncodeToString(b) != p {
			return fmt.Sprintf("segment %d is not canonical base64url", i)
		}
		segs[i] = b
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(segs[0], &h); err != nil {
		return "header: " + err.Error()
	}
	k := e.tokens.signing.Load().byKID[h.Kid]
	if k == nil {
		return "kid of no gateway key"
	}
	input := []byte(parts[0] + "." + parts[1])
	if !ed25519.Verify(k.pub, input, segs[2]) {
		return "the signature does not verify"
	}
	if string(ed25519.Sign(k.priv, input)) != string(segs[2]) {
		return "the signature is not the one the gateway's key makes"
	}
	return ""
}

// tokenMutations are small changes to a valid token, each of which must be refused.
func tokenMutations(tok string) []string {
	parts := strings.Split(tok, ".")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	h, p, s := len(parts[0]), len(parts[0])+1+len(parts[1]), len(tok)
	out := []string{
		flip(tok, 0), flip(tok, h/2), flip(tok, h-1), // header
		flip(tok, h+1), flip(tok, (h+p)/2), flip(tok, p-1), // payload
		flip(tok, p+1), flip(tok, (p+s)/2), flip(tok, s-2), // signature
		flipLastBits(tok, 1), flipLastBits(tok, 15),
		tok[:s-1], tok[:p], tok[:p+1], tok[:h],
		tok + ".", tok + "=", tok + "==", "." + tok, tok + "." + parts[2],
		parts[1] + "." + parts[0] + "." + parts[2], // header and payload swapped
		parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])/2],
		strings.ToUpper(tok[:1]) + strings.ToLower(tok[1:]),
		strings.NewReplacer("-", "+", "_", "/").Replace(tok),
		strings.ReplaceAll(tok, ".", ".."),
		tok + " ", " " + tok, tok + "\x00",
	}
	return slices.DeleteFunc(out, func(m string) bool { return m == tok })
}

// FuzzParseJWKS feeds arbitrary documents to parseJWKS, the parser of an external issuer's key
// set, for an issuer allowed the algorithms of config.ExternalAlgorithms picked by the bits of
// algs. Invariants: no panic; every key it keeps has a kid, is of a supported type and strength,
// and is limited to one algorithm that fits it and that the issuer may use.
func FuzzParseJWKS(f *testing.F) {
	p256 := newECKey(f, elliptic.P256())
	f.Add(`{"keys":[`+rsaJWK("rsa", "sig", "RS256", &idpRSA().PublicKey)+`,`+ecJWK("ec", "sig", &p256.PublicKey)+`]}`, uint16(0x3ff))
	f.Add(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"`+b64url.EncodeToString(make([]byte, 32))+`"}]}`, uint16(0x200))
	f.Add(`{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"},{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}`, uint16(0x009))
	f.Add(`{"keys":[{"kty":"EC","kid":"k","crv":"P-256","x":"AA","y":"AA","alg":"ES384","use":"enc"}]}`, uint16(0x040))
	f.Add(`{"keys":null}`, uint16(0x3ff))
	f.Add(`[]`, uint16(0x3ff))
	f.Fuzz(func(t *testing.T, doc string, algs uint16) {
		var allowed []string
		for i, a := range config.ExternalAlgorithms {
			if algs&(1<<i) != 0 {
				allowed = append(allowed, a)
			}
		}
		keys, _, err := parseJWKS([]byte(doc), allowed)
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("no error and no key")
		}
		for kid, k := range keys {
			if kid == "" {
				t.Fatal("a key without kid")
			}
			if !slices.Contains(allowed, k.alg) {
				t.Fatalf("key limited to %q, not one of the issuer's %v", k.alg, allowed)
			}
			switch pub := k.key.(type) {
			case *rsa.PublicKey:
				if pub.N.BitLen() < 2048 || pub.E < 3 {
					t.Fatalf("weak RSA key kept: %d bits, e=%d", pub.N.BitLen(), pub.E)
				}
				if !slices.Contains(rsaAlgorithms, k.alg) {
					t.Fatalf("RSA key limited to %q", k.alg)
				}
			case *ecdsa.PublicKey:
				want := map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[pub.Curve.Params().Name]
				if k.alg != want {
					t.Fatalf("EC key on %s limited to %q", pub.Curve.Params().Name, k.alg)
				}
			case ed25519.PublicKey:
				if len(pub) != ed25519.PublicKeySize || k.alg != "EdDSA" {
					t.Fatalf("Ed25519 key of %d bytes limited to %q", len(pub), k.alg)
				}
			default:
				t.Fatalf("key of type %T kept", k.key)
			}
		}
	})
}

package authn

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/scoregate/scoregate/config"
)

// Tokens forged by hand: header and payload are written as raw JSON (so that they can carry
// duplicate names, odd types, invalid UTF-8) and signed over "header.payload". Attacks signed
// with the gateway's own key show that the check under test, not the signature, refuses them;
// every table has a control that the same forging, with nothing wrong, is accepted.
//
// JWT-44 (token in the query string) does not apply here: authn only ever sees the Authorization
// header values; the proxy tests cover the query string.
//
// JWT-52 (Wycheproof JWS and JOSE cookbook vector replay) is not run: the vectors are not
// vendored in this repository.

var b64url = base64.RawURLEncoding

func b64seg(s string) string { return b64url.EncodeToString([]byte(s)) }

// jstr is s as a JSON string.
func jstr(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func jnum(n int64) string { return strconv.FormatInt(n, 10) }

// sign makes a compact JWS of the raw header and payload, signed with an Ed25519 key.
func sign(t testing.TB, priv ed25519.PrivateKey, headerJSON, payloadJSON string) string {
	t.Helper()
	input := b64seg(headerJSON) + "." + b64seg(payloadJSON)
	return input + "." + b64url.EncodeToString(ed25519.Sign(priv, []byte(input)))
}

// signWith makes a compact JWS of the raw header and payload, signed by a golang-jwt method.
func signWith(t testing.TB, m jwt.SigningMethod, key any, headerJSON, payloadJSON string) string {
	t.Helper()
	input := b64seg(headerJSON) + "." + b64seg(payloadJSON)
	sig, err := m.Sign(input, key)
	if err != nil {
		t.Fatalf("signing with %s: %v", m.Alg(), err)
	}
	return input + "." + b64url.EncodeToString(sig)
}

// members is a JSON object as an ordered list of members whose names and values are raw JSON
// (names without their quotes), so that a test can write anything into them.
type members []member

type member struct{ name, raw string }

// set replaces the first member called name, or appends one.
func (m members) set(name, raw string) members {
	out := slices.Clone(m)
	for i := range out {
		if out[i].name == name {
			out[i].raw = raw
			return out
		}
	}
	return append(out, member{name, raw})
}

// del drops every member called name.
func (m members) del(name string) members {
	return slices.DeleteFunc(slices.Clone(m), func(x member) bool { return x.name == name })
}

// add appends a member even if one of that name exists.
func (m members) add(name, raw string) members { return append(slices.Clone(m), member{name, raw}) }

func (m members) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, x := range m {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + x.name + `":` + x.raw)
	}
	b.WriteByte('}')
	return b.String()
}

// forger makes tokens with the gateway's active signing key, for subject sub on "scoring".
type forger struct {
	e    *tokenEnv
	priv ed25519.PrivateKey
	kid  string
	sub  string
	n    atomic.Int64
}

func newForger(e *tokenEnv, sub string) *forger {
	k := e.tokens.signing.Load().active
	return &forger{e: e, priv: k.priv, kid: k.rec.KID, sub: sub}
}

func (f *forger) header() members {
	return members{{"alg", `"EdDSA"`}, {"kid", jstr(f.kid)}, {"typ", `"JWT"`}}
}

// claims are those of a valid token of the gateway's, with a fresh jti.
func (f *forger) claims() members {
	now := f.e.clock().Unix()
	return members{
		{"iss", jstr(f.e.cfg.Tokens.Issuer)},
		{"sub", jstr(f.sub)},
		{"aud", `["scoring"]`},
		{"iat", jnum(now)},
		{"nbf", jnum(now)},
		{"exp", jnum(now + 3600)},
		{"jti", jstr(fmt.Sprintf("forged-%d", f.n.Add(1)))},
		{"pid", jstr(f.e.principals.keyID(f.sub))},
	}
}

func (f *forger) token(t testing.TB, h, c members) string {
	t.Helper()
	return sign(t, f.priv, h.String(), c.String())
}

// Attackers' keys, made once (RSA key generation is slow under the race detector).
var (
	attackerRSA = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	attackerEC = sync.OnceValue(func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
	attackerEd = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// flipLastBits xors the last character of tok (a 64-byte signature's last character, which
// carries 2 bits of data and 4 unused ones) with mask, keeping its data bits when mask < 16.
func flipLastBits(tok string, mask int) string {
	i := strings.IndexByte(b64Alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(b64Alphabet[i^mask])
}

type attack struct {
	name  string
	token string
	want  error // nil: accepted
}

// jwtAttacks are the tokens of the threat model's JWT section (docs/threat-model.md) against the
// gateway's own issuer, for service "scoring", made by f (whose subject must be a principal that
// may call services).
func jwtAttacks(t testing.TB, f *forger) []attack {
	t.Helper()
	e := f.e
	now := e.clock().Unix()
	h, c := f.header(), f.claims()
	good := f.token(t, h, c)
	parts := strings.Split(good, ".")
	hp := parts[0] + "." + parts[1]
	bad := ErrInvalidCredential
	var as []attack
	add := func(name, tok string, want error) { as = append(as, attack{name, tok, want}) }
	// claimsWith is a valid token but for one claim changed (raw "" deletes it).
	claimsWith := func(name, raw string) string {
		if raw == "" {
			return f.token(t, h, f.claims().del(name))
		}
		return f.token(t, h, f.claims().set(name, raw))
	}
	headerWith := func(name, raw string) string {
		if raw == "" {
			return f.token(t, h.del(name), f.claims())
		}
		return f.token(t, h.set(name, raw), f.claims())
	}

	add("control: a forged token with every claim right is accepted", good, nil)
	minted, err := e.tokens.Mint(context.Background(), mustLookup(t, e, f.sub), "scoring")
	if err != nil {
		t.Fatal(err)
	}
	add("control: a minted token is accepted", minted.AccessToken, nil)

	// JWT-01/02: alg none and its case variants, with an empty or a kept signature.
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		nh := h.set("alg", jstr(alg))
		add("JWT-01/02 alg "+alg+", empty signature", b64seg(nh.String())+"."+parts[1]+".", bad)
		add("JWT-01/02 alg "+alg+", no kid", b64seg(nh.del("kid").String())+"."+parts[1]+".", bad)
		add("JWT-02 alg "+alg+", a signature kept", b64seg(nh.String())+"."+parts[1]+"."+parts[2], bad)
	}

	// JWT-04: algorithms other than EdDSA, even with a valid signature of their own.
	pub := f.priv.Public().(ed25519.PublicKey)
	withAlg := func(m jwt.SigningMethod, key any) string {
		return signWith(t, m, key, h.set("alg", jstr(m.Alg())).String(), f.claims().String())
	}
	add("JWT-04 HS512", withAlg(jwt.SigningMethodHS512, []byte(pub)), bad)
	add("JWT-04 HS256", withAlg(jwt.SigningMethodHS256, []byte(pub)), bad)
	add("JWT-04 RS256 with the attacker's key", withAlg(jwt.SigningMethodRS256, attackerRSA()), bad)
	add("JWT-04 PS256 with the attacker's key", withAlg(jwt.SigningMethodPS256, attackerRSA()), bad)
	add("JWT-04 ES256 with the attacker's key", withAlg(jwt.SigningMethodES256, attackerEC()), bad)
	add("JWT-04 alg Ed25519 (fully specified name) with the real key", headerWith("alg", `"Ed25519"`), bad)
	add("JWT-04 alg eddsa (case variant) with the real key", headerWith("alg", `"eddsa"`), bad)
	add("JWT-04 alg missing, real key", headerWith("alg", ""), bad)

	// JWT-05: HMAC keyed with the gateway's public key, in every encoding.
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkKey := fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","kid":%s,"x":"%s"}`, jstr(f.kid), b64url.EncodeToString(pub))
	for name, key := range map[string][]byte{
		"raw":                      pub,
		"PEM":                      pemKey,
		"PEM without trailing \\n": bytes.TrimSuffix(pemKey, []byte("\n")),
		"DER":                      der,
		"JWK JSON":                 []byte(jwkKey),
	} {
		add("JWT-05 HS256 keyed with the public key, "+name, withAlg(jwt.SigningMethodHS256, key), bad)
	}

	// JWT-07/08: no kid, or a kid that names no key; no fallback to the active key.
	add("JWT-07 kid absent, real key's signature", headerWith("kid", ""), bad)
	add("JWT-07 kid unknown, real key's signature", headerWith("kid", `"no-such-key"`), bad)
	add("JWT-07 kid unknown, attacker's signature",
		sign(t, attackerEd(), h.set("kid", `"attacker"`).String(), f.claims().String()), bad)
	for _, kid := range []string{"../../../../dev/null", "/dev/null", "/invalid_path", ""} {
		add("JWT-08 kid "+strconv.Quote(kid), headerWith("kid", jstr(kid)), bad)
	}
	add("JWT-08 kid /dev/null, HS256 with an empty key",
		signWith(t, jwt.SigningMethodHS256, []byte{}, h.set("alg", `"HS256"`).set("kid", `"/dev/null"`).String(), f.claims().String()), bad)
	add("JWT-08 kid /dev/null, HS256 keyed with NUL",
		signWith(t, jwt.SigningMethodHS256, []byte{0}, h.set("alg", `"HS256"`).set("kid", `"/dev/null"`).String(), f.claims().String()), bad)

	// JWT-10: kid of odd shapes.
	add("JWT-10 kid of 64 KiB", headerWith("kid", jstr(strings.Repeat("k", 64<<10))), bad)
	add("JWT-10 kid of 5000 bytes", headerWith("kid", jstr(strings.Repeat("k", 5000))), bad)
	add("JWT-10 kid a number", headerWith("kid", `123`), bad)
	add("JWT-10 kid an object", headerWith("kid", `{"kid":`+jstr(f.kid)+`}`), bad)
	add("JWT-10 kid an array", headerWith("kid", `[`+jstr(f.kid)+`]`), bad)
	add("JWT-10 kid with CR LF", headerWith("kid", jstr(f.kid+"\r\nX-Admin: 1")), bad)
	add("JWT-10 kid with NUL", headerWith("kid", jstr(f.kid+"\x00")), bad)
	add("JWT-10 kid twice", f.token(t, h.add("kid", `"other"`), f.claims()), bad)

	// JWT-11/13: keys or certificates carried in the token are never used.
	atk := attackerEd()
	atkPub := atk.Public().(ed25519.PublicKey)
	atkJWK := fmt.Sprintf(`{"kty":"OKP","crv":"Ed25519","x":"%s"}`, b64url.EncodeToString(atkPub))
	add("JWT-11 embedded jwk, attacker's signature, real kid",
		sign(t, atk, h.set("jwk", atkJWK).String(), f.claims().String()), bad)
	add("JWT-11 embedded jwk, attacker's signature, no kid",
		sign(t, atk, h.del("kid").set("jwk", atkJWK).String(), f.claims().String()), bad)
	rsaKey := attackerRSA()
	rsaJWK := fmt.Sprintf(`{"kty":"RSA","n":"%s","e":"AQAB"}`, b64url.EncodeToString(rsaKey.N.Bytes()))
	add("JWT-11 embedded RSA jwk, RS256 by the attacker",
		signWith(t, jwt.SigningMethodRS256, rsaKey, h.set("alg", `"RS256"`).set("jwk", rsaJWK).String(), f.claims().String()), bad)
	cert := selfSignedCert(t, atk)
	x5c := `["` + base64.StdEncoding.EncodeToString(cert) + `"]`
	add("JWT-13 x5c with the attacker's self-signed certificate",
		sign(t, atk, h.set("x5c", x5c).String(), f.claims().String()), bad)
	add("JWT-13 x5u and jku pointing at the attacker",
		sign(t, atk, h.set("x5u", `"http://127.0.0.1:1/x5u"`).set("jku", `"http://127.0.0.1:1/jwks"`).String(), f.claims().String()), bad)
	add("control: JWT-13 an x5c is ignored, not trusted, not refused: the real key still verifies",
		f.token(t, h.set("x5c", x5c), f.claims()), nil)

	// JWT-14/16/29: header parameters that change how the token must be read.
	add("JWT-14 crit unknown", f.token(t, h.set("crit", `["x-policy"]`).set("x-policy", `"mfa"`), f.claims()), bad)
	add("JWT-14 crit empty", headerWith("crit", `[]`), bad)
	add("JWT-16 b64 false with crit, encoded payload", f.token(t, h.set("b64", "false").set("crit", `["b64"]`), f.claims()), bad)
	add("JWT-16 b64 false without crit", headerWith("b64", `false`), bad)
	unencoded := b64seg(h.set("b64", "false").set("crit", `["b64"]`).String()) + "." + f.claims().String()
	add("JWT-16 b64 false, unencoded payload",
		unencoded+"."+b64url.EncodeToString(ed25519.Sign(f.priv, []byte(unencoded))), bad)
	add("JWT-29 cty JWT with a nested token as payload", sign(t, f.priv, h.set("cty", `"JWT"`).String(), good), bad)
	add("JWT-29 cty JWT with plain claims", headerWith("cty", `"JWT"`), bad)
	add("JWT-29 zip DEF", headerWith("zip", `"DEF"`), bad)
	add("JWT-29 enc (a JWE header)", headerWith("enc", `"A256GCM"`), bad)
	add("header twice the same alg", f.token(t, h.add("alg", `"EdDSA"`), f.claims()), bad)
	add("header not an object", sign(t, f.priv, `["EdDSA"]`, f.claims().String()), bad)
	add("header null", sign(t, f.priv, `null`, f.claims().String()), bad)

	// JWT-17/19/20/22/23: times.
	add("JWT-17 exp a second past the leeway",
		f.token(t, h, f.claims().set("iat", jnum(now-3600)).set("nbf", jnum(now-3600)).set("exp", jnum(now-31))), bad)
	add("control: JWT-17 exp a second inside the leeway",
		f.token(t, h, f.claims().set("iat", jnum(now-3600)).set("nbf", jnum(now-3600)).set("exp", jnum(now-29))), nil)
	add("JWT-19 exp 0", f.token(t, h, f.claims().set("iat", "0").set("nbf", "0").set("exp", "0")), bad)
	add("JWT-19 exp 0, iat now", claimsWith("exp", "0"), bad)
	add("JWT-20 exp missing", claimsWith("exp", ""), bad)
	add("JWT-20 exp null", claimsWith("exp", "null"), bad)
	add("JWT-20 exp a number in a string (golang-jwt's NumericDate takes it)", claimsWith("exp", jstr(jnum(now+3600))), bad)
	add("nbf a number in a string", claimsWith("nbf", jstr(jnum(now))), bad)
	add("iat a number in a string", claimsWith("iat", jstr(jnum(now))), bad)
	add("exp a boolean", claimsWith("exp", "true"), bad)
	add("control: times with fractions of a second", f.token(t, h, f.claims().set("iat", jnum(now)+".5").set("exp", jnum(now+3600)+".25")), nil)
	add("JWT-22 exp year 3000", claimsWith("exp", "32503680000"), bad)
	add("JWT-22 exp 1e20", claimsWith("exp", "1e20"), bad)
	add("JWT-22 exp-iat a second over tokens.max_lifetime",
		claimsWith("exp", jnum(now+int64(e.cfg.Tokens.MaxLifetime/time.Second)+1)), bad)
	add("control: JWT-22 exp-iat exactly tokens.max_lifetime",
		claimsWith("exp", jnum(now+int64(e.cfg.Tokens.MaxLifetime/time.Second))), nil)
	add("JWT-22 iat far back, exp-iat over max_lifetime",
		f.token(t, h, f.claims().set("iat", "1").set("nbf", "1")), bad)
	add("JWT-23 nbf an hour ahead", claimsWith("nbf", jnum(now+3600)), bad)
	add("iat an hour ahead (golang-jwt accepts it by default)",
		f.token(t, h, f.claims().set("iat", jnum(now+3600)).set("exp", jnum(now+7200))), bad)
	add("iat missing", claimsWith("iat", ""), bad)
	add("control: nbf missing", claimsWith("nbf", ""), nil)

	// JWT-25/26: audience and issuer.
	add("JWT-25 aud missing", claimsWith("aud", ""), bad)
	add("JWT-25 aud another service", claimsWith("aud", `["other"]`), bad)
	add("JWT-25 aud case variant", claimsWith("aud", `"Scoring"`), bad)
	add("JWT-25 aud []", claimsWith("aud", `[]`), bad)
	add("JWT-25 aud 123", claimsWith("aud", `123`), bad)
	add("JWT-25 aud null", claimsWith("aud", `null`), bad)
	add("JWT-25 aud with a number beside the service", claimsWith("aud", `["scoring",1]`), bad)
	add("JWT-25 aud [\"x\",\"scoring\"] is accepted", claimsWith("aud", `["x","scoring"]`), nil)
	add("control: JWT-25 aud as a plain string", claimsWith("aud", `"scoring"`), nil)
	add("JWT-26 iss missing", claimsWith("iss", ""), bad)
	add("JWT-26 iss another issuer", claimsWith("iss", `"https://idp.example.test"`), bad)
	add("JWT-26 iss with a trailing slash", claimsWith("iss", jstr(e.cfg.Tokens.Issuer+"/")), bad)
	add("JWT-26 iss case variant", claimsWith("iss", jstr(strings.ToUpper(e.cfg.Tokens.Issuer))), bad)
	add("JWT-26 iss with a leading space", claimsWith("iss", jstr(" "+e.cfg.Tokens.Issuer)), bad)
	add("JWT-26 iss a number", claimsWith("iss", `1`), bad)

	// JWT-28: explicit typing.
	for _, typ := range []string{`"JOSE"`, `"JWS"`, `"secevent+jwt"`, `"dpop+jwt"`, `"logout+jwt"`, `123`, `["JWT"]`} {
		add("JWT-28 typ "+typ, headerWith("typ", typ), bad)
	}
	add("control: JWT-28 typ absent", headerWith("typ", ""), nil)
	add("control: JWT-28 typ at+jwt", headerWith("typ", `"at+jwt"`), nil)
	add("control: JWT-28 typ jwt (case-insensitive)", headerWith("typ", `"jwt"`), nil)

	// JWT-31/32: not a compact JWS of three segments.
	add("JWT-31 general JSON serialization",
		fmt.Sprintf(`{"payload":"%s","signatures":[{"protected":"%s","signature":"%s"}]}`, parts[1], parts[0], parts[2]), bad)
	add("JWT-31 flattened JSON serialization",
		fmt.Sprintf(`{"payload":"%s","protected":"%s","signature":"%s"}`, parts[1], parts[0], parts[2]), bad)
	for name, tok := range map[string]string{
		"empty":                "",
		"one segment":          parts[0],
		"two segments":         hp,
		"four segments":        good + "." + parts[2],
		"five segments":        good + "." + hp,
		"empty header":         "." + parts[1] + "." + parts[2],
		"empty payload":        parts[0] + ".." + parts[2],
		"empty signature":      hp + ".",
		"trailing dot":         good + ".",
		"trailing segment":     good + ".foo",
		"leading dot":          "." + good,
		"padded header":        parts[0] + "=." + parts[1] + "." + parts[2],
		"padded signature":     good + "==",
		"standard base64":      strings.NewReplacer("-", "+", "_", "/").Replace(good),
		"whitespace inside":    parts[0] + ". " + parts[1] + "." + parts[2],
		"signature of another": hp + "." + strings.Split(minted.AccessToken, ".")[2],
	} {
		if tok == good {
			continue // "standard base64" of a token with neither - nor _
		}
		add("JWT-32 "+name, tok, bad)
	}

	// JWT-34/35: size.
	add("JWT-34 7 KiB of dots", strings.Repeat(".", 7<<10), bad)
	add("JWT-34 over tokens.max_bytes, validly signed",
		claimsWith("pad", jstr(strings.Repeat("a", e.cfg.Tokens.MaxBytes))), bad)
	add("JWT-35 100 KiB of claims", claimsWith("pad", jstr(strings.Repeat("a", 100<<10))), bad)
	add("JWT-35 claims nested 10k deep", claimsWith("deep", strings.Repeat("[", 10000)+strings.Repeat("]", 10000)), bad)

	// JWT-37: the unused low bits of the signature's last character.
	for mask := 1; mask < 16; mask++ {
		add(fmt.Sprintf("JWT-37 signature's unused bits xor %x", mask), flipLastBits(good, mask), bad)
	}

	// JWT-40: HMAC with weak secrets.
	add("JWT-40 HS256 with an empty secret", withAlg(jwt.SigningMethodHS256, []byte("")), bad)
	add("JWT-40 HS256 with \"secret\"", withAlg(jwt.SigningMethodHS256, []byte("secret")), bad)

	// JWT-41: duplicate and case-variant claim names (validly signed).
	add("JWT-41 exp twice, past then future", f.token(t, h, f.claims().set("exp", "1").add("exp", jnum(now+3600))), bad)
	add("JWT-41 exp twice, future then past", f.token(t, h, f.claims().add("exp", "1")), bad)
	add("JWT-41 EXP beside exp", f.token(t, h, f.claims().set("exp", "1").add("EXP", jnum(now+3600))), bad)
	add("JWT-41 Exp instead of exp", f.token(t, h, f.claims().del("exp").add("Exp", jnum(now+3600))), bad)
	add("JWT-41 exp written with an escape, twice", f.token(t, h, f.claims().set("exp", "1").add(`\u0065xp`, jnum(now+3600))), bad)
	add("JWT-41 sub spelled with a long s (U+017F), which Go's JSON folds to s",
		f.token(t, h, f.claims().set("sub", `"mallory"`).add("ſub", jstr(f.sub))), bad)
	add("JWT-41 aud twice", f.token(t, h, f.claims().set("aud", `"other"`).add("aud", `"scoring"`)), bad)
	add("JWT-41 jti twice", f.token(t, h, f.claims().add("jti", `"again"`)), bad)
	add("JWT-41 pid twice, the right one last", f.token(t, h, f.claims().set("pid", `"x"`).add("pid", jstr(e.principals.keyID(f.sub)))), bad)
	add("JWT-41 ISS beside iss, the right one last", f.token(t, h, f.claims().set("iss", `"other"`).add("ISS", jstr(e.cfg.Tokens.Issuer))), bad)

	// JWT-43/49: subjects that decode lossily or could split a header or a log line.
	add("JWT-43 sub with invalid UTF-8", claimsWith("sub", "\"alice\xff\xfe\""), bad)
	add("JWT-43 sub with a lone surrogate escape", claimsWith("sub", `"alice\ud800"`), bad)
	add("JWT-43 invalid UTF-8 in a claim the gateway does not read", claimsWith("note", "\"\xff\""), bad)
	add("JWT-43 invalid UTF-8 in a claim name", f.token(t, h, f.claims().add("n\xffe", "1")), bad)
	add("JWT-49 sub with CR LF and a header", claimsWith("sub", jstr(f.sub+"\r\nX-Admin: 1")), bad)
	add("JWT-49 sub with NUL", claimsWith("sub", jstr(f.sub+"\x00")), bad)
	add("JWT-49 sub with a colon", claimsWith("sub", jstr(f.sub+":admin")), bad)
	add("JWT-49 sub of 10 KiB", claimsWith("sub", jstr(strings.Repeat("a", 10<<10))), bad)
	add("sub missing", claimsWith("sub", ""), bad)
	add("sub not a principal", claimsWith("sub", `"nobody"`), bad)
	add("sub a number", claimsWith("sub", `1`), bad)
	add("pid of another key", claimsWith("pid", `"not-the-key-id"`), bad)
	add("pid missing", claimsWith("pid", ""), bad)

	// REV-03: a token without a jti cannot be revoked, so it is never accepted.
	add("REV-03 jti missing", claimsWith("jti", ""), bad)
	add("REV-03 jti empty", claimsWith("jti", `""`), bad)
	add("jti with a control character", claimsWith("jti", jstr("a\x00b")), bad)
	add("jti of 2 KiB", claimsWith("jti", jstr(strings.Repeat("j", 2<<10))), bad)

	add("payload not an object", sign(t, f.priv, h.String(), `["scoring"]`), bad)
	add("payload with trailing data", sign(t, f.priv, h.String(), f.claims().String()+`{}`), bad)
	return as
}

func mustLookup(t testing.TB, e *tokenEnv, name string) Principal {
	t.Helper()
	p, ok := e.principals.Lookup(name)
	if !ok {
		t.Fatalf("no principal %s", name)
	}
	return p
}

func selfSignedCert(t testing.TB, priv ed25519.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "scoregate"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// errMatches reports whether err is want (nil for accepted).
func errMatches(err, want error) bool {
	if want == nil {
		return err == nil
	}
	return errors.Is(err, want)
}

func TestJWTAttacks(t *testing.T) {
	e := newTokenEnv(t, nil)
	e.principal(t, "alice", "reader")
	f := newForger(e, "alice")
	for _, a := range jwtAttacks(t, f) {
		t.Run(a.name, func(t *testing.T) {
			// Twice: the second answer may come from the cache, which must agree.
			for try := range 2 {
				c, err := e.tokens.Verify("scoring", []byte(a.token))
				if !errMatches(err, a.want) {
					t.Errorf("try %d: Verify = %v, want %v", try, err, a.want)
				}
				if err == nil && (c.Subject != "alice" || c.Issuer != e.cfg.Tokens.Issuer) {
					t.Errorf("try %d: accepted with claims %+v", try, c)
				}
				// Through the data-plane entry point, Authorization header parsing included.
				if err := e.check("scoring", a.token); !errMatches(err, a.want) {
					t.Errorf("try %d: Authenticate = %v, want %v", try, err, a.want)
				}
			}
			if a.want != nil && e.tokens.cache.get([]byte(a.token)) != nil {
				t.Error("a refused token is in the verified-token cache")
			}
		})
	}
}

const (
	testIdP         = "https://idp.example.test"
	testIdPAudience = "api://scoring"
)

// staticKeys is a KeySource of fixed keys, for an external issuer without a JWKS server.
type staticKeys map[string]jwk

func (s staticKeys) Key(_ context.Context, kid string) (crypto.PublicKey, string, error) {
	k, ok := s[kid]
	if !ok {
		return nil, "", ErrUnknownKey
	}
	return k.key, k.alg, nil
}

// withIdP makes service "scoring" accept tokens of testIdP signed with algs.
func withIdP(url string, algs ...string) func(*config.Config) {
	return func(c *config.Config) {
		c.Services[0].Issuers = []config.Issuer{{Issuer: testIdP, JWKSURL: url, Audience: testIdPAudience, Algorithms: algs}}
	}
}

// idp is an external issuer's signing keys and a forger of its tokens.
type idp struct {
	e  *tokenEnv
	ec *ecdsa.PrivateKey
	ed ed25519.PrivateKey
	n  atomic.Int64
}

func newIdP(t testing.TB) (*idp, staticKeys) {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := staticKeys{
		"idp-ec": {key: &ec.PublicKey, alg: "ES256"},
		"idp-ed": {key: ed.Public(), alg: "EdDSA"},
	}
	return &idp{ec: ec, ed: ed}, keys
}

func (p *idp) header(alg, kid string) members {
	return members{{"alg", jstr(alg)}, {"kid", jstr(kid)}, {"typ", `"at+jwt"`}}
}

func (p *idp) claims() members {
	now := p.e.clock().Unix()
	return members{
		{"iss", jstr(testIdP)},
		{"sub", `"client-1"`},
		{"aud", jstr(testIdPAudience)},
		{"iat", jnum(now)},
		{"nbf", jnum(now)},
		{"exp", jnum(now + 3600)},
		{"jti", jstr(fmt.Sprintf("idp-%d", p.n.Add(1)))},
	}
}

func (p *idp) es256(t testing.TB, c members) string {
	t.Helper()
	return signWith(t, jwt.SigningMethodES256, p.ec, p.header("ES256", "idp-ec").String(), c.String())
}

// highS is tok, an ES256 token, with its signature (r, s) replaced by (r, n-s), which verifies
// just the same.
func highS(t testing.TB, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	sig, err := b64url.Strict().DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("not an ES256 signature: %v", err)
	}
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	out := append(slices.Clone(sig[:32]), s.FillBytes(make([]byte, 32))...)
	return parts[0] + "." + parts[1] + "." + b64url.EncodeToString(out)
}

// An external issuer's tokens: its own key set, algorithms and audience, and the same claim checks.
func TestJWTAttacksExternalIssuer(t *testing.T) {
	p, keys := newIdP(t)
	e := newTokenEnv(t, withIdP("http://127.0.0.1:1/jwks.json", "ES256", "EdDSA"), WithIssuerKeys("scoring", testIdP, keys))
	p.e = e
	own := newForger(e, "alice")
	e.principal(t, "alice", "reader")
	now := e.clock().Unix()
	bad := ErrInvalidCredential
	good := p.es256(t, p.claims())
	ecPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(&p.ec.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	hs := func(key []byte) string {
		return signWith(t, jwt.SigningMethodHS256, key, p.header("HS256", "idp-ec").String(), p.claims().String())
	}
	tests := []attack{
		{"control: ES256 token of the issuer", good, nil},
		{"control: EdDSA token of the issuer", sign(t, p.ed, p.header("EdDSA", "idp-ed").String(), p.claims().String()), nil},
		{"JWT-38 the (r, n-s) twin of a valid ES256 token is accepted as the same token", highS(t, good), nil},
		{"JWT-37 ES256 signature's unused bits", flipLastBits(good, 3), bad},
		{"JWT-04 RS256, not configured for the issuer",
			signWith(t, jwt.SigningMethodRS256, attackerRSA(), p.header("RS256", "idp-ec").String(), p.claims().String()), bad},
		{"JWT-04 ES384, not configured for the issuer",
			signWith(t, jwt.SigningMethodES256, p.ec, p.header("ES384", "idp-ec").String(), p.claims().String()), bad},
		{"JWT-04 EdDSA header naming the ES256 key",
			sign(t, p.ed, p.header("EdDSA", "idp-ec").String(), p.claims().String()), bad},
		{"JWT-04 ES256 header naming the EdDSA key",
			signWith(t, jwt.SigningMethodES256, p.ec, p.header("ES256", "idp-ed").String(), p.claims().String()), bad},
		{"JWT-05 HS256 keyed with the issuer's public key PEM", hs(ecPEM), bad},
		{"JWT-40 HS256 with an empty secret", hs(nil), bad},
		{"JWT-40 HS256 with \"secret\"", hs([]byte("secret")), bad},
		{"JWT-07 unknown kid", signWith(t, jwt.SigningMethodES256, attackerEC(), p.header("ES256", "idp-other").String(), p.claims().String()), bad},
		{"JWT-07 the issuer's kid, the attacker's key", signWith(t, jwt.SigningMethodES256, attackerEC(), p.header("ES256", "idp-ec").String(), p.claims().String()), bad},
		{"JWT-25 aud the service name instead of the issuer's audience", p.es256(t, p.claims().set("aud", `"scoring"`)), bad},
		{"JWT-25 aud missing", p.es256(t, p.claims().del("aud")), bad},
		{"JWT-26 iss with a trailing slash", p.es256(t, p.claims().set("iss", jstr(testIdP+"/"))), bad},
		{"JWT-26 iss case variant", p.es256(t, p.claims().set("iss", jstr(strings.ToUpper(testIdP)))), bad},
		{"JWT-26 iss missing", p.es256(t, p.claims().del("iss")), bad},
		{"the issuer's key signing a token claiming the gateway's iss",
			sign(t, p.ed, p.header("EdDSA", "idp-ed").String(), own.claims().String()), bad},
		{"the gateway's key signing a token claiming the issuer's iss",
			sign(t, own.priv, own.header().String(), p.claims().String()), bad},
		{"JWT-22 exp-iat over tokens.max_lifetime", p.es256(t, p.claims().set("exp", jnum(now+int64(e.cfg.Tokens.MaxLifetime/time.Second)+1))), bad},
		{"JWT-41 exp twice", p.es256(t, p.claims().set("exp", "1").add("exp", jnum(now+3600))), bad},
		{"JWT-43 sub with invalid UTF-8", p.es256(t, p.claims().set("sub", "\"client-1\xff\"")), bad},
		{"JWT-43 sub with a lone surrogate escape", p.es256(t, p.claims().set("sub", `"client-1\ud800"`)), bad},
		{"JWT-43 sub with U+FFFD itself", p.es256(t, p.claims().set("sub", `"client-1\ufffd"`)), bad},
		{"JWT-49 sub with CR LF and a header", p.es256(t, p.claims().set("sub", jstr("client-1\r\nX-Admin: 1"))), bad},
		{"JWT-49 sub with NUL", p.es256(t, p.claims().set("sub", jstr("client-1\x00"))), bad},
		{"JWT-49 sub with DEL", p.es256(t, p.claims().set("sub", jstr("client-1\x7f"))), bad},
		{"JWT-49 sub of 10 KiB", p.es256(t, p.claims().set("sub", jstr(strings.Repeat("c", 10<<10)))), bad},
		{"JWT-49 aud with CR LF beside the right one", p.es256(t, p.claims().set("aud", `["`+testIdPAudience+`","x\r\ny"]`)), bad},
		{"JWT-49 iss with NUL cannot reach the revocation key", p.es256(t, p.claims().set("iss", jstr(testIdP+"\x00x"))), bad},
		{"REV-03 jti missing", p.es256(t, p.claims().del("jti")), bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for try := range 2 {
				c, err := e.tokens.Verify("scoring", []byte(tt.token))
				if !errMatches(err, tt.want) {
					t.Errorf("try %d: Verify = %v, want %v", try, err, tt.want)
				}
				if err == nil && (c.Issuer != testIdP || c.Subject != "client-1") {
					t.Errorf("try %d: accepted with claims %+v", try, c)
				}
			}
			// The issuer's tokens are for "scoring" only.
			if _, err := e.tokens.Verify("other", []byte(tt.token)); !errors.Is(err, ErrInvalidCredential) {
				t.Errorf("on a service without the issuer: %v", err)
			}
		})
	}
}

// JWT-38 / REV-02: an ES256 token and its (r, n-s) twin are one token: the same claims, and
// revoking its jti refuses both, cached or not, and their trailing-bit variants.
func TestJWT38ECDSATwinIsRevokedByJTI(t *testing.T) {
	p, keys := newIdP(t)
	e := newTokenEnv(t, withIdP("http://127.0.0.1:1/jwks.json", "ES256"), WithIssuerKeys("scoring", testIdP, keys))
	p.e = e
	tok := p.es256(t, p.claims())
	twin := highS(t, tok)
	if twin == tok {
		t.Fatal("the twin is the same string")
	}
	c1, err1 := e.tokens.Verify("scoring", []byte(tok))
	c2, err2 := e.tokens.Verify("scoring", []byte(twin))
	if err1 != nil || err2 != nil {
		t.Fatalf("Verify = %v, %v; want both accepted (Go's ECDSA accepts high s)", err1, err2)
	}
	if diff := cmp.Diff(c1, c2); diff != "" {
		t.Fatalf("the twins' claims differ (-token +twin):\n%s", diff)
	}
	if err := e.tokens.Revoke(context.Background(), c1.Issuer, c1.ID, c1.ExpiresAt); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{
		"token": tok, "twin": twin,
		"token, trailing bits": flipLastBits(tok, 1), "twin, trailing bits": flipLastBits(twin, 2),
	} {
		if _, err := e.tokens.Verify("scoring", []byte(v)); !errors.Is(err, ErrInvalidCredential) {
			t.Errorf("REV-02 revoked %s: %v", name, err)
		}
	}
	// Revocation is by issuer and jti: the gateway's own token with the same jti is unaffected.
	e.principal(t, "alice", "reader")
	f := newForger(e, "alice")
	same := f.token(t, f.header(), f.claims().set("jti", jstr(c1.ID)))
	if _, err := e.tokens.Verify("scoring", []byte(same)); err != nil {
		t.Errorf("a token of another issuer with the same jti: %v", err)
	}
}

// JWT-40: HMAC is never configurable for an external issuer.
func TestJWT40ConfigRefusesHMAC(t *testing.T) {
	for _, alg := range []string{"HS256", "HS384", "HS512", "hs256", "none", "RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			cfg := &config.Config{Services: []config.Service{{
				Name: "scoring", Auth: config.AuthToken, Upstreams: []string{"http://127.0.0.1:1"},
				Issuers: []config.Issuer{{Issuer: testIdP, JWKSURL: testIdP + "/jwks", Audience: testIdPAudience, Algorithms: []string{alg}}},
			}}}
			cfg.ApplyDefaults()
			err := cfg.Validate()
			allowed := slices.Contains(config.ExternalAlgorithms, alg)
			if allowed && err != nil {
				t.Fatalf("Validate = %v, want nil", err)
			}
			if !allowed && (err == nil || !strings.Contains(err.Error(), "services[0].issuers[0].algorithms[0]")) {
				t.Fatalf("Validate = %v, want a problem at services[0].issuers[0].algorithms[0]", err)
			}
			if strings.HasPrefix(strings.ToUpper(alg), "HS") && slices.Contains(config.ExternalAlgorithms, alg) {
				t.Fatal("an HMAC algorithm is allowed")
			}
		})
	}
}

// JWT-34: a flood of dots is refused without allocating in proportion to it.
func TestJWT34DotFloodAllocatesLittle(t *testing.T) {
	e := newTokenEnv(t, func(c *config.Config) { c.Tokens.MaxBytes = 65536 })
	for _, n := range []int{7 << 10, 64 << 10} {
		tok := []byte(strings.Repeat(".", n))
		if _, err := e.tokens.Verify("scoring", tok); !errors.Is(err, ErrInvalidCredential) {
			t.Fatalf("%d dots: %v", n, err)
		}
		const runs = 50
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range runs {
			e.tokens.Verify("scoring", tok)
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > uint64(n) {
			t.Errorf("%d dots: %d bytes allocated per refusal, want at most the token's length", n, per)
		}
	}
}

// JWT-35: huge or deeply nested JSON, validly signed, within a raised tokens.max_bytes, is
// refused without a panic or a stack blow-up.
func TestJWT35DeepNestingAndSize(t *testing.T) {
	e := newTokenEnv(t, func(c *config.Config) { c.Tokens.MaxBytes = 65536 })
	e.principal(t, "alice", "reader")
	f := newForger(e, "alice")
	deep := strings.Repeat("[", 12000) + strings.Repeat("]", 12000)
	tests := []attack{
		{"control: a token with a 30 KB unknown claim is accepted", f.token(t, f.header(), f.claims().set("pad", jstr(strings.Repeat("a", 30000)))), nil},
		{"claims nested 12000 deep", f.token(t, f.header(), f.claims().set("deep", deep)), ErrInvalidCredential},
		{"header nested 12000 deep", f.token(t, f.header().set("deep", deep), f.claims()), ErrInvalidCredential},
		{"aud nested 12000 deep", f.token(t, f.header(), f.claims().set("aud", deep)), ErrInvalidCredential},
		{"100 KiB of claims", f.token(t, f.header(), f.claims().set("pad", jstr(strings.Repeat("a", 100<<10)))), ErrInvalidCredential},
		{"1 MiB token", strings.Repeat("a", 1<<20) + ".b.c", ErrInvalidCredential},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.tokens.Verify("scoring", []byte(tt.token)); !errMatches(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

// JWT-46/47: the Authorization header as the proxy hands it over.
func TestJWT46SchemeAndJWT47DuplicateHeader(t *testing.T) {
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	tok := e.mint(t, p, "scoring").AccessToken
	tok2 := e.mint(t, p, "scoring").AccessToken
	tests := []struct {
		name    string
		headers []string
		want    error
	}{
		{"JWT-46 Bearer", []string{"Bearer " + tok}, nil},
		{"JWT-46 bearer (scheme case-insensitive)", []string{"bearer " + tok}, nil},
		{"JWT-46 BEARER", []string{"BEARER " + tok}, nil},
		{"JWT-46 Bearerx (no space)", []string{"Bearer" + tok}, ErrInvalidCredential},
		{"JWT-46 Bearer alone", []string{"Bearer"}, ErrInvalidCredential},
		{"JWT-46 two spaces", []string{"Bearer  " + tok}, ErrInvalidCredential},
		{"JWT-46 tab", []string{"Bearer\t" + tok}, ErrInvalidCredential},
		{"JWT-46 trailing space", []string{"Bearer " + tok + " "}, ErrInvalidCredential},
		{"JWT-46 Basic", []string{"Basic " + base64.StdEncoding.EncodeToString([]byte("alice:"+tok))}, ErrInvalidCredential},
		{"JWT-46 Basic carrying the token itself", []string{"Basic " + tok}, ErrInvalidCredential},
		{"JWT-46 two tokens in one header", []string{"Bearer " + tok + ", Bearer " + tok2}, ErrInvalidCredential},
		{"JWT-46 other scheme", []string{"Token " + tok}, ErrInvalidCredential},
		{"JWT-46 empty header", []string{""}, ErrNoCredential},
		{"JWT-46 no header", nil, ErrNoCredential},
		{"JWT-47 two Authorization headers, different tokens", []string{"Bearer " + tok, "Bearer " + tok2}, ErrMultipleCredentials},
		{"JWT-47 two Authorization headers, the same token", []string{"Bearer " + tok, "Bearer " + tok}, ErrMultipleCredentials},
		{"JWT-47 a valid and an invalid token", []string{"Bearer " + tok, "Bearer x.y.z"}, ErrMultipleCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hs [][]byte
			for _, h := range tt.headers {
				hs = append(hs, []byte(h))
			}
			c, err := e.auth.Authenticate("scoring", config.AuthToken, hs)
			if !errMatches(err, tt.want) {
				t.Fatalf("Authenticate = %v, want %v", err, tt.want)
			}
			if err == nil && c.Token.Subject != "alice" {
				t.Fatalf("caller %+v", c)
			}
		})
	}
}

// JWT-50: keys come and go only through Rotate and Reload. A key added by another instance is
// used after a reload (no restart); a retired key verifies nothing, even a token it signs now;
// verification never sees an empty key set while keys are reloaded.
func TestJWT50SigningKeyRotation(t *testing.T) {
	ctx := context.Background()
	edit := func(c *config.Config) { c.Tokens.KeyRotation = time.Hour; c.Tokens.MaxLifetime = 2 * time.Hour }
	e := newTokenEnv(t, edit)
	p, _ := e.principal(t, "alice", "reader")
	old := newForger(e, "alice")
	if err := e.check("scoring", old.token(t, old.header(), old.claims())); err != nil {
		t.Fatalf("control: token of the first key: %v", err)
	}

	// Another instance on the same store rotates: its new key is unknown here until a reload.
	e.advance(61 * time.Minute)
	other, err := NewTokens(ctx, e.cfg, e.store, e.principals, nil, WithClock(e.clock))
	if err != nil {
		t.Fatal(err)
	}
	newTok, err := other.Mint(ctx, p, "scoring")
	if err != nil {
		t.Fatal(err)
	}
	if kid(newTok.AccessToken) == old.kid {
		t.Fatal("the other instance did not rotate")
	}
	if err := e.check("scoring", newTok.AccessToken); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("token of a key this instance has not loaded: %v", err)
	}
	if err := e.tokens.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.check("scoring", newTok.AccessToken); err != nil {
		t.Fatalf("token of the newly added key after Reload: %v", err)
	}
	if got := e.tokens.signing.Load().active.rec.KID; got != kid(newTok.AccessToken) {
		t.Fatalf("active key %s after reload, want the new one", got)
	}
	// The replaced key still verifies what it signs, until it is retired.
	if err := e.check("scoring", old.token(t, old.header(), old.claims())); err != nil {
		t.Fatalf("token of the replaced key before its retirement: %v", err)
	}

	// Reloading while verifying: never a moment without keys.
	probe := []byte(old.token(t, old.header(), old.claims()))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failures atomic.Int64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// verify, not Verify: the cache would hide the key lookup.
			if _, err := e.tokens.verify("scoring", probe, e.clock()); err != nil {
				failures.Add(1)
			}
		}
	})
	for range 50 {
		if err := e.tokens.Reload(ctx); err != nil {
			t.Error(err)
		}
		if err := e.tokens.Rotate(ctx); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d verifications failed while keys were reloaded", n)
	}

	// Past max_lifetime + leeway after its replacement, the first key is retired: a token it
	// signs now, with fresh times, is refused.
	e.advance(2*time.Hour + time.Minute)
	if err := e.tokens.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.tokens.signing.Load().byKID[old.kid]; ok {
		t.Fatal("the first key was not retired")
	}
	if err := e.check("scoring", old.token(t, old.header(), old.claims())); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("token of a retired key: %v", err)
	}
	// The key this Rotate added signs tokens that are accepted at once.
	fresh := e.mint(t, p, "scoring").AccessToken
	if kid(fresh) == kid(newTok.AccessToken) || kid(fresh) == old.kid {
		t.Fatal("Rotate made no new key past tokens.key_rotation")
	}
	if err := e.check("scoring", fresh); err != nil {
		t.Fatalf("token of the current key: %v", err)
	}
}

// REV-02: a revocation names the token by issuer and jti, so that no re-encoding of the same
// token escapes it; revoking a variant revokes the token.
func TestREV02RevocationIsByJTINotBytes(t *testing.T) {
	ctx := context.Background()
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	t.Run("revoke the token, replay its variants", func(t *testing.T) {
		tok := e.mint(t, p, "scoring").AccessToken
		if err := e.check("scoring", tok); err != nil { // cached
			t.Fatal(err)
		}
		if _, err := e.tokens.RevokeToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{tok, flipLastBits(tok, 1), flipLastBits(tok, 8), flipLastBits(tok, 15)} {
			if err := e.check("scoring", v); !errors.Is(err, ErrInvalidCredential) {
				t.Errorf("variant of a revoked token: %v", err)
			}
		}
	})
	t.Run("revoke a trailing-bit variant, replay the token", func(t *testing.T) {
		tok := e.mint(t, p, "scoring").AccessToken
		if err := e.check("scoring", tok); err != nil {
			t.Fatal(err)
		}
		c, err := e.tokens.RevokeToken(ctx, flipLastBits(tok, 4))
		if err != nil {
			t.Fatal(err)
		}
		if c.Issuer != e.cfg.Tokens.Issuer {
			t.Errorf("revoked issuer %q", c.Issuer)
		}
		if err := e.check("scoring", tok); !errors.Is(err, ErrInvalidCredential) {
			t.Errorf("token whose variant was revoked: %v", err)
		}
	})
	t.Run("REV-03 a token without jti cannot be revoked", func(t *testing.T) {
		f := newForger(e, "alice")
		if _, err := e.tokens.RevokeToken(ctx, f.token(t, f.header(), f.claims().del("jti"))); err == nil {
			t.Error("RevokeToken accepted a token without jti")
		}
	})
}

// REV-05: the stored revocation lasts at least until the token's exp plus the leeway, so the
// token cannot come back while any instance would still accept it.
func TestREV05RevocationOutlivesTheToken(t *testing.T) {
	ctx := context.Background()
	e := newTokenEnv(t, nil)
	p, _ := e.principal(t, "alice", "reader")
	resp := e.mint(t, p, "scoring")
	c, err := e.tokens.RevokeToken(ctx, resp.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(resp.ExpiryTimeUTC, 0)
	revs, err := e.store.Revocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(revs, func(r Revocation) bool { return r.JTI == c.ID })
	if i < 0 {
		t.Fatalf("no stored revocation for jti %s in %+v", c.ID, revs)
	}
	if r := revs[i]; r.Issuer != e.cfg.Tokens.Issuer || r.Expires.Before(exp.Add(e.cfg.Tokens.Leeway)) {
		t.Fatalf("stored revocation %+v; want issuer %s, expiry at least %s (exp + leeway)", r, e.cfg.Tokens.Issuer, exp.Add(e.cfg.Tokens.Leeway))
	}
	// A second before exp + leeway the token would still pass its time checks; maintenance
	// pruning (as RunMaintenance does it) must not have dropped the revocation.
	e.advance(exp.Add(e.cfg.Tokens.Leeway - time.Second).Sub(e.clock()))
	e.tokens.revoked.prune(e.clock().Add(-e.cfg.Tokens.Leeway))
	e.tokens.cache.prune(e.clock().Add(-e.cfg.Tokens.Leeway))
	if err := e.check("scoring", resp.AccessToken); !errors.Is(err, ErrInvalidCredential) {
		t.Fatalf("revoked token inside the leeway after pruning: %v", err)
	}
	// Well after, the revocation may go.
	e.tokens.revoked.prune(exp.Add(time.Hour))
	if e.tokens.revoked.revoked(revocationID(c.Issuer, c.ID)) {
		t.Error("revocation kept an hour after the token expired")
	}
}

// REV-21 and JWT-10: checking tokens, good or bad, never reaches the store (every check is
// answered from memory, so a flood of bad tokens cannot be amplified into store load), and
// nothing of a refused token (kid, sub) is logged.
func TestREV21TokenChecksNeverReachTheStoreNorTheLog(t *testing.T) {
	e := newTokenEnv(t, nil)
	e.principal(t, "alice", "reader")
	f := newForger(e, "alice")
	attacks := jwtAttacks(t, f)
	const canary = "canary-7f3a9c"
	attacks = append(attacks,
		attack{"kid canary", f.token(t, f.header().set("kid", jstr(canary)), f.claims()), ErrInvalidCredential},
		attack{"sub canary", f.token(t, f.header(), f.claims().set("sub", jstr(canary))), ErrInvalidCredential},
		attack{"jti canary, expired", f.token(t, f.header(), f.claims().set("jti", jstr(canary)).set("exp", "1")), ErrInvalidCredential},
	)
	store := &countingStore{Store: e.store}
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tokens, err := NewTokens(context.Background(), e.cfg, store, e.principals, log, WithClock(e.clock))
	if err != nil {
		t.Fatal(err)
	}
	before := store.calls.Load()
	for range 3 {
		for _, a := range attacks {
			if _, err := tokens.Verify("scoring", []byte(a.token)); !errMatches(err, a.want) {
				t.Errorf("%s: Verify = %v, want %v", a.name, err, a.want)
			}
		}
	}
	if n := store.calls.Load() - before; n != 0 {
		t.Errorf("%d store calls while checking tokens, want 0", n)
	}
	if out := logBuf.String(); strings.Contains(out, canary) {
		t.Errorf("a refused token's content was logged:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

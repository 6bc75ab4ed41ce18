//go:build unix

package certstore

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

var (
	storageKey = bytes.Repeat([]byte{0x5a}, 32)
	otherKey   = bytes.Repeat([]byte{0xa5}, 32)
)

// sealedGateway is newGateway with its storage sealed with key.
func sealedGateway(t *testing.T, url string, key []byte, issuers func(*certmagic.Config) []certmagic.Issuer) *certmagic.Config {
	t.Helper()
	st, err := Seal(New(newClient(t, url), prefix, WithLockPoll(20*time.Millisecond)), key)
	if err != nil {
		t.Fatal(err)
	}
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zap.NewNop(),
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{Storage: st, Logger: zap.NewNop()})
	if issuers != nil {
		cfg.Issuers = issuers(cfg)
	}
	return cfg
}

// parsesAsKey reports whether b holds a private key in any form certmagic or a thief could read.
func parsesAsKey(b []byte) bool {
	der := b
	if block, _ := pem.Decode(b); block != nil {
		der = block.Bytes
	}
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return true
	}
	if _, err := x509.ParseECPrivateKey(der); err == nil {
		return true
	}
	_, err := x509.ParsePKCS1PrivateKey(der)
	return err == nil
}

// Finding 13: with the storage sealed, a certificate obtained from a real ACME server leaves no
// private key readable in Redis (neither the certificate's nor the ACME account's), another
// instance with the key serves it, an instance with another key fails loudly rather than
// replacing it, a value moved to another name does not open, and a value stored in clear before
// is refused until SealStored encrypts it.
func TestFinding13SealedStorageWithACMEServer(t *testing.T) {
	ca, roots, _ := startPebble(t)
	srv := redistest.Start(t)
	ctx := testCtx(t)
	issuers := func(cfg *certmagic.Config) []certmagic.Issuer {
		return []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
			CA: ca, Email: "ops@example.test", Agreed: true, TrustedRoots: roots,
			AltHTTPPort: freePort(t), DisableTLSALPNChallenge: true, Logger: zap.NewNop(),
		})}
	}
	const name = "sealed.example.test"
	a := sealedGateway(t, srv.URL(), storageKey, issuers)
	if err := a.ObtainCertSync(ctx, name); err != nil {
		t.Fatal(err)
	}

	raw := newClient(t, srv.URL())
	values, err := raw.HGetAll(ctx, prefix+"certmagic:values").Result()
	if err != nil {
		t.Fatal(err)
	}
	var keyFiles []string
	for k, v := range values {
		if strings.HasSuffix(k, ".key") {
			keyFiles = append(keyFiles, k)
		}
		if strings.Contains(v, "PRIVATE KEY") || strings.Contains(v, "BEGIN") || parsesAsKey([]byte(v)) {
			t.Errorf("Redis holds %s readable: %.60q", k, v)
		}
		if !strings.HasPrefix(v, "SGE1") {
			t.Errorf("Redis holds %s unsealed", k)
		}
	}
	if len(keyFiles) < 2 {
		t.Fatalf("stored private keys %v; want the certificate's and the ACME account's", keyFiles)
	}

	// Another instance with the key loads and serves the certificate.
	b := sealedGateway(t, srv.URL(), storageKey, issuers)
	cert, err := b.CacheManagedCertificate(ctx, name)
	if err != nil || cert.Leaf == nil || !strings.Contains(cert.Leaf.Issuer.CommonName, "Pebble") {
		t.Fatalf("the second instance: %v, %v", cert.Leaf, err)
	}

	// Another key fails loudly: an error that says so, never "not there" (which would make
	// certmagic order a new certificate and overwrite the stored one).
	wrong := sealedGateway(t, srv.URL(), otherKey, issuers)
	_, err = wrong.CacheManagedCertificate(ctx, name)
	if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("another key: %v, want an error saying it does not decrypt", err)
	}

	// A value moved to another name does not open there.
	st, _ := Seal(New(raw, prefix), storageKey)
	inner := New(raw, prefix)
	moved, err := inner.Load(ctx, keyFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := inner.Store(ctx, "certificates/elsewhere/elsewhere.key", moved); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, "certificates/elsewhere/elsewhere.key"); !errors.Is(err, ErrOpen) {
		t.Fatalf("a moved value: %v, want ErrOpen", err)
	}
	inner.Delete(ctx, "certificates/elsewhere")

	// A value stored in clear (before the key was set) is refused, until SealStored seals it.
	legacy := []byte("-----BEGIN EC PRIVATE KEY-----\nlegacy\n-----END EC PRIVATE KEY-----\n")
	if err := inner.Store(ctx, "certificates/legacy/legacy.key", legacy); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Load(ctx, "certificates/legacy/legacy.key"); !errors.Is(err, ErrUnsealed) || !strings.Contains(err.Error(), "seal-certificates") {
		t.Fatalf("a value in clear: %v, want ErrUnsealed naming the command", err)
	}
	if _, err := SealStored(ctx, inner, otherKey); !errors.Is(err, ErrOpen) {
		t.Fatalf("SealStored with another key: %v, want ErrOpen (it must not seal beside values it cannot open)", err)
	}
	n, err := SealStored(ctx, inner, storageKey)
	if err != nil || n != 1 {
		t.Fatalf("SealStored: %d, %v; want the one value in clear", n, err)
	}
	if got, err := st.Load(ctx, "certificates/legacy/legacy.key"); err != nil || !bytes.Equal(got, legacy) {
		t.Fatalf("after SealStored: %q, %v", got, err)
	}
	if v, _ := raw.HGet(ctx, prefix+"certmagic:values", "certificates/legacy/legacy.key").Result(); strings.Contains(v, "PRIVATE KEY") {
		t.Fatal("SealStored left the value in clear")
	}
	if _, err := b.CacheManagedCertificate(context.Background(), name); err != nil {
		t.Fatalf("after SealStored the certificate no longer loads: %v", err)
	}
}

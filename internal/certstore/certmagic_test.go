//go:build unix

package certstore

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/scoregate/scoregate/internal/testing/redistest"
	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// testCA is an issuer inside the test: it signs every CSR after a pause long enough for another
// instance to be waiting on the lock, and counts how often it is asked.
type testCA struct {
	pki   *testpki.CA
	calls atomic.Int32
}

func newTestCA(t *testing.T) *testCA { return &testCA{pki: testpki.NewCA(t, "certstore test CA")} }

func (*testCA) IssuerKey() string { return "certstore-test-ca" }

func (ca *testCA) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	n := ca.calls.Add(1)
	select {
	case <-time.After(300 * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(n) + 1),
		DNSNames:     csr.DNSNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.pki.Cert, csr.PublicKey, ca.pki.Key)
	if err != nil {
		return nil, err
	}
	return &certmagic.IssuedCertificate{Certificate: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// newGateway is one gateway instance's certmagic: its own cache, its own Redis client, a Storage
// on the shared Redis, and issuers made by issuers for its config.
func newGateway(t *testing.T, url string, issuers func(*certmagic.Config) []certmagic.Issuer) *certmagic.Config {
	t.Helper()
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zap.NewNop(),
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: New(newClient(t, url), prefix, WithLockPoll(20*time.Millisecond)),
		Logger:  zap.NewNop(),
	})
	cfg.Issuers = issuers(cfg)
	return cfg
}

// obtainEverywhere runs ObtainCertSync for name on every gateway at once.
func obtainEverywhere(t *testing.T, ctx context.Context, name string, gateways ...*certmagic.Config) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(gateways))
	for i, g := range gateways {
		wg.Go(func() { errs[i] = g.ObtainCertSync(ctx, name) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("gateway %d: ObtainCertSync(%s): %v", i, name, err)
		}
	}
}

// certmagic's own obtain path on two gateways at once: its storage check, its lock around the
// order, its second look in storage once it holds the lock. One certificate is issued, and both
// gateways load it from Redis.
func TestCertmagicObtainsOnceForTwoGateways(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	ca := newTestCA(t)
	issuers := func(*certmagic.Config) []certmagic.Issuer { return []certmagic.Issuer{ca} }
	a, b := newGateway(t, srv.URL(), issuers), newGateway(t, srv.URL(), issuers)

	const name = "www.example.test"
	obtainEverywhere(t, ctx, name, a, b)
	if n := ca.calls.Load(); n != 1 {
		t.Errorf("the CA was asked %d times for %s by two gateways; want once", n, name)
	}
	var serials []string
	for i, g := range []*certmagic.Config{a, b} {
		cert, err := g.CacheManagedCertificate(ctx, name)
		if err != nil {
			t.Fatalf("gateway %d: loading the certificate from Redis: %v", i, err)
		}
		if !slices.Equal(cert.Names, []string{name}) {
			t.Errorf("gateway %d: certificate names %v", i, cert.Names)
		}
		serials = append(serials, cert.Leaf.SerialNumber.String())
	}
	if serials[0] != serials[1] {
		t.Errorf("the gateways serve different certificates: serials %v", serials)
	}
	// Another name is another order.
	obtainEverywhere(t, ctx, "api.example.test", a, b)
	if n := ca.calls.Load(); n != 2 {
		t.Errorf("the CA was asked %d times for two names; want twice", n)
	}
}

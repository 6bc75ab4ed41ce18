//go:build unix

package certstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"github.com/scoregate/scoregate/internal/testing/freeport"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/scoregate/scoregate/internal/testing/redistest"
	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// startPebble runs pebble, the ACME test server, on free loopback ports, taking every challenge
// as valid without checking it, and returns its directory URL and a pool trusting its HTTPS
// certificate. Like redistest, it fails under CI=true when pebble is missing and skips otherwise.
func startPebble(t *testing.T) (url string, roots *x509.CertPool, logPath string) {
	t.Helper()
	bin, err := exec.LookPath("pebble")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pebble is required under CI; install the pebble package (apt-get install -y pebble): %v", err)
		}
		t.Skip("SKIPPING: pebble not installed; apt-get install -y pebble (" + err.Error() + ")")
	}
	dir := t.TempDir()
	ca := testpki.NewCA(t, "pebble's HTTPS CA")
	certPEM, keyPEM := testpki.PEM(t, ca.Issue(t, "127.0.0.1"))
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for path, data := range map[string][]byte{certPath: certPEM, keyPath: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           addr,
		"managementListenAddress": "127.0.0.1:" + strconv.Itoa(freePort(t)),
		"certificate":             certPath,
		"privateKey":              keyPath,
		"httpPort":                freePort(t), // never dialled: every challenge is valid
		"tlsPort":                 freePort(t),
	}})
	confPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-config", confPath)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_ALWAYS_VALID=1", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	roots = ca.Pool()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer client.CloseIdleConnections()
	url = "https://" + addr + "/dir"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("pebble exited before answering:\n%s", log)
		default:
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, roots, logFile.Name()
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("pebble did not answer %s within 10 s:\n%s", url, log)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	return freeport.Port(t)
}

// countingIssuer counts the orders a gateway places with the ACME server.
type countingIssuer struct {
	certmagic.Issuer
	calls *atomic.Int32
}

func (c countingIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	c.calls.Add(1)
	return c.Issuer.Issue(ctx, csr)
}

// The same against a real ACME server: the gateways share one ACME account (registered under
// certmagic's account lock, so pebble sees one registration) and one certificate per name
// (ordered under its issuance lock).
func TestCertmagicWithACMEServer(t *testing.T) {
	ca, roots, pebbleLog := startPebble(t)
	srv := redistest.Start(t)
	ctx := testCtx(t)
	var orders atomic.Int32
	issuers := func(cfg *certmagic.Config) []certmagic.Issuer {
		acme := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
			CA:                      ca,
			Email:                   "ops@example.test",
			Agreed:                  true,
			TrustedRoots:            roots,
			AltHTTPPort:             freePort(t), // each gateway its own; pebble does not call
			DisableTLSALPNChallenge: true,
			Logger:                  zap.NewNop(),
		})
		return []certmagic.Issuer{countingIssuer{acme, &orders}}
	}
	a, b := newGateway(t, srv.URL(), issuers), newGateway(t, srv.URL(), issuers)

	// Two names at once: both gateways order, and both need the account.
	errs := make(chan error, 2)
	go func() { errs <- a.ObtainCertSync(ctx, "a.example.test") }()
	go func() { errs <- b.ObtainCertSync(ctx, "b.example.test") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// One name on both: one order.
	obtainEverywhere(t, ctx, "www.example.test", a, b)
	if n := orders.Load(); n != 3 {
		t.Errorf("%d orders for three names; want 3 (one per name)", n)
	}
	var serials []string
	for i, g := range []*certmagic.Config{a, b} {
		cert, err := g.CacheManagedCertificate(ctx, "www.example.test")
		if err != nil {
			t.Fatalf("gateway %d: loading the certificate from Redis: %v", i, err)
		}
		if !strings.Contains(cert.Leaf.Issuer.CommonName, "Pebble") {
			t.Errorf("gateway %d: certificate issued by %q, want pebble", i, cert.Leaf.Issuer.CommonName)
		}
		serials = append(serials, cert.Leaf.SerialNumber.String())
	}
	if serials[0] != serials[1] {
		t.Errorf("the gateways serve different certificates: serials %v", serials)
	}
	log, err := os.ReadFile(pebbleLog)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "POST /sign-me-up"); n != 1 {
		t.Errorf("pebble saw %d account registrations; want 1 (the second gateway waits for the first's account)", n)
	}
	if t.Failed() {
		t.Logf("pebble's log:\n%s", log)
	}
}

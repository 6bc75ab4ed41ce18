// Package pebbletest runs a throwaway ACME server for tests: Debian's pebble, with its companion
// pebble-challtestsrv as the DNS server that resolves every name to 127.0.0.1, each on free
// loopback ports. Pebble validates challenges for real, by connecting to the gateway's own
// listeners on the ports the test gives it.
package pebbletest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"github.com/scoregate/scoregate/internal/testing/freeport"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// Require returns the paths of pebble and pebble-challtestsrv. When one is missing it fails the
// test under CI (CI=true) and skips it, loudly, otherwise.
func Require(t testing.TB) (pebble, challtestsrv string) {
	t.Helper()
	var err error
	if pebble, err = exec.LookPath("pebble"); err == nil {
		challtestsrv, err = exec.LookPath("pebble-challtestsrv")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pebbletest: pebble is required under CI; install the pebble package (apt-get install -y pebble): %v", err)
		}
		t.Skip("SKIPPING: pebble not installed; apt-get install -y pebble (" + err.Error() + ")")
	}
	return pebble, challtestsrv
}

// Server is a running pebble.
type Server struct {
	// Directory is the ACME directory URL.
	Directory string
	// CAFile is a PEM file with the root of pebble's own HTTPS certificate, for the ACME client.
	CAFile string
	mgmt   string
	client *http.Client

	mu   sync.Mutex
	logs bytes.Buffer
}

// Start runs pebble validating HTTP-01 challenges on httpPort and TLS-ALPN-01 on tlsPort of
// 127.0.0.1 (the gateway's plain and HTTPS ports), until the test ends.
func Start(t testing.TB, httpPort, tlsPort int) *Server {
	t.Helper()
	pebble, challsrv := Require(t)
	dir := t.TempDir()
	// A CA of our own for pebble's HTTPS listeners, which the ACME client is told to trust.
	ca := testpki.NewCA(t, "pebbletest CA")
	certPEM, keyPEM := testpki.PEM(t, ca.Issue(t, "localhost", "127.0.0.1"))
	s := &Server{CAFile: filepath.Join(dir, "ca.pem")}
	write(t, s.CAFile, ca.CertPEM())
	write(t, filepath.Join(dir, "cert.pem"), certPEM)
	write(t, filepath.Join(dir, "key.pem"), keyPEM)

	dnsAddr := freeport.MustAddr(t)
	mgmt, acmeAddr, challMgmt := freeport.MustAddr(t), freeport.MustAddr(t), freeport.MustAddr(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  acmeAddr,
		"managementListenAddress":        mgmt,
		"certificate":                    filepath.Join(dir, "cert.pem"),
		"privateKey":                     filepath.Join(dir, "key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	b, _ := json.Marshal(cfg)
	write(t, filepath.Join(dir, "pebble.json"), b)

	s.start(t, challsrv, nil, "-dns01", dnsAddr, "-http01", "", "-https01", "", "-tlsalpn01", "",
		"-management", challMgmt, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	s.start(t, pebble, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0"},
		"-config", filepath.Join(dir, "pebble.json"), "-dnsserver", dnsAddr)

	s.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	s.Directory = "https://" + acmeAddr + "/dir"
	s.mgmt = "https://" + mgmt
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := s.client.Get(s.Directory)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebbletest: pebble did not answer at %s: %v\n%s", s.Directory, err, s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s
}

// Roots returns the PEM root that signs the certificates pebble issues (new at every start).
func (s *Server) Roots(t testing.TB) []byte {
	t.Helper()
	resp, err := s.client.Get(s.mgmt + "/roots/0")
	if err != nil {
		t.Fatalf("pebbletest: fetching the issuing root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pebbletest: fetching the issuing root: %d %v", resp.StatusCode, err)
	}
	return b
}

// Logs is what pebble and its DNS server have printed so far (pebble logs each order and
// validation).
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

type lockedWriter struct{ s *Server }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.logs.Write(p)
}

func (s *Server) start(t testing.TB, bin string, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lockedWriter{s}, lockedWriter{s}
	if err := cmd.Start(); err != nil {
		t.Fatalf("pebbletest: starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a loopback port that is free and that no outgoing connection will take
// (see package freeport).
func FreePort(t testing.TB) int {
	t.Helper()
	return freeport.Port(t)
}

// String names the server in test output.
func (s *Server) String() string { return fmt.Sprintf("pebble at %s", s.Directory) }

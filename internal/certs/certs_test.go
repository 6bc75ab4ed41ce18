package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

func TestAllowed(t *testing.T) {
	patterns := []string{"exact.example.com", "*.models.example.com", "UPPER.example.com"}
	for name, want := range map[string]bool{
		"exact.example.com":        true,
		"upper.example.com":        true,
		"iris.models.example.com":  true,
		"models.example.com":       false, // the wildcard needs one label
		"a.b.models.example.com":   false, // and only one
		".models.example.com":      false,
		"xmodels.example.com":      false,
		"exact.example.com.evil":   false,
		"evil.com":                 false,
		"iris.models.example.com.": false,
	} {
		if got := allowed(patterns, name); got != want {
			t.Errorf("allowed(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestGuardAsk(t *testing.T) {
	var asked []string
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Query().Get("domain")
		asked = append(asked, d)
		if d == "yes.example.com" {
			return
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	defer ask.Close()
	g, err := newGuard([]string{"configured.example.com"}, config.OnDemand{Allow: []string{"listed.example.com"}, Ask: ask.URL + "/check?token=abc"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, ok := range map[string]bool{"configured.example.com": true, "listed.example.com": true, "yes.example.com": true, "no.example.com": false} {
		if err := g.decide(ctx, name); (err == nil) != ok {
			t.Errorf("decide(%q) = %v, want allowed=%v", name, err, ok)
		}
	}
	if strings.Join(asked, ",") != "yes.example.com,no.example.com" && strings.Join(asked, ",") != "no.example.com,yes.example.com" {
		t.Errorf("the ask URL was asked about %v; names already allowed must not be asked", asked)
	}
	ask.Close()
	if err := g.decide(ctx, "yes.example.com"); err == nil {
		t.Error("an unreachable ask URL allowed a name")
	}
	g2, _ := newGuard(nil, config.OnDemand{Allow: []string{"a.example.com"}})
	if err := g2.decide(ctx, "b.example.com"); !errors.Is(err, errNotAllowed) {
		t.Errorf("allow-list only: %v", err)
	}
}

// pair writes a self-signed certificate for name with the given serial.
func pair(t *testing.T, dir, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(serial) * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func fileConfig(t *testing.T, files ...config.CertFiles) *config.Config {
	cfg := &config.Config{Listen: "127.0.0.1:8080", Services: []config.Service{{Name: "a", Auth: "none", Upstreams: []string{"http://127.0.0.1:1"}}}}
	cfg.TLS.Listen = "127.0.0.1:8443"
	cfg.TLS.Certificates = files
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serveTLS runs a TLS listener with m's configuration that completes handshakes only.
func serveTLS(t *testing.T, m *Manager) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestFilesBySNIAndHandshakeRules(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := pair(t, dir, "one.example.com", 10)
	c2, k2 := pair(t, dir, "two.example.com", 20)
	m, err := New(fileConfig(t, config.CertFiles{CertFile: c1, KeyFile: k1}, config.CertFiles{CertFile: c2, KeyFile: k2}), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, m)
	serial := func(conf *tls.Config) (int64, string, error) {
		conf.InsecureSkipVerify = true
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, conf)
		if err != nil {
			return 0, "", err
		}
		defer c.Close()
		st := c.ConnectionState()
		return st.PeerCertificates[0].SerialNumber.Int64(), st.NegotiatedProtocol, nil
	}
	for name, want := range map[string]int64{"one.example.com": 10, "two.example.com": 20, "other.example.com": 10, "": 10} {
		if got, _, err := serial(&tls.Config{ServerName: name}); err != nil || got != want {
			t.Errorf("SNI %q: serial %d (%v), want %d", name, got, err, want)
		}
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		if _, _, err := serial(&tls.Config{ServerName: "one.example.com", MinVersion: v, MaxVersion: v}); err == nil {
			t.Errorf("%s accepted", tls.VersionName(v))
		}
	}
	if _, proto, err := serial(&tls.Config{ServerName: "one.example.com", NextProtos: []string{"h2", "http/1.1"}}); err != nil || proto != "http/1.1" {
		t.Errorf("ALPN: %q %v, want http/1.1", proto, err)
	}
	// TLS 1.2 with a CBC or RSA-key-exchange suite only: refused.
	if _, _, err := serial(&tls.Config{ServerName: "one.example.com", MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}); err == nil {
		t.Error("a TLS 1.2 client offering only CBC and RSA key exchange suites was accepted")
	}
	exp := m.Expiries()
	if len(exp) != 2 || exp[0].Name != "one.example.com" || exp[0].Source != "file" || exp[1].NotAfter.Before(exp[0].NotAfter) {
		t.Errorf("Expiries() = %+v", exp)
	}
}

func TestFilesMissingAtStart(t *testing.T) {
	_, err := New(fileConfig(t, config.CertFiles{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"}), nil, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "tls.certificates[0]") {
		t.Fatalf("err = %v, want one naming tls.certificates[0]", err)
	}
}

func TestMinVersion13(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := pair(t, dir, "one.example.com", 10)
	cfg := fileConfig(t, config.CertFiles{CertFile: c1, KeyFile: k1})
	cfg.TLS.MinVersion = "1.3"
	m, err := New(cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, m)
	if c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 accepted with min_version 1.3")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

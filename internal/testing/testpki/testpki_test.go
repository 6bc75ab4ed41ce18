package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// An issued certificate verifies against the CA's pool for a server and for a client, names its
// hosts as DNS names and IP addresses, and does not verify against another CA's pool.
func TestIssue(t *testing.T) {
	ca := NewCA(t, "testpki CA")
	c := ca.Issue(t, "gw.example.test", "127.0.0.1", "::1", "other.example.test")
	if c.Leaf == nil {
		t.Fatal("Leaf is not set")
	}
	if got, want := c.Leaf.DNSNames, []string{"gw.example.test", "other.example.test"}; !slices.Equal(got, want) {
		t.Errorf("DNS names %v, want %v", got, want)
	}
	if got := c.Leaf.IPAddresses; len(got) != 2 || !got[0].Equal(net.IPv4(127, 0, 0, 1)) || !got[1].Equal(net.IPv6loopback) {
		t.Errorf("IP addresses %v, want 127.0.0.1 and ::1", got)
	}
	if c.Leaf.Subject.CommonName != "gw.example.test" {
		t.Errorf("common name %q, want the first host", c.Leaf.Subject.CommonName)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		for _, name := range []string{"gw.example.test", "127.0.0.1", "::1"} {
			opts := x509.VerifyOptions{Roots: ca.Pool(), DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}
			if _, err := c.Leaf.Verify(opts); err != nil {
				t.Errorf("usage %v, name %s: %v", usage, name, err)
			}
		}
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: NewCA(t, "another CA").Pool()}); err == nil {
		t.Error("the certificate verifies against another CA")
	}
	if now := time.Now(); now.Before(c.Leaf.NotBefore) || now.Add(12*time.Hour).After(c.Leaf.NotAfter) || c.Leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("valid %v to %v, want from before now to at least 12 hours ahead, inside the CA's %v", c.Leaf.NotBefore, c.Leaf.NotAfter, ca.Cert.NotAfter)
	}
}

// Each certificate from a CA has a serial number of its own, higher than the one before.
func TestIssueSerials(t *testing.T) {
	ca := NewCA(t, "testpki CA")
	a, b := ca.Issue(t, "a.test"), ca.Issue(t, "a.test")
	if a.Leaf.SerialNumber.Cmp(ca.Cert.SerialNumber) == 0 || a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) >= 0 {
		t.Errorf("serials: CA %v, first %v, second %v", ca.Cert.SerialNumber, a.Leaf.SerialNumber, b.Leaf.SerialNumber)
	}
}

// The PEM forms read back: the pair with tls.X509KeyPair, the CA as a root pool.
func TestPEM(t *testing.T) {
	ca := NewCA(t, "testpki CA")
	certPEM, keyPEM := PEM(t, ca.Issue(t, "localhost"))
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if pair.Leaf == nil || pair.Leaf.Subject.CommonName != "localhost" {
		t.Fatalf("the pair read back has leaf %v", pair.Leaf)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM()) {
		t.Fatal("CertPEM does not parse as a certificate")
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Error(err)
	}
	if b, _ := pem.Decode(ca.CertPEM()); b == nil || b.Type != "CERTIFICATE" {
		t.Errorf("CertPEM is %q", ca.CertPEM())
	}
}

// Mutual TLS with two certificates from one CA: each end verifies the other.
func TestMutualTLS(t *testing.T) {
	ca := NewCA(t, "testpki CA")
	server, client := ca.Issue(t, "127.0.0.1"), ca.Issue(t, "client")
	sc, cc := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert})
		defer s.Close()
		if err := s.Handshake(); err != nil {
			done <- err
			return
		}
		_, err := io.WriteString(s, s.ConnectionState().PeerCertificates[0].Subject.CommonName)
		done <- err
	}()
	c := tls.Client(cc, &tls.Config{Certificates: []tls.Certificate{client}, RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(got) != "client" {
		t.Errorf("the server saw client %q, want client", got)
	}
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/pebbletest"
	"github.com/scoregate/scoregate/internal/testing/redistest"
	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// testCA is a private certificate authority for tests that hands the gateway its certificates
// as files.
type testCA struct{ *testpki.CA }

func newTestCA(t *testing.T, name string) *testCA { return &testCA{testpki.NewCA(t, name)} }

// issue writes a certificate for names (DNS names or IP addresses) and its key to dir, and
// returns the two paths and the serial number. The certificate is good for both ends of a
// connection.
func (ca *testCA) issue(t *testing.T, dir, base string, names ...string) (certFile, keyFile string, serial int64) {
	t.Helper()
	c := ca.Issue(t, names...)
	certPEM, keyPEM := testpki.PEM(t, c)
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	writeFile(t, certFile, certPEM)
	writeFile(t, keyFile, keyPEM)
	return certFile, keyFile, c.Leaf.SerialNumber.Int64()
}

// pool returns a pool of the CA's certificate alone, for a client's RootCAs.
func (ca *testCA) pool() *x509.CertPool { return ca.Pool() }

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	// Write then rename, as an operator's deploy tool would, so a reader never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// httpsClient trusts roots and dials every name at addr, so that a test can use real server
// names on loopback.
func httpsClient(roots *x509.CertPool, addr string) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:     dial,
			TLSClientConfig: &tls.Config{RootCAs: roots},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func scoreWith(t *testing.T, c *http.Client, url, key string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// servedCertificate makes a handshake with server name name at addr and returns the leaf the
// gateway sent, without checking it.
func servedCertificate(addr, name string) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// waitForCertificate waits until the gateway at addr serves a certificate for name that roots
// verify.
func waitForCertificate(t *testing.T, addr, name string, roots *x509.CertPool, within time.Duration, stderr func() string) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for time.Now().Before(deadline) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: name, RootCAs: roots})
		if err == nil {
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			return leaf
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no trusted certificate for %s at %s within %s: %v\nstderr:\n%s", name, addr, within, lastErr, stderr())
	return nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// writeTLSConfig writes a configuration with top at the top level and svc inside the one
// service, iris.
func writeTLSConfig(t *testing.T, dir, upstream, top, svc string) string {
	t.Helper()
	path := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`admin_listen: "127.0.0.1:0"
store:
  dir: %q
%s
services:
  - name: iris
    auth: key
    upstreams: [%q]
%s`, filepath.Join(dir, "data"), top, upstream, svc)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TLS acceptance 1 and 6: a certificate from a real ACME flow (pebble, HTTP-01 answered on the
// plain listener, which otherwise redirects to HTTPS), a client trusting pebble's root scores
// with key auth, TLS 1.0 and 1.1 are refused, and h2 is never negotiated.
func TestACMECertificateFromPebble(t *testing.T) {
	plain, secure := pebbletest.FreePort(t), pebbletest.FreePort(t)
	pb := pebbletest.Start(t, plain, secure)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfg := writeTLSConfig(t, dir, upstream.URL, fmt.Sprintf(`listen: %q
tls:
  listen: %q
  acme:
    names: ["scoring.example.com"]
    directory: %q
    ca_roots_file: %q
    email: "ml-platform@example.com"
    disable_tls_alpn_challenge: true
`, loopback(plain), loopback(secure), pb.Directory, pb.CAFile), "")
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfg)
	key := regenerateKey(t, p, sharedOwnerKey, "primary")

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pb.Roots(t))
	leaf := waitForCertificate(t, loopback(secure), "scoring.example.com", roots, 60*time.Second, p.stderr.String)
	if leaf.DNSNames[0] != "scoring.example.com" {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	if !strings.Contains(pb.Logs(), "Attempting to validate w/ HTTP") {
		t.Errorf("pebble's log shows no HTTP-01 validation:\n%s", pb.Logs())
	}

	c := httpsClient(roots, loopback(secure))
	url := fmt.Sprintf("https://scoring.example.com:%d/api/v1/service/iris/score", secure)
	if code, body, err := scoreWith(t, c, url, key); err != nil || code != 200 {
		t.Fatalf("scoring over HTTPS with the key: %d %s %v", code, body, err)
	}
	if code, _, err := scoreWith(t, c, url, ""); err != nil || code != 401 {
		t.Fatalf("scoring over HTTPS without a key: %d %v", code, err)
	}

	// The plain listener redirects everything but challenges, and forwards nothing.
	resp, err := httpsClient(nil, loopback(plain)).Post(fmt.Sprintf("http://scoring.example.com:%d/api/v1/service/iris/score?x=1", plain), "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("https://scoring.example.com:%d/api/v1/service/iris/score?x=1", secure); resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("plain request: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	resp, err = http.Get(fmt.Sprintf("http://%s/.well-known/acme-challenge/unknown-token", loopback(plain)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown challenge token: %d, want 404", resp.StatusCode)
	}

	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", loopback(secure), &tls.Config{ServerName: "scoring.example.com", RootCAs: roots, MinVersion: v, MaxVersion: v})
		if err == nil {
			conn.Close()
			t.Errorf("a TLS %s handshake succeeded", tls.VersionName(v))
		}
	}
	conn, err := tls.Dial("tcp", loopback(secure), &tls.Config{ServerName: "scoring.example.com", RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if proto := conn.ConnectionState().NegotiatedProtocol; proto != "http/1.1" {
		t.Errorf("ALPN chose %q, want http/1.1", proto)
	}
	conn.Close()
	if code := p.stop(t, os.Interrupt); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	// Pebble's certificates name no OCSP responder: nothing is logged about it, and no error at all.
	for line := range strings.Lines(p.stderr.String()) {
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(strings.ToLower(line), "ocsp") {
			t.Errorf("error logged: %s", line)
		}
	}
}

// TLS acceptance 2: two instances sharing Redis storage make one ACME order and serve the same
// certificate. Pebble validates on instance A's ports only, so when B wins the lock A answers
// the challenge from the shared storage.
func TestTwoInstancesShareOneCertificate(t *testing.T) {
	srv := redistest.Start(t)
	plainA, secureA := pebbletest.FreePort(t), pebbletest.FreePort(t)
	plainB, secureB := pebbletest.FreePort(t), pebbletest.FreePort(t)
	pb := pebbletest.Start(t, plainA, secureA)
	_, upstream := newRecorder(t)
	env := []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}
	instance := func(plain, secure int) *proc {
		dir := t.TempDir()
		cfg := writeTLSConfig(t, dir, upstream.URL, fmt.Sprintf(`listen: %q
tls:
  listen: %q
  acme:
    names: ["shared.example.com"]
    directory: %q
    ca_roots_file: %q
    disable_tls_alpn_challenge: true
`, loopback(plain), loopback(secure), pb.Directory, pb.CAFile), "")
		text, _ := os.ReadFile(cfg)
		text = []byte(strings.Replace(string(text), "store:\n", fmt.Sprintf("store:\n  redis_url: %q\n", srv.URL()), 1))
		writeFile(t, cfg, text)
		return start(t, env, "serve", "-config", cfg)
	}
	a := instance(plainA, secureA)
	b := instance(plainB, secureB)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pb.Roots(t))
	stderr := func() string { return "A:\n" + a.stderr.String() + "\nB:\n" + b.stderr.String() }
	leafA := waitForCertificate(t, loopback(secureA), "shared.example.com", roots, 60*time.Second, stderr)
	leafB := waitForCertificate(t, loopback(secureB), "shared.example.com", roots, 60*time.Second, stderr)
	if leafA.SerialNumber.Cmp(leafB.SerialNumber) != 0 {
		t.Fatalf("the instances serve different certificates: serials %s and %s", leafA.SerialNumber, leafB.SerialNumber)
	}
	obtained := strings.Count(a.stderr.String(), "certificate obtained successfully") + strings.Count(b.stderr.String(), "certificate obtained successfully")
	if obtained != 1 {
		t.Fatalf("%d certificates obtained between the two instances, want 1\n%s", obtained, stderr())
	}
	if orders := strings.Count(pb.Logs(), "POST /order-plz"); orders != 1 {
		t.Errorf("pebble saw %d orders, want 1\n%s", orders, pb.Logs())
	}
}

// TLS acceptance 3: on demand with an allow-list (proved by TLS-ALPN-01 on the HTTPS listener);
// a name outside it gets no certificate and no ACME order. (check-config refusing an unguarded on-demand is in TestCheckConfigTLS.)
func TestOnDemandAllowList(t *testing.T) {
	plain, secure := pebbletest.FreePort(t), pebbletest.FreePort(t)
	pb := pebbletest.Start(t, plain, secure)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfg := writeTLSConfig(t, dir, upstream.URL, fmt.Sprintf(`listen: %q
tls:
  listen: %q
  acme:
    directory: %q
    ca_roots_file: %q
    disable_http_challenge: true
    on_demand:
      allow: ["*.models.example.com"]
`, loopback(plain), loopback(secure), pb.Directory, pb.CAFile), "")
	p := start(t, nil, "serve", "-config", cfg)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pb.Roots(t))

	if _, err := servedCertificate(loopback(secure), "evil.example.net"); err == nil {
		t.Fatal("a name outside the allow-list got a certificate")
	}
	if strings.Contains(pb.Logs(), "order-plz") {
		t.Fatalf("a name outside the allow-list caused an ACME order:\n%s", pb.Logs())
	}
	leaf := waitForCertificate(t, loopback(secure), "iris.models.example.com", roots, 60*time.Second, p.stderr.String)
	if leaf.DNSNames[0] != "iris.models.example.com" {
		t.Fatalf("certificate for %v", leaf.DNSNames)
	}
	if strings.Contains(pb.Logs(), "Attempting to validate w/ HTTP") { // pebble logs HTTP-01 attempts only
		t.Errorf("pebble validated over HTTP-01, which this gateway has turned off:\n%s", pb.Logs())
	}
	if _, err := servedCertificate(loopback(secure), "a.b.models.example.com"); err == nil {
		t.Fatal("a name two labels under the wildcard got a certificate")
	}
	if orders := strings.Count(pb.Logs(), "POST /order-plz"); orders != 1 {
		t.Errorf("pebble saw %d orders, want 1 (the allowed name's)\n%s", orders, pb.Logs())
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "certificates")); err != nil {
		t.Fatalf("no certificate storage under store.dir: %v", err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "data", "certificates", "certificates", "*", "evil.example.net"))
	if len(matches) > 0 {
		t.Fatalf("storage holds %v", matches)
	}
}

// TLS acceptance 4: certificate files the user supplies are served, and a replaced pair is
// served without a restart; a broken replacement is logged and the previous pair kept.
func TestCertificateFilesReload(t *testing.T) {
	ca := newTestCA(t, "files CA")
	dir := t.TempDir()
	certFile, keyFile, serial1 := ca.issue(t, dir, "server", "files.example.com")
	_, upstream := newRecorder(t)
	secure := pebbletest.FreePort(t)
	cfg := writeTLSConfig(t, dir, upstream.URL, fmt.Sprintf(`listen: "127.0.0.1:0"
tls:
  listen: %q
  redirect_http: false
  reload_interval: 100ms
  certificates:
    - cert_file: %q
      key_file: %q
`, loopback(secure), certFile, keyFile), "")
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfg)
	key := regenerateKey(t, p, sharedOwnerKey, "primary")
	c := httpsClient(ca.pool(), loopback(secure))
	url := fmt.Sprintf("https://files.example.com:%d/api/v1/service/iris/score", secure)
	if code, body, err := scoreWith(t, c, url, key); err != nil || code != 200 {
		t.Fatalf("scoring over HTTPS: %d %s %v", code, body, err)
	}
	if code, _, err := scoreWith(t, http.DefaultClient, p.dataURL+"/api/v1/service/iris/score", key); err != nil || code != 200 {
		t.Fatalf("redirect_http: false keeps the plain listener serving: %d %v", code, err)
	}
	leaf, err := servedCertificate(loopback(secure), "files.example.com")
	if err != nil || leaf.SerialNumber.Int64() != serial1 {
		t.Fatalf("served %v (%v), want serial %d", leaf, err, serial1)
	}

	// /metrics shows when the served certificate expires.
	metrics := getMetrics(t, p)
	if !strings.Contains(metrics, `scoregate_tls_certificate_expiry_seconds{name="files.example.com",source="file"}`) {
		t.Errorf("/metrics has no certificate expiry:\n%s", metrics)
	}

	// A new pair is picked up; the connection pool of the client does not matter to the check.
	_, _, serial2 := ca.issue(t, dir, "server", "files.example.com")
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaf, err = servedCertificate(loopback(secure), "files.example.com")
		if err == nil && leaf.SerialNumber.Int64() == serial2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replaced certificate (serial %d) is not served: %v %v\n%s", serial2, leaf.SerialNumber, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A broken replacement keeps the working pair.
	writeFile(t, keyFile, []byte("not a key"))
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), "do not load") {
		if time.Now().After(deadline) {
			t.Fatalf("a broken key file was not reported\n%s", p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leaf, err := servedCertificate(loopback(secure), "files.example.com"); err != nil || leaf.SerialNumber.Int64() != serial2 {
		t.Fatalf("after a broken replacement: %v %v", leaf, err)
	}
	c = httpsClient(ca.pool(), loopback(secure))
	if code, body, err := scoreWith(t, c, url, key); err != nil || code != 200 {
		t.Fatalf("scoring after a broken replacement: %d %s %v", code, body, err)
	}
}

// TLS acceptance 5: an https:// upstream with a private CA and mutual TLS works; with the wrong
// CA the caller gets 502 and the log says why.
func TestUpstreamMutualTLS(t *testing.T) {
	ca := newTestCA(t, "model CA")
	other := newTestCA(t, "some other CA")
	dir := t.TempDir()
	srvCert, srvKey, _ := ca.issue(t, dir, "model", "127.0.0.1")
	cliCert, cliKey, _ := ca.issue(t, dir, "gateway-client", "gateway")
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM())
	writeFile(t, filepath.Join(dir, "other.pem"), other.CertPEM())

	var clientNames atomic.Value
	model := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			clientNames.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"result": [0.5]}`)
	}))
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	model.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool()}
	model.StartTLS()
	defer model.Close()

	for _, tc := range []struct {
		name, caFile string
		want         int
		log          string
	}{
		{"right CA", filepath.Join(dir, "ca.pem"), 200, ""},
		{"wrong CA", filepath.Join(dir, "other.pem"), 502, "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			cfg := writeTLSConfig(t, d, model.URL, `listen: "127.0.0.1:0"`, fmt.Sprintf(`    tls:
      ca_file: %q
      cert_file: %q
      key_file: %q
`, tc.caFile, cliCert, cliKey))
			p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfg)
			key := regenerateKey(t, p, sharedOwnerKey, "primary")
			resp, body := score(t, p.dataURL+"/api/v1/service/iris/score", key)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d %s, want %d\n%s", resp.StatusCode, body, tc.want, p.stderr)
			}
			if tc.want == 200 && clientNames.Load() != "gateway" {
				t.Fatalf("the model saw client certificate %v", clientNames.Load())
			}
			if tc.log != "" {
				deadline := time.Now().Add(5 * time.Second)
				for !strings.Contains(p.stderr.String(), tc.log) || !strings.Contains(p.stderr.String(), model.URL) {
					if time.Now().After(deadline) {
						t.Fatalf("no log line naming the upstream and %q:\n%s", tc.log, p.stderr)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
}

// TLS acceptance 3 (first half), and the other mistakes of the tls section, through the binary.
func TestCheckConfigTLS(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"unguarded on-demand", "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    on_demand: {}\n", "tls.acme.on_demand: needs a guard"},
		{"on-demand as an empty key", "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    on_demand:\n", "tls.acme.on_demand: needs a guard"},
		{"no certificates", "tls:\n  listen: \"127.0.0.1:8443\"\n", "tls: the HTTPS listener needs certificates"},
		{"old TLS", "tls:\n  listen: \"127.0.0.1:8443\"\n  min_version: \"1.0\"\n  acme:\n    names: [a.example.com]\n", "tls.min_version: \"1.0\" is not 1.2 or 1.3"},
		{"plain ACME directory", "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    names: [a.example.com]\n    directory: \"http://ca.example.com/dir\"\n", "tls.acme.directory"},
		{"ACME without a listener", "tls:\n  acme:\n    names: [a.example.com]\n", "tls.listen: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, dir, "http://127.0.0.1:5001", tc.yaml)
			out, _, code := runCLI(t, nil, "check-config", "-config", path)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output:\n%s\nwant %q", code, out, tc.want)
			}
		})
	}
	path := writeConfig(t, dir, "http://127.0.0.1:5001", "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    on_demand:\n      allow: [\"*.example.com\"]\n")
	if out, errOut, code := runCLI(t, nil, "check-config", "-config", path); code != 0 {
		t.Fatalf("guarded on-demand: exit %d\n%s%s", code, out, errOut)
	}
}

// getMetrics returns p's /metrics text.
func getMetrics(t *testing.T, p *proc) string {
	t.Helper()
	resp, err := http.Get(p.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/pebbletest"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// Finding 3 and 12b through the binary: check-config refuses a Redis URL that turns off TLS
// verification and an on-demand pattern over a public suffix, naming the field.
func TestFinding3And12bCheckConfig(t *testing.T) {
	dir := t.TempDir()
	onDemand := func(pattern string) string {
		return "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    on_demand:\n      allow: [\"" + pattern + "\"]\n"
	}
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       string // "" when valid
	}{
		{"redis_url with skip_verify", "", []string{"GATEWAY_STORE_REDIS_URL=rediss://gw:s3cret@redis.example.com:6380/0?skip_verify=true"}, "store.redis_url: skip_verify"},
		{"verified redis_url", "", []string{"GATEWAY_STORE_REDIS_URL=rediss://gw:s3cret@redis.example.com:6380/0"}, ""},
		{"on_demand.allow *.com", onDemand("*.com"), nil, `tls.acme.on_demand.allow[0]: "*.com" covers the public suffix`},
		{"on_demand.allow *.co.uk", onDemand("*.co.uk"), nil, `tls.acme.on_demand.allow[0]: "*.co.uk" covers the public suffix`},
		{"on_demand.allow *.github.io", onDemand("*.github.io"), nil, `tls.acme.on_demand.allow[0]: "*.github.io" covers the public suffix`},
		{"on_demand.allow *.example.com", onDemand("*.example.com"), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, dir, "http://127.0.0.1:5001", tc.yaml)
			out, errOut, code := runCLI(t, tc.env, "check-config", "-config", path)
			if strings.Contains(out+errOut, "s3cret") {
				t.Errorf("the output repeats the Redis password:\n%s%s", out, errOut)
			}
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("exit %d\n%s%s", code, out, errOut)
				}
				return
			}
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output:\n%s%s\nwant %q", code, out, errOut, tc.want)
			}
		})
	}
}

// rawHTTP writes one raw request on c and reads the response.
func rawHTTP(t *testing.T, c net.Conn, raw string) *http.Response {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// Findings 12a and 12c through the binary, with certificate files: over HTTPS a Host that is not
// the connection's SNI gets 421; the plain listener redirects only to names a certificate
// covers, and answers 421 for any other Host instead of copying it into Location.
func TestFinding12TLSHostChecks(t *testing.T) {
	ca := newTestCA(t, "host checks CA")
	dir := t.TempDir()
	certFile, keyFile, _ := ca.issue(t, dir, "server", "files.example.com", "*.wild.example.com")
	_, upstream := newRecorder(t)
	secure := pebbletest.FreePort(t)
	cfg := writeTLSConfig(t, dir, upstream.URL, fmt.Sprintf(`listen: "127.0.0.1:0"
tls:
  listen: %q
  certificates:
    - cert_file: %q
      key_file: %q
`, loopback(secure), certFile, keyFile), "")
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfg)
	key := regenerateKey(t, p, sharedOwnerKey, "primary")

	t.Run("12a HTTPS", func(t *testing.T) {
		for _, tc := range []struct {
			host   string
			status int
		}{
			{"files.example.com", 200},
			{"files.example.com:443", 200},
			{"a.wild.example.com", 421}, // covered by the certificate, but not the SNI
			{"evil.example.net", 421},
		} {
			c, err := tls.Dial("tcp", loopback(secure), &tls.Config{ServerName: "files.example.com", RootCAs: ca.pool()})
			if err != nil {
				t.Fatal(err)
			}
			resp := rawHTTP(t, c, "GET /api/v1/service/iris/score HTTP/1.1\r\nHost: "+tc.host+"\r\nAuthorization: Bearer "+key+"\r\n\r\n")
			c.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("SNI files.example.com, Host %s: %d, want %d", tc.host, resp.StatusCode, tc.status)
			}
		}
	})
	t.Run("12c plain listener", func(t *testing.T) {
		addr := strings.TrimPrefix(p.dataURL, "http://")
		for _, tc := range []struct {
			host, location string
			status         int
		}{
			{"files.example.com", fmt.Sprintf("https://files.example.com:%d/x", secure), 308},
			{"iris.wild.example.com:80", fmt.Sprintf("https://iris.wild.example.com:%d/x", secure), 308},
			{"evil.example.net", "", 421},
			{"a.b.wild.example.com", "", 421},
		} {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			resp := rawHTTP(t, c, "GET /x HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
			c.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
				t.Errorf("Host %s: %d Location %q, want %d %q", tc.host, resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.location)
			}
		}
	})
}

// The two ACL users of docs/shared-state.md: the gateway's, for the credentials' state, and the certificate
// storage's, each limited to its own prefix.
const (
	gatewayACL = "user gateway on >gw-pass ~{scoregate}:* ~scoregate:rl:* &{scoregate}:changes -@all +@read +@write +@pubsub +@transaction +@scripting -@dangerous +ping +hello +wait +time"
	certsACL   = "user certs on >certs-pass ~{scoregate-certs}:* -@all +@read +@write +@scripting -@dangerous +ping +hello"
)

// Finding 13 through the binary: with tls.storage_redis_url the certificate from a real ACME
// flow, its key and the ACME account go to that Redis, under its own ACL user, and nothing of
// them to the store's; with GATEWAY_TLS_STORAGE_KEY no private key is readable there. Then
// "gateway store seal-certificates" finds nothing left in clear.
func TestFinding13CertificateStorageApartAndSealed(t *testing.T) {
	acl := redistest.WithACL("user default on nopass ~* &* +@all", gatewayACL, certsACL)
	authRedis, certRedis := redistest.Start(t, acl), redistest.Start(t, acl)
	plain, secure := pebbletest.FreePort(t), pebbletest.FreePort(t)
	pb := pebbletest.Start(t, plain, secure)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfg := writeTLSConfig(t, dir, upstream.URL, fmt.Sprintf(`listen: %q
tls:
  listen: %q
  storage_redis_url: "redis://certs:certs-pass@%s/0"
  acme:
    names: ["apart.example.com"]
    directory: %q
    ca_roots_file: %q
    disable_tls_alpn_challenge: true
`, loopback(plain), loopback(secure), certRedis.Addr, pb.Directory, pb.CAFile), "")
	text, _ := os.ReadFile(cfg)
	text = []byte(strings.Replace(string(text), "store:\n", fmt.Sprintf("store:\n  redis_url: \"redis://gateway:gw-pass@%s/0\"\n", authRedis.Addr), 1))
	writeFile(t, cfg, text)
	env := []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey, "GATEWAY_TLS_STORAGE_KEY=" + strings.Repeat("0f", 32)}
	p := start(t, env, "serve", "-config", cfg)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pb.Roots(t))
	waitForCertificate(t, loopback(secure), "apart.example.com", roots, 60*time.Second, p.stderr.String)
	if code := p.stop(t, os.Interrupt); code != 0 {
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "stored in clear") {
		t.Errorf("the gateway warns of keys in clear although they are sealed:\n%s", p.stderr)
	}

	if keys := authRedis.Do(t, "KEYS", "*certmagic*"); keys != "" {
		t.Errorf("the store's Redis holds certificate data:\n%s", keys)
	}
	if keys := authRedis.Do(t, "KEYS", "*"); !strings.Contains(keys, "{scoregate}:secret") {
		t.Errorf("the store's Redis does not hold the store (keys %q)", keys)
	}
	fields := strings.Fields(certRedis.Do(t, "HKEYS", "{scoregate-certs}:certmagic:values"))
	var privateKeys []string
	for _, f := range fields {
		if strings.HasSuffix(f, ".key") {
			privateKeys = append(privateKeys, f)
		}
	}
	if len(privateKeys) < 2 {
		t.Fatalf("the certificate storage holds %v; want the certificate's and the account's private keys", fields)
	}
	for _, f := range fields {
		v := certRedis.Do(t, "HGET", "{scoregate-certs}:certmagic:values", f)
		if strings.Contains(v, "PRIVATE KEY") || strings.Contains(v, "BEGIN") {
			t.Errorf("%s is stored readable", f)
		}
	}

	out, errOut, code := runCLI(t, env, "store", "seal-certificates", "-config", cfg)
	if code != 0 || !strings.Contains(out, "sealed 0 values") {
		t.Fatalf("seal-certificates: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "certs-pass") {
		t.Errorf("seal-certificates printed the Redis password:\n%s%s", out, errOut)
	}
}

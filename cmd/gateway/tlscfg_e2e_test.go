package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/pebbletest"
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

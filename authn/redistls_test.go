//go:build unix

package authn

import (
	"context"
	"github.com/scoregate/scoregate/internal/testing/freeport"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// tlsRedis starts a redis-server that also listens with TLS, its certificate signed by a private
// CA, asking clients for a certificate from that CA. It returns the TLS address and the CA with
// its PEM file.
func tlsRedis(t *testing.T) (addr string, ca *testpki.CA, caFile string) {
	t.Helper()
	dir := t.TempDir()
	ca = testpki.NewCA(t, "redis test CA")
	certPEM, keyPEM := testpki.PEM(t, ca.Issue(t, "127.0.0.1", "redis.test"))
	caFile = filepath.Join(dir, "ca.pem")
	for name, data := range map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM, "ca.pem": ca.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	port := freeport.Port(t)
	redistest.Start(t, redistest.WithArgs("--tls-port", strconv.Itoa(port),
		"--tls-cert-file", filepath.Join(dir, "cert.pem"), "--tls-key-file", filepath.Join(dir, "key.pem"),
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "optional"))
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), ca, caFile
}

// Finding 3: TLS to Redis is always verified. A private CA is given by store.redis_ca_file (and
// a client certificate by redis_cert_file and redis_key_file); a rediss:// URL with skip_verify
// is refused even where validation was skipped, and without the CA the connection fails.
func TestFinding3RedisTLSIsVerified(t *testing.T) {
	addr, ca, caFile := tlsRedis(t)
	dir := t.TempDir()
	clientCert, clientKey := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	certPEM, keyPEM := testpki.PEM(t, ca.Issue(t, "gateway"))
	os.WriteFile(clientCert, certPEM, 0o600)
	os.WriteFile(clientKey, keyPEM, 0o600)
	for _, tc := range []struct {
		name    string
		store   config.Store
		wantErr string // "" when the connection must work
	}{
		{"the private CA from redis_ca_file", config.Store{RedisURL: "rediss://" + addr + "/0", RedisCAFile: caFile}, ""},
		{"a client certificate too", config.Store{RedisURL: "rediss://" + addr + "/0", RedisCAFile: caFile, RedisCertFile: clientCert, RedisKeyFile: clientKey}, ""},
		{"redis_addrs with redis_tls", config.Store{RedisAddrs: []string{addr}, RedisTLS: true, RedisCAFile: caFile}, ""},
		{"without the CA", config.Store{RedisURL: "rediss://" + addr + "/0"}, "certificate signed by unknown authority"},
		{"skip_verify", config.Store{RedisURL: "rediss://" + addr + "/0?skip_verify=true"}, "store.redis_url: skip_verify is refused"},
		{"skip_verify beside the CA", config.Store{RedisURL: "rediss://" + addr + "/0?skip_verify=true", RedisCAFile: caFile}, "store.redis_url: skip_verify is refused"},
		{"a CA file that holds none", config.Store{RedisURL: "rediss://" + addr + "/0", RedisCAFile: clientKey}, "store.redis_ca_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store
			st.RedisPrefix, st.RedisTimeout = "{scoregate}:", config.DefaultRedisTimeout*4
			s, err := OpenRedis(context.Background(), st)
			if err == nil {
				s.Close()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("OpenRedis: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("OpenRedis = %v, want an error saying %q", err, tc.wantErr)
			}
		})
	}
}

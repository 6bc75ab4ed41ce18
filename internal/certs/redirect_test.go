package certs

import (
	"log/slog"
	"testing"

	"github.com/scoregate/scoregate/config"
)

// Finding 12c: the plain listener redirects only to hosts the HTTPS listener serves: configured
// ACME names, names a certificate file covers, and names the on-demand allow list admits. Only an
// on-demand section guarded by an ask URL alone leaves every host redirected.
func TestFinding12cRedirectHosts(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := pair(t, dir, "files.example.com", 10)
	for _, tc := range []struct {
		name   string
		setup  func(*config.Config)
		admits map[string]bool // nil: RedirectHosts must be nil (every host)
	}{
		{"files, ACME names and an allow list", func(c *config.Config) {
			c.TLS.Certificates = []config.CertFiles{{CertFile: certFile, KeyFile: keyFile}}
			c.TLS.ACME.Names = []string{"Scoring.example.com"}
			c.TLS.ACME.OnDemand.Allow = []string{"*.models.example.com"}
		}, map[string]bool{
			"files.example.com": true, "scoring.example.com": true, "iris.models.example.com": true,
			"evil.example.net": false, "a.b.models.example.com": false, "models.example.com": false, "127.0.0.1": false,
		}},
		{"on demand with an allow list alone", func(c *config.Config) {
			c.TLS.ACME.OnDemand.Allow = []string{"*.models.example.com"}
		}, map[string]bool{"iris.models.example.com": true, "evil.example.net": false}},
		{"on demand with an allow list and an ask URL", func(c *config.Config) {
			c.TLS.ACME.OnDemand = config.OnDemand{Allow: []string{"*.models.example.com"}, Ask: "http://127.0.0.1:9/check"}
		}, map[string]bool{"iris.models.example.com": true, "evil.example.net": false}},
		{"on demand with an ask URL alone", func(c *config.Config) {
			c.TLS.ACME.OnDemand.Ask = "http://127.0.0.1:9/check"
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{Listen: "127.0.0.1:8080", Services: []config.Service{{Name: "a", Auth: "none", Upstreams: []string{"http://127.0.0.1:1"}}}}
			cfg.Store.Dir = t.TempDir()
			cfg.TLS.Listen = "127.0.0.1:8443"
			tc.setup(cfg)
			cfg.ApplyDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			m, err := New(cfg, FileStorage(cfg), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Stop()
			hosts := m.RedirectHosts()
			if tc.admits == nil {
				if hosts != nil {
					t.Fatal("RedirectHosts is not nil")
				}
				return
			}
			if hosts == nil {
				t.Fatal("RedirectHosts is nil: every host would be redirected")
			}
			for host, want := range tc.admits {
				if got := hosts(host); got != want {
					t.Errorf("%s: %v, want %v", host, got, want)
				}
			}
		})
	}
}

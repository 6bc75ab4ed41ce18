package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
)

// TLS configures the HTTPS data-plane listener. It is on when listen is set, and then needs at
// least one source of certificates: files, ACME names, or ACME on demand.
type TLS struct {
	// Listen is the HTTPS data-plane address (host:port). Default "" (no HTTPS listener).
	Listen string `yaml:"listen"`
	// RedirectHTTP makes the plain listener (listen) answer every request with a 308 redirect to
	// HTTPS, except ACME HTTP-01 challenges, which it answers itself. When false the plain
	// listener keeps serving the data plane beside HTTPS. Default true.
	RedirectHTTP bool `yaml:"redirect_http"`
	// MinVersion is the oldest TLS version accepted: "1.2" or "1.3". Default "1.2".
	MinVersion string `yaml:"min_version"`
	// Certificates are certificate and key files the user supplies, served by name (SNI). A
	// replaced pair is picked up without a restart, within reload_interval.
	Certificates []CertFiles `yaml:"certificates"`
	// ReloadInterval is how often certificate files are checked for changes. Default 10s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// ACME obtains and renews certificates from an ACME CA (Let's Encrypt by default).
	ACME ACME `yaml:"acme"`
	// StorageRedisURL is a Redis of its own for the ACME certificates, their private keys and
	// the ACME account (redis:// or rediss://, verified with store.redis_ca_file and the store's
	// client certificate), so that they live apart from the credentials' state and under
	// another ACL user. Default "": the store's Redis when store is shared, else files under
	// store.dir.
	StorageRedisURL string `yaml:"storage_redis_url"`
	// StorageRedisPrefix starts every key of the certificate storage in storage_redis_url, in
	// braces so that in a cluster they share one hash slot; it differs from store.redis_prefix
	// so that two ACL users of one Redis can each see only their own keys.
	// Default "{scoregate-certs}:".
	StorageRedisPrefix string `yaml:"storage_redis_prefix"`
	// StorageKey encrypts every value of the certificate storage (private keys, certificates,
	// the ACME account) with AES-256-GCM: 32 random bytes, written as 64 hex digits or in base64
	// (openssl rand -base64 32). Prefer GATEWAY_TLS_STORAGE_KEY, or storage_key_file, to writing
	// it in the file. Every instance sharing the storage needs the same key. Default "": values
	// are stored in clear.
	StorageKey string `yaml:"storage_key"`
	// StorageKeyFile is a file holding storage_key (hex or base64). Use either this or
	// storage_key. Default "".
	StorageKeyFile string `yaml:"storage_key_file"`
}

// CertFiles is one PEM certificate chain and its private key.
type CertFiles struct {
	// CertFile is the PEM certificate chain, leaf first. Required.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key. Required.
	KeyFile string `yaml:"key_file"`
}

// ACME configures automatic certificates.
type ACME struct {
	// Names are the DNS names to obtain certificates for at start and keep renewed.
	Names []string `yaml:"names"`
	// Directory is the ACME directory URL of the CA. Default Let's Encrypt's production
	// directory, https://acme-v02.api.letsencrypt.org/directory.
	Directory string `yaml:"directory"`
	// Email is the contact address of the ACME account. Default "" (none).
	Email string `yaml:"email"`
	// CARootsFile is a PEM file of roots to trust for the ACME directory's own HTTPS, for a
	// private ACME CA. Default: the system roots.
	CARootsFile string `yaml:"ca_roots_file"`
	// EABKeyID is the key id of the external account binding some CAs require, with
	// eab_mac_key. Default "" (none).
	EABKeyID string `yaml:"eab_key_id"`
	// EABMACKey is the MAC key of the external account binding, with eab_key_id. Prefer
	// GATEWAY_TLS_ACME_EAB_MAC_KEY to writing it in the file. Default "" (none).
	EABMACKey string `yaml:"eab_mac_key"`
	// DisableHTTPChallenge turns off the HTTP-01 challenge, which is answered on the plain
	// listener. Default false.
	DisableHTTPChallenge bool `yaml:"disable_http_challenge"`
	// DisableTLSALPNChallenge turns off the TLS-ALPN-01 challenge, which is answered on the HTTPS
	// listener. Not together with disable_http_challenge. Default false.
	DisableTLSALPNChallenge bool `yaml:"disable_tls_alpn_challenge"`
	// OnDemand, when present, also obtains a certificate during the first handshake for a name
	// not in names, if the name passes its guard. It must have allow or ask: an unguarded
	// on-demand gateway would request a certificate for any name a client asks for.
	OnDemand OnDemand `yaml:"on_demand"`
}

// OnDemand guards on-demand issuance.
type OnDemand struct {
	// Allow lists the names (exact, or "*.example.com" for any one label under example.com)
	// that may get a certificate on demand.
	Allow []string `yaml:"allow"`
	// Ask is a URL asked before each on-demand issuance, as GET <ask>?domain=<name>; any 2xx
	// answer allows it, anything else (or no answer within 5s) refuses it.
	Ask string `yaml:"ask"`
}

// UpstreamTLS configures TLS to a service's https:// upstreams.
type UpstreamTLS struct {
	// CAFile is a PEM file of the roots that sign the model's certificate. Default: the system
	// roots.
	CAFile string `yaml:"ca_file"`
	// CertFile is the gateway's client certificate (PEM), for mutual TLS, with key_file.
	// Default: none.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the private key (PEM) of cert_file. Default: none.
	KeyFile string `yaml:"key_file"`
	// ServerName is the name checked in the model's certificate. Default: the upstream's host.
	ServerName string `yaml:"server_name"`
}

// Defaults of the tls section.
const (
	DefaultACMEDirectory      = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultTLSReloadInterval  = 10 * time.Second
	DefaultTLSMinVersion      = "1.2"
	DefaultStorageRedisPrefix = "{scoregate-certs}:"
)

// Enabled reports whether the HTTPS listener is on.
func (t TLS) Enabled() bool { return t.Listen != "" }

// OnDemandEnabled reports whether the configuration asks for on-demand issuance.
func (c *Config) OnDemandEnabled() bool {
	od := c.TLS.ACME.OnDemand
	return c.present["tls.acme.on_demand"] || len(od.Allow) > 0 || od.Ask != ""
}

func (c *Config) applyTLSDefaults() {
	t := &c.TLS
	if !c.present["tls.redirect_http"] {
		t.RedirectHTTP = true
	}
	setDefault(&t.MinVersion, DefaultTLSMinVersion)
	setDefault(&t.ReloadInterval, DefaultTLSReloadInterval)
	setDefault(&t.ACME.Directory, DefaultACMEDirectory)
	setDefault(&t.StorageRedisPrefix, DefaultStorageRedisPrefix)
}

func (c *Config) validateTLS(add func(path, format string, args ...any)) {
	t := c.TLS
	if !t.Enabled() {
		if len(t.Certificates) > 0 || len(t.ACME.Names) > 0 || c.OnDemandEnabled() {
			add("tls.listen", "required (host:port of the HTTPS listener) when certificates or ACME are configured")
		}
	} else {
		if _, _, err := net.SplitHostPort(t.Listen); err != nil {
			add("tls.listen", "%q is not host:port", t.Listen)
		} else if t.Listen == c.Listen || t.Listen == c.AdminListen {
			add("tls.listen", "must differ from listen and admin_listen")
		}
		if len(t.Certificates) == 0 && len(t.ACME.Names) == 0 && !c.OnDemandEnabled() {
			add("tls", "the HTTPS listener needs certificates: tls.certificates, tls.acme.names or tls.acme.on_demand")
		}
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		add("tls.min_version", "%q is not 1.2 or 1.3 (older versions are not offered)", t.MinVersion)
	}
	if t.ReloadInterval <= 0 {
		add("tls.reload_interval", "must be greater than zero")
	}
	for i, cf := range t.Certificates {
		p := fmt.Sprintf("tls.certificates[%d]", i)
		if cf.CertFile == "" {
			add(p+".cert_file", "required")
		}
		if cf.KeyFile == "" {
			add(p+".key_file", "required")
		}
	}
	c.validateCertStorage(add)
	a := t.ACME
	for i, n := range a.Names {
		if !dnsName(n, false) {
			add(fmt.Sprintf("tls.acme.names[%d]", i), "%q is not a DNS name", n)
		}
	}
	if u, err := url.Parse(a.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		add("tls.acme.directory", "%q must be an https:// URL", a.Directory)
	}
	if (a.EABKeyID == "") != (a.EABMACKey == "") {
		add("tls.acme.eab_key_id", "eab_key_id and eab_mac_key go together")
	}
	if a.DisableHTTPChallenge && a.DisableTLSALPNChallenge {
		add("tls.acme.disable_tls_alpn_challenge", "with disable_http_challenge too, no challenge is left to prove a name")
	}
	if c.OnDemandEnabled() {
		od := a.OnDemand
		if len(od.Allow) == 0 && od.Ask == "" {
			add("tls.acme.on_demand", "needs a guard: allow (a list of names) or ask (a URL that approves each name); without one, any client could make the gateway request a certificate for any name")
		}
		for i, n := range od.Allow {
			switch suffix, covers := coversPublicSuffix(n); {
			case !dnsName(n, true):
				add(fmt.Sprintf("tls.acme.on_demand.allow[%d]", i), "%q is not a DNS name or *.name", n)
			case covers:
				add(fmt.Sprintf("tls.acme.on_demand.allow[%d]", i), "%q covers the public suffix %q, under which anyone may register names: any client could make the gateway order certificates for them; allow names under a domain you control (*.models.example.com)", n, suffix)
			}
		}
		if od.Ask != "" {
			if u, err := url.Parse(od.Ask); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("tls.acme.on_demand.ask", "%q must be an http:// or https:// URL", od.Ask)
			}
		}
	}
}

// coversPublicSuffix reports whether an on-demand pattern (a name, or "*.name") names a public
// suffix or every name one label under it, by the Public Suffix List (ICANN and private
// sections, as golang.org/x/net/publicsuffix carries it): "com", "*.com", "*.co.uk" and
// "*.github.io" do, "*.example.com" does not. A name under a top-level domain the list does not
// know counts as under a public suffix too (the list's default rule "*").
func coversPublicSuffix(pattern string) (suffix string, covers bool) {
	name := strings.TrimSuffix(strings.ToLower(strings.TrimPrefix(pattern, "*.")), ".")
	if name == "" {
		return "", false
	}
	suffix, _ = publicsuffix.PublicSuffix(name)
	return suffix, suffix == name
}

// dnsName reports whether s is a DNS name (letters, digits, dashes, dots), with a leading "*."
// when wildcard is allowed.
func dnsName(s string, wildcard bool) bool {
	if wildcard {
		s = strings.TrimPrefix(s, "*.")
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func validateUpstreamTLS(p string, svc Service, add func(path, format string, args ...any)) {
	ut := svc.TLS
	if (ut.CertFile == "") != (ut.KeyFile == "") {
		add(p+".tls.cert_file", "cert_file and key_file go together (the client certificate for mutual TLS)")
	}
	if ut == (UpstreamTLS{}) {
		return
	}
	anyTLS := false
	for _, u := range svc.AllUpstreams() {
		if up, err := ParseUpstream(u); err == nil && up.TLS {
			anyTLS = true
		}
	}
	if !anyTLS {
		add(p+".tls", "set, but no upstream is https://")
	}
}

// ACMEEnabled reports whether certificates are obtained through ACME, the only user of the
// certificate storage.
func (c *Config) ACMEEnabled() bool {
	return c.TLS.Enabled() && (len(c.TLS.ACME.Names) > 0 || c.OnDemandEnabled())
}

// validateCertStorage checks where ACME state lives and the key that encrypts it.
func (c *Config) validateCertStorage(add func(path, format string, args ...any)) {
	t := c.TLS
	if t.StorageRedisURL != "" {
		if p := redisURLProblem(t.StorageRedisURL); p != "" {
			add("tls.storage_redis_url", "%s", p)
		}
	}
	if t.StorageKey != "" && t.StorageKeyFile != "" {
		add("tls.storage_key_file", "use either tls.storage_key (or GATEWAY_TLS_STORAGE_KEY) or tls.storage_key_file, not both")
	}
	if t.StorageKey != "" {
		if _, err := ParseStorageKey(t.StorageKey); err != nil {
			add("tls.storage_key", "%v", err) // the message never repeats the key
		}
	}
	if !c.ACMEEnabled() {
		for _, f := range []struct{ path, value string }{
			{"tls.storage_redis_url", t.StorageRedisURL},
			{"tls.storage_key", t.StorageKey},
			{"tls.storage_key_file", t.StorageKeyFile},
		} {
			if f.value != "" {
				add(f.path, "set, but no certificate is obtained through ACME (tls.acme.names or tls.acme.on_demand), the only user of the certificate storage")
			}
		}
	}
}

// ParseStorageKey reads tls.storage_key: 32 bytes written as 64 hex digits or in base64
// (standard or URL alphabet, padded or not), surrounding white space ignored.
func ParseStorageKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("must be 32 bytes written as 64 hex digits or in base64 (openssl rand -base64 32)")
}

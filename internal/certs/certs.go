// Package certs provides the HTTPS listener's certificates: files the user supplies (reloaded
// when they change), and certificates obtained and renewed through ACME by certmagic, for
// configured names and, behind a guard, on demand. Certificates, ACME accounts and challenge
// answers live in a certmagic Storage: files under store.dir, or Redis shared by every instance,
// whose lock makes one instance talk to the CA while the others wait and then load its result.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/scoregate/scoregate/config"
)

// Manager serves the HTTPS listener's certificates.
type Manager struct {
	log    *slog.Logger
	conf   *tls.Config
	files  *fileSet
	magic  *certmagic.Config // nil without ACME
	cache  *certmagic.Cache
	issuer *certmagic.ACMEIssuer
	names  []string // managed from the start
	reload time.Duration
	// allow and ask are the on-demand guard's allow list and whether it has an ask URL.
	allow []string
	ask   bool

	mu      sync.Mutex
	known   map[string]bool // names with a managed certificate, for Expiries
	failed  atomic.Int64
	stop    context.CancelFunc
	stopped sync.WaitGroup
}

// FileStorage is the default certificate storage: a folder under the store's directory.
func FileStorage(cfg *config.Config) certmagic.Storage {
	return &certmagic.FileStorage{Path: filepath.Join(cfg.Store.Dir, "certificates")}
}

// cipherSuites are the TLS 1.2 suites offered: forward-secret AEADs only. (TLS 1.3's suites are
// not configurable and all modern.)
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// New prepares the certificates of cfg.TLS, which must be enabled and valid. storage keeps ACME
// state (FileStorage, or Redis for several instances). Start begins obtaining and reloading.
func New(cfg *config.Config, storage certmagic.Storage, log *slog.Logger) (*Manager, error) {
	t := cfg.TLS
	m := &Manager{log: log.With("component", "tls"), known: map[string]bool{}, reload: t.ReloadInterval}
	var err error
	if m.files, err = loadFiles(t.Certificates, m.log); err != nil {
		return nil, err
	}
	if len(t.ACME.Names) > 0 || cfg.OnDemandEnabled() {
		if err := m.setupACME(cfg, storage); err != nil {
			return nil, err
		}
	}
	minVersion := uint16(tls.VersionTLS12)
	if t.MinVersion == "1.3" {
		minVersion = tls.VersionTLS13
	}
	// fasthttp speaks HTTP/1.1 only, so h2 is never offered.
	protos := []string{"http/1.1"}
	if m.magic != nil && !t.ACME.DisableTLSALPNChallenge {
		protos = append(protos, acmez.ACMETLS1Protocol)
	}
	m.conf = &tls.Config{
		MinVersion:     minVersion,
		CipherSuites:   cipherSuites,
		NextProtos:     protos,
		GetCertificate: m.getCertificate,
	}
	return m, nil
}

func (m *Manager) setupACME(cfg *config.Config, storage certmagic.Storage) error {
	a := cfg.TLS.ACME
	zl := zapLogger(m.log)
	var magic *certmagic.Config
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return magic, nil },
		Logger:           zl,
	})
	tmpl := certmagic.Config{Storage: storage, Logger: zl, OnEvent: m.onEvent}
	if cfg.OnDemandEnabled() {
		guard, err := newGuard(a.Names, a.OnDemand)
		if err != nil {
			return err
		}
		tmpl.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: guard.decide}
	}
	magic = certmagic.New(m.cache, tmpl)
	iss := certmagic.ACMEIssuer{
		CA:                      a.Directory,
		Email:                   a.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    a.DisableHTTPChallenge,
		DisableTLSALPNChallenge: a.DisableTLSALPNChallenge,
		Logger:                  zl,
	}
	// Challenges are answered by the gateway's own listeners (HTTP-01 on the plain one,
	// TLS-ALPN-01 on the HTTPS one); certmagic finds their ports taken and leaves them to us.
	host, plainPort, _ := net.SplitHostPort(cfg.Listen)
	_, tlsPort, _ := net.SplitHostPort(cfg.TLS.Listen)
	iss.ListenHost = host
	iss.AltHTTPPort, _ = strconv.Atoi(plainPort)
	iss.AltTLSALPNPort, _ = strconv.Atoi(tlsPort)
	if a.EABKeyID != "" {
		iss.ExternalAccount = &acme.EAB{KeyID: a.EABKeyID, MACKey: a.EABMACKey}
	}
	if a.CARootsFile != "" {
		pem, err := os.ReadFile(a.CARootsFile)
		if err != nil {
			return fmt.Errorf("tls.acme.ca_roots_file: %w", err)
		}
		iss.TrustedRoots = x509.NewCertPool()
		if !iss.TrustedRoots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls.acme.ca_roots_file %s: no PEM certificate in it", a.CARootsFile)
		}
	}
	m.issuer = certmagic.NewACMEIssuer(magic, iss)
	magic.Issuers = []certmagic.Issuer{m.issuer}
	m.magic = magic
	m.names = slices.Clone(a.Names)
	if cfg.OnDemandEnabled() {
		m.allow, m.ask = a.OnDemand.Allow, a.OnDemand.Ask != ""
	}
	return nil
}

// RedirectHosts returns which hosts the plain listener may redirect to HTTPS (given lowercase,
// without port or final dot): the names of tls.acme.names, those a certificate file covers (its
// wildcards too), those tls.acme.on_demand.allow admits, and any name the gateway holds a
// certificate for (one an ask URL approved, once obtained). It returns nil, every well-formed
// host, only for on-demand guarded by an ask URL alone: then no list says which names are served,
// and the gateway does not call the ask URL for a plain-HTTP request.
func (m *Manager) RedirectHosts() func(string) bool {
	if m.ask && len(m.names) == 0 && len(m.files.certs) == 0 && len(m.allow) == 0 {
		return nil
	}
	return m.serves
}

func (m *Manager) serves(host string) bool {
	if slices.ContainsFunc(m.names, func(n string) bool { return strings.EqualFold(n, host) }) || allowed(m.allow, host) {
		return true
	}
	for _, fc := range m.files.certs {
		if fc.cert.Load().Leaf.VerifyHostname(host) == nil {
			return true
		}
	}
	return m.cache != nil && len(m.cache.AllMatchingCertificates(host)) > 0
}

// TLSConfig is the HTTPS listener's configuration: TLS 1.2 or newer, AEAD suites, HTTP/1.1 (and
// acme-tls/1 for TLS-ALPN-01 challenges) in ALPN.
func (m *Manager) TLSConfig() *tls.Config { return m.conf }

// ACME reports whether certificates come from an ACME CA, so that the plain listener must answer
// HTTP-01 challenges.
func (m *Manager) ACME() bool { return m.magic != nil }

// Start begins managing the configured names (obtaining or loading their certificates in the
// background, and renewing them) and watching certificate files. Stop ends it.
func (m *Manager) Start(ctx context.Context) error {
	ctx, m.stop = context.WithCancel(ctx)
	if len(m.files.certs) > 0 {
		m.stopped.Go(func() { m.files.run(ctx, m.reload) })
	}
	if m.magic != nil && len(m.names) > 0 {
		if err := m.magic.ManageAsync(ctx, m.names); err != nil {
			return fmt.Errorf("tls.acme.names: %w", err)
		}
	}
	return nil
}

// Stop ends renewals and file watching.
func (m *Manager) Stop() {
	if m.stop != nil {
		m.stop()
	}
	m.stopped.Wait()
	if m.cache != nil {
		m.cache.Stop()
	}
}

// HTTPChallenge answers ACME HTTP-01 challenges, from this instance's orders or (through the
// shared storage) another instance's.
func (m *Manager) HTTPChallenge() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.issuer == nil || !m.issuer.HandleHTTPChallenge(w, r) {
			http.NotFound(w, r)
		}
	})
}

// errNoCertificate ends a handshake for a name the gateway has no certificate for.
var errNoCertificate = errors.New("no certificate for this server name")

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	challenge := slices.Contains(hello.SupportedProtos, acmez.ACMETLS1Protocol)
	if !challenge {
		if c := m.files.match(hello.ServerName); c != nil {
			return c, nil
		}
	}
	if m.magic != nil {
		return m.magic.GetCertificate(hello)
	}
	if c := m.files.first(); c != nil {
		return c, nil
	}
	return nil, errNoCertificate
}

// onEvent follows certmagic's certificate events: it notes managed names for Expiries and turns
// failures into an error log line and a count.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cached_managed_cert":
		if sans, ok := data["sans"].([]string); ok {
			m.mu.Lock()
			for _, n := range sans {
				m.known[n] = true
			}
			m.mu.Unlock()
		}
	case "cert_failed":
		m.failed.Add(1)
		renewal, _ := data["renewal"].(bool)
		what := "obtaining a certificate failed; certmagic retries with backoff"
		if renewal {
			what = "renewing a certificate failed; the current one is served until it expires, and renewal is retried with backoff"
		}
		m.log.Error(what, "name", data["identifier"], "err", data["error"])
	}
	return nil
}

// Failures counts failed certificate orders and renewals since start.
func (m *Manager) Failures() int64 { return m.failed.Load() }

// Expiry is when the certificate served for a name stops being valid.
type Expiry struct {
	Name     string
	Source   string // "acme" or "file"
	NotAfter time.Time
}

// Expiries lists the certificates the listener serves and when each expires, for metrics.
func (m *Manager) Expiries() []Expiry {
	var out []Expiry
	for _, fc := range m.files.certs {
		leaf := fc.cert.Load().Leaf
		name := leaf.Subject.CommonName
		if len(leaf.DNSNames) > 0 {
			name = leaf.DNSNames[0]
		}
		out = append(out, Expiry{Name: name, Source: "file", NotAfter: leaf.NotAfter})
	}
	if m.cache == nil {
		return out
	}
	m.mu.Lock()
	names := make([]string, 0, len(m.known))
	for n, managed := range m.known {
		if managed {
			names = append(names, n)
		}
	}
	m.mu.Unlock()
	slices.Sort(names)
	for _, n := range names {
		for _, c := range m.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil {
				out = append(out, Expiry{Name: n, Source: "acme", NotAfter: c.Leaf.NotAfter})
				break
			}
		}
	}
	return out
}

// guard decides on-demand issuance: a name must be configured, on the allow-list, or approved by
// the ask URL.
type guard struct {
	names  []string
	allow  []string
	ask    *url.URL
	client *http.Client
}

func newGuard(names []string, od config.OnDemand) (*guard, error) {
	g := &guard{names: names, allow: od.Allow, client: &http.Client{Timeout: 5 * time.Second}}
	if od.Ask != "" {
		u, err := url.Parse(od.Ask)
		if err != nil {
			return nil, fmt.Errorf("tls.acme.on_demand.ask: %w", err)
		}
		g.ask = u
	}
	return g, nil
}

// errNotAllowed refuses on-demand issuance for a name.
var errNotAllowed = errors.New("name not allowed for on-demand certificates")

func (g *guard) decide(ctx context.Context, name string) error {
	name = strings.ToLower(name)
	if slices.Contains(g.names, name) || allowed(g.allow, name) {
		return nil
	}
	if g.ask == nil {
		return errNotAllowed
	}
	u := *g.ask
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return fmt.Errorf("asking %s about %q: %w", g.ask.Host, name, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: %s answered %d for %q", errNotAllowed, g.ask.Host, resp.StatusCode, name)
	}
	return nil
}

// allowed matches name against exact names and "*.domain" patterns (one label).
func allowed(patterns []string, name string) bool {
	for _, p := range patterns {
		p = strings.ToLower(p)
		if p == name {
			return true
		}
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			if label, parent, ok := strings.Cut(name, "."); ok && label != "" && parent == rest {
				return true
			}
		}
	}
	return false
}

package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ExternalAlgorithms are the signature algorithms an external issuer may use.
var ExternalAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks a configuration with its defaults applied and returns every problem at once,
// as Problems, or nil.
func (c *Config) Validate() error {
	var probs Problems
	add := func(path, format string, args ...any) {
		probs = append(probs, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}

	positive := func(path string, ok bool) {
		if !ok {
			add(path, "must be greater than zero")
		}
	}
	checkAddr := func(path, addr string) {
		if addr == "" {
			add(path, "required (host:port)")
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil {
			add(path, "%q is not host:port", addr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(path, "%q has no valid port", addr)
		}
	}
	checkAddr("listen", c.Listen)
	checkAddr("admin_listen", c.AdminListen)
	if c.Listen != "" && c.Listen == c.AdminListen && !strings.HasSuffix(c.Listen, ":0") {
		add("admin_listen", "must differ from listen (%s)", c.Listen)
	}
	if c.ComputeType == "" || len(c.ComputeType) > 64 || !printable(c.ComputeType) {
		add("compute_type", "must be 1 to 64 printable characters")
	}

	if c.Store.Dir == "" {
		add("store.dir", "required")
	}
	st := c.Store
	if st.RedisURL != "" && len(st.RedisAddrs) > 0 {
		add("store.redis_addrs", "use either store.redis_url or store.redis_addrs, not both")
	}
	validateRedisTLS(st, add)
	if st.RedisMasterName != "" && len(st.RedisAddrs) == 0 {
		add("store.redis_master_name", "needs store.redis_addrs (the Sentinel addresses)")
	}
	for i, a := range st.RedisAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add(fmt.Sprintf("store.redis_addrs[%d]", i), "%q is not host:port", a)
		}
	}
	if st.Shared() {
		positive("store.redis_timeout", st.RedisTimeout > 0)
		positive("store.resync_interval", st.ResyncInterval > 0)
		if st.StalenessBound <= st.ResyncInterval {
			add("store.staleness_bound", "must be longer than store.resync_interval (%s)", st.ResyncInterval)
		}
	}

	c.validateTLS(add)
	c.validateH2(add)
	validateAuthFailureLimit("admin_auth_failure_limit", c.AdminAuthFailureLimit, add)
	validateAuthFailureLimit("server.auth_failure_limit", c.Server.AuthFailureLimit, add)

	s := c.Server
	positive("server.read_timeout", s.ReadTimeout > 0)
	positive("server.write_timeout", s.WriteTimeout > 0)
	positive("server.idle_timeout", s.IdleTimeout > 0)
	positive("server.shutdown_timeout", s.ShutdownTimeout > 0)
	positive("server.max_body_bytes", s.MaxBodyBytes > 0)
	positive("server.max_response_bytes", s.MaxResponseBytes > 0)
	if s.MaxHeaderBytes < 1024 || s.MaxHeaderBytes > 1<<20 {
		add("server.max_header_bytes", "must be between 1024 and 1048576, not %d", s.MaxHeaderBytes)
	}
	positive("server.max_conns", s.MaxConns > 0)
	if s.MaxConnsPerIP < 0 {
		add("server.max_conns_per_ip", "must not be negative (0 means no cap)")
	}
	if s.GCHeadroomBytes < -1 {
		add("server.gc_headroom_bytes", "must be a number of bytes, or -1 for Go's default, not %d", s.GCHeadroomBytes)
	}
	if s.MaxRequestsPerConn < 0 {
		add("server.max_requests_per_conn", "must not be negative (0 means no cap)")
	}
	if s.DrainDelay < 0 {
		add("server.drain_delay", "must not be negative")
	}
	for i, p := range s.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q is not an IP address or CIDR range", p)
		}
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add("log.format", "%q is not one of json, text", c.Log.Format)
	}

	tel := c.Telemetry
	positive("telemetry.queue_size", tel.QueueSize > 0)
	if tel.AccessLogSample < 0 || tel.AccessLogSample > 1 {
		add("telemetry.access_log_sample", "must be between 0 and 1, not %g", tel.AccessLogSample)
	}

	t := c.Tokens
	if t.Issuer == "" || !printable(t.Issuer) {
		add("tokens.issuer", "must be printable text")
	}
	positive("tokens.lifetime", t.Lifetime > 0)
	positive("tokens.refresh_after", t.RefreshAfter > 0)
	positive("tokens.key_rotation", t.KeyRotation > 0)
	positive("tokens.cache_entries", t.CacheEntries > 0)
	if t.Leeway < 0 || t.Leeway > MaxTokenLeeway {
		add("tokens.leeway", "must be between 0s and %s, not %s", MaxTokenLeeway, t.Leeway)
	}
	if t.MaxLifetime <= 0 {
		add("tokens.max_lifetime", "must be greater than zero")
	} else if t.Lifetime > t.MaxLifetime {
		add("tokens.lifetime", "%s is longer than tokens.max_lifetime (%s)", t.Lifetime, t.MaxLifetime)
	}
	if t.MaxBytes < 512 || t.MaxBytes > 65536 {
		add("tokens.max_bytes", "must be between 512 and 65536, not %d", t.MaxBytes)
	}

	roles := map[string]bool{}
	for i, r := range c.Roles {
		p := fmt.Sprintf("roles[%d]", i)
		switch _, builtin := BuiltinRoles[r.Name]; {
		case r.Name == "":
			add(p+".name", "required")
		case builtin:
			add(p+".name", "%q is a built-in role", r.Name)
		case !serviceName.MatchString(r.Name):
			add(p+".name", "%q must be lowercase letters, digits or dashes", r.Name)
		case roles[r.Name]:
			add(p+".name", "%q is defined twice", r.Name)
		}
		roles[r.Name] = true
		if len(r.Permissions) == 0 {
			add(p+".permissions", "at least one permission is required")
		}
		for j, perm := range r.Permissions {
			if !slices.Contains(AllPermissions, perm) {
				add(fmt.Sprintf("%s.permissions[%d]", p, j), "%q is not one of %s", perm, strings.Join(AllPermissions, ", "))
			}
		}
	}

	if len(c.Services) == 0 {
		add("services", "at least one service is required")
	}
	names := map[string]int{}
	for i, svc := range c.Services {
		p := fmt.Sprintf("services[%d]", i)
		switch {
		case svc.Name == "":
			add(p+".name", "required")
		case !serviceName.MatchString(svc.Name):
			add(p+".name", "%q must be 1 to 63 lowercase letters, digits or dashes, starting and ending with a letter or digit", svc.Name)
		default:
			if j, dup := names[svc.Name]; dup {
				add(p+".name", "%q is already the name of services[%d]", svc.Name, j)
			}
			names[svc.Name] = i
		}
		switch svc.Auth {
		case AuthKey, AuthToken, AuthNone:
		case "":
			add(p+".auth", "required: key, token or none")
		default:
			add(p+".auth", "%q is not one of key, token, none", svc.Auth)
		}
		validateTraffic(p, svc, add)
		validateTokenLimit(p, svc, add)
		validateAuthFailureLimit(p+".auth_failure_limit", svc.AuthFailureLimit, add)
		if svc.Auth == AuthToken {
			switch {
			case svc.TokenLifetime <= 0:
				add(p+".token_lifetime", "must be greater than zero")
			case svc.TokenLifetime > t.MaxLifetime:
				add(p+".token_lifetime", "%s is longer than tokens.max_lifetime (%s)", svc.TokenLifetime, t.MaxLifetime)
			case svc.TokenRefreshAfter <= 0 || svc.TokenRefreshAfter >= svc.TokenLifetime:
				add(p+".token_refresh_after", "must be greater than zero and less than token_lifetime (%s)", svc.TokenLifetime)
			}
		} else {
			if svc.TokenLifetime != 0 {
				add(p+".token_lifetime", "only a service with auth: token has tokens")
			}
			if svc.TokenRefreshAfter != 0 {
				add(p+".token_refresh_after", "only a service with auth: token has tokens")
			}
			if len(svc.Issuers) > 0 {
				add(p+".issuers", "only a service with auth: token accepts tokens")
			}
		}
		for j, is := range svc.Issuers {
			ip := fmt.Sprintf("%s.issuers[%d]", p, j)
			if is.Issuer == "" {
				add(ip+".issuer", "required (the exact iss of its tokens)")
			} else if is.Issuer == t.Issuer {
				add(ip+".issuer", "%q is the gateway's own issuer (tokens.issuer)", is.Issuer)
			}
			if is.JWKSURL == "" {
				add(ip+".jwks_url", "required (where its signing keys are published)")
			} else if u, err := url.Parse(is.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				add(ip+".jwks_url", "%q must be an http:// or https:// URL", is.JWKSURL)
			}
			if is.Audience == "" {
				add(ip+".audience", "required (the aud its tokens carry for this service)")
			}
			for k, alg := range is.Algorithms {
				if !slices.Contains(ExternalAlgorithms, alg) {
					add(fmt.Sprintf("%s.algorithms[%d]", ip, k), "%q is not one of %s (HMAC is never accepted)", alg, strings.Join(ExternalAlgorithms, ", "))
				}
			}
			positive(ip+".refresh_interval", is.RefreshInterval > 0)
		}
		validateUpstreamTLS(p, svc, add)
		c.validateProtocol(p, svc, add)
		validateAPI(p, svc, add)
		validateContentTypes(p, svc.ContentTypes, add)
		validateCORS(p, svc, add)
		validateForwardCredentials(p, svc.ForwardCredentials, add)
		positive(p+".scoring_timeout", svc.ScoringTimeout > 0)
		positive(p+".max_response_bytes", svc.MaxResponseBytes > 0)
		positive(p+".max_body_bytes", svc.MaxBodyBytes > 0)
		positive(p+".max_conns_per_upstream", svc.MaxConnsPerUpstream > 0)
		positive(p+".upstream_idle_timeout", svc.UpstreamIdleTimeout > 0)
	}

	if len(probs) == 0 {
		return nil
	}
	return probs
}

// validateForwardCredentials checks services[].forward_credentials: each entry names a carrier
// the gateway removes (the others are never removed, so naming them would mean nothing).
func validateForwardCredentials(p string, names []string, add func(path, format string, args ...any)) {
	for i, name := range names {
		known := slices.ContainsFunc(CredentialHeaders, func(h string) bool { return strings.EqualFold(h, name) }) ||
			slices.ContainsFunc(CredentialParams, func(q string) bool { return strings.EqualFold(q, name) })
		if !known {
			add(fmt.Sprintf("%s.forward_credentials[%d]", p, i), "%q is not a credential carrier the gateway removes (one of %s, %s)",
				name, strings.Join(CredentialHeaders, ", "), strings.Join(CredentialParams, ", "))
		}
	}
}

// maxContentTypesPerService bounds services[].content_types: each request is compared with
// every entry.
const maxContentTypesPerService = 32

// validateContentTypes checks services[].content_types: media types "type/subtype" (RFC 9110
// §8.3.1 tokens), without parameters or wildcards, each listed once.
func validateContentTypes(p string, types []string, add func(path, format string, args ...any)) {
	if len(types) > maxContentTypesPerService {
		add(p+".content_types", "at most %d media types", maxContentTypesPerService)
	}
	seen := map[string]bool{}
	for i, ct := range types {
		path := fmt.Sprintf("%s.content_types[%d]", p, i)
		typ, sub, ok := strings.Cut(ct, "/")
		switch {
		case strings.Contains(ct, ";"):
			add(path, "%q has parameters: list the media type alone (type/subtype); parameters are ignored when matching", ct)
		case typ == "*" || sub == "*":
			add(path, "%q is a wildcard: list each accepted media type (type/subtype)", ct)
		case !ok || !isToken(typ) || !isToken(sub):
			add(path, "%q is not a media type (type/subtype, such as application/json)", ct)
		case seen[strings.ToLower(ct)]:
			add(path, "%q is listed twice", ct)
		}
		seen[strings.ToLower(ct)] = true
	}
}

// isToken reports whether s is an RFC 9110 token: one or more tchar.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Upstream is a parsed upstream URL.
type Upstream struct {
	// Addr is host:port, with the scheme's port filled in when the URL has none.
	Addr string
	// TLS is true for https.
	TLS bool
}

// ParseUpstream checks an upstream URL: http or https, a host, no user, path, query or fragment.
func ParseUpstream(raw string) (Upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Upstream{}, fmt.Errorf("%q is not a URL", raw)
	}
	var up Upstream
	switch u.Scheme {
	case "http":
	case "https":
		up.TLS = true
	default:
		return Upstream{}, fmt.Errorf("%q must start with http:// or https://", raw)
	}
	switch {
	case u.Host == "" || u.Hostname() == "":
		return Upstream{}, fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		return Upstream{}, fmt.Errorf("%q must not carry a user or password", raw)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return Upstream{}, fmt.Errorf("%q must not have a path, query or fragment (the gateway forwards /{rest} of the scoring URL)", raw)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if up.TLS {
			port = "443"
		}
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return Upstream{}, fmt.Errorf("%q has no valid port", raw)
	}
	up.Addr = net.JoinHostPort(u.Hostname(), port)
	return up, nil
}

// ParsePrefix reads an address ("10.0.0.1") or CIDR range ("10.0.0.0/8") as a prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

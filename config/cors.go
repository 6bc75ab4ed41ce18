package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// CORS is a service's cross-origin resource sharing policy (the Fetch standard's CORS
// protocol), for web pages of other origins that call the service from a browser. The gateway
// answers their preflight requests itself (never the model, without a credential: 204, or 403
// for an origin, method or header not allowed) and marks the answers to the actual requests of
// allowed origins. Actual requests still need a credential,
// sent in the Authorization header: the gateway never allows credentialed (cookie) requests and
// never sends Access-Control-Allow-Credentials.
type CORS struct {
	// AllowedOrigins are the origins whose pages may call the service, each
	// "scheme://host[:port]" exactly as browsers send it in the Origin header (lower case, no
	// default port, no path), or "*" alone for any origin. Setting it turns CORS on for the
	// service. Default: none (CORS off: a preflight is an ordinary request, 401 without a
	// credential).
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedMethods are the methods a preflight may ask for (compared exactly, as browsers send
	// them upper case), or "*" alone for any method. TRACE, TRACK and CONNECT are never
	// allowed. Default: DefaultCORSMethods.
	AllowedMethods []string `yaml:"allowed_methods"`
	// AllowedHeaders are the request header names a preflight may ask for (without regard to
	// case), or "*" alone for any. Default: DefaultCORSHeaders.
	AllowedHeaders []string `yaml:"allowed_headers"`
	// MaxAge is how long a browser may keep a preflight's answer, sent in whole seconds as
	// Access-Control-Max-Age (browsers cap it: Chrome at 2h, Firefox at 24h). 0 sends none, and
	// browsers keep the answer 5s. Default 0.
	MaxAge time.Duration `yaml:"max_age"`
}

// DefaultCORSMethods and DefaultCORSHeaders are services[].cors.allowed_methods and
// allowed_headers when CORS is on and they are not set.
var (
	DefaultCORSMethods = []string{"GET", "HEAD", "POST"}
	DefaultCORSHeaders = []string{"Authorization", "Content-Type"}
)

// Enabled reports whether the service answers CORS requests.
func (c CORS) Enabled() bool { return len(c.AllowedOrigins) > 0 }

func (c *CORS) set() bool {
	return c.Enabled() || len(c.AllowedMethods) > 0 || len(c.AllowedHeaders) > 0 || c.MaxAge != 0
}

func (c *CORS) applyDefaults() {
	if !c.Enabled() {
		return
	}
	if len(c.AllowedMethods) == 0 {
		c.AllowedMethods = DefaultCORSMethods
	}
	if len(c.AllowedHeaders) == 0 {
		c.AllowedHeaders = DefaultCORSHeaders
	}
}

// maxCORSEntries bounds each list of services[].cors.
const maxCORSEntries = 256

// validateCORS checks services[i].cors.
func validateCORS(p string, svc Service, add func(path, format string, args ...any)) {
	c := svc.CORS
	p += ".cors"
	if !c.set() {
		return
	}
	if svc.Protocol == ProtocolGRPC {
		add(p, "not supported with protocol grpc (browsers cannot make gRPC calls; a gRPC-Web proxy in front answers them)")
		return
	}
	if !c.Enabled() {
		add(p+".allowed_origins", "required when cors is set: the origins allowed, or \"*\"")
	}
	checkList := func(field string, list []string, check func(string) string, fold bool) {
		if len(list) > maxCORSEntries {
			add(p+"."+field, "at most %d entries", maxCORSEntries)
		}
		seen := map[string]bool{}
		for i, v := range list {
			path := fmt.Sprintf("%s.%s[%d]", p, field, i)
			key := v
			if fold {
				key = strings.ToLower(v)
			}
			switch {
			case v == "*" && len(list) > 1:
				add(path, `"*" must be the only entry`)
			case v == "*":
			case seen[key]:
				add(path, "%q is listed twice", v)
			default:
				if msg := check(v); msg != "" {
					add(path, "%q %s", v, msg)
				}
			}
			seen[key] = true
		}
	}
	checkList("allowed_origins", c.AllowedOrigins, checkOrigin, false)
	checkList("allowed_methods", c.AllowedMethods, func(m string) string {
		switch {
		case !isToken(m):
			return "is not a method name"
		case strings.EqualFold(m, "TRACE"), strings.EqualFold(m, "TRACK"), strings.EqualFold(m, "CONNECT"):
			return "is never forwarded"
		}
		return ""
	}, false)
	checkList("allowed_headers", c.AllowedHeaders, func(h string) string {
		if !isToken(h) {
			return "is not a header name"
		}
		return ""
	}, true)
	if c.MaxAge < 0 {
		add(p+".max_age", "must not be negative")
	}
}

// checkOrigin says what is wrong with an allowed origin, or "".
func checkOrigin(o string) string {
	if o == "null" {
		return `is the origin of sandboxed and file:// pages, which any page can take on: list real origins`
	}
	if strings.Contains(o, "*") {
		return `has a wildcard: list each origin, or "*" alone for any`
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return "is not an origin (scheme://host[:port])"
	}
	if u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return "must be scheme://host[:port] alone, without a user, path, query or fragment"
	}
	if strings.HasSuffix(u.Host, ":") {
		return "has no valid port"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "has no valid port"
		}
		if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
			return "has the scheme's default port, which browsers leave out of Origin"
		}
	}
	if o != strings.ToLower(o) {
		return "must be lower case, as browsers send it in Origin"
	}
	return ""
}

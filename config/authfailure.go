package config

import (
	"fmt"
	"time"
)

// AuthFailureLimit is the brake on guessing credentials: after failures failed authentications
// from one client address within window (counted from the first), every authentication attempt
// from that address, a correct credential included, gets 429 with Retry-After until the window
// ends. An IPv6 client is counted by its /64. With the Redis store every instance counts
// together.
type AuthFailureLimit struct {
	// Failures is how many failed authentications a window allows; 0 turns the limit off.
	Failures int `yaml:"failures"`
	// Window is how long the count lasts, from the address's first failure; 1s to 24h.
	Window time.Duration `yaml:"window"`
}

// Defaults of the failed-authentication limits.
const (
	// DefaultAdminAuthFailures is for principal keys (the admin API and the token endpoints):
	// the Owner key may be chosen by a person, and nobody legitimately mistypes it 20 times a
	// minute.
	DefaultAdminAuthFailures = 20
	// DefaultAuthFailures is for service keys and tokens on the data plane: off. They are
	// random or signed, so a guess cannot succeed and the brake buys no safety there, while it
	// would turn one client still sending a replaced key, behind an address it shares with
	// others (an ingress, a NAT, a sidecar's one peer), into an outage for all of them.
	DefaultAuthFailures      = 0
	DefaultAuthFailureWindow = time.Minute
	maxAuthFailureWindow     = 24 * time.Hour
)

// applyAuthFailureDefaults fills the limits: admin_auth_failure_limit and
// server.auth_failure_limit from their defaults, each service's from server.auth_failure_limit.
// A failures written as 0 stays 0 (off).
func (c *Config) applyAuthFailureDefaults() {
	fill := func(l *AuthFailureLimit, path string, failures int, window time.Duration) {
		if l.Failures == 0 && !c.present[path+".failures"] {
			l.Failures = failures
		}
		setDefault(&l.Window, window)
	}
	fill(&c.AdminAuthFailureLimit, "admin_auth_failure_limit", DefaultAdminAuthFailures, DefaultAuthFailureWindow)
	fill(&c.Server.AuthFailureLimit, "server.auth_failure_limit", DefaultAuthFailures, DefaultAuthFailureWindow)
	for i := range c.Services {
		fill(&c.Services[i].AuthFailureLimit, fmt.Sprintf("services[%d].auth_failure_limit", i),
			c.Server.AuthFailureLimit.Failures, c.Server.AuthFailureLimit.Window)
	}
}

func validateAuthFailureLimit(path string, l AuthFailureLimit, add func(path, format string, args ...any)) {
	if l.Failures < 0 {
		add(path+".failures", "must not be negative (0 turns the limit off)")
	}
	if l.Window < time.Second || l.Window > maxAuthFailureWindow {
		add(path+".window", "must be from 1s to 24h")
	}
}

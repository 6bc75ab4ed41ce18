package config

import (
	"fmt"
	"reflect"
)

// RestartMessage ends the problem of a setting that a reload cannot apply.
const RestartMessage = "restart the gateway to apply it"

// reloadable are the settings a running gateway takes from a reloaded file: the services (but
// for their token settings, see ReloadProblems) and the log level. Every other setting is read
// once at start.
var reloadable = map[string]bool{"services": true, "log.level": true}

// ReloadProblems compares next, a configuration read to replace c at run time, with c, the one
// the gateway started with, and returns a problem for every setting that only a restart can
// apply (nil when there is none): listen, admin_listen, compute_type, store.*, tls.*, server.*,
// log.format, telemetry.*, tokens.* and roles, and a service's token settings (auth: token,
// token_lifetime, token_refresh_after, issuers), since token-mode services are fixed at start.
// The problems name the settings, never their values (which may be secrets).
func (c *Config) ReloadProblems(next *Config) error {
	var probs Problems
	changed := func(path, why string) {
		probs = append(probs, Problem{Path: path, Message: why + ": " + RestartMessage})
	}
	var walk func(a, b reflect.Value, path string)
	walk = func(a, b reflect.Value, path string) {
		if reloadable[path] {
			return
		}
		if a.Kind() != reflect.Struct || a.Type() == durationType {
			if !reflect.DeepEqual(a.Interface(), b.Interface()) {
				changed(path, "changed")
			}
			return
		}
		for i := 0; i < a.NumField(); i++ {
			if name := yamlName(a.Type().Field(i)); name != "" && name != "-" {
				walk(a.Field(i), b.Field(i), join(path, name))
			}
		}
	}
	walk(reflect.ValueOf(*c), reflect.ValueOf(*next), "")

	for i, svc := range next.Services {
		p := fmt.Sprintf("services[%d]", i)
		was := c.Service(svc.Name)
		wasToken := was != nil && was.Auth == AuthToken
		switch {
		case svc.Auth == AuthToken && !wasToken:
			changed(p+".auth", fmt.Sprintf("token mode for %q, which the gateway did not start with in token mode", svc.Name))
		case svc.Auth != AuthToken && wasToken:
			changed(p+".auth", fmt.Sprintf("%q was in token mode at start", svc.Name))
		case svc.Auth == AuthToken:
			if svc.TokenLifetime != was.TokenLifetime {
				changed(p+".token_lifetime", "changed")
			}
			if svc.TokenRefreshAfter != was.TokenRefreshAfter {
				changed(p+".token_refresh_after", "changed")
			}
			if !reflect.DeepEqual(svc.Issuers, was.Issuers) {
				changed(p+".issuers", "changed")
			}
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return probs
}

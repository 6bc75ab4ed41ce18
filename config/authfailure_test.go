package config

import (
	"strings"
	"testing"
	"time"
)

func TestAuthFailureLimitDefaults(t *testing.T) {
	const base = "services:\n  - {name: a, auth: key, upstreams: [\"http://127.0.0.1:1\"]%s}\n"
	for _, tc := range []struct {
		name, top, svc       string
		env                  map[string]string
		admin, server, inSvc AuthFailureLimit
	}{
		{name: "defaults: on for principal keys, off on the data plane",
			admin: AuthFailureLimit{20, time.Minute}, server: AuthFailureLimit{0, time.Minute}, inSvc: AuthFailureLimit{0, time.Minute}},
		{name: "on for the data plane",
			top:   "server: {auth_failure_limit: {failures: 50}}\n",
			admin: AuthFailureLimit{20, time.Minute}, server: AuthFailureLimit{50, time.Minute}, inSvc: AuthFailureLimit{50, time.Minute}},
		{name: "a service inherits server's",
			top:   "server: {auth_failure_limit: {failures: 7, window: 10s}}\n",
			admin: AuthFailureLimit{20, time.Minute}, server: AuthFailureLimit{7, 10 * time.Second}, inSvc: AuthFailureLimit{7, 10 * time.Second}},
		{name: "a service overrides server's, and its window defaults to server's",
			top: "server: {auth_failure_limit: {failures: 7, window: 10s}}\n", svc: ", auth_failure_limit: {failures: 3}",
			admin: AuthFailureLimit{20, time.Minute}, server: AuthFailureLimit{7, 10 * time.Second}, inSvc: AuthFailureLimit{3, 10 * time.Second}},
		{name: "0 turns a service's off",
			top: "server: {auth_failure_limit: {failures: 50}}\n", svc: ", auth_failure_limit: {failures: 0}",
			admin: AuthFailureLimit{20, time.Minute}, server: AuthFailureLimit{50, time.Minute}, inSvc: AuthFailureLimit{0, time.Minute}},
		{name: "0 turns the admin API's off, from the environment too",
			env:   map[string]string{"GATEWAY_ADMIN_AUTH_FAILURE_LIMIT_FAILURES": "0"},
			admin: AuthFailureLimit{0, time.Minute}, server: AuthFailureLimit{0, time.Minute}, inSvc: AuthFailureLimit{0, time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.top+strings.Replace(base, "%s", tc.svc, 1)), envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.AdminAuthFailureLimit != tc.admin || c.Server.AuthFailureLimit != tc.server || c.Services[0].AuthFailureLimit != tc.inSvc {
				t.Errorf("admin %+v, server %+v, service %+v; want %+v, %+v, %+v",
					c.AdminAuthFailureLimit, c.Server.AuthFailureLimit, c.Services[0].AuthFailureLimit, tc.admin, tc.server, tc.inSvc)
			}
		})
	}
}

func TestAuthFailureLimitValidation(t *testing.T) {
	c, err := Parse([]byte(`admin_auth_failure_limit: {failures: -1}
server: {auth_failure_limit: {window: 10ms}}
services:
  - {name: a, auth: key, upstreams: ["http://127.0.0.1:1"], auth_failure_limit: {window: 48h}}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	if err := c.Validate(); err != nil {
		got = err.Error()
	}
	for _, want := range []string{
		"admin_auth_failure_limit.failures: must not be negative",
		"server.auth_failure_limit.window: must be from 1s to 24h",
		"services[0].auth_failure_limit.window: must be from 1s to 24h",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Validate() = %q, want it to say %q", got, want)
		}
	}
}

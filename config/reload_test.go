package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReloadProblems(t *testing.T) {
	const started = `listen: "127.0.0.1:8080"
admin_listen: "127.0.0.1:9901"
store:
  dir: ./data
  redis_url: "redis://gateway:s3cret-password@10.0.0.5:6379/0"
log:
  level: info
services:
  - name: iris
    auth: key
    upstreams: ["http://127.0.0.1:5001"]
  - name: scoring
    auth: token
    upstreams: ["http://127.0.0.1:5002"]
    token_lifetime: 1h
`
	for _, c := range []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"same file", func(s string) string { return s }, nil},
		{"services and log level are applied", func(s string) string {
			s = strings.Replace(s, "level: info", "level: debug", 1)
			s = strings.Replace(s, "127.0.0.1:5001", "127.0.0.1:6001", 1)
			return s + "  - name: new\n    auth: key\n    upstreams: [\"http://127.0.0.1:5003\"]\n    rate_limit: {per_key: {requests_per_second: 5}}\n"
		}, nil},
		{"a service changes between key and none", func(s string) string { return strings.Replace(s, "auth: key", "auth: none", 1) }, nil},
		{"a token service is removed", func(s string) string { return s[:strings.Index(s, "  - name: scoring")] }, nil},
		{"listen addresses", func(s string) string {
			s = strings.Replace(s, "127.0.0.1:8080", "127.0.0.1:8081", 1)
			return strings.Replace(s, "127.0.0.1:9901", "127.0.0.1:9902", 1)
		}, []string{"listen: changed: " + RestartMessage, "admin_listen: changed: " + RestartMessage}},
		{"store, named without its secret value", func(s string) string { return strings.Replace(s, "s3cret-password", "other-password", 1) },
			[]string{"store.redis_url: changed: " + RestartMessage}},
		{"tls listener, server, tokens, telemetry, roles, log format and compute type", func(s string) string {
			return s + `tls: {listen: "127.0.0.1:8443", certificates: [{cert_file: a.pem, key_file: a.key}]}
server: {read_timeout: 5s}
tokens: {issuer: other}
telemetry: {access_log: true}
roles: [{name: auditor, permissions: ["activity:read"]}]
compute_type: edge
`
		}, []string{"compute_type: changed: " + RestartMessage, "tls.listen: changed: " + RestartMessage,
			"tls.certificates: changed: " + RestartMessage, "server.read_timeout: changed: " + RestartMessage,
			"telemetry.access_log: changed: " + RestartMessage, "tokens.issuer: changed: " + RestartMessage,
			"roles: changed: " + RestartMessage}},
		{"log format", func(s string) string { return strings.Replace(s, "level: info", "level: info\n  format: text", 1) },
			[]string{"log.format: changed: " + RestartMessage}},
		{"a key service turns to tokens", func(s string) string { return strings.Replace(s, "auth: key", "auth: token", 1) },
			[]string{`services[0].auth: token mode for "iris", which the gateway did not start with in token mode: ` + RestartMessage}},
		{"a token service turns to keys", func(s string) string {
			return strings.Replace(s, "auth: token\n    upstreams: [\"http://127.0.0.1:5002\"]\n    token_lifetime: 1h", "auth: key\n    upstreams: [\"http://127.0.0.1:5002\"]", 1)
		}, []string{`services[1].auth: "scoring" was in token mode at start: ` + RestartMessage}},
		{"a new token service", func(s string) string {
			return s + "  - name: minted\n    auth: token\n    upstreams: [\"http://127.0.0.1:5003\"]\n"
		}, []string{`services[2].auth: token mode for "minted", which the gateway did not start with in token mode: ` + RestartMessage}},
		{"a token service's token settings", func(s string) string {
			return strings.Replace(s, "token_lifetime: 1h", `token_lifetime: 2h
    issuers: [{issuer: "https://login.example.com", jwks_url: "https://login.example.com/keys", audience: scoring}]`, 1)
		}, []string{"services[1].token_lifetime: changed: " + RestartMessage, "services[1].issuers: changed: " + RestartMessage}},
		{"a token service's traffic settings are applied", func(s string) string {
			return strings.Replace(s, "token_lifetime: 1h", "token_lifetime: 1h\n    max_concurrent_requests: 2", 1)
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := mustParse(t, started)
			next := mustParse(t, c.edit(started))
			err := old.ReloadProblems(next)
			var got []string
			var probs Problems
			if errors.As(err, &probs) {
				for _, p := range probs {
					got = append(got, p.String())
				}
			} else if err != nil {
				t.Fatalf("ReloadProblems = %v, want Problems", err)
			}
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("problems (-want +got):\n%s", d)
			}
			if strings.Contains(strings.Join(got, "\n"), "password") {
				t.Error("a problem quotes a secret value")
			}
		})
	}
}

func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := Parse([]byte(yaml), noEnv)
	if err == nil {
		err = c.Validate()
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	return c
}

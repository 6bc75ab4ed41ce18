package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestContractMinimalConfig(t *testing.T) {
	data, err := os.ReadFile("testdata/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data, noEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := &Config{
		Listen:                "127.0.0.1:8080",
		AdminListen:           "127.0.0.1:9901",
		ComputeType:           "sidecar",
		AdminAuthFailureLimit: AuthFailureLimit{Failures: 20, Window: time.Minute},
		Store:                 Store{Dir: "./data", RedisPrefix: "{scoregate}:", RedisTimeout: 250 * time.Millisecond, StalenessBound: 5 * time.Second, ResyncInterval: time.Second},
		Server: Server{
			ReadTimeout:      10 * time.Second,
			WriteTimeout:     30 * time.Second,
			IdleTimeout:      60 * time.Second,
			MaxHeaderBytes:   16384,
			MaxBodyBytes:     100 << 20,
			MaxResponseBytes: 64 << 20,
			ShutdownTimeout:  15 * time.Second,
			MaxConns:         10000,
			GCHeadroomBytes:  32 << 20,
			AuthFailureLimit: AuthFailureLimit{Window: time.Minute},
		},
		TLS:       TLS{RedirectHTTP: true, MinVersion: "1.2", ReloadInterval: 10 * time.Second, ACME: ACME{Directory: DefaultACMEDirectory}, StorageRedisPrefix: DefaultStorageRedisPrefix},
		Log:       Log{Level: "info", Format: "json"},
		Telemetry: Telemetry{QueueSize: 16384, AccessLogSample: 1, RedactQueryParams: DefaultRedactQueryParams},
		Tokens: Tokens{
			Issuer:       "scoregate",
			Lifetime:     time.Hour,
			RefreshAfter: 30 * time.Minute,
			Leeway:       30 * time.Second,
			MaxLifetime:  24 * time.Hour,
			MaxBytes:     8192,
			KeyRotation:  7 * 24 * time.Hour,
			CacheEntries: 100000,
		},
		Services: []Service{{
			Name:                "iris",
			Auth:                "key",
			Upstreams:           []string{"http://127.0.0.1:5001"},
			ScoringTimeout:      60 * time.Second,
			StreamIdleTimeout:   60 * time.Second,
			MaxBodyBytes:        100 << 20,
			MaxResponseBytes:    64 << 20,
			MaxConnsPerUpstream: 512,
			UpstreamIdleTimeout: 4 * time.Second,
			Protocol:            ProtocolHTTP,
			API:                 APIPlain,
			Balance:             "least_outstanding",
			MaxRequestWait:      500 * time.Millisecond,
			MaxQueueLength:      1000,
			PassiveFailures:     3,
			EjectionTime:        10 * time.Second,
			HealthCheck:         HealthCheck{Interval: 10 * time.Second, Timeout: 2 * time.Second, UnhealthyThreshold: 3, HealthyThreshold: 1},
			AuthFailureLimit:    AuthFailureLimit{Window: time.Minute},
		}},
	}
	if diff := cmp.Diff(want, c, cmpopts.IgnoreUnexported(Config{})); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

// A zero written in the file is kept where zero means something; left out, the default applies.
func TestWrittenZeroIsKept(t *testing.T) {
	c, err := Parse([]byte("telemetry:\n  access_log_sample: 0\n"+validBase()), noEnv)
	if err != nil || c.Telemetry.AccessLogSample != 0 {
		t.Fatalf("written 0: %v, %v", c.Telemetry.AccessLogSample, err)
	}
	c, _ = Parse([]byte(validBase()), noEnv)
	if c.Telemetry.AccessLogSample != 1 {
		t.Fatalf("left out: %v, want 1", c.Telemetry.AccessLogSample)
	}
	c, _ = Parse([]byte(validBase()), envOf(map[string]string{"GATEWAY_TELEMETRY_ACCESS_LOG_SAMPLE": "0"}))
	if c.Telemetry.AccessLogSample != 0 {
		t.Fatalf("0 from the environment: %v", c.Telemetry.AccessLogSample)
	}
}

// The acceptance case: a file with three mistakes reports all three, each at its path.
func TestLoadReportsEveryProblemWithItsPath(t *testing.T) {
	_, err := Load("testdata/three-mistakes.yaml")
	probs, ok := err.(Problems)
	if !ok {
		t.Fatalf("Load error = %v (%T), want Problems", err, err)
	}
	var paths []string
	for _, p := range probs {
		paths = append(paths, p.Path)
	}
	// The unknown field and the bad duration are found while decoding, the bad auth mode and the
	// upstreams missing (for want of the misspelt key) by Validate over the rest of the file.
	want := []string{"services[0].upstream", "services[0].timeout", "services[0].auth", "services[0].upstreams"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("problem paths (-want +got):\n%s\nall: %v", diff, probs)
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // "path: message prefix"
	}{
		{"unknown top-level key is named with its line", "lisen: x\nservices: []\n", []string{"lisen: unknown field (line 1)"}},
		{"unknown nested key", "server:\n  read_timeot: 1s\n", []string{"server.read_timeot: unknown field (line 2)"}},
		{"duration that is not one", "server:\n  read_timeout: ten\n", []string{`server.read_timeout: "ten" is not a duration`}},
		{"number that is not one", "server:\n  max_header_bytes: lots\n", []string{`server.max_header_bytes: "lots" is not a whole number`}},
		{"mapping where a value belongs", "listen: {a: b}\n", []string{"listen: expected a single value, not a mapping"}},
		{"list expected", "services: iris\n", []string{"services: expected a list"}},
		{"key given twice", "listen: a:1\nlisten: b:2\n", []string{"listen: given twice"}},
		{"every problem at once", "lisen: x\nserver:\n  idle: 1s\n  read_timeout: x\nservices:\n  - nam: a\n", []string{
			"lisen: unknown field", "server.idle: unknown field", `server.read_timeout: "x" is not`, "services[0].nam: unknown field",
		}},
		{"not YAML", "listen: [\n", []string{"(file): not valid YAML"}},
		{"empty file", "", []string{"(file): is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), noEnv)
			if c == nil && !strings.HasPrefix(tt.want[0], "(file)") {
				t.Errorf("Parse returned no configuration beside its problems")
			}
			probs, ok := err.(Problems)
			if !ok {
				t.Fatalf("err = %v (%T), want Problems", err, err)
			}
			if len(probs) != len(tt.want) {
				t.Fatalf("got %d problems %v, want %d", len(probs), probs, len(tt.want))
			}
			for i, p := range probs {
				if !strings.HasPrefix(p.String(), tt.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, p, tt.want[i])
				}
			}
		})
	}
}

func validBase() string {
	return `
services:
  - name: iris
    auth: key
    upstreams: ["http://127.0.0.1:5001"]
`
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"defaults alone are valid", validBase(), nil},
		{"no services", "listen: 127.0.0.1:1\n", []string{"services: at least one service is required"}},
		{"auth mode unknown", strings.Replace(validBase(), "auth: key", "auth: keys", 1), []string{`services[0].auth: "keys" is not one of key, token, none`}},
		{"auth mode missing", strings.Replace(validBase(), "auth: key", "", 1), []string{"services[0].auth: required"}},
		{"upstream not http", strings.Replace(validBase(), "http://127.0.0.1:5001", "ftp://h:1", 1), []string{`services[0].upstreams[0]: "ftp://h:1" must start with http:// or https://`}},
		{"upstream with path", strings.Replace(validBase(), "http://127.0.0.1:5001", "http://h:1/score", 1), []string{`services[0].upstreams[0]: "http://h:1/score" must not have a path`}},
		{"upstream with password", strings.Replace(validBase(), "http://127.0.0.1:5001", "http://u:p@h:1", 1), []string{`services[0].upstreams[0]: "http://u:p@h:1" must not carry a user`}},
		{"service name with capitals", strings.Replace(validBase(), "name: iris", "name: Iris", 1), []string{`services[0].name: "Iris" must be`}},
		{"service name with slash", strings.Replace(validBase(), "name: iris", "name: a/b", 1), []string{`services[0].name: "a/b" must be`}},
		{"duplicate service", validBase() + "  - name: iris\n    auth: none\n    upstreams: [\"http://h:2\"]\n", []string{`services[1].name: "iris" is already the name of services[0]`}},
		{"same address twice", "listen: 127.0.0.1:9\nadmin_listen: 127.0.0.1:9\n" + validBase(), []string{"admin_listen: must differ from listen"}},
		{"listen without port", "listen: localhost\n" + validBase(), []string{`listen: "localhost" is not host:port`}},
		{"header cap too small", "server:\n  max_header_bytes: 10\n" + validBase(), []string{"server.max_header_bytes: must be between 1024 and 1048576, not 10"}},
		{"negative timeout", "server:\n  read_timeout: -1s\n" + validBase(), []string{"server.read_timeout: must be greater than zero"}},
		{"trusted proxy not an address", "server:\n  trusted_proxies: [10.0.0.0/8, nope]\n" + validBase(), []string{`server.trusted_proxies[1]: "nope" is not an IP address or CIDR range`}},
		{"redis url", "store:\n  redis_url: rediss://u:p@127.0.0.1:6379/0\n" + validBase(), nil},
		{"redis url of another scheme", "store:\n  redis_url: http://127.0.0.1:6379\n" + validBase(), []string{"store.redis_url: must look like redis://"}},
		{"redis url and addresses", "store:\n  redis_url: redis://h:1\n  redis_addrs: [h:2]\n" + validBase(), []string{"store.redis_addrs: use either"}},
		{"sentinel without addresses", "store:\n  redis_master_name: mymaster\n" + validBase(), []string{"store.redis_master_name: needs store.redis_addrs"}},
		{"staleness bound under the resync interval", "store:\n  redis_addrs: [h:1, h:2]\n  staleness_bound: 1s\n  resync_interval: 2s\n" + validBase(), []string{"store.staleness_bound: must be longer"}},
		{"log level", "log:\n  level: loud\n" + validBase(), []string{`log.level: "loud" is not one of`}},
		{"leeway over a minute", "tokens:\n  leeway: 2m\n" + validBase(), []string{"tokens.leeway: must be between 0s and 1m0s"}},
		{"tls with acme", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    names: [scoring.example.com]\n" + validBase(), nil},
		{"tls on-demand without a guard", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    on_demand: {}\n" + validBase(), []string{"tls.acme.on_demand: needs a guard"}},
		{"tls on-demand with an ask URL", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    on_demand:\n      ask: http://127.0.0.1:9/check\n" + validBase(), nil},
		{"tls on-demand with a bad pattern", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    on_demand:\n      allow: [\"*.*.example.com\"]\n" + validBase(), []string{`tls.acme.on_demand.allow[0]: "*.*.example.com" is not a DNS name`}},
		{"tls without a listener", "tls:\n  certificates:\n    - cert_file: a.crt\n      key_file: a.key\n" + validBase(), []string{"tls.listen: required"}},
		{"tls certificate without its key", "tls:\n  listen: 127.0.0.1:8443\n  certificates:\n    - cert_file: a.crt\n" + validBase(), []string{"tls.certificates[0].key_file: required"}},
		{"tls listener on the plain address", "listen: 127.0.0.1:8080\ntls:\n  listen: 127.0.0.1:8080\n  acme:\n    names: [a.example.com]\n" + validBase(), []string{"tls.listen: must differ"}},
		{"tls without any challenge", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    names: [a.example.com]\n    disable_http_challenge: true\n    disable_tls_alpn_challenge: true\n" + validBase(), []string{"tls.acme.disable_tls_alpn_challenge: with disable_http_challenge too"}},
		{"tls eab half", "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    names: [a.example.com]\n    eab_key_id: kid\n" + validBase(), []string{"tls.acme.eab_key_id: eab_key_id and eab_mac_key go together"}},
		{"upstream tls without https", strings.Replace(validBase(), "upstreams: [", "tls:\n      ca_file: ca.pem\n    upstreams: [", 1), []string{"services[0].tls: set, but no upstream is https://"}},
		{"custom role", "roles:\n  - name: scorer\n    permissions: [tokens:mint, services:call]\n" + validBase(), nil},
		{"custom role shadows a built-in one", "roles:\n  - name: owner\n    permissions: [tokens:mint]\n" + validBase(), []string{`roles[0].name: "owner" is a built-in role`}},
		{"custom role with an unknown permission", "roles:\n  - name: scorer\n    permissions: [tokens:mint, everything]\n" + validBase(), []string{`roles[0].permissions[1]: "everything" is not one of`}},
		{"custom role without permissions", "roles:\n  - name: scorer\n" + validBase(), []string{"roles[0].permissions: at least one"}},
		{"token settings on a key service", strings.Replace(validBase(), "auth: key", "auth: key\n    token_lifetime: 1h", 1), []string{"services[0].token_lifetime: only a service with auth: token"}},
		{"refresh after the token expires", strings.Replace(validBase(), "auth: key", "auth: token\n    token_lifetime: 10m\n    token_refresh_after: 20m", 1), []string{"services[0].token_refresh_after: must be greater than zero and less than token_lifetime"}},
		{"external issuer", strings.Replace(validBase(), "auth: key", "auth: token\n    issuers:\n      - issuer: https://idp.example\n        jwks_url: https://idp.example/keys\n        audience: api://iris\n        algorithms: [ES256]", 1), nil},
		{"HTTP-44 max_conns negative", "server:\n  max_conns: -1\n" + validBase(), []string{"server.max_conns: must be greater than zero"}},
		{"negative stream idle timeout", strings.Replace(validBase(), "auth: key", "auth: key\n    stream_idle_timeout: -1s", 1), []string{"services[0].stream_idle_timeout: must be greater than zero"}},
		{"stream idle timeout", strings.Replace(validBase(), "auth: key", "auth: key\n    stream_idle_timeout: 5m", 1), nil},
		{"issue 22 api openai", strings.Replace(validBase(), "auth: key", "auth: key\n    api: openai", 1), nil},
		{"issue 22 api unknown", strings.Replace(validBase(), "auth: key", "auth: key\n    api: OpenAI", 1), []string{`services[0].api: "OpenAI" is not one of plain, openai`}},
		{"issue 22 api openai over grpc", "h2:\n  listen: 127.0.0.1:8081\n" + strings.Replace(validBase(), "auth: key", "auth: key\n    protocol: grpc\n    api: openai", 1), []string{"services[0].api: openai is an HTTP API; not with protocol grpc"}},
		{"HTTP-44 max_conns set", "server:\n  max_conns: 100\n  max_conns_per_ip: 10\n" + validBase(), nil},
		{"gc headroom off", "server:\n  gc_headroom_bytes: -1\n" + validBase(), nil},
		{"gc headroom below -1", "server:\n  gc_headroom_bytes: -2\n" + validBase(), []string{"server.gc_headroom_bytes: must be a number of bytes, or -1 for Go's default, not -2"}},
		{"issue 17 finding 8c forward_credentials", strings.Replace(validBase(), "auth: key", "auth: key\n    forward_credentials: [X-API-Key, code, Ocp-Apim-Subscription-Key]", 1), nil},
		{"issue 17 finding 8c forward_credentials naming what is not a carrier", strings.Replace(validBase(), "auth: key", "auth: key\n    forward_credentials: [Authorization, x-api-key, session]", 1), []string{
			`services[0].forward_credentials[0]: "Authorization" is not a credential carrier the gateway removes`,
			`services[0].forward_credentials[2]: "session" is not a credential carrier the gateway removes`,
		}},
		{"issue 17 finding 8b public_endpoint", validBase() + "telemetry:\n  public_endpoint: true\n", nil},
		{"HTTP-40 content_types", strings.Replace(validBase(), "auth: key", "auth: key\n    content_types: [application/json, Application/X-Protobuf, application/vnd.api+json]", 1), nil},
		{"HTTP-40 content_types that are not media types", strings.Replace(validBase(), "auth: key", "auth: key\n    content_types: [json, \"application/json; charset=utf-8\", \"application/*\", \"*/*\", \"text/\", \"text /plain\", application/json, APPLICATION/JSON]", 1), []string{
			`services[0].content_types[0]: "json" is not a media type`,
			`services[0].content_types[1]: "application/json; charset=utf-8" has parameters`,
			`services[0].content_types[2]: "application/*" is a wildcard`,
			`services[0].content_types[3]: "*/*" is a wildcard`,
			`services[0].content_types[4]: "text/" is not a media type`,
			`services[0].content_types[5]: "text /plain" is not a media type`,
			`services[0].content_types[7]: "APPLICATION/JSON" is listed twice`,
		}},
		{"external issuer with HMAC and no audience", strings.Replace(validBase(), "auth: key", "auth: token\n    issuers:\n      - issuer: https://idp.example\n        jwks_url: file:///etc/keys\n        algorithms: [HS256]", 1), []string{
			`services[0].issuers[0].jwks_url: "file:///etc/keys" must be an http:// or https:// URL`,
			"services[0].issuers[0].audience: required",
			`services[0].issuers[0].algorithms[0]: "HS256" is not one of`,
		}},
		{"external issuer without jwks_url", strings.Replace(validBase(), "auth: key", "auth: token\n    issuers:\n      - issuer: https://idp.example\n        audience: api://iris", 1), []string{
			"services[0].issuers[0].jwks_url: required",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), noEnv)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			probs, ok := err.(Problems)
			if !ok {
				t.Fatalf("Validate = %v (%T), want Problems", err, err)
			}
			if len(probs) != len(tt.want) {
				t.Fatalf("got %d problems %v, want %d", len(probs), probs, len(tt.want))
			}
			for i, p := range probs {
				if !strings.HasPrefix(p.String(), tt.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, p, tt.want[i])
				}
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	c, err := Parse([]byte(validBase()), envOf(map[string]string{
		"GATEWAY_LISTEN":                 "0.0.0.0:80",
		"GATEWAY_SERVER_READ_TIMEOUT":    "3s",
		"GATEWAY_SERVER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1",
		"GATEWAY_STORE_DIR":              "/var/lib/scoregate",
		"GATEWAY_SERVICES":               "ignored: lists of services come from the file",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:80" || c.Server.ReadTimeout != 3*time.Second || c.Store.Dir != "/var/lib/scoregate" {
		t.Errorf("overrides not applied: %+v", c)
	}
	if diff := cmp.Diff([]string{"10.0.0.0/8", "192.168.1.1"}, c.Server.TrustedProxies); diff != "" {
		t.Errorf("trusted proxies (-want +got):\n%s", diff)
	}
	if len(c.Services) != 1 {
		t.Errorf("services changed by the environment: %+v", c.Services)
	}

	_, err = Parse([]byte(validBase()), envOf(map[string]string{"GATEWAY_SERVER_IDLE_TIMEOUT": "forever"}))
	if err == nil || !strings.Contains(err.Error(), `server.idle_timeout: from GATEWAY_SERVER_IDLE_TIMEOUT: "forever" is not a duration`) {
		t.Errorf("bad override error = %v", err)
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("server.max_body_bytes"); got != "GATEWAY_SERVER_MAX_BODY_BYTES" {
		t.Errorf("EnvName = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/minimal.yaml", "testdata/three-mistakes.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("services:\n  - &a {name: x}\n  - *a\n"))
	f.Add([]byte("server: [1, 2]\n"))
	f.Add([]byte("listen: !!binary aGVsbG8=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, noEnv)
		if err != nil {
			if _, ok := err.(Problems); !ok {
				t.Fatalf("Parse error %T is not Problems: %v", err, err)
			}
		}
		if c != nil {
			_ = c.Validate() // must not panic
		}
	})
}

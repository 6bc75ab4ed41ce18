package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

const configDir = "../../config"

// docs/configuration.md is what go generate ./config writes from the config package as it is.
func TestConfigurationReferenceIsCurrent(t *testing.T) {
	want, err := generate(configDir)
	if err != nil {
		t.Fatalf("generating the reference: %v", err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/configuration.md is not what the config package says: run go generate ./config\nline %d is\n\t%s\nwant\n\t%s", i+1, g, w)
			}
		}
	}
}

// Every struct field that is a configuration key has a doc comment, and so does every section's
// type: the reference has nothing else to say what a key means.
func TestEveryKeyHasADocComment(t *testing.T) {
	src, err := readSource(configDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sections(reflect.TypeFor[config.Config](), src); err != nil {
		t.Errorf("keys without a doc comment:\n%v", err)
	}
}

// The checks themselves: a key without a comment, or a comment stating a default the code does
// not apply, stops the generator, naming the key.
func TestGeneratorRefusesWrongComments(t *testing.T) {
	tests := []struct {
		name   string
		change func(src *source)
		want   []string
	}{
		{"field without a comment", func(src *source) { src.types["Store"].fields["RedisPassword"] = "" },
			[]string{"store.redis_password (field Store.RedisPassword) has no doc comment"}},
		{"section type without a comment", func(src *source) { src.types["Mirror"].doc = "" },
			[]string{`type Mirror (section "services[].mirror") has no doc comment`}},
		{"a field of a section used twice", func(src *source) { src.types["Rate"].fields["Burst"] = "" },
			[]string{"services[].rate_limit.per_key.burst", "services[].rate_limit.per_principal.burst"}},
		{"wrong duration", func(src *source) {
			src.types["Server"].fields["ReadTimeout"] = "ReadTimeout bounds reading one request. Default 5s."
		}, []string{`server.read_timeout: the comment states the default "5s.", the code applies 10s`}},
		{"default not stated", func(src *source) {
			src.types["Tokens"].fields["CacheEntries"] = "CacheEntries bounds the verified-token cache."
		}, []string{"tokens.cache_entries: the comment does not state the default, 100000"}},
		{"zero default stated as a value", func(src *source) {
			src.types["Server"].fields["DrainDelay"] = "DrainDelay is how long /readyz reports 503. Default 5s."
		}, []string{`server.drain_delay: the comment states the default "5s.", the code applies 0s`}},
		{"default taken from another key, stated as a number", func(src *source) {
			src.types["Service"].fields["MaxBodyBytes"] = "MaxBodyBytes caps a request body. Default 104857600."
		}, []string{"services[].max_body_bytes: the default is the value of server.max_body_bytes, and the comment does not say so"}},
		{"default under a switch", func(src *source) {
			src.types["CORS"].fields["AllowedHeaders"] = "AllowedHeaders are header names. Default [Authorization]."
		}, []string{"services[].cors.allowed_headers: the comment states the default"}},
		{"list the generator cannot show", func(src *source) {
			src.types["Log"].fields["Level"] = "Level is one of BuiltinRoles. Default \"info\"."
		}, []string{"log.level: the comment names config.BuiltinRoles"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := readSource(configDir)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(src)
			_, err = generateFrom(src)
			if err == nil {
				t.Fatal("generated a reference, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not mention %q", err, w)
				}
			}
		})
	}
}

// The defaults come from ApplyDefaults and Validate, not from the comments.
func TestDefaultsAreTheCodes(t *testing.T) {
	defs, err := defaults()
	if err != nil {
		t.Fatal(err)
	}
	req := map[string]bool{}
	for _, p := range required() {
		req[p] = true
	}
	tests := []struct {
		path  string
		value any    // under no switch
		from  string // the key it takes its value from
		under string // the value under a switch, written plain
	}{
		{path: "listen", value: config.DefaultListen},
		{path: "server.read_timeout", value: config.DefaultReadTimeout},
		{path: "server.max_body_bytes", value: int64(config.DefaultMaxBodyBytes)},
		{path: "telemetry.access_log_sample", value: 1.0},
		{path: "telemetry.redact_query_params", value: config.DefaultRedactQueryParams},
		{path: "tls.redirect_http", value: true},
		{path: "admin_auth_failure_limit.failures", value: config.DefaultAdminAuthFailures},
		{path: "server.auth_failure_limit.failures", value: 0},
		{path: "services[].max_body_bytes", value: int64(config.DefaultMaxBodyBytes), from: "server.max_body_bytes"},
		{path: "services[].stream_idle_timeout", value: config.DefaultServiceTimeout, from: "services[].scoring_timeout"},
		{path: "services[].auth_failure_limit.window", value: time.Minute, from: "server.auth_failure_limit.window"},
		{path: "services[].token_lifetime", value: time.Duration(0), under: "same as tokens.lifetime"},
		{path: "services[].rate_limit.per_key.burst", value: 0, under: "1"},
		{path: "services[].cors.allowed_methods", value: []string(nil), under: "[GET, HEAD, POST]"},
		{path: "services[].deployments[].weight", value: 100, under: "0"},
		{path: "services[].issuers[].algorithms", value: []string{"RS256"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			d := defs[tt.path]
			if d == nil {
				t.Fatal("no default computed")
			}
			if !reflect.DeepEqual(d.value.Interface(), tt.value) {
				t.Errorf("default %v (%T), want %v (%T)", d.value.Interface(), d.value.Interface(), tt.value, tt.value)
			}
			if d.from != tt.from {
				t.Errorf("taken from %q, want %q", d.from, tt.from)
			}
			var under string
			if len(d.under) > 0 {
				under = plain(d.under[0].value)
				if d.under[0].from != "" {
					under = "same as " + d.under[0].from
				}
			}
			if under != tt.under {
				t.Errorf("under a switch %q, want %q", under, tt.under)
			}
		})
	}
	for _, p := range []string{"services", "services[].name", "services[].auth", "services[].issuers[].jwks_url", "roles[].permissions"} {
		if !req[p] {
			t.Errorf("%s is not found required", p)
		}
	}
	for _, p := range []string{"listen", "tls.listen", "services[].upstreams", "services[].cors.allowed_origins"} {
		if req[p] {
			t.Errorf("%s is found required", p)
		}
	}
}

func TestMarkdownText(t *testing.T) {
	r := &renderer{known: map[string]bool{"services.cors.allowed_origins": true, "tokens.lifetime": true}}
	tests := []struct{ in, want string }{
		{`one of "key" or "*"`, "one of `\"key\"` or `\"*\"`"},
		{"with redis_addrs, or GATEWAY_STORE_REDIS_PASSWORD", "with `redis_addrs`, or `GATEWAY_STORE_REDIS_PASSWORD`"},
		{"see tokens.lifetime and cors.allowed_origins, not store.db", "see `tokens.lifetime` and `cors.allowed_origins`, not store.db"},
		{"at /livez, under /64.", "at `/livez`, under `/64`."},
		{"use rediss:// or https://idp.example/keys.", "use `rediss://` or `https://idp.example/keys`."},
		{"GET <ask>?domain=<name> | 2*3 a_b", "GET &lt;ask&gt;?domain=&lt;name&gt; \\| 2\\*3 `a_b`"},
		{"a list `x`, `y` stays", "a list `x`, `y` stays"},
	}
	for _, tt := range tests {
		if got := r.markdown(tt.in); got != tt.want {
			t.Errorf("markdown(%q)\n = %q\nwant %q", tt.in, got, tt.want)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 250 * time.Millisecond: "250ms", time.Minute: "1m", 90 * time.Second: "1m30s",
		time.Hour: "1h", 168 * time.Hour: "168h", 90 * time.Minute: "1h30m",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

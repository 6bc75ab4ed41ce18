package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestValidateCORS checks services[].cors (issue 17 finding 10): every problem names its field.
func TestValidateCORS(t *testing.T) {
	withCORS := func(cors string) string {
		return strings.Replace(validBase(), "auth: key", "auth: key\n    cors:\n"+cors, 1)
	}
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"origins, methods, headers and max age", withCORS("      allowed_origins: [https://app.example, http://localhost:3000, \"http://[::1]:8080\"]\n      allowed_methods: [POST, PUT]\n      allowed_headers: [Authorization, Content-Type, X-Ms-Client-Request-Id]\n      max_age: 10m\n"), nil},
		{"any origin", withCORS("      allowed_origins: [\"*\"]\n"), nil},
		{"any method and header", withCORS("      allowed_origins: [https://app.example]\n      allowed_methods: [\"*\"]\n      allowed_headers: [\"*\"]\n"), nil},
		{"settings without origins", withCORS("      max_age: 1m\n"), []string{"services[0].cors.allowed_origins: required when cors is set"}},
		{"a wildcard beside origins", withCORS("      allowed_origins: [https://app.example, \"*\"]\n"), []string{`services[0].cors.allowed_origins[1]: "*" must be the only entry`}},
		{"origins that are not scheme://host[:port]", withCORS("      allowed_origins: [\"app.example\", \"https://app.example/\", \"https://App.Example\", \"https://*.example.com\", \"null\", \"https://u@app.example\", \"https://app.example:443\", \"http://app.example:80\", \"https://app.example:\", \"https://app.example?x\", \"https://app.example:99999\", \"http://a.example\", \"http://a.example\"]\n"), []string{
			`services[0].cors.allowed_origins[0]: "app.example" is not an origin`,
			`services[0].cors.allowed_origins[1]: "https://app.example/" must be scheme://host[:port] alone`,
			`services[0].cors.allowed_origins[2]: "https://App.Example" must be lower case`,
			`services[0].cors.allowed_origins[3]: "https://*.example.com" has a wildcard`,
			`services[0].cors.allowed_origins[4]: "null" is the origin of sandboxed`,
			`services[0].cors.allowed_origins[5]: "https://u@app.example" must be scheme://host[:port] alone`,
			`services[0].cors.allowed_origins[6]: "https://app.example:443" has the scheme's default port`,
			`services[0].cors.allowed_origins[7]: "http://app.example:80" has the scheme's default port`,
			`services[0].cors.allowed_origins[8]: "https://app.example:" has no valid port`,
			`services[0].cors.allowed_origins[9]: "https://app.example?x" must be scheme://host[:port] alone`,
			`services[0].cors.allowed_origins[10]: "https://app.example:99999" `,
			`services[0].cors.allowed_origins[12]: "http://a.example" is listed twice`,
		}},
		{"methods that are not tokens or never forwarded", withCORS("      allowed_origins: [\"*\"]\n      allowed_methods: [\"GE T\", TRACE, track, CONNECT, POST, POST, \"*\"]\n"), []string{
			`services[0].cors.allowed_methods[0]: "GE T" is not a method name`,
			`services[0].cors.allowed_methods[1]: "TRACE" is never forwarded`,
			`services[0].cors.allowed_methods[2]: "track" is never forwarded`,
			`services[0].cors.allowed_methods[3]: "CONNECT" is never forwarded`,
			`services[0].cors.allowed_methods[5]: "POST" is listed twice`,
			`services[0].cors.allowed_methods[6]: "*" must be the only entry`,
		}},
		{"headers that are not names", withCORS("      allowed_origins: [\"*\"]\n      allowed_headers: [\"X:Y\", Authorization, authorization]\n"), []string{
			`services[0].cors.allowed_headers[0]: "X:Y" is not a header name`,
			`services[0].cors.allowed_headers[2]: "authorization" is listed twice`,
		}},
		{"a negative max age", withCORS("      allowed_origins: [\"*\"]\n      max_age: -1s\n"), []string{"services[0].cors.max_age: must not be negative"}},
		{"a grpc service", "h2:\n  listen: 127.0.0.1:8081\n" + strings.Replace(withCORS("      allowed_origins: [\"*\"]\n"), "auth: key", "auth: key\n    protocol: grpc", 1), []string{"services[0].cors: not supported with protocol grpc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), noEnv)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = c.Validate()
			var probs Problems
			if err != nil {
				var ok bool
				if probs, ok = err.(Problems); !ok {
					t.Fatalf("Validate = %v (%T), want Problems", err, err)
				}
			}
			if len(probs) != len(tt.want) {
				t.Fatalf("got problems %v, want %v", probs, tt.want)
			}
			for i, p := range probs {
				if !strings.HasPrefix(p.String(), tt.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, p, tt.want[i])
				}
			}
		})
	}
}

// The defaults fill a service's CORS settings only when it has origins.
func TestCORSDefaults(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(validBase(), "auth: key", "auth: key\n    cors:\n      allowed_origins: [https://app.example]", 1)+
		"  - name: other\n    auth: none\n    upstreams: [\"http://127.0.0.1:5002\"]\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := CORS{AllowedOrigins: []string{"https://app.example"}, AllowedMethods: []string{"GET", "HEAD", "POST"}, AllowedHeaders: []string{"Authorization", "Content-Type"}}
	if diff := cmp.Diff(want, c.Services[0].CORS); diff != "" {
		t.Errorf("cors of a service with origins (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(CORS{}, c.Services[1].CORS); diff != "" {
		t.Errorf("cors of a service without (-want +got):\n%s", diff)
	}
}

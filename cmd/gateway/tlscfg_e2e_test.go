package main

import (
	"strings"
	"testing"
)

// Finding 3 and 12b through the binary: check-config refuses a Redis URL that turns off TLS
// verification and an on-demand pattern over a public suffix, naming the field.
func TestFinding3And12bCheckConfig(t *testing.T) {
	dir := t.TempDir()
	onDemand := func(pattern string) string {
		return "tls:\n  listen: \"127.0.0.1:8443\"\n  acme:\n    on_demand:\n      allow: [\"" + pattern + "\"]\n"
	}
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       string // "" when valid
	}{
		{"redis_url with skip_verify", "", []string{"GATEWAY_STORE_REDIS_URL=rediss://gw:s3cret@redis.example.com:6380/0?skip_verify=true"}, "store.redis_url: skip_verify"},
		{"verified redis_url", "", []string{"GATEWAY_STORE_REDIS_URL=rediss://gw:s3cret@redis.example.com:6380/0"}, ""},
		{"on_demand.allow *.com", onDemand("*.com"), nil, `tls.acme.on_demand.allow[0]: "*.com" covers the public suffix`},
		{"on_demand.allow *.co.uk", onDemand("*.co.uk"), nil, `tls.acme.on_demand.allow[0]: "*.co.uk" covers the public suffix`},
		{"on_demand.allow *.github.io", onDemand("*.github.io"), nil, `tls.acme.on_demand.allow[0]: "*.github.io" covers the public suffix`},
		{"on_demand.allow *.example.com", onDemand("*.example.com"), nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, dir, "http://127.0.0.1:5001", tc.yaml)
			out, errOut, code := runCLI(t, tc.env, "check-config", "-config", path)
			if strings.Contains(out+errOut, "s3cret") {
				t.Errorf("the output repeats the Redis password:\n%s%s", out, errOut)
			}
			if tc.want == "" {
				if code != 0 {
					t.Fatalf("exit %d\n%s%s", code, out, errOut)
				}
				return
			}
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output:\n%s%s\nwant %q", code, out, errOut, tc.want)
			}
		})
	}
}

package config

import (
	"strings"
	"testing"
)

// validateProblems parses yaml, validates it and returns its problems as strings (nil when
// valid).
func validateProblems(t *testing.T, yaml string) []string {
	t.Helper()
	c, err := Parse([]byte(yaml), noEnv)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	err = c.Validate()
	if err == nil {
		return nil
	}
	probs, ok := err.(Problems)
	if !ok {
		t.Fatalf("Validate = %v (%T), want Problems", err, err)
	}
	var out []string
	for _, p := range probs {
		out = append(out, p.String())
	}
	return out
}

// checkProblems runs a table of configurations, each either valid (want "") or refused with
// exactly one problem starting with want.
func checkProblems(t *testing.T, tests []struct{ name, yaml, want string }) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probs := validateProblems(t, tt.yaml)
			switch {
			case tt.want == "" && probs != nil:
				t.Fatalf("refused: %q", probs)
			case tt.want != "" && (len(probs) != 1 || !strings.HasPrefix(probs[0], tt.want)):
				t.Fatalf("problems %q, want one starting %q", probs, tt.want)
			}
			for _, p := range probs {
				if strings.Contains(p, "s3cret") {
					t.Errorf("a problem repeats the URL's password: %q", p)
				}
			}
		})
	}
}

// Finding 3: no Redis URL option may weaken TLS to Redis. go-redis v9.23.0's ParseURL (and
// ParseFailoverURL) read exactly one such option, skip_verify, and set InsecureSkipVerify from it;
// ParseClusterURL reads none, and no parser has an option for the TLS version or suites. A private
// CA is given by file instead.
func TestFinding3RedisURLCannotWeakenTLS(t *testing.T) {
	redis := func(url string) string { return "store:\n  redis_url: " + url + "\n" + validBase() }
	checkProblems(t, []struct{ name, yaml, want string }{
		{"verified TLS", redis("rediss://gw:s3cret@redis.example.com:6380/0"), ""},
		{"other options are the user's", redis("rediss://gw:s3cret@redis.example.com:6380/0?dial_timeout=3s&client_name=gw"), ""},
		{"skip_verify=true", redis("rediss://gw:s3cret@redis.example.com:6380/0?skip_verify=true"), "store.redis_url: skip_verify"},
		{"skip_verify=1", redis("rediss://gw:s3cret@redis.example.com:6380/0?skip_verify=1"), "store.redis_url: skip_verify"},
		{"skip_verify among others", redis("rediss://gw:s3cret@redis.example.com:6380/0?pool_size=4&skip_verify=true"), "store.redis_url: skip_verify"},
		{"skip_verify=false, a switch one edit away", redis("rediss://gw:s3cret@redis.example.com:6380/0?skip_verify=false"), "store.redis_url: skip_verify"},
		{"skip_verify in capitals", redis("rediss://gw:s3cret@redis.example.com:6380/0?SKIP_VERIFY=true"), "store.redis_url: SKIP_VERIFY"},
		{"skip_verify on plain redis", redis("redis://gw:s3cret@redis.example.com:6379/0?skip_verify=true"), "store.redis_url: skip_verify"},
		{"a CA file with rediss", "store:\n  redis_url: rediss://redis.example.com:6380/0\n  redis_ca_file: /etc/scoregate/redis-ca.pem\n" + validBase(), ""},
		{"a CA file without TLS", "store:\n  redis_url: redis://redis.example.com:6379/0\n  redis_ca_file: /etc/scoregate/redis-ca.pem\n" + validBase(),
			"store.redis_ca_file: set, but the Redis connection does not use TLS"},
		{"a CA file with redis_tls", "store:\n  redis_addrs: [a:6380, b:6380]\n  redis_tls: true\n  redis_ca_file: /etc/scoregate/redis-ca.pem\n" + validBase(), ""},
		{"a client certificate without its key", "store:\n  redis_url: rediss://redis.example.com:6380/0\n  redis_cert_file: /etc/scoregate/redis-client.pem\n" + validBase(),
			"store.redis_cert_file: redis_cert_file and redis_key_file go together"},
		{"a client certificate", "store:\n  redis_url: rediss://redis.example.com:6380/0\n  redis_cert_file: c.pem\n  redis_key_file: k.pem\n" + validBase(), ""},
	})
}

// Finding 12b: an on-demand pattern that covers a public suffix would let any client make the
// gateway order certificates for every name under it.
func TestFinding12bOnDemandAllowRefusesPublicSuffixes(t *testing.T) {
	allow := func(pattern string) string {
		return "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    on_demand:\n      allow: [\"" + pattern + "\"]\n" + validBase()
	}
	checkProblems(t, []struct{ name, yaml, want string }{
		{"a top-level domain", allow("*.com"), `tls.acme.on_demand.allow[0]: "*.com" covers the public suffix "com"`},
		{"a country's second level", allow("*.co.uk"), `tls.acme.on_demand.allow[0]: "*.co.uk" covers the public suffix "co.uk"`},
		{"a private public suffix", allow("*.github.io"), `tls.acme.on_demand.allow[0]: "*.github.io" covers the public suffix "github.io"`},
		{"in capitals", allow("*.CO.UK"), `tls.acme.on_demand.allow[0]: "*.CO.UK" covers the public suffix "co.uk"`},
		{"a bare suffix", allow("com"), `tls.acme.on_demand.allow[0]: "com" covers the public suffix "com"`},
		{"under a registrable domain", allow("*.example.com"), ""},
		{"under a registrable domain of a country", allow("*.example.co.uk"), ""},
		{"an exact name", allow("scoring.example.com"), ""},
		{"a user's site under a private suffix", allow("*.someone.github.io"), ""},
	})
}

// Finding 13: the certificate storage may live in a Redis of its own, and its values be
// encrypted with a key given in hex or base64, inline (from the environment) or by file.
func TestFinding13CertificateStorageSettings(t *testing.T) {
	const acme = "tls:\n  listen: 127.0.0.1:8443\n  acme:\n    names: [scoring.example.com]\n"
	hexKey := strings.Repeat("ab", 32)
	b64Key := "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k="
	checkProblems(t, []struct{ name, yaml, want string }{
		{"a separate Redis", acme + "  storage_redis_url: rediss://certs:s3cret@redis-certs.example.com:6380/0\n" + validBase(), ""},
		{"a separate Redis with skip_verify", acme + "  storage_redis_url: rediss://certs:s3cret@redis-certs.example.com:6380/0?skip_verify=true\n" + validBase(), "tls.storage_redis_url: skip_verify"},
		{"a separate Redis that is not one", acme + "  storage_redis_url: https://certs:s3cret@example.com\n" + validBase(), "tls.storage_redis_url: must look like redis://"},
		{"a hex key", acme + "  storage_key: " + hexKey + "\n" + validBase(), ""},
		{"a base64 key", acme + "  storage_key: " + b64Key + "\n" + validBase(), ""},
		{"a short key", acme + "  storage_key: " + hexKey[:62] + "\n" + validBase(), "tls.storage_key: must be 32 bytes"},
		{"a passphrase", acme + "  storage_key: correct-horse-battery-staple\n" + validBase(), "tls.storage_key: must be 32 bytes"},
		{"a key and a key file", acme + "  storage_key: " + hexKey + "\n  storage_key_file: /etc/scoregate/storage.key\n" + validBase(), "tls.storage_key_file: use either"},
		{"a key file", acme + "  storage_key_file: /etc/scoregate/storage.key\n" + validBase(), ""},
		{"storage without ACME", "tls:\n  listen: 127.0.0.1:8443\n  certificates:\n    - cert_file: a.crt\n      key_file: a.key\n  storage_key_file: k\n" + validBase(), "tls.storage_key_file: set, but no certificate is obtained through ACME"},
	})
	for _, k := range []string{hexKey, strings.ToUpper(hexKey), b64Key, strings.TrimRight(b64Key, "="), " " + b64Key + "\n"} {
		if b, err := ParseStorageKey(k); err != nil || len(b) != 32 {
			t.Errorf("ParseStorageKey(%q) = %d bytes, %v", k, len(b), err)
		}
	}
}

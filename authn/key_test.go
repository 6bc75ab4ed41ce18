package authn

import (
	"regexp"
	"testing"
)

// KEY-15: keys have a fixed, scanner-friendly shape, and every one validates.
var serviceKeyPattern = regexp.MustCompile(`^sgk_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}[0-9A-Za-z]{6}$`)

func TestNewKeyRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		key, id := NewKey(ServiceKeyPrefix)
		if !serviceKeyPattern.MatchString(key) {
			t.Fatalf("key %d does not match the published pattern", i)
		}
		got, ok := parseKey([]byte(key), ServiceKeyPrefix)
		if !ok || string(got) != id {
			t.Fatalf("parseKey(new key) = %q, %v; want id %q", got, ok, id)
		}
		if seen[key] {
			t.Fatal("duplicate key generated")
		}
		seen[key] = true
	}
}

// KEY-15: a one-character change anywhere is caught by the shape or the checksum.
func TestKeyMutationsFail(t *testing.T) {
	for n := 0; n < 200; n++ {
		key, _ := NewKey(ServiceKeyPrefix)
		for i := 0; i < len(key); i++ {
			for _, c := range []byte{'0', 'Z', 'z', '_', '-', ' '} {
				if key[i] == c {
					continue
				}
				b := []byte(key)
				b[i] = c
				if _, ok := parseKey(b, ServiceKeyPrefix); ok {
					t.Fatalf("mutation at %d to %q accepted", i, c)
				}
			}
		}
	}
}

func TestParseKeyRejects(t *testing.T) {
	key, _ := NewKey(ServiceKeyPrefix)
	principal, _ := NewKey(PrincipalKeyPrefix)
	tests := []struct {
		name string
		key  string
	}{
		{"KEY-03 empty", ""},
		{"KEY-03 wrong prefix", "gwk_" + key[4:]},
		{"KEY-03 principal key used as service key", principal},
		{"KEY-03 truncated", key[:len(key)-1]},
		{"KEY-03 one character too many", key + "0"},
		{"KEY-03 non-base62 character", key[:20] + "+" + key[21:]},
		{"KEY-12 trailing space", key + " "},
		{"KEY-12 leading space", " " + key[1:]},
		{"KEY-12 lower-case prefix", "SGK_" + key[4:]},
		{"KEY-12 NUL suffix", key[:len(key)-1] + "\x00"},
		{"KEY-12 percent-encoded underscore", "sgk%5F" + key[4:]},
		{"KEY-12 fullwidth digit", key[:30] + "\uff10" + key[33:]},
		{"missing separator", key[:16] + "A" + key[17:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, ok := parseKey([]byte(tt.key), ServiceKeyPrefix); ok {
				t.Errorf("parseKey(%q) accepted", tt.key)
			}
		})
	}
}

func TestKeySecretEntropy(t *testing.T) {
	// 43 base62 digits carry log2(62^43) = 256.03 bits.
	if keySecretLen < 43 {
		t.Fatalf("secret has %d base62 digits, under 256 bits", keySecretLen)
	}
	// Every base62 digit shows up in the secret part of a few thousand keys (no skewed alphabet).
	counts := map[byte]int{}
	for i := 0; i < 2000; i++ {
		key, _ := NewKey(ServiceKeyPrefix)
		for _, c := range []byte(key[prefixLen+keyIDLen+1 : keyLen-keySumLen]) {
			counts[c]++
		}
	}
	if len(counts) != 62 {
		t.Fatalf("secret digits use %d of 62 symbols", len(counts))
	}
	for c, n := range counts {
		// expected 2000*43/62 ≈ 1387 each; a uniform draw stays far inside these bounds
		if n < 1100 || n > 1700 {
			t.Errorf("digit %q drawn %d times, far from uniform", c, n)
		}
	}
}

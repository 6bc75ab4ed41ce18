package authn

import (
	"bytes"
	"hash/crc32"
	"testing"
)

// FuzzParseKey: key parsing never panics, and what it accepts is a key of exactly the documented
// shape ("<prefix><12 base62>_<43 base62><6 base62 CRC-32>") whose checksum holds, with the id
// it returns taken from the key itself.
func FuzzParseKey(f *testing.F) {
	good, _ := NewKey(ServiceKeyPrefix)
	principal, _ := NewKey(PrincipalKeyPrefix)
	for _, s := range []string{
		good, principal, good[:len(good)-1], good + "A", "sgk_", "", "sgk__",
		good[:keySecretAt()] + "!" + good[keySecretAt()+1:],
		string(bytes.ToUpper([]byte(good))),
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, key string, service bool) {
		prefix := PrincipalKeyPrefix
		if service {
			prefix = ServiceKeyPrefix
		}
		id, ok := parseKey([]byte(key), prefix)
		if !ok {
			if id != nil {
				t.Fatalf("parseKey(%q) refused the key but returned id %q", key, id)
			}
			return
		}
		if len(key) != keyLen || key[:prefixLen] != prefix || key[prefixLen+keyIDLen] != '_' {
			t.Fatalf("parseKey(%q, %q) accepted a key of the wrong shape", key, prefix)
		}
		for i := prefixLen; i < keyLen; i++ {
			if i != prefixLen+keyIDLen && base62Value[key[i]] == 0xff {
				t.Fatalf("parseKey(%q) accepted a non-base62 character at %d", key, i)
			}
		}
		want := appendChecksum(nil, crc32.ChecksumIEEE([]byte(key[:keyLen-keySumLen])))
		if key[keyLen-keySumLen:] != string(want) {
			t.Fatalf("parseKey(%q) accepted a wrong checksum (want %s)", key, want)
		}
		if string(id) != key[prefixLen:prefixLen+keyIDLen] {
			t.Fatalf("parseKey(%q) returned id %q", key, id)
		}
	})
}

// keySecretAt is where a key's secret begins.
func keySecretAt() int { return prefixLen + keyIDLen + 1 }

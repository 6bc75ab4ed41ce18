package authn

import (
	"context"
	"testing"

	"github.com/scoregate/scoregate/config"
)

func benchKeyring(b *testing.B) (*Keyring, string) {
	store, err := OpenBolt(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	k, err := NewKeyring(context.Background(), store, nil)
	if err != nil {
		b.Fatal(err)
	}
	key, err := k.Regenerate(context.Background(), "iris", SlotPrimary)
	if err != nil {
		b.Fatal(err)
	}
	// some other services' keys, so the index is not trivially small
	for _, s := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		k.Regenerate(context.Background(), s, SlotPrimary)
		k.Regenerate(context.Background(), s, SlotSecondary)
	}
	return k, key
}

// The key check on the hot path: shape, checksum, index lookup, HMAC and constant-time compare.
func BenchmarkVerifyKey(b *testing.B) {
	k, key := benchKeyring(b)
	kb := []byte(key)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := k.Verify("iris", kb); !ok {
			b.Fatal("refused")
		}
	}
}

func BenchmarkVerifyKeyParallel(b *testing.B) {
	k, key := benchKeyring(b)
	kb := []byte(key)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := k.Verify("iris", kb); !ok {
				b.Fatal("refused")
			}
		}
	})
}

// A malformed key (bad checksum) is refused before any lookup or hashing.
func BenchmarkVerifyKeyBadChecksum(b *testing.B) {
	k, key := benchKeyring(b)
	kb := []byte(key)
	kb[30] ^= 1
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := k.Verify("iris", kb); ok {
			b.Fatal("accepted")
		}
	}
}

// The whole data-plane check as the proxy calls it, Authorization header parsing included.
func BenchmarkAuthenticateKey(b *testing.B) {
	k, key := benchKeyring(b)
	a := NewAuthenticator(k)
	hdr := [][]byte{[]byte("Bearer " + key)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate("iris", config.AuthKey, hdr); err != nil {
			b.Fatal(err)
		}
	}
}

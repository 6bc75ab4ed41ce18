package authn

import (
	"context"
	"strings"
	"testing"

	"github.com/scoregate/scoregate/config"
)

// A caller is named by its key's id or its token's subject, never by the credential (issue 22:
// the name goes on every span and usage event). callername_allocs_test.go checks that naming it
// allocates nothing per request.
func TestCallerName(t *testing.T) {
	e := newTokenEnv(t, nil)
	ctx := context.Background()
	key, err := e.keys.Regenerate(ctx, "keyed", SlotSecondary)
	if err != nil {
		t.Fatal(err)
	}
	id := e.keys.Keys("keyed")[SlotSecondary].ID
	keyHdr := [][]byte{[]byte("Bearer " + key)}
	c, err := e.auth.Authenticate("keyed", config.AuthKey, keyHdr)
	if err != nil || c.Name != "key:"+id || c.KeySlot != SlotSecondary {
		t.Fatalf("key caller %+v, %v; want Name key:%s", c, err, id)
	}
	if secret := key[len(ServiceKeyPrefix)+keyIDLen+1:]; strings.Contains(c.Name, secret[:8]) {
		t.Fatalf("the name %q holds the key's secret", c.Name)
	}

	alice, _ := e.principal(t, "alice", "reader")
	tok := e.mint(t, alice, "scoring").AccessToken
	tokHdr := [][]byte{[]byte("Bearer " + tok)}
	for _, from := range []string{"a fresh check", "the cache"} {
		c, err := e.auth.Authenticate("scoring", config.AuthToken, tokHdr)
		if err != nil || c.Name != "principal:alice" || strings.Contains(c.Name, tok) {
			t.Fatalf("token caller from %s: %+v, %v; want Name principal:alice", from, c, err)
		}
	}
	if c, _ := e.auth.Authenticate("none", config.AuthNone, nil); c.Name != "" {
		t.Fatalf("auth none names its caller %q", c.Name)
	}

}

//go:build !race

package authn

import (
	"context"
	"testing"

	"github.com/scoregate/scoregate/config"
)

// Authenticating a key or a cached token, name and all, allocates nothing: the caller's name is
// built when the key is loaded or the token first checked. Built without the race detector,
// which allocates on its own account.
func TestCallerNameAllocations(t *testing.T) {
	e := newTokenEnv(t, nil)
	key, err := e.keys.Regenerate(context.Background(), "keyed", SlotPrimary)
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := e.principal(t, "alice", "reader")
	keyHdr := [][]byte{[]byte("Bearer " + key)}
	tokHdr := [][]byte{[]byte("Bearer " + e.mint(t, alice, "scoring").AccessToken)}
	for name, hdr := range map[string][][]byte{"key": keyHdr, "token": tokHdr} {
		mode, svc := config.AuthKey, "keyed"
		if name == "token" {
			mode, svc = config.AuthToken, "scoring"
		}
		if n := testing.AllocsPerRun(100, func() {
			if _, err := e.auth.Authenticate(svc, mode, hdr); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("authenticating a %s allocates %v times", name, n)
		}
	}
}

package authn_test

import (
	"context"
	"fmt"
	"os"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

// A key-mode service's key is made once, shown once, and then checked against its stored hash.
func ExampleAuthenticator_Authenticate() {
	dir, _ := os.MkdirTemp("", "authn-example")
	defer os.RemoveAll(dir)
	store, err := authn.OpenBolt(dir)
	if err != nil {
		panic(err)
	}
	defer store.Close()
	ctx := context.Background()
	keys, err := authn.NewKeyring(ctx, store, nil)
	if err != nil {
		panic(err)
	}
	key, err := keys.Regenerate(ctx, "iris", authn.SlotPrimary)
	if err != nil {
		panic(err)
	}
	a := authn.NewAuthenticator(keys)

	caller, err := a.Authenticate("iris", config.AuthKey, [][]byte{[]byte("Bearer " + key)})
	fmt.Println(caller.KeySlot, err)
	_, err = a.Authenticate("wine", config.AuthKey, [][]byte{[]byte("Bearer " + key)})
	fmt.Println(err)
	_, err = a.Authenticate("iris", config.AuthKey, nil)
	fmt.Println(err)
	// Output:
	// primary <nil>
	// invalid credential
	// no credential
}

package authn

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

func openKeyring(t *testing.T, dir string) (*Keyring, *BoltStore) {
	t.Helper()
	store, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeyring(context.Background(), store, nil)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	return keys, store
}

func regenerate(t *testing.T, k *Keyring, service, slot string) string {
	t.Helper()
	key, err := k.Regenerate(context.Background(), service, slot)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestKeyringPrimarySecondaryAndRotation(t *testing.T) {
	k, store := openKeyring(t, t.TempDir())
	defer store.Close()
	primary := regenerate(t, k, "iris", SlotPrimary)
	secondary := regenerate(t, k, "iris", SlotSecondary)
	other := regenerate(t, k, "wine", SlotPrimary)

	check := func(name, service, key, wantSlot string) {
		t.Helper()
		slot, ok := k.Verify(service, []byte(key))
		if ok != (wantSlot != "") || slot != wantSlot {
			t.Errorf("%s: Verify = %q, %v; want slot %q", name, slot, ok, wantSlot)
		}
	}
	check("primary", "iris", primary, SlotPrimary)
	check("secondary", "iris", secondary, SlotSecondary)
	check("key of another service", "iris", other, "")
	check("unknown service", "nope", primary, "")

	// Regenerating the primary stops the old value at once and leaves the secondary working.
	newPrimary := regenerate(t, k, "iris", SlotPrimary)
	check("old primary after regeneration", "iris", primary, "")
	check("new primary", "iris", newPrimary, SlotPrimary)
	check("secondary after primary regeneration", "iris", secondary, SlotSecondary)

	// A key with a valid shape and checksum but never issued.
	forged, _ := NewKey(ServiceKeyPrefix)
	check("well-formed unknown key", "iris", forged, "")
	// Same id, other secret (checksum recomputed): the hash comparison refuses it.
	b := []byte(newPrimary)
	copy(b[prefixLen+keyIDLen+1:], "AAAA")
	b = appendChecksum(b[:keyLen-keySumLen], crc32.ChecksumIEEE(b[:keyLen-keySumLen]))
	check("known id with another secret", "iris", string(b), "")

	if _, err := k.Regenerate(context.Background(), "iris", "tertiary"); !errors.Is(err, ErrUnknownSlot) {
		t.Errorf("Regenerate(tertiary) = %v, want ErrUnknownSlot", err)
	}
}

// Keys survive a restart, and the store file holds no key in clear (nor its secret part).
func TestKeysSurviveRestartAndAreStoredHashed(t *testing.T) {
	dir := t.TempDir()
	k, store := openKeyring(t, dir)
	primary := regenerate(t, k, "iris", SlotPrimary)
	secondary := regenerate(t, k, "iris", SlotSecondary)
	if _, ok := k.Verify("iris", []byte(primary)); !ok {
		t.Fatal("fresh key refused")
	}
	if err := k.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	store.Close()

	raw, err := os.ReadFile(filepath.Join(dir, StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{primary, secondary} {
		secret := key[prefixLen+keyIDLen+1 : keyLen-keySumLen]
		if bytes.Contains(raw, []byte(key)) || bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte(secret[:16])) {
			t.Fatal("the store file contains a key or its secret in clear")
		}
	}

	k2, store2 := openKeyring(t, dir)
	defer store2.Close()
	for _, key := range []string{primary, secondary} {
		if _, ok := k2.Verify("iris", []byte(key)); !ok {
			t.Error("key refused after restart")
		}
	}
	meta := k2.Keys("iris")
	if meta[SlotPrimary].LastUsedAt == nil {
		t.Error("primary's lastUsedAt was not kept across the restart")
	}
	if meta[SlotPrimary].CreatedAt.IsZero() || meta[SlotSecondary].ID == "" {
		t.Errorf("metadata incomplete: %+v", meta)
	}
}

func TestStoreInUse(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBolt(dir); !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("second OpenBolt = %v, want ErrStoreInUse", err)
	}
}

// KEY-03 / REV-21: checking a key, good or bad, never reaches the store.
func TestVerifyNeverCallsTheStore(t *testing.T) {
	bolt, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	store := &countingStore{Store: bolt}
	k, err := NewKeyring(context.Background(), store, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := regenerate(t, k, "iris", SlotPrimary)
	before := store.calls.Load()
	bad := []byte(key)
	bad[30] ^= 1
	for i := 0; i < 1000; i++ {
		k.Verify("iris", []byte(key))
		k.Verify("iris", bad)
		k.Verify("iris", []byte("sgk_garbage"))
	}
	if n := store.calls.Load() - before; n != 0 {
		t.Fatalf("%d store calls while checking keys, want 0", n)
	}
}

func TestFlushRecordsLastUse(t *testing.T) {
	dir := t.TempDir()
	k, store := openKeyring(t, dir)
	defer store.Close()
	key := regenerate(t, k, "iris", SlotPrimary)
	if got := k.Keys("iris")[SlotPrimary].LastUsedAt; got != nil {
		t.Fatalf("lastUsedAt = %v before any use", got)
	}
	k.Verify("iris", []byte(key))
	if err := k.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, err := store.Keys(context.Background())
	if err != nil || len(recs) != 1 {
		t.Fatalf("Keys = %v, %v", recs, err)
	}
	if recs[0].LastUsedAt.IsZero() || time.Since(recs[0].LastUsedAt) > time.Minute {
		t.Errorf("stored lastUsedAt = %v", recs[0].LastUsedAt)
	}
}

// Readers never see a half-changed index while keys rotate (run with -race).
func TestConcurrentVerifyAndRegenerate(t *testing.T) {
	k, store := openKeyring(t, t.TempDir())
	defer store.Close()
	secondary := regenerate(t, k, "iris", SlotSecondary)
	regenerate(t, k, "iris", SlotPrimary)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var refused atomic.Int64
	for i := 0; i < 4; i++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, ok := k.Verify("iris", []byte(secondary)); !ok {
					refused.Add(1)
				}
			}
		})
	}
	for i := 0; i < 50; i++ {
		regenerate(t, k, "iris", SlotPrimary)
	}
	close(stop)
	wg.Wait()
	if n := refused.Load(); n != 0 {
		t.Fatalf("the secondary key was refused %d times while the primary rotated", n)
	}
}

func TestAuthenticateModes(t *testing.T) {
	k, store := openKeyring(t, t.TempDir())
	defer store.Close()
	key := regenerate(t, k, "iris", SlotPrimary)
	a := NewAuthenticator(k)
	hdr := [][]byte{[]byte("Bearer " + key)}
	tests := []struct {
		name    string
		service string
		mode    string
		authz   [][]byte
		err     error
	}{
		{"key service, its key", "iris", config.AuthKey, hdr, nil},
		{"key service, no credential", "iris", config.AuthKey, nil, ErrNoCredential},
		{"token service refuses a key", "iris", config.AuthToken, hdr, ErrInvalidCredential},
		{"open service needs nothing", "iris", config.AuthNone, nil, nil},
		{"key service, two headers", "iris", config.AuthKey, append(hdr, hdr[0]), ErrMultipleCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.Authenticate(tt.service, tt.mode, tt.authz)
			if !errors.Is(err, tt.err) {
				t.Errorf("Authenticate = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestOwner(t *testing.T) {
	dir := t.TempDir()
	k, store := openKeyring(t, dir)
	defer store.Close()

	key, path, created, err := OwnerKey(dir, "")
	if err != nil || !created || path != filepath.Join(dir, AdminKeyFile) {
		t.Fatalf("OwnerKey = %q, %v, %v", path, created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.key mode = %v, %v; want 0600", fi.Mode(), err)
	}
	again, _, created, err := OwnerKey(dir, "")
	if err != nil || created || again != key {
		t.Fatalf("second OwnerKey: created=%v err=%v same=%v", created, err, again == key)
	}
	env := "an-operator-chosen-admin-key-of-40-chars!"
	if _, _, _, err := OwnerKey(dir, "short"); err == nil {
		t.Error("a short GATEWAY_ADMIN_KEY was accepted")
	}
	got, path, _, err := OwnerKey(dir, env)
	if err != nil || got != env || path != "" {
		t.Fatalf("OwnerKey(env) = %q, %q, %v", got, path, err)
	}
	roles := NewRoles(&config.Config{})
	if _, err := NewPrincipals(context.Background(), store, k, roles, env); err == nil {
		t.Error("an admin key that cannot travel as a Bearer credential was accepted")
	}

	ps, err := NewPrincipals(context.Background(), store, k, roles, key)
	if err != nil {
		t.Fatal(err)
	}
	authn := func(h string) (Principal, error) { return ps.Authenticate([][]byte{[]byte(h)}) }
	if p, err := authn("Bearer " + key); err != nil || p.Name != OwnerName || !p.Can(PrincipalsManage) {
		t.Errorf("the Owner key: %+v, %v", p, err)
	}
	last := "x"
	if strings.HasSuffix(key, "x") {
		last = "y"
	}
	if _, err := authn("Bearer " + key[:len(key)-1] + last); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("a wrong Owner key: %v", err)
	}
	if _, err := ps.Authenticate(nil); !errors.Is(err, ErrNoCredential) {
		t.Errorf("no Owner key: %v", err)
	}
	service := regenerate(t, k, "iris", SlotPrimary)
	if _, err := authn("Bearer " + service); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("a service key opened the admin API: %v", err)
	}

	// Principals: created with a role, their key shown once, deleted for good.
	reader, readerKey, err := ps.Create(context.Background(), "alice", "reader")
	if err != nil || reader.Role != "reader" || !strings.HasPrefix(readerKey, PrincipalKeyPrefix) {
		t.Fatalf("Create = %+v, %v", reader, err)
	}
	if p, err := authn("Bearer " + readerKey); err != nil || p.Name != "alice" || p.Can(KeysRegenerate) || !p.Can(TokensMint) {
		t.Fatalf("reader key: %+v, %v", p, err)
	}
	for _, bad := range []struct{ name, role string }{{"alice", "reader"}, {OwnerName, "reader"}, {"bob", "admin"}, {"bad name", "reader"}, {"", "reader"}} {
		if _, _, err := ps.Create(context.Background(), bad.name, bad.role); err == nil {
			t.Errorf("Create(%q, %q) succeeded", bad.name, bad.role)
		}
	}
	// Principals survive a restart.
	ps2, err := NewPrincipals(context.Background(), store, k, roles, key)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ps2.Authenticate([][]byte{[]byte("Bearer " + readerKey)}); err != nil || p.Name != "alice" {
		t.Fatalf("after reload: %+v, %v", p, err)
	}
	if cur, ok := ps.Lookup("alice"); !ok || !cur.Same(reader) {
		t.Errorf("Lookup(alice) = %+v, %v; not the same as the one created", cur, ok)
	}
	if owner, ok := ps.Lookup(OwnerName); !ok || !owner.Same(Principal{Name: OwnerName, keyID: OwnerName}) || owner.Same(reader) {
		t.Errorf("Lookup(owner) = %+v, %v", owner, ok)
	}
	if err := ps.Delete(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := authn("Bearer " + readerKey); !errors.Is(err, ErrInvalidCredential) {
		t.Errorf("a deleted principal's key: %v", err)
	}
	// Made again under the same name, it is another principal (a status page session of the
	// first must not carry over).
	remade, _, err := ps.Create(context.Background(), "alice", "reader")
	if err != nil {
		t.Fatal(err)
	}
	if remade.Same(reader) {
		t.Error("a principal made again under a deleted one's name is the Same as the deleted one")
	}
	if err := ps.Delete(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if err := ps.Delete(context.Background(), "alice"); !errors.Is(err, ErrPrincipalUnknown) {
		t.Errorf("deleting twice: %v", err)
	}
	if err := ps.Delete(context.Background(), OwnerName); err == nil {
		t.Error("the owner was deleted")
	}
}

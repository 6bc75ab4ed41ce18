// Package storetest checks that a backend of authn.Store keeps the contract written on that
// interface: what each method saves, returns, replaces and refuses, that revocations leave with
// their tokens' expiry, and that what was written is still there when the store is opened again.
// Every backend's tests call Run; it knows nothing of how a backend keeps its data.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/scoregate/scoregate/authn"
)

// Open makes the store for one case: an empty store of its own, shared with no other case, and
// reopen, which opens the same data again once the first store is closed (the same file, or the
// same Redis under the same prefix), as a restarted or a second gateway would. Run closes every
// store it is given.
type Open func(t *testing.T) (s authn.Store, reopen func(t *testing.T) authn.Store)

// Run checks the backend that open makes against the Store contract, one subtest per point.
func Run(t *testing.T, open Open) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, reopen := open(t)
			c.run(t, &handle{Store: closeOnce(t, s), reopen: reopen, open: open})
		})
	}
}

// handle is a case's store and the way to open its data again.
type handle struct {
	authn.Store
	reopen func(t *testing.T) authn.Store
	open   Open // for a second, unrelated store
}

// again closes the store and opens its data again.
func (h *handle) again(t *testing.T) authn.Store {
	t.Helper()
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return closeOnce(t, h.reopen(t))
}

// onceStore closes its store the first time only, so that a case may close it and the cleanup
// still closes a store left open by a failing case.
type onceStore struct {
	authn.Store
	once sync.Once
	err  error
}

func (s *onceStore) Close() error {
	s.once.Do(func() { s.err = s.Store.Close() })
	return s.err
}

func closeOnce(t *testing.T, s authn.Store) authn.Store {
	o := &onceStore{Store: s}
	t.Cleanup(func() { o.Close() })
	return o
}

type testCase struct {
	name string
	run  func(t *testing.T, s *handle)
}

// now is a time every backend keeps exactly: UTC, to the millisecond.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// same compares what a store returned with what was saved, in any order; a nil and an empty
// slice are the same.
func same[T any](t *testing.T, what string, got, want []T, less func(a, b T) bool) {
	t.Helper()
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.SortSlices(less)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

func keyLess(a, b authn.KeyRecord) bool             { return a.ID < b.ID }
func principalLess(a, b authn.PrincipalRecord) bool { return a.Name < b.Name }
func signingLess(a, b authn.SigningKeyRecord) bool  { return a.KID < b.KID }
func revocationLess(a, b authn.Revocation) bool {
	return a.Issuer+"\x00"+a.JTI < b.Issuer+"\x00"+b.JTI
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// list is what one of the store's listing methods returns, failing the test on an error.
func list[T any](t *testing.T, what string, read func(context.Context) ([]T, error)) []T {
	t.Helper()
	recs, err := read(context.Background())
	must(t, what, err)
	return recs
}

func keys(t *testing.T, s authn.Store) []authn.KeyRecord {
	t.Helper()
	return list(t, "Keys", s.Keys)
}

func principals(t *testing.T, s authn.Store) []authn.PrincipalRecord {
	t.Helper()
	return list(t, "Principals", s.Principals)
}

func signingKeys(t *testing.T, s authn.Store) []authn.SigningKeyRecord {
	t.Helper()
	return list(t, "SigningKeys", s.SigningKeys)
}

func revocations(t *testing.T, s authn.Store) []authn.Revocation {
	t.Helper()
	return list(t, "Revocations", s.Revocations)
}

func activity(t *testing.T, s authn.Store, limit int) []authn.Activity {
	t.Helper()
	return list(t, fmt.Sprintf("Activity(%d)", limit), func(ctx context.Context) ([]authn.Activity, error) {
		return s.Activity(ctx, limit)
	})
}

func keyRec(id, service, slot string, created time.Time) authn.KeyRecord {
	return authn.KeyRecord{ID: id, Service: service, Slot: slot, Hash: []byte("hash of " + id), CreatedAt: created}
}

var cases = []testCase{
	{"a new store holds nothing", func(t *testing.T, s *handle) {
		if n := len(keys(t, s)); n != 0 {
			t.Errorf("Keys: %d records", n)
		}
		if n := len(principals(t, s)); n != 0 {
			t.Errorf("Principals: %d records", n)
		}
		if n := len(signingKeys(t, s)); n != 0 {
			t.Errorf("SigningKeys: %d records", n)
		}
		if n := len(revocations(t, s)); n != 0 {
			t.Errorf("Revocations: %d records", n)
		}
		if n := len(activity(t, s, 10)); n != 0 {
			t.Errorf("Activity: %d records", n)
		}
	}},

	{"the secret is made once and then always the same", func(t *testing.T, s *handle) {
		ctx := context.Background()
		first, err := s.Secret(ctx)
		must(t, "Secret", err)
		if len(first) < 16 {
			t.Fatalf("the secret has %d bytes, too few to hash keys with", len(first))
		}
		second, err := s.Secret(ctx)
		must(t, "Secret again", err)
		if string(second) != string(first) {
			t.Error("a second call returned another secret")
		}
		reopened, err := s.again(t).Secret(ctx)
		must(t, "Secret after reopening", err)
		if string(reopened) != string(first) {
			t.Error("the store opened again returned another secret: every key hashed before would fail")
		}
	}},

	{"two stores have different secrets", func(t *testing.T, s *handle) {
		ctx := context.Background()
		mine, err := s.Secret(ctx)
		must(t, "Secret", err)
		other, _ := s.open(t)
		other = closeOnce(t, other)
		theirs, err := other.Secret(ctx)
		must(t, "Secret of another store", err)
		if string(mine) == string(theirs) {
			t.Error("two stores made the same secret: it is not random")
		}
	}},

	{"a key is read back as it was saved", func(t *testing.T, s *handle) {
		rec := keyRec("k1", "iris", authn.SlotPrimary, now())
		rec.LastUsedAt = rec.CreatedAt.Add(time.Second)
		must(t, "PutKey", s.PutKey(context.Background(), rec))
		same(t, "Keys", keys(t, s), []authn.KeyRecord{rec}, keyLess)
	}},

	{"a key replaces the one in its service and slot, and only that one", func(t *testing.T, s *handle) {
		ctx := context.Background()
		t0 := now()
		irisPrimary := keyRec("k1", "iris", authn.SlotPrimary, t0)
		irisSecondary := keyRec("k2", "iris", authn.SlotSecondary, t0)
		otherPrimary := keyRec("k3", "other", authn.SlotPrimary, t0)
		for _, rec := range []authn.KeyRecord{irisPrimary, irisSecondary, otherPrimary} {
			must(t, "PutKey", s.PutKey(ctx, rec))
		}
		same(t, "Keys after three slots were filled", keys(t, s), []authn.KeyRecord{irisPrimary, irisSecondary, otherPrimary}, keyLess)
		regenerated := keyRec("k4", "iris", authn.SlotPrimary, t0.Add(time.Minute))
		must(t, "PutKey replacing iris/primary", s.PutKey(ctx, regenerated))
		same(t, "Keys after iris/primary was replaced", keys(t, s), []authn.KeyRecord{regenerated, irisSecondary, otherPrimary}, keyLess)
	}},

	{"key use is recorded by id and never goes back", func(t *testing.T, s *handle) {
		ctx := context.Background()
		t0 := now()
		a, b := keyRec("ka", "iris", authn.SlotPrimary, t0), keyRec("kb", "iris", authn.SlotSecondary, t0)
		must(t, "PutKey", s.PutKey(ctx, a))
		must(t, "PutKey", s.PutKey(ctx, b))
		must(t, "TouchKeys with nothing", s.TouchKeys(ctx, nil))
		must(t, "TouchKeys", s.TouchKeys(ctx, map[string]time.Time{"ka": t0.Add(2 * time.Second)}))
		a.LastUsedAt = t0.Add(2 * time.Second)
		same(t, "Keys after ka was used", keys(t, s), []authn.KeyRecord{a, b}, keyLess)
		must(t, "TouchKeys with an older time", s.TouchKeys(ctx, map[string]time.Time{"ka": t0.Add(time.Second)}))
		same(t, "Keys after an older use of ka was recorded", keys(t, s), []authn.KeyRecord{a, b}, keyLess)
		must(t, "TouchKeys", s.TouchKeys(ctx, map[string]time.Time{"ka": t0.Add(3 * time.Second), "kb": t0.Add(4 * time.Second)}))
		a.LastUsedAt, b.LastUsedAt = t0.Add(3*time.Second), t0.Add(4*time.Second)
		same(t, "Keys after both were used", keys(t, s), []authn.KeyRecord{a, b}, keyLess)
	}},

	{"the use of an unknown or replaced key changes no record", func(t *testing.T, s *handle) {
		ctx := context.Background()
		t0 := now()
		old := keyRec("k-old", "iris", authn.SlotPrimary, t0)
		must(t, "PutKey", s.PutKey(ctx, old))
		successor := keyRec("k-new", "iris", authn.SlotPrimary, t0.Add(time.Second))
		must(t, "PutKey replacing it", s.PutKey(ctx, successor))
		// The old key's use, counted before the replacement and recorded after it.
		must(t, "TouchKeys", s.TouchKeys(ctx, map[string]time.Time{"k-old": t0.Add(time.Minute), "k-unknown": t0.Add(time.Minute)}))
		same(t, "Keys", keys(t, s), []authn.KeyRecord{successor}, keyLess)
	}},

	{"a principal is read back as it was saved", func(t *testing.T, s *handle) {
		ctx := context.Background()
		rita := authn.PrincipalRecord{Name: "rita", Role: "reader", KeyID: "p1", Hash: []byte("hash of p1"), CreatedAt: now()}
		olga := authn.PrincipalRecord{Name: "olga", Role: "owner", KeyID: "p2", Hash: []byte("hash of p2"), CreatedAt: now()}
		must(t, "PutPrincipal", s.PutPrincipal(ctx, rita))
		must(t, "PutPrincipal", s.PutPrincipal(ctx, olga))
		same(t, "Principals", principals(t, s), []authn.PrincipalRecord{rita, olga}, principalLess)
	}},

	{"a principal's name is taken once", func(t *testing.T, s *handle) {
		ctx := context.Background()
		first := authn.PrincipalRecord{Name: "rita", Role: "reader", KeyID: "p1", Hash: []byte("hash of p1"), CreatedAt: now()}
		must(t, "PutPrincipal", s.PutPrincipal(ctx, first))
		impostor := authn.PrincipalRecord{Name: "rita", Role: "owner", KeyID: "p2", Hash: []byte("hash of p2"), CreatedAt: now()}
		if err := s.PutPrincipal(ctx, impostor); !errors.Is(err, authn.ErrPrincipalExists) {
			t.Fatalf("PutPrincipal of a taken name = %v, want ErrPrincipalExists", err)
		}
		same(t, "Principals after the refused PutPrincipal", principals(t, s), []authn.PrincipalRecord{first}, principalLess)
	}},

	{"deleting a principal removes it, and only it", func(t *testing.T, s *handle) {
		ctx := context.Background()
		rita := authn.PrincipalRecord{Name: "rita", Role: "reader", KeyID: "p1", Hash: []byte("hash of p1"), CreatedAt: now()}
		olga := authn.PrincipalRecord{Name: "olga", Role: "owner", KeyID: "p2", Hash: []byte("hash of p2"), CreatedAt: now()}
		must(t, "PutPrincipal", s.PutPrincipal(ctx, rita))
		must(t, "PutPrincipal", s.PutPrincipal(ctx, olga))
		must(t, "DeletePrincipal", s.DeletePrincipal(ctx, "rita"))
		same(t, "Principals after rita was deleted", principals(t, s), []authn.PrincipalRecord{olga}, principalLess)
		if err := s.DeletePrincipal(ctx, "rita"); !errors.Is(err, authn.ErrPrincipalUnknown) {
			t.Errorf("deleting rita again = %v, want ErrPrincipalUnknown", err)
		}
		again := rita
		again.KeyID, again.Hash = "p3", []byte("hash of p3")
		must(t, "PutPrincipal of a deleted principal's name", s.PutPrincipal(ctx, again))
		same(t, "Principals after rita was made again", principals(t, s), []authn.PrincipalRecord{again, olga}, principalLess)
	}},

	{"deleting a principal that never was is ErrPrincipalUnknown", func(t *testing.T, s *handle) {
		ctx := context.Background()
		for _, name := range []string{"nobody", ""} {
			if err := s.DeletePrincipal(ctx, name); !errors.Is(err, authn.ErrPrincipalUnknown) {
				t.Errorf("DeletePrincipal(%q) = %v, want ErrPrincipalUnknown", name, err)
			}
		}
	}},

	{"signing keys are saved, listed and deleted by kid", func(t *testing.T, s *handle) {
		ctx := context.Background()
		k1 := authn.SigningKeyRecord{KID: "kid-1", Seed: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: now()}
		k2 := authn.SigningKeyRecord{KID: "kid-2", Seed: []byte("fedcba9876543210fedcba9876543210"), CreatedAt: now().Add(time.Hour)}
		must(t, "PutSigningKey", s.PutSigningKey(ctx, k1))
		must(t, "PutSigningKey", s.PutSigningKey(ctx, k2))
		same(t, "SigningKeys", signingKeys(t, s), []authn.SigningKeyRecord{k1, k2}, signingLess)
		must(t, "DeleteSigningKey", s.DeleteSigningKey(ctx, "kid-1"))
		same(t, "SigningKeys after kid-1 was deleted", signingKeys(t, s), []authn.SigningKeyRecord{k2}, signingLess)
		must(t, "DeleteSigningKey of a kid that is not there", s.DeleteSigningKey(ctx, "kid-1"))
		must(t, "DeleteSigningKey of a kid that never was", s.DeleteSigningKey(ctx, "kid-never"))
		same(t, "SigningKeys after deleting absent kids", signingKeys(t, s), []authn.SigningKeyRecord{k2}, signingLess)
	}},

	{"a revocation is kept until its token expires", func(t *testing.T, s *handle) {
		ctx := context.Background()
		t0 := now()
		long := authn.Revocation{Issuer: "https://gw", JTI: "long", Expires: t0.Add(time.Hour)}
		short := authn.Revocation{Issuer: "https://gw", JTI: "short", Expires: t0.Add(700 * time.Millisecond)}
		expired := authn.Revocation{Issuer: "https://gw", JTI: "expired", Expires: t0.Add(-time.Second)}
		for _, r := range []authn.Revocation{long, short, expired} {
			must(t, "PutRevocation", s.PutRevocation(ctx, r))
		}
		same(t, "Revocations", revocations(t, s), []authn.Revocation{long, short}, revocationLess)
		time.Sleep(time.Until(short.Expires.Add(50 * time.Millisecond)))
		same(t, "Revocations once the short one's token expired", revocations(t, s), []authn.Revocation{long}, revocationLess)
	}},

	{"a revocation names its token by issuer and id", func(t *testing.T, s *handle) {
		ctx := context.Background()
		exp := now().Add(time.Hour)
		a := authn.Revocation{Issuer: "https://a", JTI: "same-id", Expires: exp}
		b := authn.Revocation{Issuer: "https://b", JTI: "same-id", Expires: exp}
		c := authn.Revocation{Issuer: "https://a", JTI: "other-id", Expires: exp}
		for _, r := range []authn.Revocation{a, b, c} {
			must(t, "PutRevocation", s.PutRevocation(ctx, r))
		}
		same(t, "Revocations", revocations(t, s), []authn.Revocation{a, b, c}, revocationLess)
	}},

	{"activity comes back newest first, up to the limit", func(t *testing.T, s *handle) {
		ctx := context.Background()
		t0 := now()
		var recs []authn.Activity
		for i := range 4 {
			a := authn.Activity{Time: t0.Add(time.Duration(i) * time.Second), Operation: "principal.create", Initiator: "olga",
				Target: fmt.Sprintf("principal-%d", i), Result: authn.ResultSuccess}
			recs = append(recs, a)
			must(t, "AppendActivity", s.AppendActivity(ctx, a))
		}
		newestFirst := []authn.Activity{recs[3], recs[2], recs[1], recs[0]}
		for _, limit := range []int{0, 1, 3, 4, 10} {
			want := newestFirst[:min(limit, len(newestFirst))]
			if diff := cmp.Diff(want, activity(t, s, limit), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Activity(%d) (-want +got):\n%s", limit, diff)
			}
		}
	}},

	{"what was written is there when the store is opened again", func(t *testing.T, s *handle) {
		ctx := context.Background()
		t0 := now()
		secret, err := s.Secret(ctx)
		must(t, "Secret", err)
		key := keyRec("k1", "iris", authn.SlotPrimary, t0)
		must(t, "PutKey", s.PutKey(ctx, key))
		must(t, "TouchKeys", s.TouchKeys(ctx, map[string]time.Time{"k1": t0.Add(time.Second)}))
		key.LastUsedAt = t0.Add(time.Second)
		p := authn.PrincipalRecord{Name: "rita", Role: "reader", KeyID: "p1", Hash: []byte("hash of p1"), CreatedAt: t0}
		must(t, "PutPrincipal", s.PutPrincipal(ctx, p))
		sk := authn.SigningKeyRecord{KID: "kid-1", Seed: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: t0}
		must(t, "PutSigningKey", s.PutSigningKey(ctx, sk))
		rev := authn.Revocation{Issuer: "https://gw", JTI: "j1", Expires: t0.Add(time.Hour)}
		must(t, "PutRevocation", s.PutRevocation(ctx, rev))
		act := authn.Activity{Time: t0, Operation: "key.regenerate", Initiator: "olga", Target: "iris/primary", Result: authn.ResultSuccess}
		must(t, "AppendActivity", s.AppendActivity(ctx, act))

		r := s.again(t)
		got, err := r.Secret(ctx)
		must(t, "Secret after reopening", err)
		if string(got) != string(secret) {
			t.Error("another secret after reopening")
		}
		same(t, "Keys after reopening", keys(t, r), []authn.KeyRecord{key}, keyLess)
		same(t, "Principals after reopening", principals(t, r), []authn.PrincipalRecord{p}, principalLess)
		same(t, "SigningKeys after reopening", signingKeys(t, r), []authn.SigningKeyRecord{sk}, signingLess)
		same(t, "Revocations after reopening", revocations(t, r), []authn.Revocation{rev}, revocationLess)
		if diff := cmp.Diff([]authn.Activity{act}, activity(t, r, 10)); diff != "" {
			t.Errorf("Activity after reopening (-want +got):\n%s", diff)
		}
	}},
}

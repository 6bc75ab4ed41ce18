//go:build unix

package certstore

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// instances returns n Storages on the same Redis, each with its own client: n gateway instances.
func instances(t *testing.T, url string, n int, opts ...Option) []*Storage {
	t.Helper()
	var out []*Storage
	for range n {
		out = append(out, New(newClient(t, url), prefix, opts...))
	}
	return out
}

// checkMutualExclusion runs, on every Storage, goroutines that take the lock and, inside it,
// increment a Redis counter with a GET, a pause and a SET: any overlap shows up as a critical
// section entered while another was inside, and as a lost increment.
func checkMutualExclusion(t *testing.T, stores []*Storage, counter redis.UniversalClient) {
	t.Helper()
	ctx := testCtx(t)
	const goroutines, rounds = 4, 5
	const name = "issue_cert_example.com"
	counterKey := prefix + "test-counter"
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*goroutines*rounds)
	for _, s := range stores {
		for range goroutines {
			wg.Go(func() {
				for range rounds {
					if err := s.Lock(ctx, name); err != nil {
						errs <- err
						return
					}
					n := inside.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					v, _ := counter.Get(ctx, counterKey).Int()
					time.Sleep(2 * time.Millisecond)
					counter.Set(ctx, counterKey, v+1, 0)
					inside.Add(-1)
					if err := s.Unlock(ctx, name); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if m := most.Load(); m != 1 {
		t.Errorf("%d goroutines were inside the critical section at once", m)
	}
	want := len(stores) * goroutines * rounds
	if got, err := counter.Get(ctx, counterKey).Int(); err != nil || got != want {
		t.Errorf("counter = %d, %v; want %d (increments lost to overlapping critical sections)", got, err, want)
	}
}

func TestLockMutualExclusion(t *testing.T) {
	srv := redistest.Start(t)
	stores := instances(t, srv.URL(), 2, WithLockPoll(20*time.Millisecond))
	checkMutualExclusion(t, stores, newClient(t, srv.URL()))
}

// Two instances on one Redis: whichever holds the lock keeps the other out until it unlocks.
func TestLockExcludesOtherInstance(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	st := instances(t, srv.URL(), 2, WithLockPoll(20*time.Millisecond))
	a, b := st[0], st[1]
	if err := a.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "n"); ok || err != nil {
		t.Fatalf("TryLock by the other instance = %v, %v; want false, nil", ok, err)
	}
	got := make(chan error, 1)
	go func() { got <- b.Lock(ctx, "n") }()
	select {
	case err := <-got:
		t.Fatalf("Lock by the other instance returned %v while the lock was held", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := a.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Lock did not return after Unlock")
	}
	if err := b.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	// Other names are independent.
	if err := a.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "other"); !ok || err != nil {
		t.Fatalf("TryLock of another name = %v, %v", ok, err)
	}
	for _, s := range st {
		if err := s.Unlock(ctx, map[*Storage]string{a: "n", b: "other"}[s]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTryLockWithinOneInstance(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	s := New(newClient(t, srv.URL()), prefix)
	if ok, err := s.TryLock(ctx, "n"); !ok || err != nil {
		t.Fatalf("TryLock = %v, %v", ok, err)
	}
	if ok, err := s.TryLock(ctx, "n"); ok || err != nil {
		t.Fatalf("second TryLock in the same instance = %v, %v; want false, nil", ok, err)
	}
	if err := s.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.TryLock(ctx, "n"); !ok || err != nil {
		t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
	}
	if err := s.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
}

// With a 600 ms lease, a holder keeps the lock for three leases because it renews it.
func TestLeaseRenewalKeepsLock(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	const lease = 600 * time.Millisecond
	st := instances(t, srv.URL(), 2, WithLockLease(lease), WithLockPoll(20*time.Millisecond))
	a, b := st[0], st[1]
	if err := a.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv.URL())
	locked := time.Now()
	for time.Since(locked) < 3*lease {
		if ok, err := b.TryLock(ctx, "n"); ok || err != nil {
			t.Fatalf("the other instance took the lock %v after it was locked with a %v lease (%v)", time.Since(locked), lease, err)
		}
		if ttl := c.PTTL(ctx, prefix+"certmagic:lock:n").Val(); ttl <= 0 || ttl > lease {
			t.Fatalf("lock PTTL = %v, want within (0, %v]", ttl, lease)
		}
		time.Sleep(lease / 6)
	}
	if err := a.RenewLockLease(ctx, "n", time.Hour); err != nil {
		t.Fatalf("RenewLockLease: %v", err)
	}
	if ttl := c.PTTL(ctx, prefix+"certmagic:lock:n").Val(); ttl > lease {
		t.Errorf("after RenewLockLease(1h) PTTL = %v; the lease should stay %v", ttl, lease)
	}
	if err := a.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "n"); !ok || err != nil {
		t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
	}
	if err := b.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
}

// A holder that can no longer reach Redis (its client closed: a crash or a partition, as far as
// the others can tell) loses the lock one lease after its last renewal, and its renewal goroutine
// ends (goleak checks that).
func TestDeadHolderLosesLock(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	const lease = 500 * time.Millisecond
	opts := []Option{WithLockLease(lease), WithLockPoll(20 * time.Millisecond)}
	deadClient := newClient(t, srv.URL())
	dead := New(deadClient, prefix, opts...)
	otherClient := newClient(t, srv.URL())
	other := New(otherClient, prefix, opts...)

	if err := dead.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(lease / 2) // past a renewal
	left := otherClient.PTTL(ctx, prefix+"certmagic:lock:n").Val()
	deadClient.Close()
	closed := time.Now()
	if err := other.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	// Not before the lease that was left at the close has run out, and not much later.
	if waited := time.Since(closed); waited < left-20*time.Millisecond || waited > lease+2*time.Second {
		t.Errorf("the other instance got the lock %v after the holder died with %v of its %v lease left", waited, left, lease)
	}
	waitFor(t, 2*time.Second, "the dead holder to see its lease lost", func() bool {
		return errors.Is(dead.RenewLockLease(ctx, "n", 0), ErrLockLost)
	})
	if err := dead.Unlock(ctx, "n"); err == nil {
		t.Error("Unlock by the holder that lost the lock succeeded")
	}
	if err := other.RenewLockLease(ctx, "n", 0); err != nil {
		t.Errorf("the new holder's lease: %v", err)
	}
	if err := other.Unlock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
}

func TestUnlockByNonHolderDoesNotRelease(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	st := instances(t, srv.URL(), 2)
	a, b := st[0], st[1]
	c := newClient(t, srv.URL())
	key := prefix + "certmagic:lock:n"
	if err := a.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	token := c.Get(ctx, key).Val()

	t.Run("another instance", func(t *testing.T) {
		if err := b.Unlock(ctx, "n"); !errors.Is(err, ErrNotLocked) {
			t.Errorf("Unlock by another instance = %v, want ErrNotLocked", err)
		}
		if got := c.Get(ctx, key).Val(); got != token {
			t.Errorf("lock holds %q after a non-holder's Unlock, want the holder's token", got)
		}
		if ok, _ := b.TryLock(ctx, "n"); ok {
			t.Error("the other instance could take the lock")
		}
	})
	t.Run("a holder whose lease was taken over", func(t *testing.T) {
		// As if the lease had expired and another instance had taken the lock.
		c.Set(ctx, key, "someone-else", time.Minute)
		if err := a.RenewLockLease(ctx, "n", 0); !errors.Is(err, ErrLockLost) {
			t.Errorf("RenewLockLease = %v, want ErrLockLost", err)
		}
		if err := a.Unlock(ctx, "n"); !errors.Is(err, ErrLockLost) {
			t.Errorf("Unlock = %v, want ErrLockLost", err)
		}
		if got := c.Get(ctx, key).Val(); got != "someone-else" {
			t.Errorf("lock holds %q after the stale holder's Unlock, want someone-else's", got)
		}
	})
	t.Run("twice", func(t *testing.T) {
		if err := a.Unlock(ctx, "n"); !errors.Is(err, ErrNotLocked) {
			t.Errorf("second Unlock = %v, want ErrNotLocked", err)
		}
	})
}

func TestLockWaitRespectsContext(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testCtx(t)
	st := instances(t, srv.URL(), 2, WithLockPoll(50*time.Millisecond))
	a, b := st[0], st[1]
	if err := a.Lock(ctx, "n"); err != nil {
		t.Fatal(err)
	}
	defer a.Unlock(ctx, "n")
	for _, tc := range []struct {
		name string
		s    *Storage
	}{
		{"another instance waits in Redis", b},
		{"another goroutine of the holder waits locally", a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := tc.s.Lock(wctx, "n")
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Lock = %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Lock returned %v after its 200 ms deadline", d)
			}
		})
	}
}

// Redis stopped (connection refused) or paused (connections accepted, nothing answers): every
// call returns an error within its bounds instead of hanging, and works again once Redis is back.
func TestRedisDown(t *testing.T) {
	for _, tc := range []struct {
		name      string
		down, up  func(*redistest.Server, testing.TB)
		wantUnder time.Duration
	}{
		{"stopped", (*redistest.Server).Stop, (*redistest.Server).Restart, time.Second},
		{"paused", (*redistest.Server).Pause, (*redistest.Server).Resume, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			ctx := testCtx(t)
			s := New(newClient(t, srv.URL()), prefix, WithTimeout(500*time.Millisecond))
			if err := s.Store(ctx, "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			tc.down(srv, t)
			for _, op := range []struct {
				name string
				do   func(context.Context) error
			}{
				{"Load", func(ctx context.Context) error { _, err := s.Load(ctx, "k"); return err }},
				{"Store", func(ctx context.Context) error { return s.Store(ctx, "k", []byte("v2")) }},
				{"List", func(ctx context.Context) error { _, err := s.List(ctx, "", true); return err }},
				{"Lock", func(ctx context.Context) error { return s.Lock(ctx, "n") }},
				{"TryLock", func(ctx context.Context) error { _, err := s.TryLock(ctx, "n"); return err }},
			} {
				// context.Background: the call timeout alone must bound it.
				start := time.Now()
				err := op.do(context.Background())
				if err == nil {
					t.Errorf("%s with Redis %s succeeded", op.name, tc.name)
				}
				if errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s with Redis %s = %v; an outage must not look like a missing key", op.name, tc.name, err)
				}
				if d := time.Since(start); d > tc.wantUnder {
					t.Errorf("%s with Redis %s took %v", op.name, tc.name, d)
				}
			}
			if s.Exists(ctx, "k") {
				t.Errorf("Exists with Redis %s = true", tc.name)
			}
			tc.up(srv, t)
			waitFor(t, 5*time.Second, "Redis to answer again", func() bool { return s.Store(ctx, "k", []byte("v3")) == nil })
			if err := s.Lock(ctx, "n"); err != nil {
				t.Fatal(err)
			}
			if err := s.Unlock(ctx, "n"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A held lock across a Redis restart: without persistence the lock is gone and the holder is told
// so; with an append-only file it survives and the holder keeps renewing it.
func TestLockAcrossRedisRestart(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      []redistest.Option
		wantAfter error
	}{
		{"without persistence the holder learns it lost the lock", nil, ErrLockLost},
		{"with AOF the holder keeps it", []redistest.Option{redistest.WithAOF()}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, tc.opts...)
			ctx := testCtx(t)
			const lease = 2 * time.Second
			st := instances(t, srv.URL(), 2, WithLockLease(lease), WithLockPoll(20*time.Millisecond))
			a, b := st[0], st[1]
			if err := a.Lock(ctx, "n"); err != nil {
				t.Fatal(err)
			}
			srv.Restart(t)
			time.Sleep(lease * 5 / 4) // renewals after the restart, and past the lease before it
			err := a.RenewLockLease(ctx, "n", 0)
			if !errors.Is(err, tc.wantAfter) {
				t.Errorf("RenewLockLease after the restart = %v, want %v", err, tc.wantAfter)
			}
			ok, err := b.TryLock(ctx, "n")
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.wantAfter != nil; ok != want {
				t.Errorf("the other instance's TryLock after the restart = %v, want %v", ok, want)
			}
			if err := a.Unlock(ctx, "n"); !errors.Is(err, tc.wantAfter) {
				t.Errorf("Unlock = %v, want %v", err, tc.wantAfter)
			}
			if ok {
				if err := b.Unlock(ctx, "n"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestCluster(t *testing.T) {
	cluster := redistest.Cluster(t, 3)
	t.Run("storage semantics", func(t *testing.T) {
		checkAgainstFileStorage(t, New(newClusterClient(t, cluster), prefix+"semantics:"))
	})
	t.Run("lock mutual exclusion", func(t *testing.T) {
		var stores []*Storage
		for range 2 {
			stores = append(stores, New(newClusterClient(t, cluster), prefix, WithLockPoll(20*time.Millisecond)))
		}
		checkMutualExclusion(t, stores, newClusterClient(t, cluster))
	})
	t.Run("a prefix without a hash tag is refused by the cluster", func(t *testing.T) {
		// Documents why the prefix needs its hash tag: the data keys span slots without it.
		ctx := testCtx(t)
		s := New(newClusterClient(t, cluster), "no-tag:")
		if err := s.Store(ctx, "k", []byte("v")); err == nil {
			t.Error("Store without a hash tag on a Cluster succeeded; the three data keys landed in one slot by chance?")
		}
	})
}

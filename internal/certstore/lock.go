package certstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Locks
//
// A lock is the Redis key <prefix>certmagic:lock:<name> holding a random token, taken with
// SET NX PX <lease> and released by a script that deletes it only while it still holds the
// holder's token. While the lock is held a goroutine renews the lease every third of it with a
// script that extends it only while it holds the token; it stops at Unlock, when it finds another
// token (or none: Redis restarted without its data), or when it has not reached Redis for a whole
// lease. Lock tries again after 1/20 of the poll interval (50 ms by default), doubling up to the
// poll interval, with ±25% jitter; a Redis error ends it at once rather than waiting through an
// outage of unknown length. It polls rather than waiting for a pub/sub notice: the locks guard
// ACME orders that take seconds, so a poll interval of delay costs nothing, and there is no
// subscription to lose. Goroutines of one process take a name in turn before they try Redis, so
// Unlock(name) always means the lease of the one local holder.
//
// Mutual exclusion holds as long as a holder reaches Redis at least once per lease, the clocks of
// the instances and Redis run at the same rate, and Redis keeps the key (a restart without
// persistence, or a failover to a replica that had not seen it, frees the lock early). A holder
// that loses the lease is told by RenewLockLease and Unlock (ErrLockLost); certmagic tolerates
// the rare overlap this allows.

// ErrNotLocked means Unlock or RenewLockLease was called for a lock this Storage does not hold.
var ErrNotLocked = errors.New("the lock is not held by this instance")

// ErrLockLost means a held lock's lease ran out or was taken over (its holder could not renew it
// for a whole lease, or Redis lost it), so another instance may have held it meanwhile.
var ErrLockLost = errors.New("the lock's lease was lost; another instance may have held it meanwhile")

// errBusy: TryLock found the name held by another goroutine of this process.
var errBusy = errors.New("busy")

// renewScript: KEYS lock; ARGV token, lease ms. Returns 1 when extended, 0 when not ours.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// releaseScript: KEYS lock; ARGV token. Returns 1 when deleted, 0 when not ours.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// localLock is this process's claim on one lock name.
type localLock struct {
	sem   chan struct{} // full while a goroutine holds, or is taking, the lock
	refs  int           // goroutines holding or waiting; the entry goes at 0 (Storage.mu)
	lease *lease        // the held lease, nil while not held (Storage.mu)
}

// lease is one held lock and its renewal goroutine.
type lease struct {
	name, key, token string
	stop             context.CancelFunc // ends the renewal goroutine
	done             chan struct{}      // closed when it has ended

	mu   sync.Mutex
	lost error // why the lease is known to be lost, or nil
}

func (ls *lease) fail(err error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.lost == nil {
		ls.lost = err
	}
}

func (ls *lease) err() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.lost
}

// Lock implements certmagic.Locker: it blocks until it holds the lock name, ctx is done or Redis
// fails, and returns nil only in the first case.
func (s *Storage) Lock(ctx context.Context, name string) error {
	l, err := s.claim(ctx, name, true)
	if err != nil {
		return fmt.Errorf("certstore: waiting for lock %q: %w", name, err)
	}
	wait := min(s.poll/20, 50*time.Millisecond)
	for {
		ok, err := s.acquire(ctx, name, l)
		if err != nil {
			s.release(name, l)
			if dl, ok := ctx.Deadline(); ctx.Err() != nil || (ok && !time.Now().Before(dl)) {
				// The caller's deadline ended during the Redis call (the connection's deadline,
				// set from it, may fire a moment before the context says so): report that.
				err = context.DeadlineExceeded
				if ctx.Err() != nil {
					err = ctx.Err()
				}
			}
			return fmt.Errorf("certstore: locking %q: %w", name, err)
		}
		if ok {
			return nil
		}
		t := time.NewTimer(jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			s.release(name, l)
			return fmt.Errorf("certstore: waiting for lock %q: %w", name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, s.poll)
	}
}

// TryLock implements certmagic.TryLocker: one attempt, reporting whether it took the lock.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	l, err := s.claim(ctx, name, false)
	if errors.Is(err, errBusy) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("certstore: locking %q: %w", name, err)
	}
	ok, err := s.acquire(ctx, name, l)
	if err != nil || !ok {
		s.release(name, l)
	}
	if err != nil {
		return false, fmt.Errorf("certstore: locking %q: %w", name, err)
	}
	return ok, nil
}

// Unlock implements certmagic.Locker. It stops the lease renewal and deletes the lock if it still
// holds this instance's token; ErrLockLost when it does not, ErrNotLocked when this Storage did
// not hold name. It releases even when ctx is already cancelled (within the call timeout). On a
// Redis error the lock is left to expire within one lease; either way this Storage no longer
// holds it.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.locals[name]
	var ls *lease
	if l != nil {
		ls, l.lease = l.lease, nil
	}
	s.mu.Unlock()
	if ls == nil {
		return fmt.Errorf("certstore: unlocking %q: %w", name, ErrNotLocked)
	}
	defer s.release(name, l)
	ls.stop()
	<-ls.done

	ctx, cancel := s.call(context.WithoutCancel(ctx))
	defer cancel()
	n, err := releaseScript.Run(ctx, s.client, []string{ls.key}, ls.token).Int()
	switch {
	case err != nil:
		return fmt.Errorf("certstore: unlocking %q (it expires within %v): %w", name, s.lease, err)
	case n == 0:
		return fmt.Errorf("certstore: unlocking %q: %w", name, ErrLockLost)
	}
	return nil
}

// RenewLockLease implements certmagic.LockLeaseRenewer, which certmagic calls before each attempt
// of a certificate order: it renews the lease at once and reports ErrLockLost if the lock is no
// longer this instance's, so the attempt stops instead of running unprotected. The lease keeps
// its configured length rather than leaseDuration: the renewal goroutine keeps the lock for as
// long as the holder runs, and a longer lease would only keep the lock from the other instances
// longer after a crash.
func (s *Storage) RenewLockLease(ctx context.Context, lockKey string, _ time.Duration) error {
	s.mu.Lock()
	var ls *lease
	if l := s.locals[lockKey]; l != nil {
		ls = l.lease
	}
	s.mu.Unlock()
	if ls == nil {
		return fmt.Errorf("certstore: renewing lock %q: %w", lockKey, ErrNotLocked)
	}
	if err := ls.err(); err != nil {
		return fmt.Errorf("certstore: renewing lock %q: %w", lockKey, err)
	}
	held, err := s.extend(ctx, ls)
	if err != nil {
		return fmt.Errorf("certstore: renewing lock %q: %w", lockKey, err)
	}
	if !held {
		ls.fail(ErrLockLost)
		return fmt.Errorf("certstore: renewing lock %q: %w", lockKey, ErrLockLost)
	}
	return nil
}

// claim takes name for this goroutine among the goroutines of this process: waiting until ctx is
// done, or, without wait, failing with errBusy at once.
func (s *Storage) claim(ctx context.Context, name string, wait bool) (*localLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	l := s.locals[name]
	if l == nil {
		l = &localLock{sem: make(chan struct{}, 1)}
		s.locals[name] = l
	}
	l.refs++
	s.mu.Unlock()
	if !wait {
		select {
		case l.sem <- struct{}{}:
			return l, nil
		default:
			s.drop(name, l)
			return nil, errBusy
		}
	}
	select {
	case l.sem <- struct{}{}:
		return l, nil
	case <-ctx.Done():
		s.drop(name, l)
		return nil, ctx.Err()
	}
}

// release gives up a claim.
func (s *Storage) release(name string, l *localLock) {
	<-l.sem
	s.drop(name, l)
}

func (s *Storage) drop(name string, l *localLock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.refs--
	if l.refs == 0 {
		delete(s.locals, name)
	}
}

// acquire makes one attempt to take the lock in Redis for the claim l, and on success starts
// renewing it. (A SET that Redis applied but whose reply was lost leaves the lock taken until its
// lease ends.)
func (s *Storage) acquire(ctx context.Context, name string, l *localLock) (bool, error) {
	ls := &lease{name: name, key: s.lockKey(name), token: rand.Text(), done: make(chan struct{})}
	cctx, cancel := s.call(ctx)
	sent := time.Now()
	ok, err := s.client.SetNX(cctx, ls.key, ls.token, s.lease).Result()
	cancel()
	if err != nil || !ok {
		return false, err
	}
	var renewCtx context.Context
	renewCtx, ls.stop = context.WithCancel(context.Background()) // lives until Unlock, not ctx
	go s.keepAlive(renewCtx, ls, sent)
	s.mu.Lock()
	l.lease = ls
	s.mu.Unlock()
	return true, nil
}

// keepAlive renews ls every third of the lease until ctx is done. Finding the lock gone or
// another's, or failing to reach Redis until the lease has run out, marks ls lost and ends it.
func (s *Storage) keepAlive(ctx context.Context, ls *lease, since time.Time) {
	defer close(ls.done)
	every := s.lease / 3
	valid := since.Add(s.lease) // the lock is ours at least until then
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sent := time.Now()
		held, err := s.extend(ctx, ls)
		switch {
		case ctx.Err() != nil:
			return // unlocked meanwhile
		case err == nil && held:
			valid = sent.Add(s.lease)
			t.Reset(every)
		case err == nil:
			ls.fail(ErrLockLost)
			s.log.Error("certstore: lock lost: it expired or was taken over", "lock", ls.name)
			return
		case !time.Now().Before(valid):
			ls.fail(fmt.Errorf("%w (renewing failed for a whole lease: %w)", ErrLockLost, err))
			s.log.Error("certstore: lock lost: Redis unreachable for a whole lease", "lock", ls.name, "lease", s.lease, "error", err)
			return
		default:
			s.log.Warn("certstore: renewing a lock's lease failed; retrying", "lock", ls.name, "error", err)
			t.Reset(min(every/3, time.Until(valid)))
		}
	}
}

// extend renews ls's lease if the lock still holds its token, and reports whether it did.
func (s *Storage) extend(ctx context.Context, ls *lease) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, min(s.timeout, s.lease/3))
	defer cancel()
	n, err := renewScript.Run(ctx, s.client, []string{ls.key}, ls.token, s.lease.Milliseconds()).Int()
	return n == 1, err
}

// jitter spreads d by ±25%, so that waiting instances do not poll in step.
func jitter(d time.Duration) time.Duration {
	if d < 4 {
		return d
	}
	return d*3/4 + mrand.N(d/2)
}

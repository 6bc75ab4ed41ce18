package authn

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replica keeps an instance's in-memory copy of the shared state (keys, principals, signing keys,
// revocations) current, and says how current it is. Change notices arrive by pub/sub (sharded on
// a Cluster) and are applied at once, in whatever order they come; a notice missing from the
// sequence is waited for briefly (gapWait) and only then counts as lost. A full reload happens on
// a lost notice, a new subscription, or a generation check that finds changes no notice brought;
// each is counted by reason (FullReloads). The copy counts as
// current from the last successful check; once that is older than the staleness bound, Fresh is
// false and the gateway stops deciding (503) until Redis answers again and the copy is reloaded.
// When the store lost data (see RedisStore), Fresh stays false for the life of the process.
type Replica struct {
	store      *RedisStore
	keys       *Keyring
	principals *Principals
	tokens     *Tokens
	interval   time.Duration
	bound      time.Duration
	log        *slog.Logger

	mu      sync.Mutex   // serialises reloads and applied notices
	applied atomic.Int64 // generation the copy reflects
	// ahead holds the generations of notices that arrived, and were applied, ahead of one not
	// received yet; applied moves over them when it comes. Under mu.
	ahead map[int64]struct{}
	// gapSince is when the oldest notice still ahead arrived (zero while none is); a gap not
	// filled within gapWait of it means a notice was lost. Under mu.
	gapSince time.Time
	gapTimer *time.Timer     // runs fillGap; under mu
	runCtx   context.Context // Run's, for fillGap
	// lostSubAt is when the subscription was lost (unix nanoseconds), 0 while it holds: its
	// resubscription reloads the copy, so the generation check leaves that to it for a while.
	lostSubAt atomic.Int64
	syncedAt  atomic.Int64 // unix nanoseconds when the copy was last known current
	problem   atomic.Pointer[string]
	resyncs   atomic.Int64
	reloads   [len(ReloadReasons)]atomic.Int64 // full reloads begun, by reason
	loggedAt  atomic.Int64                     // unix nanoseconds of the last "not current" log line
	// loggedStale is whether the log has said that the copy is past the staleness bound.
	loggedStale atomic.Bool
	loggedLost  atomic.Bool // whether the log has said that the store lost data
}

// NewReplica returns a Replica over the given parts, which must already be loaded from store; the
// copy counts as current from now.
func NewReplica(store *RedisStore, keys *Keyring, principals *Principals, tokens *Tokens, interval, bound time.Duration, log *slog.Logger) *Replica {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Replica{store: store, keys: keys, principals: principals, tokens: tokens, interval: interval, bound: bound, log: log}
	r.syncedAt.Store(time.Now().UnixNano())
	return r
}

// Fresh reports whether the copy is within the staleness bound. It is cheap enough for every
// request.
func (r *Replica) Fresh() bool {
	return time.Now().UnixNano()-r.syncedAt.Load() <= int64(r.bound) && r.store.lost.Load() == nil
}

// Lost says why the store lost data, or "" while it has not.
func (r *Replica) Lost() string { return r.store.Lost() }

// Age is how long ago the copy was last known current.
func (r *Replica) Age() time.Duration {
	return time.Duration(time.Now().UnixNano() - r.syncedAt.Load())
}

// Problem says why the copy is not current, or "".
func (r *Replica) Problem() string {
	if why := r.store.Lost(); why != "" {
		return "the Redis store lost data: " + why
	}
	if p := r.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// Resyncs counts full reloads that completed (for tests).
func (r *Replica) Resyncs() int64 { return r.resyncs.Load() }

// Why a full reload (every key, principal, signing key and revocation read again) happened.
const (
	// ReloadStart: the first subscription to change notices; notices sent while the instance
	// was loading its copy are not received, so the copy is read once more.
	ReloadStart = "start"
	// ReloadReconnect: the subscription's connection dropped and was made again; notices sent
	// meanwhile are lost.
	ReloadReconnect = "reconnect"
	// ReloadGap: a notice's generation did not follow the one applied: one was not received.
	ReloadGap = "gap"
	// ReloadCheck: the periodic generation check found changes that no notice brought within
	// a short wait.
	ReloadCheck = "check"
	// ReloadNotice: a notice that could not be applied by itself (unreadable or of an unknown
	// kind).
	ReloadNotice = "notice"
)

// ReloadReasons lists every reason of a full reload, in a fixed order.
var ReloadReasons = [...]string{ReloadStart, ReloadReconnect, ReloadGap, ReloadCheck, ReloadNotice}

// FullReloads counts the full reloads begun for reason (one of ReloadReasons) since start,
// whether or not they completed: each reads the whole shared state from Redis.
func (r *Replica) FullReloads(reason string) int64 {
	for i, why := range ReloadReasons {
		if why == reason {
			return r.reloads[i].Load()
		}
	}
	return 0
}

// setProblem records why the copy is not current ("" once it is again). It logs when the trouble
// starts, every 30 seconds while it lasts, and when it ends.
func (r *Replica) setProblem(msg string) {
	if r.store.Lost() != "" {
		r.reportLost()
		return
	}
	if msg == "" {
		if r.problem.Swap(nil) != nil {
			r.loggedStale.Store(false)
			r.log.Info("shared state is current again")
		}
		return
	}
	old := r.problem.Swap(&msg)
	now := time.Now().UnixNano()
	fresh := r.Fresh()
	switch {
	case old == nil || now-r.loggedAt.Load() > int64(30*time.Second):
		r.loggedAt.Store(now)
		r.loggedStale.Store(!fresh)
		r.log.Warn("shared state is not current", "problem", msg, "age", r.Age().Round(time.Millisecond).String(),
			"staleness_bound", r.bound.String(), "deciding", fresh)
	case !fresh && !r.loggedStale.Swap(true):
		// The moment requests start getting 503 deserves its own line.
		r.log.Error("shared state is older than the staleness bound; answering 503 until the store answers",
			"problem", msg, "age", r.Age().Round(time.Millisecond).String(), "staleness_bound", r.bound.String())
	}
}

// reportLost says, once, that the store lost data and what that means.
func (r *Replica) reportLost() {
	if r.loggedLost.Swap(true) {
		return
	}
	r.log.Error("the Redis store lost the gateway's data: answering 503 to every credential until it is restored from a backup or re-initialised with 'gateway store reinit', then this instance restarted",
		"reason", r.store.Lost(), "store_id", r.store.ID())
}

// resync reloads everything from the store, counted under reason.
func (r *Replica) resync(ctx context.Context, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resyncLocked(ctx, reason)
}

func (r *Replica) resyncLocked(ctx context.Context, reason string) error {
	gen, err := r.store.Generation(ctx, r.applied.Load()) // ErrStoreLost when the counter went back
	if err != nil {
		return err
	}
	for i, why := range ReloadReasons {
		if why == reason {
			r.reloads[i].Add(1)
		}
	}
	if err := r.keys.Reload(ctx); err != nil {
		return err
	}
	if err := r.principals.Reload(ctx); err != nil {
		return err
	}
	if err := r.tokens.Reload(ctx); err != nil {
		return err
	}
	r.applied.Store(gen)
	r.advanceLocked()
	r.syncedAt.Store(time.Now().UnixNano())
	r.resyncs.Add(1)
	r.setProblem("")
	return nil
}

// advanceLocked moves the applied generation over the notices applied ahead of it that now
// follow it, and forgets those a reload made moot.
func (r *Replica) advanceLocked() {
	applied := r.applied.Load()
	for g := range r.ahead {
		if g <= applied {
			delete(r.ahead, g)
		}
	}
	for {
		if _, ok := r.ahead[applied+1]; !ok {
			break
		}
		delete(r.ahead, applied+1)
		applied++
	}
	moved := applied != r.applied.Load()
	r.applied.Store(applied)
	if moved && len(r.ahead) > 0 {
		r.gapSince = time.Now() // a later gap: its wait starts now
	}
	if len(r.ahead) == 0 {
		r.gapSince = time.Time{}
		if r.gapTimer != nil {
			r.gapTimer.Stop()
		}
	}
}

// fillGap runs gapWait after a notice arrived ahead of a missing one: if the missing one has not
// arrived meanwhile, it was lost, and the copy is reloaded.
func (r *Replica) fillGap(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ahead) == 0 || r.store.Lost() != "" || ctx.Err() != nil {
		return
	}
	if wait := r.gapWaitFor() - time.Since(r.gapSince); wait > 0 {
		r.gapTimer.Reset(wait)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, reloadTimeout)
	defer cancel()
	if err := r.resyncLocked(cctx, ReloadGap); err != nil {
		r.setProblem("reloading after a missed change: " + err.Error())
		r.gapSince = time.Now()
		r.gapTimer.Reset(r.gapWaitFor()) // try again; the generation check keeps the bound
	}
}

// noticeGrace is how long the generation check waits for the notices of changes it sees but the
// copy does not reflect yet: a change's notice is published just after its generation is bumped.
const noticeGrace = 100 * time.Millisecond

// reloadTimeout bounds a full reload. Each of its Redis calls has its own store.redis_timeout,
// so an unreachable Redis fails it at once; a million revocations take a few seconds to read.
const reloadTimeout = time.Minute

// gapWait is how long a notice that arrived ahead of a missing one waits for it before the
// missing one counts as lost (a full reload). Notices of one Redis node arrive in the order they
// were published, but two writers publish in the order they finish, not the order of their
// generations; with Sentinel each first waits for a replica.
const gapWait = 250 * time.Millisecond

// gapWaitFor bounds gapWait by the resync interval, which tests make short.
func (r *Replica) gapWaitFor() time.Duration {
	return min(gapWait, max(r.interval, 10*time.Millisecond))
}

// check reads the generation: when the copy reflects it (at once, or after notices in flight
// have arrived), the copy was current when it was read; otherwise it is reloaded.
func (r *Replica) check(ctx context.Context) error {
	read := time.Now()
	gen, err := r.store.Generation(ctx, r.applied.Load())
	if err != nil {
		return err
	}
	for wait := time.Duration(0); r.applied.Load() < gen && wait < min(noticeGrace, r.interval/2); wait += 5 * time.Millisecond {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.applied.Load() >= gen {
		if read.UnixNano() > r.syncedAt.Load() {
			r.syncedAt.Store(read.UnixNano())
		}
		r.setProblem("")
		return nil
	}
	if !r.gapSince.IsZero() && time.Since(r.gapSince) < 2*r.gapWaitFor() {
		return nil // a gap being waited on: fillGap reloads if it stays open
	}
	if lost := r.lostSubAt.Load(); lost != 0 && time.Since(time.Unix(0, lost)) < r.interval {
		return nil // the resubscription, under way, reloads
	}
	return r.resyncLocked(ctx, ReloadCheck)
}

// apply handles one change notice: "<generation> <kind> [<detail>]". Its change is applied at
// once, even when it arrived ahead of a notice not received yet (every change is either the
// addition of a revocation or a collection read again whole, so the order does not matter to the
// copy); the applied generation moves only over notices that follow each other. A missing one
// that does not arrive within gapWait was lost: the copy is reloaded (see fillGap).
func (r *Replica) apply(ctx context.Context, payload string) {
	genStr, rest, _ := strings.Cut(payload, " ")
	kind, detail, _ := strings.Cut(rest, " ")
	gen, err := strconv.ParseInt(genStr, 10, 64)
	if err != nil {
		return // also the empty notice OpenRedis sends to check for sharded pub/sub
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.store.Lost() != "" {
		return // the copy stays as it was; nothing is decided on it
	}
	applied := r.applied.Load()
	if gen <= applied {
		return // already reflected by a reload
	}
	if _, ok := r.ahead[gen]; ok {
		return // delivered twice
	}
	switch kind {
	case "revoke":
		expStr, member, _ := strings.Cut(detail, " ")
		iss, jti, ok := strings.Cut(member, "\x00")
		exp, err := strconv.ParseInt(expStr, 10, 64)
		if !ok || err != nil {
			if err := r.resyncLocked(ctx, ReloadNotice); err != nil {
				r.setProblem("reloading: " + err.Error())
			}
			return
		}
		r.tokens.revoked.add(revocationID(iss, jti), time.UnixMilli(exp))
	case "keys":
		err = r.keys.Reload(ctx)
	case "principals":
		err = r.principals.Reload(ctx)
	case "signing":
		err = r.tokens.Reload(ctx)
	default:
		if err := r.resyncLocked(ctx, ReloadNotice); err != nil {
			r.setProblem("reloading: " + err.Error())
		}
		return
	}
	if err != nil {
		r.setProblem("applying a change: " + err.Error())
		return
	}
	if gen == applied+1 {
		r.applied.Store(gen)
		r.advanceLocked()
		return
	}
	// Ahead of a notice not received yet: hold the generation until it comes.
	if r.ahead == nil {
		r.ahead = map[int64]struct{}{}
	}
	r.ahead[gen] = struct{}{}
	if r.gapSince.IsZero() {
		r.gapSince = time.Now()
		if r.gapTimer == nil {
			ctx := r.runCtx
			if ctx == nil {
				ctx = context.Background() // applied without Run, as in some tests
			}
			r.gapTimer = time.AfterFunc(r.gapWaitFor(), func() { r.fillGap(ctx) })
		} else {
			r.gapTimer.Reset(r.gapWaitFor())
		}
	}
}

// Run keeps the copy current until ctx ends: it listens for change notices and checks the
// generation every interval.
func (r *Replica) Run(ctx context.Context) {
	r.mu.Lock()
	r.runCtx = ctx
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.gapTimer != nil {
			r.gapTimer.Stop()
		}
		r.mu.Unlock()
	}()
	var wg sync.WaitGroup
	wg.Go(func() { r.listen(ctx) })
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
		if r.store.Lost() != "" {
			r.reportLost()
			continue // for good: only a restart after the recovery makes the copy trustworthy again
		}
		cctx, cancel := context.WithTimeout(ctx, max(r.interval, 5*time.Second))
		err := r.check(cctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			r.setProblem("checking the shared state: " + err.Error())
		}
	}
}

// listen applies change notices. A (re)subscription may have missed notices, so it is followed by
// a full reload.
func (r *Replica) listen(ctx context.Context) {
	reason := ReloadStart // then ReloadReconnect for every later subscription
	for ctx.Err() == nil {
		r.listenOnce(ctx, &reason)
	}
}

// listenOnce holds one subscription until ctx ends or Redis drops it (a sharded subscription is
// dropped when its slot moves to another master; a new one follows the slot).
func (r *Replica) listenOnce(ctx context.Context, reason *string) {
	ps := r.store.subscribe(ctx)
	defer ps.Close()
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, r.interval)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var netErr interface{ Timeout() bool }
			if errors.As(err, &netErr) && netErr.Timeout() {
				ps.Ping(ctx) // keeps the connection checked; a dead one reconnects on the next receive
				continue
			}
			// The connection dropped, or Redis refused the subscription (MOVED while a slot
			// moves): back off a little, then subscribe again from scratch.
			r.lostSubAt.CompareAndSwap(0, time.Now().UnixNano())
			select {
			case <-ctx.Done():
			case <-time.After(r.interval / 4):
			}
			r.store.refreshTopology(ctx)
			return
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				cctx, cancel := context.WithTimeout(ctx, reloadTimeout)
				if err := r.resync(cctx, *reason); err != nil {
					r.setProblem("reloading after subscribing: " + err.Error())
				}
				cancel()
				r.lostSubAt.Store(0)
				*reason = ReloadReconnect
			case "sunsubscribe": // the slot moved: subscribe again, where it is now
				r.lostSubAt.CompareAndSwap(0, time.Now().UnixNano())
				return
			}
		case *redis.Message:
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r.apply(cctx, m.Payload)
			cancel()
		}
	}
}

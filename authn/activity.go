package authn

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Operations recorded in the activity log.
const (
	OpPrincipalCreate = "principal.create"
	OpPrincipalDelete = "principal.delete"
	OpKeyRegenerate   = "key.regenerate"
	OpTokenMint       = "token.mint"
	OpTokenRevoke     = "token.revoke"
	OpConfigReload    = "config.reload"
	OpStoreReinit     = "store.reinit"
	OpServicesRead    = "services.read"
	OpPrincipalsRead  = "principals.read"
	OpActivityRead    = "activity.read"
	OpUsageRead       = "usage.read"
	// OpAuthBlocked: a client address (the initiator) failed too many principal keys and is
	// refused every one until its window ends.
	OpAuthBlocked = "auth.blocked"
)

// ActivityLog records administrative operations in the store: who (a principal's name, never its
// key) did what to what, and whether it was allowed and worked.
//
// A record the store did not take in time (Redis stalled) is kept in memory and saved again
// before the next record and before the log is read, so that an operation whose outcome was
// "unknown" still shows; a record whose first saving did land late may then show twice.
type ActivityLog struct {
	store Store
	log   *slog.Logger

	mu      sync.Mutex
	pending []Activity // oldest first; not yet saved because the store did not answer
}

// maxPendingActivity bounds the records kept for saving again.
const maxPendingActivity = 1000

// NewActivityLog returns the activity log kept in store.
func NewActivityLog(store Store, log *slog.Logger) *ActivityLog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ActivityLog{store: store, log: log}
}

// Record appends one operation. A failure to record is logged, not returned: the operation
// itself has already happened (or been refused).
func (l *ActivityLog) Record(ctx context.Context, operation, initiator, target, result string) {
	if l == nil {
		return
	}
	a := Activity{Time: time.Now().UTC().Truncate(time.Millisecond), Operation: operation, Initiator: initiator, Target: target, Result: result}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked(ctx)
	if err := l.store.AppendActivity(ctx, a); err != nil {
		kept := StoreUnreachable(err) && len(l.pending) < maxPendingActivity
		if kept {
			l.pending = append(l.pending, a)
		}
		l.log.Error("recording activity", "operation", operation, "initiator", initiator, "target", target, "result", result, "err", err,
			"saved_again_later", kept)
	}
}

// flushLocked saves the pending records, oldest first, until one fails (mu held).
func (l *ActivityLog) flushLocked(ctx context.Context) {
	for len(l.pending) > 0 {
		if err := l.store.AppendActivity(ctx, l.pending[0]); err != nil {
			return
		}
		l.pending = l.pending[1:]
	}
}

// List returns up to limit records, newest first.
func (l *ActivityLog) List(ctx context.Context, limit int) ([]Activity, error) {
	l.mu.Lock()
	l.flushLocked(ctx)
	l.mu.Unlock()
	return l.store.Activity(ctx, limit)
}

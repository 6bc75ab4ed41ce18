package authn

import (
	"context"
	"log/slog"
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
	OpServicesRead    = "services.read"
	OpPrincipalsRead  = "principals.read"
	OpActivityRead    = "activity.read"
	// OpAuthBlocked: a client address (the initiator) failed too many principal keys and is
	// refused every one until its window ends.
	OpAuthBlocked = "auth.blocked"
)

// ActivityLog records administrative operations in the store: who (a principal's name, never its
// key) did what to what, and whether it was allowed and worked.
type ActivityLog struct {
	store Store
	log   *slog.Logger
}

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
	if err := l.store.AppendActivity(ctx, a); err != nil {
		l.log.Error("recording activity", "operation", operation, "initiator", initiator, "target", target, "result", result, "err", err)
	}
}

// List returns up to limit records, newest first.
func (l *ActivityLog) List(ctx context.Context, limit int) ([]Activity, error) {
	return l.store.Activity(ctx, limit)
}

package proxy

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
)

// errAuthBlocked answers every authentication attempt from a client address that has failed too
// often (services[].auth_failure_limit, admin_auth_failure_limit for the token endpoint): the
// credential is not looked at, so a right guess is refused like a wrong one.
var errAuthBlocked = newError(fasthttp.StatusTooManyRequests, "TooManyRequests", "auth_blocked",
	"too many failed authentications from this address; retry later")

// authFailures is the brake on guessing credentials: failed authentications counted per client
// address (ratelimit.Failures, shared through Redis when the store is), per service for the
// services' credentials and with the admin API for principal keys at the token endpoint.
type authFailures struct {
	counts     *ratelimit.Failures
	principals ratelimit.FailureLimit // admin_auth_failure_limit, fixed at start
	// principalBlocked, if set, is told of a client address that the token endpoint's failures
	// have just blocked (for the activity log).
	principalBlocked func(client netip.Addr)
	trips            *ratelimit.Local // bounds the "address blocked" log lines
}

// WithAuthFailures brakes the guessing of credentials with counts: after
// services[].auth_failure_limit failed authentications from one client address, its requests to
// that service get 429 with Retry-After until the window ends; after principals (the admin
// API's admin_auth_failure_limit) failed principal keys at the token endpoint, counted with the
// admin API's, so do its token requests, and onPrincipalBlock (if not nil) is told of the
// address when its failure at the token endpoint starts the block. Without it there is no such
// limit.
func WithAuthFailures(counts *ratelimit.Failures, principals config.AuthFailureLimit, onPrincipalBlock func(client netip.Addr)) Option {
	return func(g *Gateway) {
		g.authFail = &authFailures{counts: counts, principals: ratelimit.FailureLimit(principals),
			principalBlocked: onPrincipalBlock, trips: ratelimit.NewLocal()}
	}
}

// clientAddr is the client's address for counting: the peer, or the X-Forwarded-For client
// when the peer is a trusted proxy.
func (g *Gateway) clientAddr(peer netip.Addr, forwardedFor func() []string) netip.Addr {
	if !g.trusted(peer) {
		return peer
	}
	return ratelimit.ClientAddr(peer, forwardedFor(), g.trusted)
}

// scoringBlocked refuses a request to svc from a client address blocked for it. It answers from
// this instance's memory (its own counts and the blocks it has learned of from Redis), so that
// a request costs no Redis call: with several instances, one that has not yet seen the address
// fail since the block began may let a request through; the failures are counted in Redis all
// the same.
func (a *authFailures) scoringBlocked(svc *service, client func() netip.Addr) error {
	if a == nil {
		return nil
	}
	lim := ratelimit.FailureLimit(svc.cfg.AuthFailureLimit)
	return blockedError(a.counts.BlockedHere(func() string { return ratelimit.AuthFailureKey("service:"+svc.name, client()) }, lim))
}

// blockedForPrincipals refuses a token request from a client address blocked for principal keys,
// asking Redis when the store is shared: the token endpoint is not on the scoring path.
func (a *authFailures) blockedForPrincipals(client netip.Addr) error {
	if a == nil {
		return nil
	}
	return blockedError(a.counts.Blocked(context.Background(), ratelimit.AuthFailureKey(ratelimit.PrincipalKeys, client), a.principals))
}

// scoringFailed counts a failed authentication for svc from client; it returns the error to
// answer.
func (a *authFailures) scoringFailed(g *Gateway, svc *service, client func() netip.Addr, err error) error {
	if a == nil || !errors.Is(err, authn.ErrInvalidCredential) {
		return authError(err)
	}
	lim := ratelimit.FailureLimit(svc.cfg.AuthFailureLimit)
	return a.failed(g, err, "service "+svc.name, ratelimit.AuthFailureKey("service:"+svc.name, client()), lim, nil)
}

// principalFailed counts a failed principal key from client; it returns the error to answer.
func (a *authFailures) principalFailed(g *Gateway, client netip.Addr, err error) error {
	if a == nil || !errors.Is(err, authn.ErrInvalidCredential) {
		return authError(err)
	}
	var onTrip func()
	if a.principalBlocked != nil {
		onTrip = func() { a.principalBlocked(client) }
	}
	return a.failed(g, err, "principal keys", ratelimit.AuthFailureKey(ratelimit.PrincipalKeys, client), a.principals, onTrip)
}

// failed counts err, a wrong credential, against key (a missing credential, two, a role without
// the permission or a store that cannot answer count for nothing), and returns the error to
// answer: errAuthBlocked for a failure past the limit (one checked at the same time as the
// failures that reached it), else authError's.
func (a *authFailures) failed(g *Gateway, err error, what, key string, lim ratelimit.FailureLimit, onTrip func()) error {
	st := a.counts.Fail(context.Background(), key, lim)
	if st.Tripped && onTrip != nil {
		onTrip()
	} else if st.Tripped && a.trips.Allow(context.Background(), "log", ratelimit.Limit{Rate: 1, Burst: 10}).Allowed {
		g.log.Warn("a client address is refused every authentication until its window ends, after too many failures",
			"credentials", what, "failures", lim.Failures, "window", lim.Window, "retry_after", st.Blocked.Round(time.Second))
	}
	if st.Count > lim.Failures && st.Blocked > 0 {
		return blockedError(st.Blocked)
	}
	return authError(err)
}

// blockedError is errAuthBlocked with Retry-After d (rounded up to whole seconds), or nil when d
// is 0.
func blockedError(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	e := *errAuthBlocked // a copy: the shared error must not change
	e.RetryAfter = max(1, int((d+time.Second-1)/time.Second))
	return &e
}

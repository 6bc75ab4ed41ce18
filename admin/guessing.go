package admin

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
)

// guessing is the admin API's brake on guessing principal keys (the Owner's among them):
// admin_auth_failure_limit failed keys from one client address, counted with the token
// endpoints' and, with the Redis store, with every instance's, block every call from it that
// needs a key until the window ends. Each block is recorded once in the activity log.
type guessing struct {
	counts  *ratelimit.Failures // nil: no brake
	trusted []netip.Prefix      // server.trusted_proxies
	records *ratelimit.Local    // bounds the activity records of blocks
}

// recordsLimit bounds the auth.blocked activity records one instance writes, so that an attack
// from many addresses cannot push the rest of the activity log out: 10 at once, then one every
// 6 seconds. The log line of every block beyond it says so.
var recordsLimit = ratelimit.Limit{Rate: 1.0 / 6, Burst: 10}

func newGuessing(cfg *config.Config, counts *ratelimit.Failures) guessing {
	g := guessing{counts: counts, records: ratelimit.NewLocal()}
	for _, p := range cfg.Server.TrustedProxies {
		if prefix, err := config.ParsePrefix(p); err == nil { // validated
			g.trusted = append(g.trusted, prefix)
		}
	}
	return g
}

// client is the address the call comes from: the peer, or the X-Forwarded-For client when the
// peer is a trusted proxy.
func (g *guessing) client(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return ratelimit.ClientAddr(ap.Addr(), r.Header.Values("X-Forwarded-For"), g.isTrusted)
}

func (g *guessing) isTrusted(a netip.Addr) bool {
	for _, p := range g.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// guessBlocked reports how long client stays blocked (0: not blocked).
func (s *Server) guessBlocked(ctx context.Context, client netip.Addr) time.Duration {
	if s.guessing.counts == nil {
		return 0
	}
	lim := ratelimit.FailureLimit(s.cfg.Load().AdminAuthFailureLimit)
	return s.guessing.counts.Blocked(ctx, ratelimit.AuthFailureKey(ratelimit.PrincipalKeys, client), lim)
}

// guessFailed counts a wrong key from client, records the block it may start, and returns how
// long client is blocked when this failure is past the limit (0 otherwise: answer 401).
func (s *Server) guessFailed(ctx context.Context, client netip.Addr) time.Duration {
	if s.guessing.counts == nil {
		return 0
	}
	lim := ratelimit.FailureLimit(s.cfg.Load().AdminAuthFailureLimit)
	st := s.guessing.counts.Fail(ctx, ratelimit.AuthFailureKey(ratelimit.PrincipalKeys, client), lim)
	if st.Tripped {
		s.RecordBlocked(ctx, client, "admin API")
	}
	if st.Count > lim.Failures {
		return st.Blocked
	}
	return 0
}

// RecordBlocked records in the activity log that client (an address, an IPv6 one by its /64)
// is refused every principal key after too many failures at where ("admin API", "token
// endpoint"), within recordsLimit, and logs it.
func (s *Server) RecordBlocked(ctx context.Context, client netip.Addr, where string) {
	addr := ratelimit.AddrKey(client)
	lim := s.cfg.Load().AdminAuthFailureLimit
	recorded := s.guessing.records.Allow(ctx, "auth.blocked", recordsLimit).Allowed
	if recorded {
		s.activity.Record(ctx, authn.OpAuthBlocked, addr, where, authn.ResultDenied)
	}
	s.log.Warn("a client address is refused every principal key until its window ends, after too many failures",
		"client", addr, "at", where, "failures", lim.Failures, "window", lim.Window, "recorded", recorded)
}

func writeBlocked(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((d+time.Second-1)/time.Second))))
	writeError(w, http.StatusTooManyRequests, "TooManyRequests", "too many failed authentications from this address; retry later")
}

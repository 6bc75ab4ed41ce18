package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/scoregate/scoregate/authn"
)

// The status page's sessions: a random id in a cookie, and on the server the principal it
// was opened for. They live in this instance's memory only, so a restart signs everyone out, and
// each instance of a fleet has its own.
const (
	sessionCookie   = "scoregate_ui"
	sessionLifetime = 8 * time.Hour
	// maxSessions bounds the open sessions; past it the oldest is closed.
	maxSessions = 1000
)

type uiSession struct {
	principal authn.Principal // as it signed in; checked against the current one at every request
	expires   time.Time
}

// uiSessions are the open sessions, by the SHA-256 of their id (the id itself is kept nowhere
// but in the browser's cookie).
type uiSessions struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]uiSession
}

func newUISessions() *uiSessions { return &uiSessions{m: map[[sha256.Size]byte]uiSession{}} }

// open starts a session for p and returns its id.
func (s *uiSessions) open(p authn.Principal, now time.Time) string {
	var raw [32]byte
	rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	if len(s.m) >= maxSessions {
		var oldest [sha256.Size]byte
		var first time.Time
		for h, ss := range s.m {
			if first.IsZero() || ss.expires.Before(first) {
				oldest, first = h, ss.expires
			}
		}
		delete(s.m, oldest)
	}
	s.m[sha256.Sum256([]byte(id))] = uiSession{principal: p, expires: now.Add(sessionLifetime)}
	return id
}

// get returns the session of id, if it is open and has not expired.
func (s *uiSessions) get(id string, now time.Time) (uiSession, bool) {
	h := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[h]
	if ok && !now.Before(ss.expires) {
		delete(s.m, h)
		return uiSession{}, false
	}
	return ss, ok
}

// close ends the session of id.
func (s *uiSessions) close(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(id)))
}

func (s *uiSessions) pruneLocked(now time.Time) {
	for h, ss := range s.m {
		if !now.Before(ss.expires) {
			delete(s.m, h)
		}
	}
}

// session returns the principal signed in with r's session cookie, as it is now: a session whose
// principal was deleted (or deleted and made again), or that expired, is closed and ok is false.
func (s *Server) session(r *http.Request) (p authn.Principal, id string, ok bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return authn.Principal{}, "", false
	}
	ss, ok := s.sessions.get(c.Value, time.Now())
	if !ok {
		return authn.Principal{}, "", false
	}
	cur, ok := s.principals.Lookup(ss.principal.Name)
	if !ok || !cur.Same(ss.principal) {
		s.sessions.close(c.Value)
		return authn.Principal{}, "", false
	}
	return cur, c.Value, true
}

// sessionCookieFor is the cookie that carries id: HttpOnly, SameSite=Strict, Secure when the
// browser reached the page over TLS, for the status page's paths only, expiring with the session
// (a zero id clears it).
func (s *Server) sessionCookieFor(r *http.Request, id string) *http.Cookie {
	c := &http.Cookie{Name: sessionCookie, Value: id, Path: uiPrefix, HttpOnly: true, Secure: s.overTLS(r),
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionLifetime / time.Second)}
	if id == "" {
		c.MaxAge = -1
	}
	return c
}

// overTLS reports whether the browser reached the page over TLS: the admin listener's own
// connection, or a proxy of server.trusted_proxies that says so in X-Forwarded-Proto.
func (s *Server) overTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !s.guessing.isTrusted(peer.Addr().Unmap()) {
		return false
	}
	protos := r.Header.Values("X-Forwarded-Proto")
	return len(protos) > 0 && strings.EqualFold(strings.TrimSpace(protos[len(protos)-1]), "https")
}

package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/telemetry"
)

// The status page: GET /ui/ on the admin listener, a read-only view of the services, their
// replicas and traffic, keys' metadata, principals, the activity log, certificates and the
// shared state, for a principal signed in with its key. Its templates and assets are embedded
// in the binary; it loads nothing from another host.

const uiPrefix = "/ui/"

// Activity log operations of the status page.
const (
	OpUILogin  = "ui.login"
	OpUILogout = "ui.logout"
	uiTarget   = "status page"
)

// uiRefresh is how often the page's script asks for fresh figures.
const uiRefresh = time.Second

//go:embed ui
var uiFiles embed.FS

// uiCSP lets the page load its own script, stylesheet and icon and nothing else: no inline
// script or style, no other host, no framing.
const uiCSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Status is what the status page shows beyond what the admin API holds. Every field may be left
// unset; the page then leaves that part out.
type Status struct {
	// Traffic reports a service's recent traffic (telemetry.Telemetry.Traffic).
	Traffic func(service string, end time.Time, step time.Duration, n int) []telemetry.TrafficPoint
	// Tokens reports the input and output tokens of a language-model service's calls that ended
	// on this instance in the minute before now (usage.Keeper.TokensPerMinute); ok is false for a
	// service without such calls, whose figure is then left out.
	Tokens func(service string, now time.Time) (perMinute int64, ok bool)
	// Certificates lists the certificates the HTTPS listener serves.
	Certificates func() []Certificate
	// SharedState reports the Redis store's state; nil with the embedded store.
	SharedState func() SharedState
	// Version is the gateway's version, Started when it started.
	Version string
	Started time.Time
}

// Certificate is one served certificate: a name it is for, where it comes from ("acme" or
// "file") and when it expires.
type Certificate struct {
	Name, Source string
	NotAfter     time.Time
}

// SharedState is the state of an instance's copy of the Redis store.
type SharedState struct {
	// Reachable: the last look at the store's generation succeeded.
	Reachable bool
	// Age is how long ago the copy was last known current; Bound is store.staleness_bound.
	Age, Bound time.Duration
	// Fresh: the copy is within the bound, so requests are decided.
	Fresh bool
	// Lost: the store lost the gateway's data (every credential gets 503 until recovered).
	Lost bool
	// Problem says why the copy is not current ("" when it is).
	Problem string
	// RateLimitDegraded: Redis does not answer the rate limiter, so each instance limits alone.
	RateLimitDegraded bool
}

// uiTemplates are the page, the login form and the blocks the page is made of.
var uiTemplates = template.Must(template.New("ui").Funcs(uiFuncs).ParseFS(uiFiles, "ui/*.html"))

// uiAssets are the script, stylesheet and icon, served with a fingerprint in their URL so they
// can be cached for good.
var uiAssets, uiAssetVersion = loadAssets()

type asset struct {
	body  []byte
	ctype string
}

func loadAssets() (map[string]asset, string) {
	out := map[string]asset{}
	h := sha256.New()
	err := fs.WalkDir(uiFiles, "ui/assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFiles.ReadFile(p)
		if err != nil {
			return err
		}
		name := path.Base(p)
		out[name] = asset{body: b, ctype: mime.TypeByExtension(path.Ext(name))}
		h.Write([]byte(name))
		h.Write(b)
		return nil
	})
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	return out, hex.EncodeToString(h.Sum(nil))[:12]
}

// uiRoutes adds the status page's routes to mux.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, uiPrefix, http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/{$}", s.uiPage)
	mux.HandleFunc("GET /ui/live", s.uiLive)
	mux.HandleFunc("GET /ui/login", s.uiLoginForm)
	// A form of another site cannot sign a browser in or out (login CSRF).
	var sameOrigin http.CrossOriginProtection
	mux.Handle("POST /ui/login", sameOrigin.Handler(http.HandlerFunc(s.uiLogin)))
	mux.Handle("POST /ui/logout", sameOrigin.Handler(http.HandlerFunc(s.uiLogout)))
	mux.HandleFunc("GET /ui/assets/{name}", uiAsset)
}

// uiHeaders are on every answer of the status page.
func uiHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

func uiAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := uiAssets[r.PathValue("name")]
	uiHeaders(w)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	if r.URL.Query().Get("v") == uiAssetVersion {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(a.body)
}

// render writes template name with data, or a plain 500 when it fails (before anything is sent).
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := uiTemplates.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("rendering the status page", "template", name, "err", err)
		http.Error(w, "the status page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// loginView is what the login form shows.
type loginView struct {
	Assets string
	Error  string
	Notice string
}

// loginErrors are the messages the login form shows after a failed attempt, by the code the
// attempt was sent back with (Post/Redirect/Get: a reload never sends the key again).
var loginErrors = map[string]string{
	"invalid": "That key is not valid. Use a principal's key or the Owner key.",
	"empty":   "Enter a key.",
}

func (s *Server) uiLoginForm(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	if _, _, ok := s.session(r); ok {
		http.Redirect(w, r, uiPrefix, http.StatusSeeOther)
		return
	}
	v := loginView{Assets: uiAssetVersion, Error: loginErrors[r.URL.Query().Get("error")]}
	if r.URL.Query().Get("ended") != "" {
		v.Notice = "Your session ended. Enter a key to sign in again."
	}
	if wait := s.guessBlocked(r.Context(), s.guessing.client(r)); wait > 0 {
		secs := max(1, int((wait+time.Second-1)/time.Second))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		v.Error = "Too many wrong keys from this address. Try again in " + strconv.Itoa(secs) + " s."
	}
	s.render(w, http.StatusOK, "login.html", v)
}

// uiLogin checks the key of the form as the admin API checks a key: a wrong one counts towards
// admin_auth_failure_limit for the client's address and is recorded in the activity log, and
// the browser is sent back to the form, which says so; a good one opens a session and goes on
// to the page. While the address is blocked, no key is checked.
func (s *Server) uiLogin(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	ctx := r.Context()
	client := s.guessing.client(r)
	if s.guessBlocked(ctx, client) > 0 {
		http.Redirect(w, r, uiPrefix+"login", http.StatusSeeOther) // the form says how long
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	key := strings.TrimSpace(r.PostFormValue("key"))
	if key == "" {
		http.Redirect(w, r, uiPrefix+"login?error=empty", http.StatusSeeOther)
		return
	}
	p, err := s.principals.Authenticate([][]byte{[]byte("Bearer " + key)})
	if err != nil {
		if errors.Is(err, authn.ErrInvalidCredential) {
			s.recordFailedLogin(ctx, client)
			if s.guessFailed(ctx, client) > 0 {
				http.Redirect(w, r, uiPrefix+"login", http.StatusSeeOther)
				return
			}
		}
		http.Redirect(w, r, uiPrefix+"login?error=invalid", http.StatusSeeOther)
		return
	}
	id := s.sessions.open(p, time.Now())
	http.SetCookie(w, s.sessionCookieFor(r, id))
	s.activity.Record(ctx, OpUILogin, p.Name, uiTarget, authn.ResultSuccess)
	s.log.Info("signed in to the status page", "principal", p.Name)
	http.Redirect(w, r, uiPrefix, http.StatusSeeOther)
}

// recordFailedLogin records a wrong key in the activity log, with the client's address as the
// initiator, within the same bound as the records of blocks (so that wrong keys from many
// addresses cannot push the rest of the log out).
func (s *Server) recordFailedLogin(ctx context.Context, client netip.Addr) {
	addr := ratelimit.AddrKey(client)
	if s.guessing.records.Allow(ctx, "ui.login.denied", recordsLimit).Allowed {
		s.activity.Record(ctx, OpUILogin, addr, uiTarget, authn.ResultDenied)
	}
	s.log.Warn("a wrong key was entered on the status page", "client", addr)
}

func (s *Server) uiLogout(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	if p, id, ok := s.session(r); ok {
		s.sessions.close(id)
		s.activity.Record(r.Context(), OpUILogout, p.Name, uiTarget, authn.ResultSuccess)
	}
	http.SetCookie(w, s.sessionCookieFor(r, ""))
	http.Redirect(w, r, uiPrefix+"login", http.StatusSeeOther)
}

func (s *Server) uiPage(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	p, _, ok := s.session(r)
	if !ok {
		http.SetCookie(w, s.sessionCookieFor(r, ""))
		http.Redirect(w, r, uiPrefix+"login", http.StatusSeeOther)
		return
	}
	v := s.statusView(r.Context(), p, time.Now())
	blocks, err := s.renderBlocks(v)
	if err != nil {
		s.log.Error("rendering the status page", "err", err)
		http.Error(w, "the status page could not be rendered", http.StatusInternalServerError)
		return
	}
	s.render(w, http.StatusOK, "page.html", pageView{statusView: v, Blocks: blocks})
}

// liveAnswer is the answer of GET /ui/live: the page's blocks rendered again, in order, for the
// page's script to put in place of those that changed.
type liveAnswer struct {
	Blocks  []liveBlock `json:"blocks"`
	Updated time.Time   `json:"updated"`
}

type liveBlock struct {
	ID   string `json:"id"`
	HTML string `json:"html"`
}

func (s *Server) uiLive(w http.ResponseWriter, r *http.Request) {
	uiHeaders(w)
	p, _, ok := s.session(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "Unauthorized", "the status page session ended; sign in again")
		return
	}
	now := time.Now()
	v := s.statusView(r.Context(), p, now)
	blocks, err := s.renderBlocks(v)
	if err != nil {
		s.log.Error("rendering the status page", "err", err)
		writeError(w, http.StatusInternalServerError, "InternalError", "the status page could not be rendered")
		return
	}
	out := liveAnswer{Updated: now.UTC()}
	for _, b := range blocks {
		out.Blocks = append(out.Blocks, liveBlock{ID: b.ID, HTML: string(b.HTML)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // the blocks are HTML, sent as JSON strings to a script, never into a page as they are
	enc.Encode(out)
}

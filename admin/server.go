// Package admin serves scoregate's admin API on the admin listener (services, keys, /livez,
// /readyz), the read-only status page at /ui/ on the same listener, and holds the client the CLI
// uses to call the API. It is never on the data plane's path.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
)

// Server is the admin API.
type Server struct {
	cfg        atomic.Pointer[config.Config] // the running configuration; replaced on reload
	reload     func(ctx context.Context, initiator string) (ReloadResult, error)
	keys       *authn.Keyring
	principals *authn.Principals
	tokens     *authn.Tokens
	activity   *authn.ActivityLog
	usage      UsageReader
	ready      func() (bool, string)
	fresh      func() bool
	metrics    http.Handler
	upstreams  func(string) []UpstreamInfo
	log        *slog.Logger
	draining   atomic.Bool
	srv        *http.Server
	guessing   guessing
	status     Status
	sessions   *uiSessions
}

// Deps are what the admin API acts on.
type Deps struct {
	Keys       *authn.Keyring
	Principals *authn.Principals
	Tokens     *authn.Tokens
	Activity   *authn.ActivityLog
	// Usage, if set, serves GET /v1/usage: the token usage of language-model services.
	Usage UsageReader
	// Ready, if set, reports whether the gateway can decide requests, and why not.
	Ready func() (bool, string)
	// Metrics, if set, serves GET /metrics (Prometheus text, no credential needed).
	Metrics http.Handler
	// Upstreams, if set, reports the replicas of a service and their state for GET /v1/services.
	Upstreams func(service string) []UpstreamInfo
	// Reload, if set, serves POST /v1/reload: it reads the configuration file again and applies
	// it, for the principal named initiator. A rejected configuration comes back as
	// config.Problems (400, every problem listed); any other error is a 500.
	Reload func(ctx context.Context, initiator string) (ReloadResult, error)
	// AuthFailures, if set, counts failed keys per client address, against
	// admin_auth_failure_limit: past it, every call from the address gets 429.
	AuthFailures *ratelimit.Failures
	// Fresh, if set, reports whether the copy of the shared state is current (within the
	// staleness bound, and the store not lost). While it is not, no token is minted: the
	// principal's key is checked against that copy, as the data plane's token endpoint does.
	Fresh func() bool
	// Status feeds the status page (GET /ui/) with what the admin API itself does not hold.
	Status Status
	Log    *slog.Logger
}

// New returns the admin API for cfg. Every /v1 call needs a principal's key, and the permission
// its role grants.
func New(cfg *config.Config, d Deps) *Server {
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{keys: d.Keys, principals: d.Principals, tokens: d.Tokens, activity: d.Activity, usage: d.Usage, ready: d.Ready, fresh: d.Fresh, metrics: d.Metrics,
		upstreams: d.Upstreams, reload: d.Reload, log: log, guessing: newGuessing(cfg, d.AuthFailures),
		status: d.Status, sessions: newUISessions()}
	s.cfg.Store(cfg)
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// SetConfig makes cfg the configuration the admin API answers from (services, their auth modes),
// after a reload.
func (s *Server) SetConfig(cfg *config.Config) { s.cfg.Store(cfg) }

// Handler returns the admin API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics)
	}
	mux.Handle("GET /v1/services", s.authed(authn.ServicesRead, authn.OpServicesRead, s.listServices))
	mux.Handle("GET /v1/services/{name}/keys", s.authed(authn.ServicesRead, authn.OpServicesRead, s.listKeys))
	mux.Handle("POST /v1/services/{name}/keys/{slot}/regenerate", s.authed(authn.KeysRegenerate, authn.OpKeyRegenerate, s.regenerateKey))
	mux.Handle("POST /v1/services/{name}/token", s.authed(0, "", s.mintToken)) // Mint checks and records
	mux.Handle("POST /v1/tokens/revoke", s.authed(authn.TokensRevoke, authn.OpTokenRevoke, s.revokeToken))
	mux.Handle("GET /v1/principals", s.authed(authn.PrincipalsManage, authn.OpPrincipalsRead, s.listPrincipals))
	mux.Handle("POST /v1/principals", s.authed(authn.PrincipalsManage, authn.OpPrincipalCreate, s.createPrincipal))
	mux.Handle("DELETE /v1/principals/{name}", s.authed(authn.PrincipalsManage, authn.OpPrincipalDelete, s.deletePrincipal))
	mux.Handle("GET /v1/activity", s.authed(authn.ActivityRead, authn.OpActivityRead, s.listActivity))
	if s.usage != nil {
		mux.Handle("GET /v1/usage", s.authed(authn.UsageRead, authn.OpUsageRead, s.readUsage))
	}
	if s.reload != nil {
		mux.Handle("POST /v1/reload", s.authed(authn.ConfigReload, authn.OpConfigReload, s.reloadConfig))
	}
	s.uiRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		// No route: say so in JSON, with 405 when the path exists for another method.
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			r2 := r.Clone(r.Context())
			r2.Method = m
			if _, pattern := mux.Handler(r2); pattern != "" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "this endpoint does not take "+r.Method)
			return
		}
		writeError(w, http.StatusNotFound, "NotFound", "no such admin endpoint")
	})
}

// Serve answers admin requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// SetDraining makes /readyz answer 503 from now on.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Shutdown stops the admin listener, letting calls in progress finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func (s *Server) livez(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if s.ready != nil {
		if ok, why := s.ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// handler is an admin endpoint, called with the authenticated principal.
type handler func(w http.ResponseWriter, r *http.Request, p authn.Principal)

// authed lets a call through with a principal's key whose role grants perm (0: any principal).
// A refusal for want of the permission is 403, and is recorded in the activity log as op. A
// client address that has failed too many keys gets 429 whatever it sends, until its window
// ends.
func (s *Server) authed(perm authn.Permission, op string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := s.guessing.client(r)
		if wait := s.guessBlocked(r.Context(), client); wait > 0 {
			writeBlocked(w, wait)
			return
		}
		values := r.Header.Values("Authorization")
		authz := make([][]byte, len(values))
		for i, v := range values {
			authz[i] = []byte(v)
		}
		p, err := s.principals.Authenticate(authz)
		switch {
		case err == nil:
		case errors.Is(err, authn.ErrMultipleCredentials):
			writeError(w, http.StatusBadRequest, "BadRequest", "send exactly one credential, in one Authorization header")
			return
		default:
			if errors.Is(err, authn.ErrInvalidCredential) {
				if wait := s.guessFailed(r.Context(), client); wait > 0 {
					writeBlocked(w, wait)
					return
				}
			}
			challenge := `Bearer realm="scoregate-admin"`
			if !errors.Is(err, authn.ErrNoCredential) {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, http.StatusUnauthorized, "Unauthorized", "a valid admin credential is required")
			return
		}
		if perm != 0 && !p.Can(perm) {
			s.activity.Record(r.Context(), op, p.Name, target(r), authn.ResultDenied)
			writeForbidden(w, p)
			return
		}
		h(w, r, p)
	})
}

// target names what a call acts on, for the activity log.
func target(r *http.Request) string {
	name, slot := r.PathValue("name"), r.PathValue("slot")
	switch {
	case slot != "":
		return name + "/" + slot
	case name != "":
		return name
	}
	return r.URL.Path
}

func writeForbidden(w http.ResponseWriter, p authn.Principal) {
	writeError(w, http.StatusForbidden, "Forbidden", "the role "+p.Role+" does not allow this")
}

// ServiceInfo is one service in GET /v1/services.
type ServiceInfo struct {
	Name      string         `json:"name"`
	Auth      string         `json:"auth"`
	Upstreams []UpstreamInfo `json:"upstreams"`
}

// UpstreamInfo is one replica of a service: its deployment, its health ("healthy", "unhealthy"
// after failed health checks, "ejected" after connection failures, or "unknown" when the data
// plane does not report it), requests in flight and requests queued for its deployment.
type UpstreamInfo struct {
	URL        string `json:"url"`
	Deployment string `json:"deployment"`
	Health     string `json:"health"`
	Inflight   int    `json:"inflight"`
	Queued     int    `json:"queued"`
}

func (s *Server) listServices(w http.ResponseWriter, _ *http.Request, _ authn.Principal) {
	cfg := s.cfg.Load()
	out := make([]ServiceInfo, 0, len(cfg.Services))
	for _, svc := range cfg.Services {
		info := ServiceInfo{Name: svc.Name, Auth: svc.Auth}
		if s.upstreams != nil {
			info.Upstreams = s.upstreams(svc.Name)
		} else {
			for _, d := range svc.DeploymentList() {
				for _, u := range d.Upstreams {
					info.Upstreams = append(info.Upstreams, UpstreamInfo{URL: u, Deployment: d.Name, Health: "unknown"})
				}
			}
		}
		out = append(out, info)
	}
	writeJSON(w, http.StatusOK, out)
}

// keyService returns the named key-mode service, or writes the error and returns nil.
func (s *Server) keyService(w http.ResponseWriter, r *http.Request) *config.Service {
	svc := s.cfg.Load().Service(r.PathValue("name"))
	switch {
	case svc == nil:
		writeError(w, http.StatusNotFound, "NotFound", "no such service")
		return nil
	case svc.Auth != config.AuthKey:
		writeError(w, http.StatusConflict, "Conflict", "this service does not use key auth, so it has no keys")
		return nil
	}
	return svc
}

// KeySet is the answer of GET /v1/services/{name}/keys: metadata only, never secrets. A slot that
// has no key yet is null.
type KeySet struct {
	Primary   *authn.KeyMeta `json:"primary"`
	Secondary *authn.KeyMeta `json:"secondary"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, _ authn.Principal) {
	svc := s.keyService(w, r)
	if svc == nil {
		return
	}
	var out KeySet
	keys := s.keys.Keys(svc.Name)
	if m, ok := keys[authn.SlotPrimary]; ok {
		out.Primary = &m
	}
	if m, ok := keys[authn.SlotSecondary]; ok {
		out.Secondary = &m
	}
	writeJSON(w, http.StatusOK, out)
}

// NewKey is the answer of a regeneration: the key, shown this once.
type NewKey struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func (s *Server) regenerateKey(w http.ResponseWriter, r *http.Request, p authn.Principal) {
	svc := s.keyService(w, r)
	if svc == nil {
		return
	}
	slot := r.PathValue("slot")
	if slot != authn.SlotPrimary && slot != authn.SlotSecondary {
		writeError(w, http.StatusNotFound, "NotFound", "the key name must be primary or secondary")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	key, err := s.keys.Regenerate(ctx, svc.Name, slot)
	if err != nil {
		s.activity.Record(ctx, authn.OpKeyRegenerate, p.Name, target(r), failedResult(err))
		s.log.Error("regenerating key", "service", svc.Name, "slot", slot, "err", err)
		writeStoreError(w, err, "the key could not be regenerated")
		return
	}
	s.activity.Record(ctx, authn.OpKeyRegenerate, p.Name, target(r), authn.ResultSuccess)
	s.log.Info("key regenerated", "service", svc.Name, "slot", slot, "by", p.Name)
	writeJSON(w, http.StatusOK, NewKey{Name: slot, Key: key})
}

func (s *Server) mintToken(w http.ResponseWriter, r *http.Request, p authn.Principal) {
	name := r.PathValue("name")
	if s.cfg.Load().Service(name) == nil {
		writeError(w, http.StatusNotFound, "NotFound", "no such service")
		return
	}
	if s.fresh != nil && !s.fresh() {
		writeStoreError(w, authn.ErrUnavailable, "the token could not be made")
		return
	}
	resp, err := s.tokens.Mint(r.Context(), p, name)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, resp)
	case errors.Is(err, authn.ErrForbidden):
		writeForbidden(w, p)
	case errors.Is(err, authn.ErrNotTokenService):
		writeError(w, http.StatusConflict, "Conflict", "this service does not use token auth")
	default:
		s.log.Error("minting a token", "service", name, "err", err)
		writeStoreError(w, err, "the token could not be made")
	}
}

// RevokeRequest names a token to revoke: the token itself, or its jti and expiry (and issuer,
// when it is not the gateway's own).
type RevokeRequest struct {
	Token string `json:"token,omitempty"`
	JTI   string `json:"jti,omitempty"`
	Exp   int64  `json:"exp,omitempty"`
	Iss   string `json:"iss,omitempty"`
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p authn.Principal) {
	var req RevokeRequest
	if !readJSON(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var jti string
	var err error
	switch {
	case req.Token != "" && req.JTI == "":
		var c authn.TokenClaims
		c, err = s.tokens.RevokeToken(ctx, req.Token)
		jti = c.ID
		if err != nil && jti == "" {
			writeError(w, http.StatusBadRequest, "BadRequest", "token is not a JWT with a jti")
			return
		}
	case req.JTI != "" && req.Token == "" && req.Exp > 0:
		jti = req.JTI
		err = s.tokens.Revoke(ctx, req.Iss, req.JTI, time.Unix(req.Exp, 0))
	default:
		writeError(w, http.StatusBadRequest, "BadRequest", `send {"token": "<jwt>"} or {"jti": "...", "exp": <unix seconds>}`)
		return
	}
	if err != nil {
		s.activity.Record(ctx, authn.OpTokenRevoke, p.Name, "jti:"+jti, failedResult(err))
		s.log.Error("revoking a token", "err", err)
		writeStoreError(w, err, "the revocation could not be saved")
		return
	}
	s.activity.Record(ctx, authn.OpTokenRevoke, p.Name, "jti:"+jti, authn.ResultSuccess)
	writeJSON(w, http.StatusOK, map[string]string{"revoked": jti})
}

// PrincipalInfo describes a principal, without its key.
type PrincipalInfo struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"createdAt"`
}

// NewPrincipal is the answer of POST /v1/principals: the key, shown this once.
type NewPrincipal struct {
	Name string `json:"name"`
	Role string `json:"role"`
	Key  string `json:"key"`
}

func (s *Server) listPrincipals(w http.ResponseWriter, _ *http.Request, _ authn.Principal) {
	ps := s.principals.List()
	out := make([]PrincipalInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, PrincipalInfo{Name: p.Name, Role: p.Role, CreatedAt: p.CreatedAt})
	}
	slices.SortFunc(out, func(a, b PrincipalInfo) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createPrincipal(w http.ResponseWriter, r *http.Request, p authn.Principal) {
	var req struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	created, key, err := s.principals.Create(ctx, req.Name, req.Role)
	switch {
	case err == nil:
		s.activity.Record(ctx, authn.OpPrincipalCreate, p.Name, req.Name, authn.ResultSuccess)
		writeJSON(w, http.StatusCreated, NewPrincipal{Name: created.Name, Role: created.Role, Key: key})
	case errors.Is(err, authn.ErrBadName), errors.Is(err, authn.ErrUnknownRole):
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
	case errors.Is(err, authn.ErrPrincipalExists):
		writeError(w, http.StatusConflict, "Conflict", err.Error())
	default:
		s.activity.Record(ctx, authn.OpPrincipalCreate, p.Name, req.Name, failedResult(err))
		s.log.Error("creating a principal", "err", err)
		writeStoreError(w, err, "the principal could not be created")
	}
}

func (s *Server) deletePrincipal(w http.ResponseWriter, r *http.Request, p authn.Principal) {
	name := r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	err := s.principals.Delete(ctx, name)
	switch {
	case err == nil:
		s.activity.Record(ctx, authn.OpPrincipalDelete, p.Name, name, authn.ResultSuccess)
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, authn.ErrPrincipalUnknown):
		writeError(w, http.StatusNotFound, "NotFound", "no such principal")
	case errors.Is(err, authn.ErrForbidden):
		writeError(w, http.StatusBadRequest, "BadRequest", "the built-in owner cannot be deleted")
	default:
		s.activity.Record(ctx, authn.OpPrincipalDelete, p.Name, name, failedResult(err))
		s.log.Error("deleting a principal", "err", err)
		writeStoreError(w, err, "the principal could not be deleted")
	}
}

func (s *Server) listActivity(w http.ResponseWriter, r *http.Request, _ authn.Principal) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "BadRequest", "limit must be a whole number from 1 to 1000")
			return
		}
		limit = n
	}
	recs, err := s.activity.List(r.Context(), limit)
	if err != nil {
		s.log.Error("reading the activity log", "err", err)
		writeStoreError(w, err, "the activity log could not be read")
		return
	}
	if recs == nil {
		recs = []authn.Activity{}
	}
	writeJSON(w, http.StatusOK, recs)
}

// ReloadResult is the answer of a successful POST /v1/reload: the services added, removed and
// changed, by name (empty lists when the file had not changed).
type ReloadResult struct {
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
	Changed []string `json:"changed"`
}

// ReloadRejected is the answer of POST /v1/reload for a configuration that was not applied: every
// problem, as check-config prints them. The running configuration is unchanged.
type ReloadRejected struct {
	ErrorBody
	Problems []string `json:"problems"`
}

func (s *Server) reloadConfig(w http.ResponseWriter, r *http.Request, p authn.Principal) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, err := s.reload(ctx, p.Name)
	var probs config.Problems
	switch {
	case err == nil:
		for _, l := range []*[]string{&res.Added, &res.Removed, &res.Changed} {
			if *l == nil {
				*l = []string{}
			}
		}
		writeJSON(w, http.StatusOK, res)
	case errors.As(err, &probs):
		var out ReloadRejected
		out.Error.Code = "InvalidConfiguration"
		out.Error.Message = "the configuration was not applied; the running one is unchanged"
		for _, pr := range probs {
			out.Problems = append(out.Problems, pr.String())
		}
		writeJSON(w, http.StatusBadRequest, out)
	default:
		s.log.Error("reloading the configuration", "err", err)
		writeError(w, http.StatusInternalServerError, "InternalError", "the configuration could not be reloaded")
	}
}

// readJSON decodes a small JSON body into v, or answers 400 and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", "the body must be a JSON object of the documented fields")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeStoreError answers a request whose store call failed: 503 with Retry-After when the store
// cannot be used (it lost data, or the shared state is past its staleness bound) or did not answer
// in time or could not be reached, and 500 otherwise (a full or read-only disk, say). A store that
// did not answer may still apply the change (Redis runs a command whose answer came too late), so
// the message says so; a retry is safe: every write either replaces or is idempotent. The log has
// the detail.
func writeStoreError(w http.ResponseWriter, err error, message string) {
	switch {
	case errors.Is(err, authn.ErrStoreLost):
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", message+": the shared store lost data and is refused until an operator recovers it (see /readyz)")
	case authn.StoreUnreachable(err):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", message+": the store did not answer in time, and the change may still take effect; retry (repeating it is safe)")
	case errors.Is(err, authn.ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", message+": the shared state is not current; retry")
	default:
		writeError(w, http.StatusInternalServerError, "InternalError", message)
	}
}

// failedResult is the activity log's result for a change whose store call failed with err:
// "unknown" when the store did not answer (the change may still take effect), else "failed".
func failedResult(err error) string {
	if authn.StoreUnreachable(err) {
		return authn.ResultUnknown
	}
	return authn.ResultFailed
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, message
	writeJSON(w, status, b)
}

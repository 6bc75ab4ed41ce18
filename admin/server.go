// Package admin serves scoregate's admin API on the admin listener (services, keys, /livez,
// /readyz) and holds the client the CLI uses to call it. It is never on the data plane's path.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

// Server is the admin API.
type Server struct {
	cfg      *config.Config
	keys     *authn.Keyring
	owner    *authn.Owner
	log      *slog.Logger
	draining atomic.Bool
	srv      *http.Server
}

// New returns the admin API for cfg. owner checks the Owner's key on every /v1 call.
func New(cfg *config.Config, keys *authn.Keyring, owner *authn.Owner, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, keys: keys, owner: owner, log: log}
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

// Handler returns the admin API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /v1/services", s.authed(s.listServices))
	mux.Handle("GET /v1/services/{name}/keys", s.authed(s.listKeys))
	mux.Handle("POST /v1/services/{name}/keys/{slot}/regenerate", s.authed(s.regenerateKey))
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
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// authed lets a call through only with the Owner's key.
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		values := r.Header.Values("Authorization")
		authz := make([][]byte, len(values))
		for i, v := range values {
			authz[i] = []byte(v)
		}
		switch err := s.owner.Authenticate(authz); {
		case err == nil:
			h(w, r)
		case errors.Is(err, authn.ErrMultipleCredentials):
			writeError(w, http.StatusBadRequest, "BadRequest", "send exactly one credential, in one Authorization header")
		default:
			challenge := `Bearer realm="scoregate-admin"`
			if !errors.Is(err, authn.ErrNoCredential) {
				challenge += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, http.StatusUnauthorized, "Unauthorized", "a valid admin credential is required")
		}
	})
}

// ServiceInfo is one service in GET /v1/services.
type ServiceInfo struct {
	Name      string         `json:"name"`
	Auth      string         `json:"auth"`
	Upstreams []UpstreamInfo `json:"upstreams"`
}

// UpstreamInfo is one upstream of a service. Health is "unchecked" until the gateway probes
// upstreams.
type UpstreamInfo struct {
	URL    string `json:"url"`
	Health string `json:"health"`
}

func (s *Server) listServices(w http.ResponseWriter, _ *http.Request) {
	out := make([]ServiceInfo, 0, len(s.cfg.Services))
	for _, svc := range s.cfg.Services {
		info := ServiceInfo{Name: svc.Name, Auth: svc.Auth}
		for _, u := range svc.Upstreams {
			info.Upstreams = append(info.Upstreams, UpstreamInfo{URL: u, Health: "unchecked"})
		}
		out = append(out, info)
	}
	writeJSON(w, http.StatusOK, out)
}

// keyService returns the named key-mode service, or writes the error and returns nil.
func (s *Server) keyService(w http.ResponseWriter, r *http.Request) *config.Service {
	svc := s.cfg.Service(r.PathValue("name"))
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

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
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

func (s *Server) regenerateKey(w http.ResponseWriter, r *http.Request) {
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
		s.log.Error("regenerating key", "service", svc.Name, "slot", slot, "err", err)
		writeError(w, http.StatusInternalServerError, "InternalError", "the key could not be regenerated")
		return
	}
	s.log.Info("key regenerated", "service", svc.Name, "slot", slot)
	writeJSON(w, http.StatusOK, NewKey{Name: slot, Key: key})
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

func writeError(w http.ResponseWriter, status int, code, message string) {
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, message
	writeJSON(w, status, b)
}

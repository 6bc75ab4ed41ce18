package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/scoregate/scoregate/admin"
	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/certs"
	"github.com/scoregate/scoregate/internal/certstore"
	"github.com/scoregate/scoregate/internal/heapgoal"
	"github.com/scoregate/scoregate/internal/ratelimit"
	tokenusage "github.com/scoregate/scoregate/internal/usage"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", os.Getenv("GATEWAY_CONFIG"), "configuration `file` (or GATEWAY_CONFIG)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("serve takes no arguments, only -config FILE")
	}
	if *path == "" {
		return usagef("serve needs -config FILE (or GATEWAY_CONFIG)")
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return fmt.Errorf("configuration %s: %w", *path, err)
	}
	log, level := newLogger(cfg.Log, stderr)
	return serve(ctx, cfg, configSource{path: *path, level: level}, log, hooks{})
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	path := fs.String("config", os.Getenv("GATEWAY_CONFIG"), "configuration `file` (or GATEWAY_CONFIG)")
	pos, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("check-config takes no arguments, only -config FILE")
	}
	if *path == "" {
		return usagef("check-config needs -config FILE")
	}
	_, err = config.Load(*path)
	var probs config.Problems
	if errors.As(err, &probs) {
		for _, p := range probs {
			fmt.Fprintln(stdout, p)
		}
		return fmt.Errorf("%s: %d problem(s)", *path, len(probs))
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return nil
}

// newLogger returns the gateway's log on w, and its level, which a reload may change.
func newLogger(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), lv
	}
	return slog.New(slog.NewJSONHandler(w, opts)), lv
}

// instance is a running gateway, handed to the ready callback.
type instance struct {
	dataAddr  net.Addr
	adminAddr net.Addr
	tlsAddr   net.Addr // nil without TLS
	h2Addr    net.Addr // nil without the HTTP/2 listener
	keyPath   string   // where the Owner key is kept, "" when it came from GATEWAY_ADMIN_KEY
}

// hooks let quickstart act at two points of serve.
type hooks struct {
	// prepare, if set, runs once the keys are loaded, before anything listens.
	prepare func(*authn.Keyring) error
	// ready, if set, runs once both listeners accept connections.
	ready func(*instance) error
}

// keyFlushInterval is how often key last-use times are written to the store.
const keyFlushInterval = 30 * time.Second

// tokenMaintenanceInterval is how often signing keys are rotated when due and expired
// revocations dropped.
const tokenMaintenanceInterval = time.Minute

// usageFlushTimeout bounds the last flush of token usage to the store at shutdown.
const usageFlushTimeout = 5 * time.Second

// closeKeeper stops the keeper's flushing and saves the usage it still holds, within
// usageFlushTimeout; what the store does not take then is lost, and logged.
func closeKeeper(k *tokenusage.Keeper, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), usageFlushTimeout)
	defer cancel()
	if err := k.Close(ctx); err != nil {
		log.Warn("saving the last token usage at shutdown", "err", err)
	}
}

// registerUsageMetrics adds the count of calls whose token usage was dropped to /metrics.
func registerUsageMetrics(m metric.Meter, k *tokenusage.Keeper) error {
	_, err := m.Int64ObservableCounter("scoregate.usage.dropped",
		metric.WithDescription("Language-model calls whose token usage was not kept: the usage waiting for the store reached its bound (the store failing for long)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(k.Dropped())
			return nil
		}))
	return err
}

// telemetryFlushTimeout bounds the last flush of spans and metrics at shutdown, which follows the
// drain (server.shutdown_timeout) rather than sharing its deadline.
const telemetryFlushTimeout = 5 * time.Second

// serve runs the gateway for cfg until ctx ends, then shuts down gracefully: /readyz turns 503,
// the drain delay passes, in-flight requests finish within the shutdown timeout, and the store
// is closed. When cfg came from a file (src.path), SIGHUP and POST /v1/reload apply the file
// again.
func serve(ctx context.Context, cfg *config.Config, src configSource, log *slog.Logger, h hooks) error {
	if headroom := cfg.Server.GCHeadroomBytes; headroom > 0 {
		if os.Getenv("GOGC") != "" {
			log.Info("GOGC is set, so server.gc_headroom_bytes is not applied")
		} else {
			defer heapgoal.Start(uint64(headroom)).Stop()
		}
	}
	// Until the gateway listens, a SIGHUP waits here instead of ending the process.
	hup := make(chan os.Signal, 1)
	if src.path != "" {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	var store authn.Store
	var usageStore authn.UsageStore // the same store, where token usage is kept
	var redisStore *authn.RedisStore
	if cfg.Store.Shared() {
		authn.SetRedisLogger(log)
		var err error
		if redisStore, err = waitForRedis(ctx, cfg, log); err != nil {
			return err
		}
		checkRedisStore(ctx, redisStore, log)
		store, usageStore = redisStore, redisStore
	} else {
		bolt, err := authn.OpenBolt(cfg.Store.Dir)
		if err != nil {
			return err
		}
		store, usageStore = bolt, bolt
	}
	defer store.Close()
	keys, err := authn.NewKeyring(ctx, store, log)
	if err != nil {
		return err
	}
	ownerKey, keyPath, created, err := authn.OwnerKey(cfg.Store.Dir, os.Getenv("GATEWAY_ADMIN_KEY"))
	if err != nil {
		return err
	}
	switch {
	case keyPath == "":
		log.Info("admin Owner key taken from GATEWAY_ADMIN_KEY")
	case created:
		log.Info("admin Owner key generated", "path", keyPath)
	default:
		log.Info("admin Owner key read", "path", keyPath)
	}
	principals, err := authn.NewPrincipals(ctx, store, keys, authn.NewRoles(cfg), ownerKey)
	if err != nil {
		return err
	}
	activity := authn.NewActivityLog(store, log)
	tokens, err := authn.NewTokens(ctx, cfg, store, principals, log, authn.WithActivity(activity))
	if err != nil {
		return err
	}
	if h.prepare != nil {
		if err := h.prepare(keys); err != nil {
			return err
		}
	}
	warnKeyless(cfg.Services, keys, log)

	authOpts := []authn.AuthenticatorOption{authn.WithTokens(tokens)}
	deps := admin.Deps{Keys: keys, Principals: principals, Tokens: tokens, Activity: activity, Log: log}
	var replica *authn.Replica
	if redisStore != nil {
		replica = authn.NewReplica(redisStore, keys, principals, tokens, cfg.Store.ResyncInterval, cfg.Store.StalenessBound, log)
		authOpts = append(authOpts, authn.WithFreshness(replica.Fresh))
		deps.Fresh = replica.Fresh
		deps.Ready = func() (bool, string) {
			if why := replica.Lost(); why != "" {
				return false, lostReason(why)
			}
			if replica.Fresh() {
				return true, ""
			}
			return false, fmt.Sprintf("shared state is %s old (bound %s): %s", replica.Age().Round(time.Millisecond), cfg.Store.StalenessBound, replica.Problem())
		}
	}
	var stateAge func() time.Duration
	if replica != nil {
		stateAge = replica.Age
	}
	tel, err := telemetry.New(ctx, cfg, telemetry.Options{Log: log, StateAge: stateAge})
	if err != nil {
		return err
	}
	deps.Metrics = tel.MetricsHandler()
	gwOpts := []proxy.Option{proxy.WithTelemetry(tel)}
	var certMgr *certs.Manager
	if cfg.TLS.Enabled() {
		storage, closeStorage, err := certStorage(cfg, redisStore, log)
		if err != nil {
			return err
		}
		defer closeStorage()
		if certMgr, err = certs.New(cfg, storage, log); err != nil {
			return err
		}
		if certMgr.ACME() {
			gwOpts = append(gwOpts, proxy.WithACMEChallenge(certMgr.HTTPChallenge()))
		}
	}
	limiter := rateLimiter(cfg, redisStore, log)
	failures := authFailures(limiter)
	deps.AuthFailures = failures
	var adm *admin.Server
	gwOpts = append(gwOpts, proxy.WithRateLimiter(limiter), proxy.WithTokenLimiter(tokenLimiter(limiter)), proxy.WithAuthFailures(failures, cfg.AdminAuthFailureLimit,
		func(client netip.Addr) { adm.RecordBlocked(context.Background(), client, "token endpoint") }))
	// Token usage of language-model calls: summed in memory, added to the store every few
	// seconds, and once more at shutdown once the data plane has drained.
	keeper := tokenusage.NewKeeper(usageStore, tokenusage.WithLogger(log))
	defer closeKeeper(keeper, log) // on the way out early (it closes once)
	deps.Usage = keeper
	gwOpts = append(gwOpts, proxy.WithUsageSink(keeper))
	gw, err := proxy.New(cfg, authn.NewAuthenticator(keys, authOpts...), log, gwOpts...)
	if err != nil {
		return err
	}
	if err := registerMetrics(tel.Meter(), gw, limiter, certMgr, replica); err != nil {
		return err
	}
	if err := registerUsageMetrics(tel.Meter(), keeper); err != nil {
		return err
	}
	deps.Upstreams = func(service string) []admin.UpstreamInfo {
		var out []admin.UpstreamInfo
		for _, r := range gw.Replicas() {
			if r.Service == service {
				out = append(out, admin.UpstreamInfo{URL: r.URL, Deployment: r.Deployment, Health: r.State, Inflight: r.Inflight, Queued: r.Queued})
			}
		}
		return out
	}
	deps.Status = statusSources(tel, certMgr, limiter, replica, cfg.Store.StalenessBound)
	deps.Status.Tokens = keeper.TokensPerMinute
	var rl *reloader
	if src.path != "" {
		rl = &reloader{src: src, started: cfg, gw: gw, keys: keys, activity: activity, log: log}
		deps.Reload = rl.reload
	}
	adm = admin.New(cfg, deps)
	if rl != nil {
		rl.adm = adm
	}

	lns, err := listen(cfg)
	if err != nil {
		return err
	}
	dataLn, adminLn := lns.data, lns.admin

	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Go(func() {
		serveData := gw.Serve
		if lns.tls != nil && cfg.TLS.RedirectHTTP {
			_, port, _ := net.SplitHostPort(lns.tls.Addr().String())
			serveData = func(ln net.Listener) error { return gw.ServeRedirect(ln, port, certMgr.RedirectHosts()) }
		}
		if err := serveData(dataLn); err != nil {
			errc <- fmt.Errorf("data plane: %w", err)
		}
	})
	if lns.tls != nil {
		wg.Go(func() {
			if err := gw.Serve(tls.NewListener(lns.tls, certMgr.TLSConfig())); err != nil {
				errc <- fmt.Errorf("data plane (HTTPS): %w", err)
			}
		})
	}
	if lns.h2 != nil {
		var h2TLS *tls.Config
		if cfg.H2.TLS {
			h2TLS = certMgr.TLSConfig() // validation made sure the tls section is on
		}
		wg.Go(func() {
			if err := gw.ServeH2(lns.h2, h2TLS); err != nil {
				errc <- fmt.Errorf("data plane (HTTP/2): %w", err)
			}
		})
	}
	wg.Go(func() {
		if err := adm.Serve(adminLn); err != nil {
			errc <- fmt.Errorf("admin API: %w", err)
		}
	})
	flushCtx, stopFlush := context.WithCancel(context.Background())
	var background sync.WaitGroup
	background.Go(func() { keys.RunFlusher(flushCtx, keyFlushInterval) })
	background.Go(func() { tokens.RunMaintenance(flushCtx, tokenMaintenanceInterval) })
	if replica != nil {
		background.Go(func() { replica.Run(flushCtx) })
	}
	if certMgr != nil {
		if err := certMgr.Start(flushCtx); err != nil {
			log.Error("starting certificate management", "err", err)
		}
		defer certMgr.Stop()
	}

	started := []any{"listen", dataLn.Addr().String(), "admin_listen", adminLn.Addr().String(),
		"services", len(cfg.Services), "version", version}
	inst := &instance{dataAddr: dataLn.Addr(), adminAddr: adminLn.Addr(), keyPath: keyPath}
	if lns.tls != nil {
		started = append(started, "tls_listen", lns.tls.Addr().String(), "redirect_http", cfg.TLS.RedirectHTTP)
		inst.tlsAddr = lns.tls.Addr()
	}
	if lns.h2 != nil {
		started = append(started, "h2_listen", lns.h2.Addr().String(), "h2_tls", cfg.H2.TLS)
		inst.h2Addr = lns.h2.Addr()
	}
	log.Info("gateway started", started...)
	if err := notifyReady(); err != nil {
		log.Warn("telling the service manager the gateway is ready", "err", err)
	}
	var runErr error
	if h.ready != nil {
		runErr = h.ready(inst)
	}
	for running := runErr == nil; running; {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			running = false
		case runErr = <-errc:
			running = false
		case <-hup:
			rl.reload(ctx, "SIGHUP") // logged and recorded either way
		}
	}

	if err := notifyStopping(); err != nil {
		log.Warn("telling the service manager the gateway stops", "err", err)
	}
	adm.SetDraining()
	if d := cfg.Server.DrainDelay; d > 0 && runErr == nil {
		log.Info("draining", "delay", d.String())
		time.Sleep(d)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := gw.Shutdown(sctx); err != nil {
		log.Warn("data plane did not drain in time; open connections were closed", "err", err)
	}
	closeKeeper(keeper, log) // the usage of the last calls, now that none is running
	// The spans of requests the drain cut at its deadline are flushed after it: the flush has a
	// bound of its own, not what is left of the drain's.
	fctx, fcancel := context.WithTimeout(context.Background(), telemetryFlushTimeout)
	defer fcancel()
	if err := tel.Shutdown(fctx); err != nil {
		log.Warn("flushing telemetry", "err", err)
	}
	if err := adm.Shutdown(sctx); err != nil {
		log.Warn("admin API did not stop in time", "err", err)
	}
	wg.Wait()
	stopFlush()
	background.Wait()
	if runErr != nil {
		return runErr
	}
	log.Info("stopped")
	return nil
}

// statusSources tell the status page what it shows beside the admin API's own data: the
// services' recent traffic, the certificates, the shared state, the version and uptime.
func statusSources(tel *telemetry.Telemetry, certMgr *certs.Manager, limiter ratelimit.Limiter, replica *authn.Replica, bound time.Duration) admin.Status {
	st := admin.Status{Traffic: tel.Traffic, Version: version, Started: time.Now()}
	if certMgr != nil {
		st.Certificates = func() []admin.Certificate {
			var out []admin.Certificate
			for _, e := range certMgr.Expiries() {
				out = append(out, admin.Certificate{Name: e.Name, Source: e.Source, NotAfter: e.NotAfter})
			}
			return out
		}
	}
	if replica != nil {
		shared, _ := limiter.(*ratelimit.Shared)
		st.SharedState = func() admin.SharedState {
			s := admin.SharedState{Age: replica.Age(), Bound: bound, Fresh: replica.Fresh(), Lost: replica.Lost() != "",
				Problem: replica.Problem()}
			s.Reachable = s.Problem == ""
			if shared != nil {
				s.RateLimitDegraded = shared.Degraded()
			}
			return s
		}
	}
	return st
}

// listeners are the gateway's sockets: the plain data plane, the admin API, and HTTPS and
// HTTP/2 when on.
type listeners struct {
	data, admin, tls, h2 net.Listener
}

// listen opens every listener, or none: a taken address closes those already opened and names
// the configuration field.
func listen(cfg *config.Config) (*listeners, error) {
	l := &listeners{}
	var err error
	if l.data, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("data plane (listen): %w", err)
	}
	if l.admin, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		l.data.Close()
		return nil, fmt.Errorf("admin API (admin_listen): %w", err)
	}
	if cfg.TLS.Enabled() {
		if l.tls, err = net.Listen("tcp", cfg.TLS.Listen); err != nil {
			l.data.Close()
			l.admin.Close()
			return nil, fmt.Errorf("HTTPS data plane (tls.listen): %w", err)
		}
	}
	if cfg.H2.Enabled() {
		if l.h2, err = net.Listen("tcp", cfg.H2.Listen); err != nil {
			l.data.Close()
			l.admin.Close()
			if l.tls != nil {
				l.tls.Close()
			}
			return nil, fmt.Errorf("HTTP/2 data plane (h2.listen): %w", err)
		}
	}
	return l, nil
}

// registerMetrics adds the replicas', the shared rate limiter's and the certificates' gauges to
// /metrics.
func registerMetrics(m metric.Meter, gw *proxy.Gateway, limiter ratelimit.Limiter, certMgr *certs.Manager, replica *authn.Replica) error {
	if err := gw.RegisterMetrics(m); err != nil {
		return err
	}
	if replica != nil {
		_, err := m.Int64ObservableGauge("scoregate.shared_state.lost",
			metric.WithDescription("1 once the Redis store lost the gateway's data: every credential gets 503 until an operator recovers the store and restarts the instance."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(boolGauge(replica.Lost() != ""))
				return nil
			}))
		if err != nil {
			return err
		}
		if _, err = m.Int64ObservableCounter("scoregate.shared_state.full_reloads",
			metric.WithDescription("Full reloads of the shared state from Redis (every key, principal, signing key and revocation read again), by reason."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				for _, why := range authn.ReloadReasons {
					o.Observe(replica.FullReloads(why), metric.WithAttributes(attribute.String("reason", why)))
				}
				return nil
			})); err != nil {
			return err
		}
	}
	if shared, ok := limiter.(*ratelimit.Shared); ok {
		_, err := m.Int64ObservableGauge("scoregate.ratelimit.degraded",
			metric.WithDescription("1 while Redis is unreachable and rate limits are enforced by each instance alone."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				if shared.Degraded() {
					o.Observe(1)
				} else {
					o.Observe(0)
				}
				return nil
			}))
		if err != nil {
			return err
		}
		if _, err = m.Int64ObservableCounter("scoregate.ratelimit.local_decisions",
			metric.WithDescription("Rate-limit decisions taken by this instance alone because Redis did not answer."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(shared.Fallbacks())
				return nil
			})); err != nil {
			return err
		}
	}
	if certMgr != nil {
		_, err := m.Float64ObservableGauge("scoregate.tls.certificate.expiry", metric.WithUnit("s"),
			metric.WithDescription("When each served certificate expires, as a Unix time; alert well before it."),
			metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
				for _, e := range certMgr.Expiries() {
					o.Observe(float64(e.NotAfter.Unix()), metric.WithAttributes(attribute.String("name", e.Name), attribute.String("source", e.Source)))
				}
				return nil
			}))
		if err != nil {
			return err
		}
		if _, err = m.Int64ObservableCounter("scoregate.tls.certificate.failures",
			metric.WithDescription("Failed certificate orders and renewals since start."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(certMgr.Failures())
				return nil
			})); err != nil {
			return err
		}
	}
	return nil
}

// rateLimiter enforces the services' rate limits: through Redis when the store is shared (so
// the limit holds across instances), falling back to a per-instance limit while Redis is down;
// per instance otherwise. There is one even when no service has a limit yet, since a reload may
// add one; it costs nothing until then.
func rateLimiter(cfg *config.Config, redis *authn.RedisStore, log *slog.Logger) ratelimit.Limiter {
	if redis != nil {
		return ratelimit.NewShared(redis.Client(), cfg.Store.RedisPrefix, ratelimit.NewLocal(),
			ratelimit.WithLogger(log), ratelimit.WithTimeout(cfg.Store.RedisTimeout))
	}
	return ratelimit.NewLocal()
}

// authFailures counts failed authentications per client address, with the rate limits: in
// Redis when they are (every instance counts together; each counts alone while Redis is away),
// in memory otherwise.
func authFailures(limiter ratelimit.Limiter) *ratelimit.Failures {
	if shared, ok := limiter.(*ratelimit.Shared); ok {
		return ratelimit.NewSharedFailures(shared)
	}
	return ratelimit.NewLocalFailures()
}

// tokenLimiter counts the services' token limits with the rate limits: in Redis when they are
// (every instance counts together; each counts alone while Redis is away, by the same rule), in
// memory otherwise.
func tokenLimiter(limiter ratelimit.Limiter) *ratelimit.TokenLimiter {
	if shared, ok := limiter.(*ratelimit.Shared); ok {
		return ratelimit.NewSharedTokenLimiter(shared)
	}
	return ratelimit.NewLocalTokenLimiter()
}

// certStorage is where certificates and ACME state are kept: in tls.storage_redis_url when set
// (a Redis and ACL user apart from the credentials' state); else in Redis beside the shared state
// when there is one (so every instance serves the same certificates and one of them orders
// them); else in files under store.dir. With tls.storage_key (or its file) every value is
// encrypted. The returned func closes what certStorage opened.
func certStorage(cfg *config.Config, redis *authn.RedisStore, log *slog.Logger) (certmagic.Storage, func(), error) {
	st, inRedis, closer, err := plainCertStorage(cfg, redis, log)
	if err != nil {
		return nil, nil, err
	}
	key, err := storageKey(cfg.TLS)
	if err != nil {
		closer()
		return nil, nil, err
	}
	if key == nil {
		if inRedis && cfg.ACMEEnabled() {
			log.Warn("certificate and ACME account private keys are stored in clear in Redis; set tls.storage_key_file or GATEWAY_TLS_STORAGE_KEY to encrypt them")
		}
		return st, closer, nil
	}
	sealed, err := certstore.Seal(st, key)
	if err != nil {
		closer()
		return nil, nil, err
	}
	return sealed, closer, nil
}

// plainCertStorage is certStorage without the encryption; inRedis tells whether it is in Redis.
func plainCertStorage(cfg *config.Config, redis *authn.RedisStore, log *slog.Logger) (st certmagic.Storage, inRedis bool, closer func(), err error) {
	switch {
	case cfg.TLS.StorageRedisURL != "":
		client, err := authn.OpenRedisClient("tls.storage_redis_url", cfg.TLS.StorageRedisURL, cfg.Store)
		if err != nil {
			return nil, false, nil, err
		}
		return certstore.New(client, cfg.TLS.StorageRedisPrefix, certstore.WithLogger(log)), true, func() { client.Close() }, nil
	case redis != nil:
		return certstore.New(redis.Client(), cfg.Store.RedisPrefix), true, func() {}, nil
	}
	return certs.FileStorage(cfg), false, func() {}, nil
}

// storageKey reads the key of tls.storage_key or tls.storage_key_file; nil when neither is set.
// Errors never repeat the key.
func storageKey(t config.TLS) ([]byte, error) {
	text, field := t.StorageKey, "tls.storage_key"
	if t.StorageKeyFile != "" {
		b, err := os.ReadFile(t.StorageKeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.storage_key_file: %w", err)
		}
		text, field = string(b), "tls.storage_key_file "+t.StorageKeyFile
	}
	if text == "" {
		return nil, nil
	}
	key, err := config.ParseStorageKey(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return key, nil
}

func boolGauge(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// lostReason is what /readyz says once the Redis store lost data.
func lostReason(why string) string {
	return "the Redis store lost the gateway's data (" + why + "): answering 503 until it is restored from a backup or re-initialised with 'gateway store reinit', and this instance restarted"
}

// checkRedisStore logs, once, what could make the store lose data later: a maxmemory-policy
// that lets Redis evict the gateway's keys, and a store id that could not be remembered.
// Where CONFIG GET is denied (managed Redis), it says nothing.
func checkRedisStore(ctx context.Context, s *authn.RedisStore, log *slog.Logger) {
	if err := s.IDFileError(); err != nil {
		log.Warn("the Redis store's id is not remembered in store.dir: restarted against a Redis that lost everything, this instance cannot tell it from a new one", "err", err)
	}
	policy, err := s.EvictionPolicy(ctx)
	if err != nil {
		log.Debug("cannot read Redis's maxmemory-policy", "err", err)
		return
	}
	if policy != "noeviction" {
		log.Warn("Redis may evict the gateway's keys when it runs out of memory; set maxmemory-policy to noeviction (a lost revocation would be refused as lost data, with 503s)",
			"maxmemory_policy", policy)
	}
}

// waitForRedis connects to the shared store, trying again every second until it answers with a
// store that lost nothing, or ctx ends. Meanwhile the admin listener answers /livez 200, /readyz
// 503 and /metrics (scoregate_shared_state_lost), and the data-plane listeners that need no
// certificate (listen, and h2.listen in cleartext) answer every request as the gateway does when
// it cannot decide: 503 with Retry-After (gRPC: UNAVAILABLE), never 401, and nothing reaches a
// model. tls.listen, and h2.listen with h2.tls, stay closed: the certificates are not loaded yet.
// These listeners are closed before waitForRedis returns, so that serve can bind the same
// addresses.
func waitForRedis(ctx context.Context, cfg *config.Config, log *slog.Logger) (*authn.RedisStore, error) {
	opts := []authn.RedisOption{authn.WithStoreIDFile(filepath.Join(cfg.Store.Dir, authn.StoreIDFile))}
	s, err := authn.OpenRedis(ctx, cfg.Store, opts...)
	if err == nil {
		return s, nil
	}
	var lastErr atomic.Pointer[string]
	var lost atomic.Bool
	report := func(err error) {
		msg := "waiting for the Redis store: " + err.Error()
		if errors.Is(err, authn.ErrStoreLost) {
			msg = lostReason(strings.TrimPrefix(err.Error(), authn.ErrStoreLost.Error()+": "))
			if !lost.Swap(true) {
				log.Error("the Redis store lost the gateway's data: answering 503 until it is restored from a backup or re-initialised with 'gateway store reinit' (readyz answers 503)",
					"reason", strings.TrimPrefix(err.Error(), authn.ErrStoreLost.Error()+": "))
			}
		}
		lastErr.Store(&msg)
	}
	if !errors.Is(err, authn.ErrStoreLost) {
		log.Error("the Redis store is unreachable; waiting for it (the data plane and readyz answer 503)", "err", err)
	}
	report(err)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status": "ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		b, _ := json.Marshal(map[string]string{"status": "not ready", "reason": *lastErr.Load()})
		w.Write(append(b, '\n'))
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprintf(w, "# HELP scoregate_shared_state_lost 1 once the Redis store lost the gateway's data.\n# TYPE scoregate_shared_state_lost gauge\nscoregate_shared_state_lost %d\n",
			boolGauge(lost.Load()))
	})
	waitSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, lerr := net.Listen("tcp", cfg.AdminListen)
	if lerr != nil {
		return nil, fmt.Errorf("admin_listen %s: %w", cfg.AdminListen, lerr)
	}
	go waitSrv.Serve(ln)
	defer ln.Close() // also when Serve has not taken it yet
	defer waitSrv.Close()
	stopRefusing, lerr := refuseWhileWaiting(cfg, log)
	if lerr != nil {
		return nil, lerr
	}
	defer stopRefusing()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped while waiting for the Redis store: %w", err)
		case <-t.C:
		}
		if s, err = authn.OpenRedis(ctx, cfg.Store, opts...); err == nil {
			log.Info("the Redis store answers")
			return s, nil
		}
		report(err)
	}
}

// refuseWhileWaiting listens on the data-plane addresses that need no certificate (listen, and
// h2.listen without h2.tls) and answers every request there with proxy.UndecidableServer. The
// returned func closes the listeners at once (the addresses are free when it returns), lets
// answers under way finish for a moment, then closes the connections.
func refuseWhileWaiting(cfg *config.Config, log *slog.Logger) (stop func(), err error) {
	type plane struct {
		field, addr string
		h2c         bool
	}
	planes := []plane{{"listen", cfg.Listen, false}}
	if cfg.H2.Enabled() && !cfg.H2.TLS {
		planes = append(planes, plane{"h2.listen", cfg.H2.Listen, true})
	}
	var servers []*http.Server
	var lns []net.Listener
	stop = func() {
		for _, ln := range lns {
			ln.Close() // also when Serve has not taken it yet
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, srv := range servers {
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		}
	}
	for _, p := range planes {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("data plane (%s): %w", p.field, err)
		}
		srv := proxy.UndecidableServer(cfg.Server, p.h2c, log)
		servers, lns = append(servers, srv), append(lns, ln)
		go srv.Serve(ln)
	}
	return stop, nil
}

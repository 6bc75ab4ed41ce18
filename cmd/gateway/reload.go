package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/scoregate/scoregate/admin"
	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/proxy"
)

// configSource is where serve's configuration came from, for reloads: the file (with the
// GATEWAY_* environment applied again as at start) and the log level it set. A zero
// configSource (quickstart) cannot be reloaded.
type configSource struct {
	path  string
	level *slog.LevelVar
}

// reloader applies a configuration file again to a running gateway, on SIGHUP or POST
// /v1/reload, one reload at a time.
type reloader struct {
	src      configSource
	started  *config.Config // settings that need a restart are compared with these
	gw       *proxy.Gateway
	adm      *admin.Server
	keys     *authn.Keyring
	activity *authn.ActivityLog
	log      *slog.Logger

	mu sync.Mutex
}

// activityReasonMax bounds the reason recorded with a failed reload in the activity log.
const activityReasonMax = 1000

// reload reads the file, checks it and applies it, or rejects it and keeps the running
// configuration. Either way it logs the outcome and records it in the activity log as
// config.reload by initiator (a principal's name, or "SIGHUP"). A rejected file comes back as
// config.Problems: every problem, as check-config prints them.
func (r *reloader) reload(ctx context.Context, initiator string) (admin.ReloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := notifyReloading(); err != nil {
		r.log.Warn("telling the service manager of the reload", "err", err)
	}
	defer notifyReloaded() // the gateway serves either way, applied or rejected
	next, err := config.Load(r.src.path)
	if err == nil {
		err = r.started.ReloadProblems(next)
	}
	var sum proxy.ReloadSummary
	if err == nil {
		sum, err = r.gw.Reload(next)
	}
	if errors.Is(err, proxy.ErrClosed) {
		return admin.ReloadResult{}, err
	}
	if err != nil {
		probs := asProblems(err)
		lines := make([]string, len(probs))
		for i, p := range probs {
			lines[i] = p.String()
		}
		r.log.Error("configuration reload rejected; the running configuration is unchanged",
			"config", r.src.path, "by", initiator, "problems", lines)
		reason := strings.Join(lines, "; ")
		if len(reason) > activityReasonMax {
			n := activityReasonMax
			for !utf8.RuneStart(reason[n]) {
				n--
			}
			reason = reason[:n] + "…"
		}
		r.activity.Record(ctx, authn.OpConfigReload, initiator, r.src.path+": "+reason, authn.ResultFailed)
		return admin.ReloadResult{}, probs
	}

	for _, l := range []*[]string{&sum.Added, &sum.Removed, &sum.Changed} {
		if *l == nil {
			*l = []string{} // logged and answered as [], not null
		}
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(next.Log.Level)) // validated
	r.src.level.Set(level)
	r.adm.SetConfig(next)
	r.log.Info("configuration reloaded", "config", r.src.path, "by", initiator,
		"added", sum.Added, "removed", sum.Removed, "changed", sum.Changed, "log_level", next.Log.Level)
	var touched []config.Service
	for _, svc := range next.Services {
		if slices.Contains(sum.Added, svc.Name) || slices.Contains(sum.Changed, svc.Name) {
			touched = append(touched, svc)
		}
	}
	warnKeyless(touched, r.keys, r.log)
	r.activity.Record(ctx, authn.OpConfigReload, initiator, r.src.path, authn.ResultSuccess)
	return admin.ReloadResult{Added: sum.Added, Removed: sum.Removed, Changed: sum.Changed}, nil
}

// asProblems is err as the problems of a rejected configuration: those of config.Load,
// ReloadProblems and proxy's Reload (a service that cannot be built) are already; anything else
// (an unreadable file) becomes one.
func asProblems(err error) config.Problems {
	var probs config.Problems
	if errors.As(err, &probs) {
		return probs
	}
	return config.Problems{{Path: "(file)", Message: err.Error()}}
}

// warnKeyless warns about each key-mode service of services that has no key yet, since every
// request to it gets 401.
func warnKeyless(services []config.Service, keys *authn.Keyring, log *slog.Logger) {
	for _, svc := range services {
		if svc.Auth == config.AuthKey && len(keys.Keys(svc.Name)) == 0 {
			log.Warn("service has no keys yet, so every request to it gets 401; create one with 'gateway keys regenerate "+svc.Name+" primary'", "service", svc.Name)
		}
	}
}

package proxy

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/scoregate/scoregate/config"
)

// routes is one routing table: the services by name and in configuration order. A table is never
// changed once published; a reload publishes a new one.
type routes struct {
	services map[string]*service
	order    []*service
}

func (rt *routes) add(svc *service) {
	rt.services[svc.name] = svc
	rt.order = append(rt.order, svc)
}

// stop stops every backend of the table.
func (rt *routes) stop() {
	for _, svc := range rt.order {
		svc.backend.stop()
	}
}

// ReloadSummary names the services a reload added, removed and changed, in configuration order
// (removed ones in the old order).
type ReloadSummary struct {
	Added, Removed, Changed []string
}

// ErrClosed is returned by Reload after Shutdown.
var ErrClosed = errors.New("the gateway is shutting down")

// Retirement of replaced backends: a backend the new table no longer uses is stopped once no
// request has held one of its replicas or waited in its queues for retireSettle (requests that
// read the old table just before the swap take theirs a moment later), or after its longest
// possible request (queue wait plus scoring timeout, plus retireSettle) at most.
const (
	retireSettle = time.Second
	retirePoll   = 100 * time.Millisecond
)

// Reload replaces the services with those of cfg, which must be valid, in one atomic swap of the
// routing table: a request in flight finishes on the table it started with, and the next one
// sees the new services. An unchanged service is kept as it is (connection pools, queues,
// replica state and health checks); a changed one keeps its backend when only per-request rules
// changed (auth, weights, limits, blocked paths, mirror, passive ejection), else gets a new one
// that carries over its replicas' state. Replaced backends stop their health checks and close
// their idle connections once their last request is done. Only cfg.Services is read: the
// listener's settings are fixed at New.
//
// A service that cannot be built (an unreadable tls.ca_file, say) fails the whole reload, with
// config.Problems naming it, and nothing changes.
func (g *Gateway) Reload(cfg *config.Config) (ReloadSummary, error) {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	if g.closed {
		return ReloadSummary{}, ErrClosed
	}
	old := g.routes.Load()
	next := &routes{services: make(map[string]*service, len(cfg.Services))}
	var sum ReloadSummary
	var built []*service // services with a new backend, stopped if the reload fails
	var probs config.Problems
	for i, sc := range cfg.Services {
		prev := old.services[sc.Name]
		switch {
		case prev == nil:
			sum.Added = append(sum.Added, sc.Name)
		case reflect.DeepEqual(prev.cfg, sc):
			next.add(prev)
			continue
		default:
			sum.Changed = append(sum.Changed, sc.Name)
		}
		svc, err := newService(sc, prev, g.log)
		if err != nil {
			probs = append(probs, config.Problem{Path: fmt.Sprintf("services[%d]", i), Message: err.Error()})
			continue
		}
		if prev == nil || svc.backend != prev.backend {
			built = append(built, svc)
		}
		next.add(svc)
	}
	if len(probs) > 0 {
		for _, svc := range built {
			svc.backend.stop()
		}
		return ReloadSummary{}, probs
	}
	var retired []*service
	for _, svc := range old.order {
		now := next.services[svc.name]
		if now == nil {
			sum.Removed = append(sum.Removed, svc.name)
		}
		if now == nil || now.backend != svc.backend {
			retired = append(retired, svc)
		}
	}
	g.routes.Store(next)
	for _, svc := range next.order {
		if c := g.h2.maxMessage.Load(); c > 0 && svc.cfg.Protocol == config.ProtocolGRPC && svc.maxBody > c {
			g.log.Warn("a gRPC service's max_body_bytes is above the HTTP/2 listener's message cap, fixed at start: "+
				"larger messages are refused (RESOURCE_EXHAUSTED) until the gateway restarts",
				"service", svc.name, "max_body_bytes", svc.maxBody, "cap", c)
		}
	}
	for _, svc := range retired {
		g.retire(svc)
	}
	return sum, nil
}

// retire stops the backend of a service the routing table no longer uses, once it is idle (see
// retireSettle), or at Shutdown.
func (g *Gateway) retire(svc *service) {
	b := svc.backend
	longest := svc.cfg.MaxRequestWait + svc.cfg.ScoringTimeout + retireSettle
	g.retiring.Go(func() {
		defer b.stop()
		deadline := time.NewTimer(longest)
		defer deadline.Stop()
		tick := time.NewTicker(retirePoll)
		defer tick.Stop()
		var idleSince time.Time
		for {
			select {
			case <-g.quit:
				return
			case <-deadline.C:
				svc.log.Warn("replaced replicas still had requests after the longest a request can take; stopped anyway")
				return
			case now := <-tick.C:
				switch {
				case !b.idle():
					idleSince = time.Time{}
				case idleSince.IsZero():
					idleSince = now
				case now.Sub(idleSince) >= retireSettle:
					svc.log.Debug("replaced replicas stopped: health checks ended, idle connections closed")
					return
				}
			}
		}
	})
}

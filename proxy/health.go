package proxy

import (
	"log/slog"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/config"
)

// healthChecker probes every replica of a service on its own schedule.
type healthChecker struct {
	done chan struct{}
	wg   sync.WaitGroup
}

func startHealthChecks(b *backend, hc config.HealthCheck, log *slog.Logger) *healthChecker {
	h := &healthChecker{done: make(chan struct{})}
	for _, d := range b.deployments {
		for _, r := range d.replicas {
			h.wg.Go(func() { h.probeLoop(d, r, hc, log) })
		}
	}
	return h
}

func (h *healthChecker) stop() {
	close(h.done)
	h.wg.Wait()
}

// probeLoop sends GET path to one replica every interval: unhealthy_threshold failures in a row
// take it out of rotation, healthy_threshold passes in a row bring it back. Changes are logged.
func (h *healthChecker) probeLoop(d *deployment, r *replica, hc config.HealthCheck, log *slog.Logger) {
	t := time.NewTicker(hc.Interval)
	defer t.Stop()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	var passes, fails int
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
		}
		req.Reset()
		req.SetRequestURI(hc.Path)
		req.Header.SetMethod(fasthttp.MethodGet)
		req.Header.SetHost(r.host)
		req.URI().SetScheme(r.scheme)
		req.Header.Set("User-Agent", "scoregate-health-check")
		resp.Reset()
		err := r.client.DoTimeout(req, resp, hc.Timeout)
		ok := err == nil && resp.StatusCode() >= 200 && resp.StatusCode() < 300
		if ok {
			passes, fails = passes+1, 0
		} else {
			passes, fails = 0, fails+1
		}
		switch {
		case !ok && fails == hc.UnhealthyThreshold && r.healthy.Load():
			r.healthy.Store(false)
			log.Warn("replica failed its health checks; out of rotation", "deployment", r.deployment,
				"upstream", r.url, "failures", fails, "status", resp.StatusCode(), "err", err)
		case ok && passes == hc.HealthyThreshold && !r.healthy.Load():
			r.healthy.Store(true)
			r.ejectedUntil.Store(0)
			log.Info("replica passed its health checks; back in rotation", "deployment", r.deployment, "upstream", r.url)
			d.wake()
		}
	}
}

package proxy

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/config"
)

// Finding 14: the mirror never has more than maxMirrorsInFlight copies in flight, however many
// requests ask for a copy at the same moment. Before, the cap was read and then raised, so
// requests arriving together all passed it.
func TestMirrorCapHoldsUnderConcurrency(t *testing.T) {
	// The mirror's model takes every copy and answers none until the test ends.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var accepting sync.WaitGroup
	accepting.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})

	sc := config.Service{
		Name: "svc", Auth: config.AuthNone,
		Deployments: []config.Deployment{
			{Name: "live", Weight: 100, Upstreams: []string{"http://127.0.0.1:1"}},
			{Name: "shadow", Upstreams: []string{"http://" + ln.Addr().String()}},
		},
		Mirror:                config.Mirror{Deployment: "shadow", Percent: 100},
		MaxConcurrentRequests: 10000,
		MaxConnsPerUpstream:   10000,
		ScoringTimeout:        time.Minute,
	}
	cfg := &config.Config{Services: []config.Service{sc}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	svc, err := newService(cfg.Services[0], nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	// The callers all arrive while the mirror deployment's lock is held, as they would when
	// many requests come at once: only as many as the cap may get past it.
	const callers = 500
	var wg sync.WaitGroup
	var returned atomic.Int32
	svc.mirror.mu.Lock()
	for range callers {
		req := fasthttp.AcquireRequest()
		req.SetRequestURI("/score")
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetBodyString("{}")
		wg.Go(func() {
			defer fasthttp.ReleaseRequest(req)
			svc.maybeMirror(req)
			returned.Add(1)
		})
	}
	// Wait for the callers turned away (or, if none is, a moment for all to queue).
	for deadline := time.Now().Add(time.Second); returned.Load() < callers-maxMirrorsInFlight && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	svc.mirror.mu.Unlock()
	wg.Wait()
	if n := svc.mirrors.Load(); n > maxMirrorsInFlight {
		t.Errorf("%d mirrored copies in flight, over the cap of %d", n, maxMirrorsInFlight)
	}

	ln.Close()
	accepting.Wait()
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); svc.mirrors.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d mirrored copies still in flight", svc.mirrors.Load())
		}
	}
	svc.backend.stop()
}

//go:build unix

package redistest_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// The proxy relays, delays Redis's answers by at least the delay asked for, cuts and restores,
// and leaves no goroutine behind.
func TestProxyDelayCutRestore(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("proxy", func(t *testing.T) {
		s := redistest.Start(t)
		track(s)
		p := redistest.NewProxy(t, s.Addr)
		if got, err := rawPing(p.Addr, 5*time.Second); err != nil || got != "+PONG" {
			t.Fatalf("PING through the proxy: %q, %v", got, err)
		}

		const delay = 300 * time.Millisecond
		p.SetDelay(delay)
		start := time.Now()
		if got, err := rawPing(p.Addr, 10*time.Second); err != nil || got != "+PONG" {
			t.Fatalf("PING through the delaying proxy: %q, %v", got, err)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("PING answered in %s through a proxy delaying %s", took, delay)
		}
		if _, err := rawPing(p.Addr, delay/3); err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("PING with a read timeout under the delay: %v, want a timeout", err)
		}
		p.SetDelay(0)

		p.Cut(t)
		if _, err := rawPing(p.Addr, time.Second); err == nil {
			t.Error("PING through a cut proxy succeeded")
		}
		p.Restore(t)
		if got, err := rawPing(p.Addr, 5*time.Second); err != nil || got != "+PONG" {
			t.Fatalf("PING after Restore: %q, %v", got, err)
		}
		if p.URL() != "redis://"+p.Addr+"/0" {
			t.Errorf("URL() = %q", p.URL())
		}
	})
	// The proxy's goroutines end with its cleanup (a little slack for the runtime's own).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after the proxy's cleanup, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

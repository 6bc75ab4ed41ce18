package main

import (
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// SIGTERM under load loses no request: eight clients send scoring requests back to back, a load
// balancer polls /readyz every 50 ms and takes the instance out of rotation when it turns 503,
// and every request sent gets 200 (the gateway keeps its listener for drain_delay, then finishes
// what is in flight). The process exits 0.
func TestSIGTERMUnderLoadDropsNothing(t *testing.T) {
	dir := t.TempDir()
	rec, upstream := newRecorder(t)
	rec.delay = 20 * time.Millisecond
	cfgPath := writeConfig(t, dir, upstream.URL, "")
	os.WriteFile(cfgPath, append(mustRead(t, cfgPath), []byte("server:\n  drain_delay: 1s\n")...), 0o600)
	adminKey := "test-admin-key-0123456789abcdefghijklmnop"
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + adminKey}, "serve", "-config", cfgPath)
	key := regenerateKey(t, p, adminKey, "primary")

	var inRotation atomic.Bool
	inRotation.Store(true)
	balancerDone := make(chan struct{})
	go func() { // the load balancer's readiness probe
		defer close(balancerDone)
		for inRotation.Load() {
			resp, err := http.Get(p.adminURL + "/readyz")
			if err != nil || resp.StatusCode != http.StatusOK {
				inRotation.Store(false)
			}
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	client := loadClient(t)
	var sent, ok atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for inRotation.Load() {
				sent.Add(1)
				resp, err := post(client, p.dataURL+"/api/v1/service/iris/score", key)
				switch {
				case err != nil:
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				case resp.StatusCode != http.StatusOK:
					mu.Lock()
					failures = append(failures, resp.Status)
					mu.Unlock()
				default:
					ok.Add(1)
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	signalled := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	wg.Wait()
	<-balancerDone
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not exit")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d after SIGTERM\n%s", code, p.stderr)
	}
	t.Logf("%d requests sent, %d answered 200, %d failed; out of rotation and exited %s after SIGTERM",
		sent.Load(), ok.Load(), len(failures), time.Since(signalled).Round(time.Millisecond))
	if len(failures) > 0 {
		t.Errorf("%d requests failed during the drain, first: %s", len(failures), failures[0])
	}
	if ok.Load() < 100 {
		t.Errorf("only %d requests answered: not a load", ok.Load())
	}
}

package proxy_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// The gateway takes the model connection given back last (LIFO): under a steady load the same few
// connections carry the requests, each taken again soon after its last answer, when the look at
// it after that answer still stands (no system call to look again), and the ones left idle close
// after upstream_idle_timeout. Here three requests held at once open three connections; the
// requests that follow one at a time all go over one of them.
func TestModelConnectionGivenBackLastIsTakenFirst(t *testing.T) {
	var mu sync.Mutex
	var from []string // the gateway's end of the connection each request came over
	held := make(chan struct{})
	respond := func(r *recorder, w io.Writer, req *seenRequest) bool {
		mu.Lock()
		from = append(from, w.(net.Conn).RemoteAddr().String())
		mu.Unlock()
		if req.Target == "/hold" {
			select {
			case <-held:
			case <-r.done:
			}
		}
		return respondOK(r, w, req)
	}
	e := newEnv(t, envOptions{respond: respond})

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if r := e.do(t, request("GET", "/api/v1/service/open/hold")); r.Status != 200 {
				t.Errorf("held request: %d %s", r.Status, r.Body)
			}
		})
	}
	for deadline := time.Now().Add(ioDeadline); len(e.up.requests()) < 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the model has %d of the 3 held requests", len(e.up.requests()))
		}
	}
	close(held)
	wg.Wait()

	for range 6 {
		if r := e.do(t, request("GET", "/api/v1/service/open/score")); r.Status != 200 {
			t.Fatalf("request: %d %s", r.Status, r.Body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	opened := map[string]bool{}
	for _, a := range from[:3] {
		opened[a] = true
	}
	if len(opened) != 3 {
		t.Fatalf("the three held requests came over %d connections, want 3: %v", len(opened), from[:3])
	}
	for i, a := range from[3:] {
		if a != from[3] {
			t.Errorf("request %d after the held ones came over %s, the first over %s: want one connection for all (%v)", i+1, a, from[3], from[3:])
		}
	}
}

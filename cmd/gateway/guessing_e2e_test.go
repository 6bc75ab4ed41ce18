package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

const guessOwnerKey = "owner-key-guessing-e2e-0123456789abcdef"

// fromAddr is an HTTP client whose connections leave from local, a loopback address, so that a
// test can be several clients.
func fromAddr(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Transport: &http.Transport{
		DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		DisableKeepAlives: true,
	}}
}

// try is one request: its status, Retry-After and body.
func try(t *testing.T, c *http.Client, method, url, cred string, header ...string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
	req.Header.Set("Content-Type", "application/json")
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// brakeAfter sends n bad credentials through send (each must get 401), then one more, which must
// get 429 with a Retry-After of at least a second.
func brakeAfter(t *testing.T, what string, n int, send func(i int) (int, string, string)) {
	t.Helper()
	for i := range n {
		if st, _, body := send(i); st != http.StatusUnauthorized {
			t.Fatalf("%s: guess %d: %d %s, want 401", what, i+1, st, body)
		}
	}
	st, ra, body := send(n)
	if secs, err := strconv.Atoi(ra); st != http.StatusTooManyRequests || err != nil || secs < 1 {
		t.Fatalf("%s: guess %d: %d, Retry-After %q, %s; want 429 with Retry-After", what, n+1, st, ra, body)
	}
}

func writeGuessingConfig(t *testing.T, dir, upstream, store string) string {
	t.Helper()
	path := filepath.Join(dir, "gateway.yaml")
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
store:
  dir: %q
%s
admin_auth_failure_limit: {failures: 5, window: 1m}
server:
  auth_failure_limit: {failures: 4, window: 1m}
  trusted_proxies: ["127.0.0.9"]
services:
  - name: iris
    auth: key
    upstreams: [%q]
  - name: open
    auth: key
    upstreams: [%q]
    auth_failure_limit: {failures: 0}
  - name: scoring
    auth: token
    upstreams: [%q]
`, filepath.Join(dir, "data"), store, upstream, upstream, upstream)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Finding 5 of issue 17 (no brake on guessing), through the binary: after N failed
// authentications from one address, every attempt from it, a correct credential included, gets
// 429 with Retry-After and never reaches the model, while other addresses are served; on the
// data plane per service (0 turns it off), on the admin API (guesses at the Owner key, recorded
// once in the activity log) and on the token endpoint, which counts with the admin API.
func TestIssue17Finding5GuessingIsBraked(t *testing.T) {
	rec, upstream := newRecorder(t)
	dir := t.TempDir()
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + guessOwnerKey}, "serve", "-config", writeGuessingConfig(t, dir, upstream.URL, ""))
	owner := func(c *http.Client, method, path string) (int, string, string) {
		return try(t, c, method, p.adminURL+path, guessOwnerKey)
	}
	good := regenerateKey(t, p, guessOwnerKey, "primary")
	bad := "sgk_" + strings.Repeat("x", 60)
	iris := p.dataURL + "/api/v1/service/iris/score"
	attacker, neighbour := fromAddr("127.0.0.2"), fromAddr("127.0.0.3")

	t.Run("data plane", func(t *testing.T) {
		brakeAfter(t, "bad keys", 4, func(int) (int, string, string) { return try(t, attacker, "POST", iris, bad) })
		before := rec.count()
		if st, ra, _ := try(t, attacker, "POST", iris, good); st != http.StatusTooManyRequests || ra == "" {
			t.Errorf("the right key from the blocked address: %d (Retry-After %q), want 429", st, ra)
		}
		if st, _, _ := try(t, attacker, "POST", iris, ""); st != http.StatusTooManyRequests {
			t.Errorf("no key from the blocked address: %d, want 429", st)
		}
		if rec.count() != before {
			t.Error("a request from the blocked address reached the model")
		}
		if st, _, body := try(t, neighbour, "POST", iris, good); st != http.StatusOK {
			t.Errorf("the right key from another address: %d %s", st, body)
		}
		for i := range 10 { // counted per service, and this one's limit is off
			if st, _, _ := try(t, attacker, "POST", p.dataURL+"/api/v1/service/open/score", bad); st != http.StatusUnauthorized {
				t.Fatalf("bad key %d for a service whose limit is off, from the address blocked for another: %d, want 401", i+1, st)
			}
		}
	})

	t.Run("behind a trusted proxy, the forwarded client is counted", func(t *testing.T) {
		proxy := fromAddr("127.0.0.9")
		brakeAfter(t, "bad keys forwarded for one client", 4, func(int) (int, string, string) {
			return try(t, proxy, "POST", iris, bad, "X-Forwarded-For", "198.51.100.7")
		})
		if st, _, body := try(t, proxy, "POST", iris, good, "X-Forwarded-For", "198.51.100.8"); st != http.StatusOK {
			t.Errorf("the right key forwarded for another client: %d %s", st, body)
		}
		if st, _, body := try(t, fromAddr("127.0.0.10"), "POST", iris, good, "X-Forwarded-For", "198.51.100.7"); st != http.StatusOK {
			t.Errorf("a client naming the blocked one, not through the trusted proxy: %d %s", st, body)
		}
	})

	t.Run("admin API", func(t *testing.T) {
		brakeAfter(t, "guesses at the Owner key", 5, func(i int) (int, string, string) {
			return try(t, attacker, "GET", p.adminURL+"/v1/services", guessOwnerKey[:len(guessOwnerKey)-1]+strconv.Itoa(i%10))
		})
		if st, ra, _ := owner(attacker, "GET", "/v1/services"); st != http.StatusTooManyRequests || ra == "" {
			t.Errorf("the Owner key from the blocked address: %d (Retry-After %q), want 429", st, ra)
		}
		if st, _, body := owner(attacker, "POST", "/v1/services/scoring/token"); st != http.StatusTooManyRequests {
			t.Errorf("the admin token endpoint from the blocked address: %d %s, want 429", st, body)
		}
		if st, _, body := owner(neighbour, "GET", "/v1/services"); st != http.StatusOK {
			t.Errorf("the Owner key from another address: %d %s", st, body)
		}
		if st, _, _ := try(t, attacker, "GET", p.adminURL+"/livez", ""); st != http.StatusOK {
			t.Errorf("/livez from the blocked address: %d", st)
		}
		_, _, body := owner(neighbour, "GET", "/v1/activity?limit=50")
		if n := strings.Count(body, `"auth.blocked"`); n != 1 || !strings.Contains(body, `"127.0.0.2"`) {
			t.Errorf("activity log: %d auth.blocked records, want one naming 127.0.0.2:\n%s", n, body)
		}
	})

	t.Run("token endpoint", func(t *testing.T) {
		tokens := p.dataURL + "/api/v1/service/scoring/token"
		guesser := fromAddr("127.0.0.4")
		brakeAfter(t, "guesses at a principal key", 5, func(int) (int, string, string) {
			return try(t, guesser, "POST", tokens, "sgp_"+strings.Repeat("y", 60))
		})
		if st, _, body := owner(guesser, "GET", "/v1/services"); st != http.StatusTooManyRequests {
			t.Errorf("the admin API from an address blocked on the token endpoint: %d %s, want 429", st, body)
		}
		if st, _, body := try(t, neighbour, "POST", tokens, guessOwnerKey); st != http.StatusOK {
			t.Errorf("a token for the Owner from another address: %d %s", st, body)
		}
	})
}

// Finding 5 with two gateway processes on one Redis: failures split across both trip the limit
// on both, for the data plane and for the admin API.
func TestIssue17Finding5GuessingIsBrakedAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	rec, upstream := newRecorder(t)
	dir := t.TempDir()
	cfg := writeGuessingConfig(t, dir, upstream.URL, fmt.Sprintf("  redis_url: %q", srv.URL()))
	env := []string{"GATEWAY_ADMIN_KEY=" + guessOwnerKey}
	a := start(t, env, "serve", "-config", cfg)
	b := start(t, env, "serve", "-config", cfg)
	both := []*proc{a, b}
	good := regenerateKey(t, a, guessOwnerKey, "primary")
	attacker, neighbour := fromAddr("127.0.0.2"), fromAddr("127.0.0.3")
	iris := func(p *proc) string { return p.dataURL + "/api/v1/service/iris/score" }
	for _, p := range both { // the new key has reached both
		for st := 0; st != http.StatusOK; st, _, _ = try(t, neighbour, "POST", iris(p), good) {
		}
	}

	brakeAfter(t, "bad keys on A and B in turn", 4, func(i int) (int, string, string) {
		return try(t, attacker, "POST", iris(both[i%2]), "sgk_"+strings.Repeat("x", 60))
	})
	before := rec.count()
	for _, p := range both {
		if st, _, _ := try(t, attacker, "POST", iris(p), "sgk_"+strings.Repeat("z", 60)); st != http.StatusTooManyRequests {
			t.Errorf("one more bad key on %s: %d, want 429", p.dataURL, st)
		}
		if st, _, _ := try(t, attacker, "POST", iris(p), good); st != http.StatusTooManyRequests {
			t.Errorf("the right key from the blocked address on %s: %d, want 429", p.dataURL, st)
		}
		if st, _, _ := try(t, neighbour, "POST", iris(p), good); st != http.StatusOK {
			t.Errorf("the right key from another address on %s: %d", p.dataURL, st)
		}
	}
	if rec.count() != before+2 {
		t.Errorf("the model got %d requests, want the neighbour's 2", rec.count()-before)
	}

	brakeAfter(t, "guesses at the Owner key on A and B in turn", 5, func(i int) (int, string, string) {
		return try(t, attacker, "GET", both[i%2].adminURL+"/v1/services", "not-the-owner-key-"+strconv.Itoa(i))
	})
	for _, p := range both {
		if st, _, _ := try(t, attacker, "GET", p.adminURL+"/v1/services", guessOwnerKey); st != http.StatusTooManyRequests {
			t.Errorf("the Owner key from the blocked address on %s: %d, want 429", p.adminURL, st)
		}
	}
	_, _, body := try(t, neighbour, "GET", b.adminURL+"/v1/activity?limit=50", guessOwnerKey)
	if n := strings.Count(body, `"auth.blocked"`); n != 1 {
		t.Errorf("activity log: %d auth.blocked records, want one:\n%s", n, body)
	}
}

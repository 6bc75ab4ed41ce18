package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/redistest"
)

// Issue 17, finding 14a and 14b: while Redis stalls (it takes the commands, its answers come
// late), key regeneration and principal creation answer 503 with Retry-After, as every other
// store-unavailable answer does, not 500; a revocation answered 503 says that it may still take
// effect, and the activity log records its result as "unknown", not "failed", since it did take
// effect once Redis answered.
func TestFinding14StoreStallAnswers503AndAnUnknownOutcome(t *testing.T) {
	srv := redistest.Start(t)
	px := redistest.NewProxy(t, srv.Addr)
	_, upstream := newRecorder(t)
	const timeout = 500 * time.Millisecond
	d := t.TempDir()
	path := writeSharedConfig(t, d, px.URL(), upstream.URL)
	cfg := strings.Replace(string(mustRead(t, path)), "  staleness_bound: 3s\n", fmt.Sprintf("  staleness_bound: 30s\n  redis_timeout: %s\n", timeout), 1)
	os.WriteFile(path, []byte(cfg), 0o600)
	a := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", path)

	var tok struct{ AccessToken string }
	if code := adminCall(t, a, "POST", "/v1/services/scoring/token", "", &tok); code != 200 {
		t.Fatalf("minting: %d", code)
	}
	tokURL := a.dataURL + "/api/v1/service/scoring/score"
	if s := status(t, tokURL, tok.AccessToken); s != 200 {
		t.Fatalf("the token before the stall: %d", s)
	}

	px.SetDelay(4 * timeout) // Redis runs the commands that reach it; its answers arrive after the timeout
	for _, c := range []struct{ name, method, path, body string }{
		// The revocation first: it most likely goes out on a pooled connection and so reaches Redis.
		{"revocation", "POST", "/v1/tokens/revoke", fmt.Sprintf(`{"token": %q}`, tok.AccessToken)},
		{"key regeneration", "POST", "/v1/services/iris/keys/primary/regenerate", ""},
		{"principal creation", "POST", "/v1/principals", `{"name": "rita", "role": "reader"}`},
	} {
		code, h, body := adminRaw(t, a, c.method, c.path, c.body)
		checkContractError(t, code, h, body, 503, "ServiceUnavailable")
		if h.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", c.name)
		}
		if !strings.Contains(string(body), "may still take effect") {
			t.Errorf("%s: the answer does not say the change may still take effect: %s", c.name, body)
		}
	}

	px.SetDelay(0)
	deadline := time.Now().Add(3 * time.Second)
	for status(t, tokURL, tok.AccessToken) != 401 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the revocation answered 503 took effect: %v (it does when it went out on an open connection)",
		status(t, tokURL, tok.AccessToken) == 401)
	var recs []struct{ Operation, Target, Result string }
	deadline = time.Now().Add(10 * time.Second)
	for {
		recs = nil
		adminCall(t, a, "GET", "/v1/activity?limit=50", "", &recs)
		found := ""
		for _, r := range recs {
			if r.Operation == "token.revoke" && strings.HasPrefix(r.Target, "jti:") {
				found = r.Result
			}
		}
		if found == "unknown" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(recs)
			t.Fatalf("the revocation answered 503 is recorded as %q, want \"unknown\": %s", found, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.stop(t, syscall.SIGTERM)
}

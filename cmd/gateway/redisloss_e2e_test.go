package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
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

// Issue 17, finding 4: Redis losing the gateway's data (all of it, the revocation set, the hashing
// secret) while an instance runs, then a new instance starting against it. The running instance
// answers 503 to a good key, a good token and a revoked token (never 200 for the revoked one,
// never 401 for the good ones), the new one answers 503 on its data plane (readyz 503) and makes
// no new secret; both say why once in their log, on /readyz and in scoregate_shared_state_lost.
// Then the recovery: gateway store reinit, the new instance starts by itself, the old one after a
// restart, and only keys regenerated afterwards work.
func TestFinding4LostRedisData(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose []string
	}{
		{"everything (FLUSHALL)", []string{"FLUSHALL"}},
		{"the revocation set", []string{"DEL", "{scoregate}:revoked"}},
		{"the hashing secret", []string{"DEL", "{scoregate}:secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) { lostRedisData(t, tc.lose) })
	}
}

const lostLogA = "the Redis store lost the gateway's data: answering 503 to every credential until it is restored from a backup or re-initialised with 'gateway store reinit', then this instance restarted"
const lostLogB = "the Redis store lost the gateway's data: answering 503 until it is restored from a backup or re-initialised with 'gateway store reinit' (readyz answers 503)"

func lostRedisData(t *testing.T, lose []string) {
	srv := redistest.Start(t)
	_, upstream := newRecorder(t)
	env := []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}
	cfgA := writeSharedConfig(t, t.TempDir(), srv.URL(), upstream.URL)
	a := start(t, env, "serve", "-config", cfgA)

	var k struct{ Key string }
	var good, revoked struct{ AccessToken string }
	adminCall(t, a, "POST", "/v1/services/iris/keys/primary/regenerate", "", &k)
	adminCall(t, a, "POST", "/v1/services/scoring/token", "", &good)
	adminCall(t, a, "POST", "/v1/services/scoring/token", "", &revoked)
	if code := adminCall(t, a, "POST", "/v1/tokens/revoke", fmt.Sprintf(`{"token": %q}`, revoked.AccessToken), nil); code != 200 {
		t.Fatalf("revoking: %d", code)
	}
	creds := []struct{ name, path, cred string }{
		{"good key", "/api/v1/service/iris/score", k.Key},
		{"good token", "/api/v1/service/scoring/score", good.AccessToken},
		{"revoked token", "/api/v1/service/scoring/score", revoked.AccessToken},
	}
	check := func(p *proc, want []int) []int {
		t.Helper()
		got := make([]int, len(creds))
		for i, c := range creds {
			got[i] = status(t, p.dataURL+c.path, c.cred)
		}
		if want != nil && !slices.Equal(got, want) {
			t.Fatalf("good key, good token, revoked token: %v, want %v", got, want)
		}
		return got
	}
	check(a, []int{200, 200, 401})
	if m := grepLines(metricsText(t, a.adminURL), "scoregate_shared_state_full_reloads_total{"); !strings.Contains(m, `reason="start"`) || !strings.Contains(m, `reason="gap"`) {
		t.Errorf("/metrics has no scoregate_shared_state_full_reloads_total by reason:\n%s", m)
	}
	secret := srv.Do(t, "GET", "{scoregate}:secret")

	srv.Do(t, lose...)

	// The new instance, on fixed ports: it does not log that it started.
	dirB := t.TempDir()
	cfgB := writeSharedConfig(t, dirB, srv.URL(), upstream.URL)
	adminB, dataB := freeAddr(t), freeAddr(t)
	cfg := strings.Replace(string(mustRead(t, cfgB)), `admin_listen: "127.0.0.1:0"`, `admin_listen: "`+adminB+`"`, 1)
	cfg = strings.Replace(cfg, `listen: "127.0.0.1:0"`, `listen: "`+dataB+`"`, 1)
	os.WriteFile(cfgB, []byte(cfg), 0o600)
	b := launch(t, env, "serve", "-config", cfgB)
	b.dataURL, b.adminURL = "http://"+dataB, "http://"+adminB

	deadline := time.Now().Add(10 * time.Second)
	for {
		got := check(a, nil)
		if got[0] == 401 || got[1] == 401 || got[2] == 200 {
			t.Fatalf("the running instance after the loss: good key, good token, revoked token: %v (never 401, 401, 200)", got)
		}
		if slices.Equal(got, []int{503, 503, 503}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running instance still answers %v after the loss, want 503 for all", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The new instance: admin answers readyz 503, the data plane never answers anything but 503.
	var readyB string
	deadline = time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + adminB + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			readyB = fmt.Sprintf("%d %s", resp.StatusCode, body)
			if strings.Contains(readyB, "lost") || resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new instance never said the store is lost: readyz %s\nstderr:\n%s", readyB, b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.HasPrefix(readyB, "503 ") || !strings.Contains(readyB, "lost") {
		t.Fatalf("the new instance's readyz: %s", readyB)
	}
	for range 20 {
		for _, c := range creds {
			req, _ := http.NewRequest(http.MethodPost, "http://"+dataB+c.path, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+c.cred)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("the new instance does not answer %s: %v", c.name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("the new instance answered %s with %d (Retry-After %q), want 503 with Retry-After", c.name, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
		check(a, []int{503, 503, 503})
		time.Sleep(50 * time.Millisecond)
	}
	if now := srv.Do(t, "GET", "{scoregate}:secret"); now != "" && now != secret {
		t.Fatal("an instance made a new hashing secret")
	}
	resp, err := http.Get(a.adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "lost") {
		t.Errorf("the running instance's readyz: %d %s", resp.StatusCode, body)
	}
	for _, u := range []string{a.adminURL, "http://" + adminB} {
		if m := metricsText(t, u); !strings.Contains(m, "\nscoregate_shared_state_lost 1\n") && !strings.Contains(m, "\nscoregate_shared_state_lost{") {
			t.Errorf("%s/metrics has no scoregate_shared_state_lost 1:\n%s", u, grepLines(m, "shared_state"))
		}
	}
	if n := strings.Count(a.stderr.String(), lostLogA); n != 1 {
		t.Errorf("the running instance logged the loss %d times, want once:\n%s", n, a.stderr)
	}

	// Recovery: a new store, deliberately; the waiting instance starts, the running one after a restart.
	out, errOut, code := runCLI(t, nil, "store", "reinit", "-config", cfgA)
	if code != 0 || !strings.Contains(out, "new store id") {
		t.Fatalf("store reinit: %d\n%s%s", code, out, errOut)
	}
	if _, _, code := runCLI(t, nil, "store", "reinit", "-config", cfgA); code != 1 {
		t.Errorf("store reinit of a store that lost nothing: exit %d, want 1", code)
	}
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(b.stderr.String(), `"msg":"gateway started"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the waiting instance did not start after the recovery:\n%s", b.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(b.stderr.String(), lostLogB); n != 1 {
		t.Errorf("the new instance logged the loss %d times, want once:\n%s", n, b.stderr)
	}
	check(a, []int{503, 503, 503}) // until restarted
	a.stop(t, syscall.SIGTERM)
	a = start(t, env, "serve", "-config", cfgA)
	for _, p := range []*proc{a, b} {
		check(p, []int{401, 401, 401})
	}
	adminCall(t, a, "POST", "/v1/services/iris/keys/primary/regenerate", "", &k)
	deadline = time.Now().Add(5 * time.Second)
	for status(t, b.dataURL+"/api/v1/service/iris/score", k.Key) != 200 || status(t, a.dataURL+"/api/v1/service/iris/score", k.Key) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("a key regenerated after the recovery does not work on both instances")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.stop(t, syscall.SIGTERM)
	b.stop(t, syscall.SIGTERM)
}

// launch runs the gateway with args and env without waiting for it to start.
func launch(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(gatewayBin, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func metricsText(t *testing.T, adminURL string) string {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return "\n" + string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Issue 17, finding 4: at start, a Redis that may evict the gateway's keys (a maxmemory-policy
// other than noeviction) is reported in one warning; where CONFIG GET is denied, as on managed
// Redis, the gateway starts without a word about it.
func TestFinding4EvictionPolicyWarning(t *testing.T) {
	const warning = "Redis may evict the gateway's keys when it runs out of memory; set maxmemory-policy to noeviction (a lost revocation would be refused as lost data, with 503s)"
	const user = "user gateway on >gateway-secret-0123456789 ~{scoregate}:* ~scoregate:rl:* &{scoregate}:changes " +
		"-@all +@read +@write +@pubsub +@transaction +@scripting -@dangerous +ping +hello +wait +time"
	for _, tc := range []struct {
		name  string
		opts  []redistest.Option
		user  bool
		warns bool
	}{
		{"noeviction", []redistest.Option{redistest.WithArgs("--maxmemory-policy", "noeviction")}, false, false},
		{"allkeys-lru", []redistest.Option{redistest.WithArgs("--maxmemory-policy", "allkeys-lru")}, false, true},
		{"CONFIG denied to the gateway's user", []redistest.Option{redistest.WithArgs("--maxmemory-policy", "allkeys-lru"),
			redistest.WithACL("user default on nopass ~* &* +@all", user)}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, tc.opts...)
			url := srv.URL()
			if tc.user {
				url = strings.Replace(url, "redis://", "redis://gateway:gateway-secret-0123456789@", 1)
			}
			_, upstream := newRecorder(t)
			p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", writeSharedConfig(t, t.TempDir(), url, upstream.URL))
			if n := strings.Count(p.stderr.String(), warning); n != map[bool]int{true: 1}[tc.warns] {
				t.Errorf("the eviction warning appears %d times:\n%s", n, p.stderr)
			}
			if tc.warns && !strings.Contains(p.stderr.String(), `"maxmemory_policy":"allkeys-lru"`) {
				t.Errorf("the warning does not name the policy:\n%s", p.stderr)
			}
			p.stop(t, syscall.SIGTERM)
		})
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Acceptance 2 and 3: the contract's minimal config, keys made through the CLI, primary and
// secondary both good, regeneration stopping the old value at once, keys surviving a restart and
// the store holding no key in clear.
func TestServeKeyLifecycle(t *testing.T) {
	dir := t.TempDir()
	rec, upstream := newRecorder(t)
	cfgPath := writeConfig(t, dir, upstream.URL, "")
	p := start(t, nil, "serve", "-config", cfgPath)

	adminKeyBytes, err := os.ReadFile(filepath.Join(dir, "data", "admin.key"))
	if err != nil {
		t.Fatalf("the generated admin key: %v", err)
	}
	adminKey := strings.TrimSpace(string(adminKeyBytes))
	if strings.Contains(p.stderr.String(), adminKey) {
		t.Fatal("the admin key was logged")
	}

	scoreURL := p.dataURL + "/api/v1/service/iris/score?threshold=0.5"
	if resp, _ := score(t, scoreURL, ""); resp.StatusCode != 401 {
		t.Fatalf("before any key: %d, want 401", resp.StatusCode)
	}
	primary := regenerateKey(t, p, adminKey, "primary")
	secondary := regenerateKey(t, p, adminKey, "secondary")

	for name, key := range map[string]string{"primary": primary, "secondary": secondary} {
		resp, body := score(t, scoreURL, key)
		if resp.StatusCode != 200 {
			t.Fatalf("%s key: %d %s", name, resp.StatusCode, body)
		}
		got := rec.last()
		if got.URL.RequestURI() != "/score?threshold=0.5" {
			t.Errorf("model saw %q, want /score?threshold=0.5", got.URL.RequestURI())
		}
		if v := got.Header.Get("Authorization"); v != "" {
			t.Errorf("model saw Authorization %q", v)
		}
		if id := got.Header.Get("X-Request-Id"); id == "" || id != resp.Header.Get("X-Request-Id") || id != resp.Header.Get("X-Ms-Request-Id") {
			t.Errorf("request id: model %q, response %q / %q", id, resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Ms-Request-Id"))
		}
	}

	// The key list shows metadata, never a secret.
	out, errOut, code := runCLI(t, []string{"GATEWAY_ADMIN_KEY=" + adminKey}, "keys", "-admin", p.adminURL, "list", "iris")
	if code != 0 {
		t.Fatalf("keys list: exit %d: %s", code, errOut)
	}
	if strings.Contains(out, primary[20:]) || strings.Contains(out, secondary[20:]) {
		t.Fatal("keys list printed a secret")
	}
	var list struct {
		Primary, Secondary struct{ ID, CreatedAt, LastUsedAt string }
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Primary.ID == "" || list.Secondary.CreatedAt == "" || list.Primary.LastUsedAt == "" {
		t.Fatalf("keys list = %s (%v)", out, err)
	}

	// Regenerating the primary: the old value fails at once, the secondary keeps working.
	newPrimary := regenerateKey(t, p, adminKey, "primary")
	before := rec.count()
	if resp, _ := score(t, scoreURL, primary); resp.StatusCode != 401 {
		t.Fatalf("old primary after regeneration: %d, want 401", resp.StatusCode)
	}
	if rec.count() != before {
		t.Fatal("a refused request reached the model")
	}
	for _, key := range []string{newPrimary, secondary} {
		if resp, _ := score(t, scoreURL, key); resp.StatusCode != 200 {
			t.Fatalf("after regeneration: %d, want 200", resp.StatusCode)
		}
	}

	// Keys survive a restart.
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.stderr)
	}
	p2 := start(t, nil, "serve", "-config", cfgPath)
	scoreURL = p2.dataURL + "/api/v1/service/iris/score"
	for _, key := range []string{newPrimary, secondary} {
		if resp, body := score(t, scoreURL, key); resp.StatusCode != 200 {
			t.Fatalf("after restart: %d %s", resp.StatusCode, body)
		}
	}
	if resp, _ := score(t, scoreURL, primary); resp.StatusCode != 401 {
		t.Fatalf("the replaced primary works again after restart: %d", resp.StatusCode)
	}
	p2.stop(t, syscall.SIGTERM)

	raw, err := os.ReadFile(filepath.Join(dir, "data", "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{primary, secondary, newPrimary} {
		if bytes.Contains(raw, []byte(key)) || bytes.Contains(raw, []byte(key[17:60])) {
			t.Fatal("the store file holds a key in clear")
		}
	}
	for _, p := range []*proc{p, p2} {
		for _, key := range []string{primary, secondary, newPrimary, adminKey} {
			if strings.Contains(p.stderr.String(), key) || strings.Contains(p.stdout.String(), key) {
				t.Fatal("a key appeared in the gateway's output")
			}
		}
	}
}

// Acceptance 5: a request in flight when SIGTERM arrives completes with 200, /readyz turns 503
// during the drain, and the process exits 0.
func TestSIGTERMLetsInFlightRequestFinish(t *testing.T) {
	dir := t.TempDir()
	rec, upstream := newRecorder(t)
	rec.delay = 1500 * time.Millisecond
	cfgPath := writeConfig(t, dir, upstream.URL, "    scoring_timeout: 30s\n")
	os.WriteFile(cfgPath, append(mustRead(t, cfgPath), []byte("server:\n  drain_delay: 300ms\n")...), 0o600)
	adminKey := "test-admin-key-0123456789abcdefghijklmnop"
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + adminKey}, "serve", "-config", cfgPath)
	key := regenerateKey(t, p, adminKey, "primary")

	type result struct {
		status int
		body   string
	}
	res := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, p.dataURL+"/api/v1/service/iris/score", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res <- result{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		res <- result{resp.StatusCode, b.String()}
	}()
	select {
	case <-rec.seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the model")
	}
	p.cmd.Process.Signal(syscall.SIGTERM)

	// While draining, /readyz says 503.
	sawDraining := false
	for i := 0; i < 100 && !sawDraining; i++ {
		resp, err := http.Get(p.adminURL + "/readyz")
		if err != nil {
			break // the admin listener has closed
		}
		resp.Body.Close()
		sawDraining = resp.StatusCode == 503
		time.Sleep(5 * time.Millisecond)
	}
	if !sawDraining {
		t.Error("/readyz never answered 503 during the drain")
	}

	r := <-res
	if r.status != 200 {
		t.Fatalf("in-flight request: %d %s", r.status, r.body)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not exit")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.stderr)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Acceptance 1: quickstart prints a curl line that returns the model's score; without the key
// the answer is 401 JSON with WWW-Authenticate: Bearer.
func TestQuickstart(t *testing.T) {
	dir := t.TempDir()
	p := start(t, nil, "quickstart", "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-dir", filepath.Join(dir, "qs"))
	var out string
	for i := 0; i < 200; i++ {
		if out = p.stdout.String(); strings.Contains(out, "Ctrl-C") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The printed status page answers with its login form.
	page := regexp.MustCompile(`status page  (http://\S+/ui/) `).FindStringSubmatch(out)
	if page == nil {
		t.Fatalf("no status page line in:\n%s", out)
	}
	if resp, err := http.Get(page[1]); err != nil || resp.StatusCode != 200 || resp.Request.URL.Path != "/ui/login" {
		t.Fatalf("the printed status page %s: %v %v", page[1], resp, err)
	} else {
		resp.Body.Close()
	}
	curlLine := regexp.MustCompile(`(?s)curl .*?/api/v1/service/demo/score`).FindString(out)
	if curlLine == "" {
		t.Fatalf("no curl line in:\n%s", out)
	}
	curlLine = strings.ReplaceAll(curlLine, "\\\n", " ")
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed; cannot run the printed line")
	}
	got, err := exec.Command("sh", "-c", curlLine).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", curlLine, err, got)
	}
	var scored struct {
		Probabilities []float64
		Labels        []int
	}
	if err := json.Unmarshal(got, &scored); err != nil || len(scored.Probabilities) != 2 || len(scored.Labels) != 2 {
		t.Fatalf("curl printed %s (%v)", got, err)
	}
	if scored.Labels[0] != 1 || scored.Labels[1] != 0 {
		t.Errorf("the sample model labelled the example rows %v, want [1 0]", scored.Labels)
	}

	noKey := regexp.MustCompile(`-H 'Authorization: Bearer [^']*' `).ReplaceAllString(curlLine, "")
	noKey = strings.Replace(noKey, "curl -sS", "curl -sS -i", 1)
	got, err = exec.Command("sh", "-c", noKey).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", noKey, err, got)
	}
	resp := string(got)
	if !strings.HasPrefix(resp, "HTTP/1.1 401") || !strings.Contains(resp, `Www-Authenticate: Bearer realm="scoregate"`) ||
		!strings.Contains(resp, `{"error":{"code":"Unauthorized"`) {
		t.Fatalf("without the key:\n%s", resp)
	}
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("quickstart exit %d after Ctrl-C\n%s", code, p.stderr)
	}
}

// Acceptance 4: check-config prints every problem with its path.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`listen: "127.0.0.1:8080"
admin_listen: "127.0.0.1:8080"
services:
  - name: Iris
    auth: keys
    upstreams: ["ftp://127.0.0.1:5001"]
`), 0o600)
	out, errOut, code := runCLI(t, nil, "check-config", "-config", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"admin_listen: must differ from listen", `services[0].name: "Iris"`, `services[0].auth: "keys"`, `services[0].upstreams[0]: "ftp://127.0.0.1:5001"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	good := writeConfig(t, dir, "http://127.0.0.1:5001", "")
	out, _, code = runCLI(t, nil, "check-config", "-config", good)
	if code != 0 || strings.TrimSpace(out) != "configuration is valid" {
		t.Fatalf("valid file: exit %d, %q", code, out)
	}

	_, errOut, code = runCLI(t, nil, "check-config")
	if code != 2 || !strings.Contains(errOut, "-config") {
		t.Fatalf("no -config: exit %d, %q", code, errOut)
	}
	_, errOut, code = runCLI(t, nil, "serve", "-config", bad)
	if code != 1 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("serve with a bad file: exit %d, want 1 and one line:\n%s", code, errOut)
	}
}

func TestVersionAndUsage(t *testing.T) {
	out, _, code := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "scoregate ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
	if _, _, code := runCLI(t, nil, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
	if _, _, code := runCLI(t, nil); code != 2 {
		t.Fatalf("no command: exit %d, want 2", code)
	}
	_, errOut, code := runCLI(t, []string{"GATEWAY_ADMIN_KEY="}, "keys", "list", "iris")
	if code != 2 || !strings.Contains(errOut, "GATEWAY_ADMIN_KEY") {
		t.Fatalf("keys without a credential: exit %d %q", code, errOut)
	}
}

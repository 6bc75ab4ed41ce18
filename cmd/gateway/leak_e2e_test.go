package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// The leakage rows of the threat model (docs/threat-model.md), through the gateway binary: a
// credential (or a unique canary standing in for one) must appear in no Redis command, span, log
// line, metric or response.

// newCanary returns a unique marker that starts with "CANARY" and is made of base62 characters only,
// so that it can stand inside a key, a token, a password or a header value unchanged.
func newCanary(what string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return "CANARY" + what + strings.ToUpper(hex.EncodeToString(b))
}

// The layout of a key: sgk_<12 id>_<43 secret><6 checksum>.
const (
	keyIDStart     = 4
	keyIDEnd       = 16
	keySecretStart = 17
	keySecretEnd   = 60
	keyLength      = 66
)

const base62Digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// withChecksum appends a key body's base62 CRC-32, so that the key passes the format check and
// is refused (if at all) only on its hash.
func withChecksum(body string) string {
	sum := uint64(crc32.ChecksumIEEE([]byte(body)))
	var d [6]byte
	for i := 5; i >= 0; i-- {
		d[i] = base62Digits[sum%62]
		sum /= 62
	}
	return body + string(d[:])
}

// changeSecret returns key with one character of its secret changed and the checksum made
// valid again: the same key id, a wrong secret.
func changeSecret(key string, pos int) string {
	b := []byte(key[:keyLength-6])
	b[pos] = base62Digits[(strings.IndexByte(base62Digits, b[pos])+1)%62]
	return withChecksum(string(b))
}

// randomBase62 returns n random base62 characters.
func randomBase62(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = base62Digits[int(b[i])%62]
	}
	return string(b)
}

// sendCred makes one request with an optional bearer credential and returns its status and
// X-Request-Id.
func sendCred(t *testing.T, method, url, cred string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(`{"data": [[1, 2, 3, 4]]}`))
	req.Header.Set("Content-Type", "application/json")
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Request-Id")
}

// mintOnDataPlane asks service's token route for a token with a principal's key.
func mintOnDataPlane(t *testing.T, p *proc, service, principalKey string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.dataURL+"/api/v1/service/"+service+"/token", nil)
	req.Header.Set("Authorization", "Bearer "+principalKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct{ AccessToken string }
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != 200 || tr.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return tr.AccessToken
}

// rawRequest writes b on a fresh connection to addr and returns everything the gateway answers
// until it closes the connection (or 5s pass).
func rawRequest(t *testing.T, addr string, b []byte) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(conn)
	return string(out)
}

// jwtSegment is base64url (no padding) of v's JSON.
func jwtSegment(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// findLeaks returns "<what> in <where>" for every secret found in any place.
func findLeaks(places map[string]string, secrets map[string]string) []string {
	var out []string
	for _, where := range slices.Sorted(maps.Keys(places)) {
		for _, what := range slices.Sorted(maps.Keys(secrets)) {
			if s := secrets[what]; s != "" && strings.Contains(places[where], s) {
				out = append(out, what+" in "+where)
			}
		}
	}
	return out
}

// keySecrets adds a key, its secret part and its secret with the checksum to secrets.
func keySecrets(secrets map[string]string, name, key string) {
	secrets[name] = key
	secrets[name+" (secret part)"] = key[keySecretStart:keySecretEnd]
	secrets[name+" (secret and checksum)"] = key[keySecretStart:]
}

// tokenSecrets adds a token, its signature and its signing input to secrets.
func tokenSecrets(secrets map[string]string, name, tok string) {
	parts := strings.Split(tok, ".")
	secrets[name] = tok
	if len(parts) == 3 {
		secrets[name+" (signature)"] = parts[2]
		secrets[name+" (signing input)"] = parts[0] + "." + parts[1]
	}
}

// KEY-06: while keys are made, used (accepted and refused), rotated and rate-limited, and tokens
// minted, used, revoked, on a gateway sharing its state through Redis, Redis sees keys and
// tokens only by id (and keyed hash), never a key's secret part or a token; the spans carry no
// more than a key's id.
func TestKEY06LookupLeakageThroughTheBinary(t *testing.T) {
	srv := redistest.Start(t)
	mon := redistest.StartMonitor(t, srv.Addr)
	rcv := newOTLPReceiver(t)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(cfgPath, fmt.Appendf(nil, `listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
store:
  dir: %q
  redis_url: %q
  resync_interval: 250ms
telemetry:
  access_log: true
services:
  - name: iris
    auth: key
    upstreams: [%q]
    rate_limit:
      per_key: {requests_per_second: 10000, burst: 1000}
  - name: scoring
    auth: token
    upstreams: [%q]
    rate_limit:
      per_principal: {requests_per_second: 10000, burst: 1000}
`, filepath.Join(dir, "data"), srv.URL(), upstream.URL, upstream.URL), 0o600)
	p := start(t, rcv.env(sharedOwnerKey), "serve", "-config", cfgPath)
	iris, scoring := p.dataURL+"/api/v1/service/iris/score", p.dataURL+"/api/v1/service/scoring/score"

	var primary, secondary, replacement, principal struct{ Key string }
	adminCall(t, p, "POST", "/v1/services/iris/keys/primary/regenerate", "", &primary)
	adminCall(t, p, "POST", "/v1/services/iris/keys/secondary/regenerate", "", &secondary)
	if s := adminCall(t, p, "POST", "/v1/principals", `{"name": "kim", "role": "reader"}`, &principal); s != 201 {
		t.Fatalf("create principal: %d", s)
	}
	tok := mintOnDataPlane(t, p, "scoring", principal.Key)
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))
	wrong := changeSecret(primary.Key, keySecretStart+7)
	var jti struct{ JTI string }
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	json.Unmarshal(claims, &jti)

	requests := 0
	expect := func(url, cred string, want int) {
		t.Helper()
		requests++
		if got, _ := sendCred(t, "POST", url, cred, nil); got != want {
			t.Fatalf("%d, want %d", got, want)
		}
	}
	for range 5 {
		expect(iris, primary.Key, 200)
		expect(iris, secondary.Key, 200)
		expect(iris, wrong, 401)
		expect(iris, principal.Key, 401)
		expect(scoring, tok, 200)
		expect(scoring, forged, 401)
		expect(scoring, primary.Key, 401)
	}
	if s := adminCall(t, p, "POST", "/v1/tokens/revoke", `{"token": "`+tok+`"}`, nil); s != 200 {
		t.Fatalf("revoke: %d", s)
	}
	expect(scoring, tok, 401)
	adminCall(t, p, "POST", "/v1/services/iris/keys/primary/regenerate", "", &replacement)
	expect(iris, primary.Key, 401)
	expect(iris, replacement.Key, 200)
	if s := adminCall(t, p, "DELETE", "/v1/principals/kim", "", nil); s != 204 {
		t.Fatalf("delete principal: %d", s)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 { // flushes last-use times and spans
		t.Fatalf("exit %d\n%s", code, p.stderr)
	}
	seen := mon.Stop()
	spans, raw := rcv.received()

	// What should be there is: the search has teeth.
	lower := strings.ToLower(seen)
	for what, want := range map[string]string{
		"the primary's id":         primary.Key[keyIDStart:keyIDEnd],
		"the secondary's id":       secondary.Key[keyIDStart:keyIDEnd],
		"the principal's key id":   principal.Key[keyIDStart:keyIDEnd],
		"the revoked token's jti":  jti.JTI,
		"a script (rate limit)":    "evalsha",
		"the key records (HSET)":   `"hset"`,
		"the revocation (ZADD)":    "zadd",
		"the change notices (PUB)": "publish",
	} {
		if want == "" || !strings.Contains(lower, strings.ToLower(want)) {
			t.Errorf("MONITOR never saw %s (%q); the search below would prove nothing", what, want)
		}
	}
	if len(spans) < requests {
		t.Errorf("%d spans for %d data-plane requests", len(spans), requests)
	}

	secrets := map[string]string{"the owner key": sharedOwnerKey}
	keySecrets(secrets, "the primary", primary.Key)
	keySecrets(secrets, "the secondary", secondary.Key)
	keySecrets(secrets, "the replacement primary", replacement.Key)
	keySecrets(secrets, "the wrong key", wrong)
	keySecrets(secrets, "the principal key", principal.Key)
	tokenSecrets(secrets, "the token", tok)
	tokenSecrets(secrets, "the forged token", forged)
	secrets["the token's claims"] = parts[1]
	for _, leak := range findLeaks(map[string]string{
		"a Redis command": seen, "the spans": raw, "stderr": p.stderr.String(), "stdout": p.stdout.String(),
	}, secrets) {
		t.Error(leak)
	}
	// Span attributes: at most a key's id, never more of it.
	for _, s := range spans {
		for k, v := range attrs(s) {
			for _, key := range []string{primary.Key, secondary.Key, replacement.Key, wrong, principal.Key} {
				if sv, ok := v.(string); ok && strings.Contains(sv, key[keyIDStart:keyIDEnd]+"_") {
					t.Errorf("span attribute %s carries more of a key than its id: %q", k, sv)
				}
			}
		}
	}
	t.Logf("MONITOR saw %d commands and the collector %d spans; no key secret, token or signature among them", strings.Count(seen, "\n"), len(spans))
}

// LOG-02: requests fasthttp cannot parse, each carrying a canary credential. fasthttp logs the
// raw bytes of a bad request unless Server.SecureErrorLogMessage is set, and some of its errors
// quote the offending line even then. The canary must appear in no response, no log line (at
// debug level, where refusals are logged with their cause), no span.
func TestLOG02ParseErrorsDoNotLeak(t *testing.T) {
	rcv := newOTLPReceiver(t)
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, upstream.URL, "log:\n  level: debug\ntelemetry:\n  access_log: true\n")
	p := start(t, rcv.env(sharedOwnerKey), "serve", "-config", cfgPath)
	key := regenerateKey(t, p, sharedOwnerKey, "primary")
	addr := strings.TrimPrefix(p.dataURL, "http://")

	pad := strings.Repeat("p", 20<<10) // over max_header_bytes (16 KiB)
	cases := []struct {
		name, raw string // %s is the canary
	}{
		{"a bad header line after the Authorization header",
			"POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\r\nBad Header Line\r\nContent-Length: 0\r\n\r\n"},
		{"X-API-Key, then a bad header line",
			"POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nX-API-Key: %s\r\nno colon here\r\n\r\n"},
		{"a Cookie, then a space before a colon",
			"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nCookie: session=%s\r\nX-Bad : y\r\n\r\n"},
		{"a request line without a version, the Authorization header after it",
			"GET /api/v1/service/iris/score\r\nAuthorization: Bearer %s\r\n\r\n"},
		{"an Authorization line without its colon",
			"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nAuthorization Bearer %s\r\n\r\n"},
		{"a control character in the Authorization value",
			"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\x01x\r\n\r\n"},
		{"an invalid method, the canary in the query",
			"G(T /api/v1/service/iris/score?api-key=%s HTTP/1.1\r\nHost: gw.test\r\n\r\n"},
		{"an unsupported HTTP version, the Authorization header after it",
			"GET /api/v1/service/iris/score HTTP/7.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\r\n\r\n"},
		{"headers over the limit after the Authorization header",
			"GET /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\r\nX-Pad: " + pad + "\r\n\r\n"},
		{"a bad Content-Length after the Authorization header",
			"POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer %s\r\nContent-Length: 1x\r\n\r\n"},
		{"a valid key, then a broken chunked body carrying the canary",
			"POST /api/v1/service/iris/score HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer " + key + "\r\nTransfer-Encoding: chunked\r\n\r\nzz%s\r\n\r\n"},
	}
	canaries := make([]string, len(cases))
	responses := make([]string, len(cases))
	for i, c := range cases {
		canaries[i] = newCanary("LOG02x")
		responses[i] = rawRequest(t, addr, fmt.Appendf(nil, c.raw, canaries[i]))
	}
	// A good request after them: the gateway still serves.
	if s, _ := sendCred(t, "POST", p.dataURL+"/api/v1/service/iris/score", key, nil); s != 200 {
		t.Fatalf("a good request after the bad ones: %d", s)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 { // flushes the spans
		t.Fatalf("exit %d", code)
	}
	_, raw := rcv.received()
	stderr, stdout := p.stderr.String(), p.stdout.String()

	// The places searched hold what they should: fasthttp's own complaints reach the log, the
	// refusals are spans and access-log lines.
	if !strings.Contains(stderr, `"component":"fasthttp"`) || !strings.Contains(stderr, "bad_request") || !strings.Contains(raw, "bad_request") {
		t.Fatalf("the log or the spans lack the refusals; the search would prove nothing\n%s", stderr)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := responses[i]
			if !strings.HasPrefix(resp, "HTTP/1.1 4") {
				t.Errorf("answer %.60q, want a 4xx", resp)
			}
			for _, leak := range findLeaks(map[string]string{
				"the response": resp, "stderr": stderr, "stdout": stdout, "the spans": raw,
			}, map[string]string{"the canary": canaries[i]}) {
				t.Error(leak)
			}
			for l := range strings.Lines(stderr) {
				if strings.Contains(l, canaries[i]) {
					t.Logf("the log line: %.400s", strings.TrimSpace(l))
				}
			}
		})
	}
	for _, leak := range findLeaks(map[string]string{"stderr": stderr, "stdout": stdout, "the spans": raw}, map[string]string{"the key": key, "its secret": key[keySecretStart:keySecretEnd]}) {
		t.Error(leak)
	}
}

// runUntil runs the gateway with args and env, waits (up to 30s) until ready reports true on its
// stderr so far, calls then (if not nil), sends SIGTERM and returns what it wrote and its exit
// code.
func runUntil(t *testing.T, env []string, ready func(stderr string) bool, then func(), args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(gatewayBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e lockedBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for !ready(e.String()) {
		select {
		case <-done:
			t.Fatalf("the gateway exited early: %s\n%s", cmd.ProcessState, e.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("not ready within 30s:\n%s", e.String())
		}
	}
	if then != nil {
		then()
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the gateway did not stop on SIGTERM:\n%s", e.String())
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// LOG-05: canary secrets in every place the configuration takes one (the Redis password in
// store.redis_url, in store.redis_password and in GATEWAY_STORE_REDIS_PASSWORD; the installation
// secret keys are hashed with, the pepper, as stored in Redis; the ACME EAB HMAC key; the Owner
// key; an OTLP exporter header) never reach stdout or stderr: not from check-config (valid or
// not), serve while Redis is unreachable or refuses the password (the connection errors), serve
// running with every one of them (with debug logging, the ACME directory and the OTLP collector
// unreachable), store copy, version, or /readyz. The CLI has no config dump.
func TestLOG05StartupAndConfigNeverPrintSecrets(t *testing.T) {
	redisPW, envPW, pepper := newCanary("LOG05redisPW"), newCanary("LOG05envPW"), newCanary("LOG05pepper")
	eabMAC, ownerKey, otlpHeader := newCanary("LOG05eab"), newCanary("LOG05ownerKey"), newCanary("LOG05otlp")
	secrets := map[string]string{
		"the Redis password (URL)": redisPW, "the Redis password (environment)": envPW, "the pepper": pepper,
		"the ACME EAB MAC key": eabMAC, "the Owner key": ownerKey, "the OTLP header": otlpHeader,
	}
	env := []string{
		"GATEWAY_ADMIN_KEY=" + ownerKey,
		"GATEWAY_STORE_REDIS_PASSWORD=" + envPW,
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20" + otlpHeader,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + closedPort(t),
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
	}
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	down := closedPort(t)
	tlsListen := closedPort(t)
	acme := fmt.Sprintf(`tls:
  listen: %q
  redirect_http: false
  acme:
    names: ["scoring.example.test"]
    directory: "https://%s/directory"
    eab_key_id: "kid-log05"
    eab_mac_key: %q
`, tlsListen, closedPort(t), eabMAC)
	write := func(name, storeLines, extra string) string {
		path := filepath.Join(dir, name+".yaml")
		os.WriteFile(path, fmt.Appendf(nil, `listen: "127.0.0.1:0"
admin_listen: %q
log:
  level: debug
store:
  dir: %q
  redis_timeout: 500ms
%s%s
services:
  - name: iris
    auth: key
    upstreams: [%q]
`, freeAddr(t), filepath.Join(dir, name), storeLines, extra, upstream.URL), 0o600)
		return path
	}
	var out strings.Builder
	record := func(what, stdout, stderr string) {
		fmt.Fprintf(&out, "=== %s\n--- stdout\n%s--- stderr\n%s", what, stdout, stderr)
	}
	readyz := func(cfgPath string) func() {
		return func() {
			cfg, _ := os.ReadFile(cfgPath)
			var addr string
			for l := range strings.Lines(string(cfg)) {
				if a, ok := strings.CutPrefix(strings.TrimSpace(l), "admin_listen: "); ok {
					addr = strings.Trim(a, `"`)
				}
			}
			time.Sleep(2500 * time.Millisecond) // a retry or two, so that readyz has their error
			resp, err := http.Get("http://" + addr + "/readyz")
			if err != nil {
				t.Errorf("readyz: %v", err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			record("readyz of "+filepath.Base(cfgPath), string(b), "")
			if !strings.Contains(string(b), "Redis") {
				t.Errorf("readyz says %s; want the Redis error", b)
			}
		}
	}
	unreachable := func(s string) bool { return strings.Contains(s, "the Redis store is unreachable") }

	t.Run("check-config", func(t *testing.T) {
		good := write("good", fmt.Sprintf("  redis_url: \"redis://gateway:%s@%s/0\"\n", redisPW, down), acme)
		o, e, code := runCLI(t, env, "check-config", "-config", good)
		record("check-config, valid", o, e)
		if code != 0 {
			t.Errorf("check-config of a valid file: exit %d %s %s", code, o, e)
		}
		bad := write("bad", fmt.Sprintf("  redis_url: \"http://gateway:%s@%s/0\"\n  redis_password: %q\n", redisPW, down, redisPW),
			strings.Replace(acme, `eab_key_id: "kid-log05"`, `eab_key_id: ""`, 1))
		o, e, code = runCLI(t, env, "check-config", "-config", bad)
		record("check-config, invalid", o, e)
		if code != 1 || !strings.Contains(o, "store.redis_url") || !strings.Contains(o, "eab_key_id") {
			t.Errorf("check-config of an invalid file: exit %d %s %s", code, o, e)
		}
		notYAML := filepath.Join(dir, "notyaml.yaml")
		os.WriteFile(notYAML, fmt.Appendf(nil, "store:\n  redis_password: \"%s\n  redis_url: [%s\n", redisPW, redisPW), 0o600)
		o, e, code = runCLI(t, env, "check-config", "-config", notYAML)
		record("check-config, not YAML", o, e)
		if code != 1 {
			t.Errorf("check-config of a broken file: exit %d", code)
		}
		o, e, code = runCLI(t, env, "serve", "-config", bad)
		record("serve, invalid", o, e)
		if code != 1 {
			t.Errorf("serve of an invalid file: exit %d", code)
		}
	})

	t.Run("serve, Redis unreachable, password in the URL", func(t *testing.T) {
		cfg := write("urlpw", fmt.Sprintf("  redis_url: \"redis://gateway:%s@%s/0\"\n", redisPW, down), "")
		o, e, code := runUntil(t, env, unreachable, readyz(cfg), "serve", "-config", cfg)
		record("serve, unreachable, URL", o, e)
		if code != 1 || !strings.Contains(e, "waiting for the Redis store") {
			t.Errorf("exit %d, want 1 and the error on stderr:\n%s", code, e)
		}
	})

	t.Run("serve, Redis unreachable, password from the environment", func(t *testing.T) {
		cfg := write("envpw", fmt.Sprintf("  redis_addrs: [%q]\n  redis_username: gateway\n", down), "")
		o, e, code := runUntil(t, env, unreachable, readyz(cfg), "serve", "-config", cfg)
		record("serve, unreachable, environment", o, e)
		if code != 1 {
			t.Errorf("exit %d", code)
		}
	})

	t.Run("serve, Redis refuses the password", func(t *testing.T) {
		srv := redistest.Start(t, redistest.WithPassword("the-right-one-"+randomBase62(16)))
		cfg := write("wrongpw", fmt.Sprintf("  redis_url: \"redis://default:%s@%s/0\"\n", redisPW, srv.Addr), "")
		o, e, code := runUntil(t, env, unreachable, readyz(cfg), "serve", "-config", cfg)
		record("serve, wrong password", o, e)
		if code != 1 || !strings.Contains(strings.ToUpper(e), "WRONGPASS") {
			t.Errorf("exit %d, want 1 and Redis's refusal on stderr:\n%s", code, e)
		}
	})

	t.Run("serve with every secret, store copy, version", func(t *testing.T) {
		srv := redistest.Start(t, redistest.WithPassword(redisPW))
		srv.Do(t, "SET", "{scoregate}:secret", pepper) // the installation secret keys are hashed with
		cfg := write("running", fmt.Sprintf("  redis_url: \"redis://default:%s@%s/0\"\n", redisPW, srv.Addr), acme)
		p := start(t, env, "serve", "-config", cfg)
		var nk struct{ Key string }
		req, _ := http.NewRequest("POST", p.adminURL+"/v1/services/iris/keys/primary/regenerate", nil)
		req.Header.Set("Authorization", "Bearer "+ownerKey)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("regenerate with the Owner key: %v %v", resp, err)
		} else {
			json.NewDecoder(resp.Body).Decode(&nk)
			resp.Body.Close()
		}
		for range 3 {
			if s, _ := sendCred(t, "POST", p.dataURL+"/api/v1/service/iris/score", nk.Key, nil); s != 200 {
				t.Fatalf("score: %d", s)
			}
		}
		time.Sleep(3 * time.Second) // the ACME order and the span upload fail meanwhile
		if code := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("exit %d", code)
		}
		record("serve, running", p.stdout.String(), p.stderr.String())
		if got := srv.Do(t, "GET", "{scoregate}:secret"); got != pepper {
			t.Fatalf("the installation secret is %q, not the canary: the test proves nothing", got)
		}

		o, e, code := runCLI(t, env, "store", "copy", "-config", write("copy", fmt.Sprintf("  redis_url: \"redis://gateway:%s@%s/0\"\n", redisPW, down), ""))
		record("store copy, unreachable", o, e)
		if code != 1 {
			t.Errorf("store copy to an unreachable Redis: exit %d", code)
		}
		o, e, code = runCLI(t, env, "version")
		record("version", o, e)
		if code != 0 {
			t.Errorf("version: exit %d", code)
		}
	})

	all := out.String()
	defer func() {
		if t.Failed() {
			t.Logf("everything the gateway printed:\n%s", all)
		}
	}()
	// The outputs hold the errors they should, so the search has teeth.
	for _, want := range []string{"connection refused", "WRONGPASS", "configuration is valid", "scoregate ", "acme", "gateway started"} {
		if !strings.Contains(strings.ToLower(all), strings.ToLower(want)) {
			t.Errorf("the outputs lack %q; the search would prove less than it claims", want)
		}
	}
	for _, leak := range findLeaks(map[string]string{"the outputs": all}, secrets) {
		where := ""
		for l := range strings.Lines(all) {
			for _, s := range secrets {
				if strings.Contains(l, s) {
					where = strings.TrimSpace(l)
				}
			}
		}
		t.Errorf("%s: %s", leak, where)
	}
}

// LOG-06: many distinct keys, tokens and subjects (accepted and refused) leave /metrics without
// any of them and with the same series as a handful did: no credential, subject or key id is a
// label, so neither a leak nor a cardinality explosion.
func TestLOG06MetricsCarryNoCredential(t *testing.T) {
	_, upstream := newRecorder(t)
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, upstream.URL, fmt.Sprintf(`  - name: scoring
    auth: token
    upstreams: [%q]
`, upstream.URL))
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + sharedOwnerKey}, "serve", "-config", cfgPath)
	iris, scoring := p.dataURL+"/api/v1/service/iris/score", p.dataURL+"/api/v1/service/scoring/score"
	secrets := map[string]string{"the owner key": sharedOwnerKey}
	var keyIDs []string
	round := func(name string, n int) {
		var sec struct{ Key string }
		adminCall(t, p, "POST", "/v1/services/iris/keys/secondary/regenerate", "", &sec)
		for i := range n {
			tag := fmt.Sprintf("%s%d", name, i)
			var k, pr struct{ Key string }
			adminCall(t, p, "POST", "/v1/services/iris/keys/primary/regenerate", "", &k)
			keySecrets(secrets, "key "+tag, k.Key)
			keyIDs = append(keyIDs, k.Key[keyIDStart:keyIDEnd])
			sub := newCanary("LOG06sub" + tag)
			if s := adminCall(t, p, "POST", "/v1/principals", `{"name": "`+sub+`", "role": "reader"}`, &pr); s != 201 {
				t.Fatalf("principal: %d", s)
			}
			keySecrets(secrets, "principal key "+tag, pr.Key)
			secrets["subject "+tag] = sub
			tok := mintOnDataPlane(t, p, "scoring", pr.Key)
			tokenSecrets(secrets, "token "+tag, tok)
			bogus := withChecksum("sgk_" + newCanary("k")[:12] + "_" + randomBase62(43))
			keySecrets(secrets, "unknown key "+tag, bogus)
			malformed := "sgk_" + newCanary("LOG06bad"+tag)
			secrets["malformed key "+tag] = malformed
			forgedSub := newCanary("LOG06forged" + tag)
			forged := jwtSegment(map[string]string{"alg": "EdDSA", "typ": "JWT", "kid": newCanary("kid")}) + "." +
				jwtSegment(map[string]any{"iss": "scoregate", "sub": forgedSub, "aud": "scoring", "jti": newCanary("jti"), "exp": time.Now().Add(time.Hour).Unix()}) +
				"." + base64.RawURLEncoding.EncodeToString([]byte(newCanary("sig")+newCanary("sig")))
			tokenSecrets(secrets, "forged token "+tag, forged)
			secrets["forged subject "+tag] = forgedSub
			for _, c := range []struct {
				url, cred string
				want      int
			}{
				{iris, k.Key, 200}, {iris, sec.Key, 200}, {iris, bogus, 401}, {iris, malformed, 401}, {iris, changeSecret(k.Key, keySecretStart), 401},
				{iris, "", 401}, {iris, tok, 401},
				{scoring, tok, 200}, {scoring, forged, 401}, {scoring, k.Key, 401},
			} {
				if s, _ := sendCred(t, "POST", c.url, c.cred, map[string]string{"X-API-Key": c.cred, "User-Agent": "client-" + tag}); s != c.want {
					t.Fatalf("%s: %d, want %d", c.url, s, c.want)
				}
			}
		}
	}
	scrape := func() (string, map[string]bool) {
		resp, err := http.Get(p.adminURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		series := map[string]bool{}
		for l := range strings.Lines(string(b)) {
			if l = strings.TrimSpace(l); l == "" || l[0] == '#' {
				continue
			}
			id := l[:strings.LastIndexByte(l, ' ')] // name{labels}
			if i := strings.LastIndexByte(id, '}'); i >= 0 {
				id = id[:i+1]
			}
			series[id] = true
		}
		return string(b), series
	}

	round("a", 5)
	text1, series1 := scrape()
	round("b", 60)
	text2, series2 := scrape()
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d", code)
	}

	if !strings.Contains(text2, "scoregate_auth_rejections_total") || !strings.Contains(text2, `service="scoring"`) {
		t.Fatalf("/metrics lacks the rejection counter or the service label; the search would prove nothing:\n%s", text2)
	}
	var grown []string
	for id := range series2 {
		if !series1[id] {
			grown = append(grown, id)
		}
	}
	slices.Sort(grown)
	if len(grown) > 0 || len(series2) != len(series1) {
		t.Errorf("/metrics grew from %d to %d series with the number of credentials; new: %q", len(series1), len(series2), grown)
	}
	for _, leak := range findLeaks(map[string]string{"/metrics (first scrape)": text1, "/metrics": text2}, secrets) {
		t.Error(leak)
	}
	for _, id := range keyIDs {
		if strings.Contains(text2, id) {
			t.Errorf("/metrics names key id %s: unbounded over regenerations", id)
			break
		}
	}
	if strings.Contains(text2, "CANARY") || strings.Contains(text2, "client-") {
		t.Error("/metrics carries a value the client chose")
	}
	t.Logf("%d distinct keys, principals, tokens and forged credentials sent; /metrics has %d series before and after", len(keyIDs), len(series2))
	if t.Failed() {
		t.Logf("series after the second round:\n%s", strings.Join(slices.Sorted(maps.Keys(series2)), "\n"))
	}
}

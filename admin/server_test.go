package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ownerKey = "owner-key-for-tests-0123456789abcdefghij"

type testEnv struct {
	keys       *authn.Keyring
	principals *authn.Principals
	tokens     *authn.Tokens
	// reload answers POST /v1/reload; by default it succeeds and changes nothing.
	reload func(ctx context.Context, initiator string) (ReloadResult, error)
	// stale makes the shared state's copy not current (Deps.Fresh reports false).
	stale atomic.Bool
	// usage is the store GET /v1/usage reads (an embedded store of its own).
	usage *authn.BoltStore
}

func newTestServer(t *testing.T) (*Server, *httptest.Server, *authn.Keyring) {
	s, hs, env := newTestEnv(t)
	return s, hs, env.keys
}

func newTestEnv(t *testing.T) (*Server, *httptest.Server, *testEnv) {
	t.Helper()
	cfg := &config.Config{
		Roles: []config.Role{{Name: "auditor", Permissions: []string{config.PermActivityRead}}},
		Services: []config.Service{
			{Name: "iris", Auth: config.AuthKey, Upstreams: []string{"http://127.0.0.1:5001"}},
			{Name: "open", Auth: config.AuthNone, Upstreams: []string{"http://127.0.0.1:5002", "http://127.0.0.1:5003"}},
			{Name: "scoring", Auth: config.AuthToken, Upstreams: []string{"http://127.0.0.1:5004"}},
		},
	}
	cfg.ApplyDefaults()
	keys, principals, activity, tokens := newAuthn(t, cfg)
	env := &testEnv{keys: keys, principals: principals, tokens: tokens}
	env.reload = func(context.Context, string) (ReloadResult, error) { return ReloadResult{}, nil }
	reload := func(ctx context.Context, initiator string) (ReloadResult, error) { return env.reload(ctx, initiator) }
	fresh := func() bool { return !env.stale.Load() }
	usage, err := authn.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { usage.Close() })
	env.usage = usage
	s := New(cfg, Deps{Keys: keys, Principals: principals, Tokens: tokens, Activity: activity, Reload: reload, Fresh: fresh, Usage: usage})
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, hs, env
}

// newAuthn is the gateway's keys, principals, activity log and tokens for cfg, over a fresh
// embedded store that closes with the test.
func newAuthn(t *testing.T, cfg *config.Config) (*authn.Keyring, *authn.Principals, *authn.ActivityLog, *authn.Tokens) {
	t.Helper()
	store, err := authn.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ctx := context.Background()
	keys, err := authn.NewKeyring(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	principals, err := authn.NewPrincipals(ctx, store, keys, authn.NewRoles(cfg), ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	activity := authn.NewActivityLog(store, nil)
	tokens, err := authn.NewTokens(ctx, cfg, store, principals, nil, authn.WithActivity(activity))
	if err != nil {
		t.Fatal(err)
	}
	return keys, principals, activity, tokens
}

func call(t *testing.T, hs *httptest.Server, method, path, key string) (int, http.Header, string) {
	t.Helper()
	return callWithHeaders(t, hs, method, path, key, "")
}

func TestAdminRequiresTheOwnerKey(t *testing.T) {
	_, hs, keys := newTestServer(t)
	serviceKey, _ := keys.Regenerate(context.Background(), "iris", authn.SlotPrimary)
	paths := []struct{ method, path string }{
		{"GET", "/v1/services"},
		{"GET", "/v1/services/iris/keys"},
		{"POST", "/v1/services/iris/keys/primary/regenerate"},
	}
	for _, p := range paths {
		for name, key := range map[string]string{"no key": "", "wrong key": "owner-key-for-tests-0123456789abcdefghiX", "a service key": serviceKey} {
			t.Run(p.path+" "+name, func(t *testing.T) {
				status, h, body := call(t, hs, p.method, p.path, key)
				if status != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(body, `"code": "Unauthorized"`) {
					t.Errorf("%d %q %s", status, h.Get("WWW-Authenticate"), body)
				}
			})
		}
	}
	// The refused regeneration changed nothing.
	if _, ok := keys.Verify("iris", []byte(serviceKey)); !ok {
		t.Error("a refused admin call replaced the key")
	}
}

func TestAdminKeys(t *testing.T) {
	_, hs, keys := newTestServer(t)

	status, _, body := call(t, hs, "GET", "/v1/services/iris/keys", ownerKey)
	if status != 200 || strings.TrimSpace(body) != "{\n  \"primary\": null,\n  \"secondary\": null\n}" {
		t.Fatalf("keys before any: %d %s", status, body)
	}

	status, h, body := call(t, hs, "POST", "/v1/services/iris/keys/primary/regenerate", ownerKey)
	var nk NewKey
	if status != 200 || json.Unmarshal([]byte(body), &nk) != nil || nk.Name != "primary" {
		t.Fatalf("regenerate: %d %s", status, body)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("a response carrying a key may be cached: Cache-Control %q", h.Get("Cache-Control"))
	}
	if _, ok := keys.Verify("iris", []byte(nk.Key)); !ok {
		t.Fatal("the key the API returned does not work")
	}

	// KEY-16: the secret is shown once; listing gives metadata only.
	status, _, body = call(t, hs, "GET", "/v1/services/iris/keys", ownerKey)
	if status != 200 || strings.Contains(body, nk.Key) || strings.Contains(body, nk.Key[17:]) {
		t.Fatalf("list: %d %s", status, body)
	}
	var ks KeySet
	if err := json.Unmarshal([]byte(body), &ks); err != nil || ks.Primary == nil || ks.Secondary != nil || ks.Primary.ID != nk.Key[4:16] {
		t.Fatalf("list decoded %+v (%v)", ks, err)
	}

	tests := []struct {
		name, method, path string
		status             int
	}{
		{"unknown service", "GET", "/v1/services/nope/keys", 404},
		{"service without keys", "GET", "/v1/services/open/keys", 409},
		{"unknown slot", "POST", "/v1/services/iris/keys/tertiary/regenerate", 404},
		{"regenerate with GET", "GET", "/v1/services/iris/keys/primary/regenerate", 405},
		{"unknown endpoint", "GET", "/v1/nothing", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := call(t, hs, tt.method, tt.path, ownerKey)
			if status != tt.status {
				t.Errorf("%d %s, want %d", status, body, tt.status)
			}
			if h.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", h.Get("Content-Type"))
			}
		})
	}
}

// A token is minted only on a current copy of the shared state: while the copy is past its
// staleness bound (or the store lost data), the principal's key may be one deleted meanwhile, so
// the admin token endpoint answers 503 as the data plane's does, and mints nothing.
func TestAdminMintsNoTokenOnAStaleCopy(t *testing.T) {
	_, hs, env := newTestEnv(t)
	env.stale.Store(true)
	status, h, body := call(t, hs, "POST", "/v1/services/scoring/token", ownerKey)
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || strings.Contains(body, "accessToken") {
		t.Fatalf("stale copy: %d, Retry-After %q, %s; want 503 with Retry-After and no token", status, h.Get("Retry-After"), body)
	}
	env.stale.Store(false)
	if status, _, body := call(t, hs, "POST", "/v1/services/scoring/token", ownerKey); status != http.StatusOK || !strings.Contains(body, "accessToken") {
		t.Fatalf("current copy: %d %s; want 200 with a token", status, body)
	}
}

func TestAdminServices(t *testing.T) {
	_, hs, _ := newTestServer(t)
	status, _, body := call(t, hs, "GET", "/v1/services", ownerKey)
	var got []ServiceInfo
	if status != 200 || json.Unmarshal([]byte(body), &got) != nil {
		t.Fatalf("%d %s", status, body)
	}
	want := []ServiceInfo{
		{Name: "iris", Auth: "key", Upstreams: []UpstreamInfo{{URL: "http://127.0.0.1:5001", Deployment: "default", Health: "unknown"}}},
		{Name: "open", Auth: "none", Upstreams: []UpstreamInfo{{URL: "http://127.0.0.1:5002", Deployment: "default", Health: "unknown"}, {URL: "http://127.0.0.1:5003", Deployment: "default", Health: "unknown"}}},
		{Name: "scoring", Auth: "token", Upstreams: []UpstreamInfo{{URL: "http://127.0.0.1:5004", Deployment: "default", Health: "unknown"}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
}

func TestProbes(t *testing.T) {
	s, hs, _ := newTestServer(t)
	if status, _, _ := call(t, hs, "GET", "/livez", ""); status != 200 {
		t.Errorf("livez %d", status)
	}
	if status, _, _ := call(t, hs, "GET", "/readyz", ""); status != 200 {
		t.Errorf("readyz %d", status)
	}
	s.SetDraining()
	if status, _, body := call(t, hs, "GET", "/readyz", ""); status != 503 || !strings.Contains(body, "draining") {
		t.Errorf("readyz while draining: %d %s", status, body)
	}
	if status, _, _ := call(t, hs, "GET", "/livez", ""); status != 200 {
		t.Errorf("livez while draining %d", status)
	}
}

func TestClient(t *testing.T) {
	_, hs, _ := newTestServer(t)
	c, err := NewClient(hs.URL, ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	var nk NewKey
	if err := c.Do(context.Background(), "POST", "/v1/services/iris/keys/secondary/regenerate", nil, &nk); err != nil || nk.Name != "secondary" {
		t.Fatalf("Do = %v, %+v", err, nk)
	}
	err = c.Do(context.Background(), "GET", "/v1/services/nope/keys", nil, nil)
	apiErr, ok := err.(*APIError)
	if !ok || apiErr.Status != 404 || apiErr.Code != "NotFound" {
		t.Fatalf("error = %#v", err)
	}
	bad, _ := NewClient(hs.URL, "wrong-key-wrong-key-wrong-key-wrong-key")
	if err := bad.Do(context.Background(), "GET", "/v1/services", nil, nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := NewClient("127.0.0.1:9901", ""); err == nil {
		t.Fatal("an admin URL without a scheme was accepted")
	}
	c.HTTP.CloseIdleConnections()
	bad.HTTP.CloseIdleConnections()
}

// A store that does not answer in time makes the admin API answer 503 with Retry-After (a retry
// is safe); any other store failure is a 500. Neither says more than the message.
func TestWriteStoreError(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		err    error
		status int
	}{
		{fmt.Errorf("saving revocation: %w", timeout), http.StatusServiceUnavailable},
		{fmt.Errorf("saving: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, http.StatusServiceUnavailable},
		{fmt.Errorf("saving key: write store.db: %w", syscall.ENOSPC), http.StatusInternalServerError},
		// Issue 17, finding 14b: go-redis reports a stalled read as the bare deadline error.
		{fmt.Errorf("saving key iris/primary: %w", os.ErrDeadlineExceeded), http.StatusServiceUnavailable},
		{fmt.Errorf("saving principal: %w", authn.ErrNotReplicated), http.StatusServiceUnavailable},
		{fmt.Errorf("saving key: %w", authn.ErrStoreLost), http.StatusServiceUnavailable},
	} {
		rec := httptest.NewRecorder()
		writeStoreError(rec, tc.err, "the revocation could not be saved")
		if rec.Code != tc.status {
			t.Errorf("%v: status %d, want %d", tc.err, rec.Code, tc.status)
		}
		if (rec.Header().Get("Retry-After") != "") != (tc.status == http.StatusServiceUnavailable) {
			t.Errorf("%v: Retry-After %q", tc.err, rec.Header().Get("Retry-After"))
		}
		if strings.Contains(rec.Body.String(), "store.db") || strings.Contains(rec.Body.String(), "tcp") {
			t.Errorf("%v: the body says too much: %s", tc.err, rec.Body)
		}
	}
}

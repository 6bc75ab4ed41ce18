package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/scoregate/scoregate/authn"
)

func callJSON(t *testing.T, hs *httptest.Server, method, path, key, body string) (int, string) {
	t.Helper()
	status, _, out := callWithHeaders(t, hs, method, path, key, body)
	return status, out
}

func callWithHeaders(t *testing.T, hs *httptest.Server, method, path, key, body string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func createPrincipal(t *testing.T, hs *httptest.Server, name, role string) string {
	t.Helper()
	status, body := callJSON(t, hs, "POST", "/v1/principals", ownerKey, `{"name": "`+name+`", "role": "`+role+`"}`)
	var np NewPrincipal
	if status != 201 || json.Unmarshal([]byte(body), &np) != nil || np.Name != name || np.Role != role || np.Key == "" {
		t.Fatalf("create %s: %d %s", name, status, body)
	}
	return np.Key
}

// The role table: who may do what, and that every refusal is a 403 in the activity log.
func TestRolePermissions(t *testing.T) {
	_, hs, _ := newTestEnv(t)
	keys := map[string]string{
		"owner":       ownerKey,
		"contributor": createPrincipal(t, hs, "carol", "contributor"),
		"reader":      createPrincipal(t, hs, "rita", "reader"),
		"auditor":     createPrincipal(t, hs, "audrey", "auditor"),
	}
	type call struct{ method, path, body string }
	calls := map[string]call{
		"list services":    {"GET", "/v1/services", ""},
		"list keys":        {"GET", "/v1/services/iris/keys", ""},
		"regenerate a key": {"POST", "/v1/services/iris/keys/secondary/regenerate", ""},
		"mint a token":     {"POST", "/v1/services/scoring/token", ""},
		"revoke a token":   {"POST", "/v1/tokens/revoke", `{"jti": "abc", "exp": 4102444800}`},
		"list principals":  {"GET", "/v1/principals", ""},
		"read activity":    {"GET", "/v1/activity?limit=5", ""},
		"reload config":    {"POST", "/v1/reload", ""},
		"read usage":       {"GET", "/v1/usage", ""},
	}
	allowed := map[string][]string{
		"owner":       {"list services", "list keys", "regenerate a key", "mint a token", "revoke a token", "list principals", "read activity", "reload config", "read usage"},
		"contributor": {"list services", "list keys", "regenerate a key", "mint a token", "revoke a token", "read activity", "read usage"},
		"reader":      {"list services", "list keys", "mint a token", "read activity", "read usage"},
		"auditor":     {"read activity"},
	}
	for role, key := range keys {
		for name, c := range calls {
			want := 403
			for _, a := range allowed[role] {
				if a == name {
					want = 200
				}
			}
			t.Run(role+" "+name, func(t *testing.T) {
				status, body := callJSON(t, hs, c.method, c.path, key, c.body)
				if status != want {
					t.Errorf("%d %s, want %d", status, body, want)
				}
				if want == 403 && !strings.Contains(body, `"code": "Forbidden"`) {
					t.Errorf("403 body %s", body)
				}
			})
		}
	}
	// Only the owner manages principals.
	for _, role := range []string{"contributor", "reader"} {
		if status, _ := callJSON(t, hs, "POST", "/v1/principals", keys[role], `{"name": "mallory", "role": "owner"}`); status != 403 {
			t.Errorf("%s created a principal: %d", role, status)
		}
		if status, _ := callJSON(t, hs, "DELETE", "/v1/principals/rita", keys[role], ""); status != 403 {
			t.Errorf("%s deleted a principal: %d", role, status)
		}
	}
}

// Acceptance 1 of the tokens issue, at the admin API: a reader's regeneration attempt is a 403
// recorded with its name and result; a contributor's succeeds and is recorded too.
func TestActivityRecordsDeniedAndAllowed(t *testing.T) {
	_, hs, _ := newTestEnv(t)
	reader := createPrincipal(t, hs, "rita", "reader")
	contributor := createPrincipal(t, hs, "carol", "contributor")
	if status, _ := callJSON(t, hs, "POST", "/v1/services/iris/keys/primary/regenerate", reader, ""); status != 403 {
		t.Fatalf("reader regenerated a key: %d", status)
	}
	status, body := callJSON(t, hs, "POST", "/v1/services/iris/keys/primary/regenerate", contributor, "")
	if status != 200 || strings.Contains(body, ownerKey) {
		t.Fatalf("contributor: %d %s", status, body)
	}
	status, body = callJSON(t, hs, "GET", "/v1/activity?limit=3", reader, "")
	var recs []authn.Activity
	if status != 200 || json.Unmarshal([]byte(body), &recs) != nil || len(recs) != 3 {
		t.Fatalf("activity: %d %s", status, body)
	}
	want := []struct{ op, initiator, target, result string }{
		{authn.OpKeyRegenerate, "carol", "iris/primary", authn.ResultSuccess},
		{authn.OpKeyRegenerate, "rita", "iris/primary", authn.ResultDenied},
		{authn.OpPrincipalCreate, "owner", "carol", authn.ResultSuccess},
	}
	for i, w := range want {
		r := recs[i]
		if r.Operation != w.op || r.Initiator != w.initiator || r.Target != w.target || r.Result != w.result || r.Time.IsZero() {
			t.Errorf("record %d = %+v, want %+v", i, r, w)
		}
	}
	if strings.Contains(body, reader) || strings.Contains(body, contributor) {
		t.Fatal("the activity log holds a key")
	}
	if status, _ := callJSON(t, hs, "GET", "/v1/activity?limit=0", reader, ""); status != 400 {
		t.Errorf("limit=0: %d", status)
	}
}

func TestPrincipalLifecycle(t *testing.T) {
	_, hs, env := newTestEnv(t)
	key := createPrincipal(t, hs, "rita", "reader")
	status, body := callJSON(t, hs, "POST", "/v1/services/scoring/token", key, "")
	var tr authn.TokenResponse
	if status != 200 || json.Unmarshal([]byte(body), &tr) != nil || tr.TokenType != "Bearer" || tr.RefreshAfterTimeUTC >= tr.ExpiryTimeUTC {
		t.Fatalf("mint: %d %s", status, body)
	}
	if _, err := env.tokens.Verify("scoring", []byte(tr.AccessToken)); err != nil {
		t.Fatalf("minted token: %v", err)
	}
	if status, _ := callJSON(t, hs, "POST", "/v1/services/iris/token", key, ""); status != 409 {
		t.Errorf("mint for a key service: %d, want 409", status)
	}
	for _, c := range []struct {
		body   string
		status int
	}{
		{`{"name": "rita", "role": "reader"}`, 409},
		{`{"name": "x", "role": "superuser"}`, 400},
		{`{"name": "has space", "role": "reader"}`, 400},
		{`{"name": "x", "role": "reader", "extra": 1}`, 400},
		{`not json`, 400},
	} {
		if status, body := callJSON(t, hs, "POST", "/v1/principals", ownerKey, c.body); status != c.status {
			t.Errorf("create %s: %d %s, want %d", c.body, status, body, c.status)
		}
	}
	status, body = callJSON(t, hs, "GET", "/v1/principals", ownerKey, "")
	if status != 200 || !strings.Contains(body, `"name": "rita"`) || strings.Contains(body, key) {
		t.Fatalf("list: %d %s", status, body)
	}
	if status, _ := callJSON(t, hs, "DELETE", "/v1/principals/rita", ownerKey, ""); status != 204 {
		t.Fatalf("delete: %d", status)
	}
	if status, _ := callJSON(t, hs, "GET", "/v1/services", key, ""); status != 401 {
		t.Errorf("deleted principal's key: %d, want 401", status)
	}
	if _, err := env.tokens.Verify("scoring", []byte(tr.AccessToken)); err == nil {
		t.Error("a deleted principal's token still works")
	}
	if status, _ := callJSON(t, hs, "DELETE", "/v1/principals/rita", ownerKey, ""); status != 404 {
		t.Errorf("delete twice: %d", status)
	}
}

func TestRevoke(t *testing.T) {
	_, hs, env := newTestEnv(t)
	key := createPrincipal(t, hs, "carol", "contributor")
	_, body := callJSON(t, hs, "POST", "/v1/services/scoring/token", key, "")
	var tr authn.TokenResponse
	json.Unmarshal([]byte(body), &tr)
	if status, body := callJSON(t, hs, "POST", "/v1/tokens/revoke", key, `{"token": "`+tr.AccessToken+`"}`); status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if _, err := env.tokens.Verify("scoring", []byte(tr.AccessToken)); err == nil {
		t.Fatal("a revoked token still works")
	}
	for _, bad := range []string{`{}`, `{"token": "garbage"}`, `{"jti": "x"}`, `{"token": "a.b.c", "jti": "x", "exp": 1}`} {
		if status, body := callJSON(t, hs, "POST", "/v1/tokens/revoke", key, bad); status != 400 {
			t.Errorf("revoke %s: %d %s", bad, status, body)
		}
	}
}

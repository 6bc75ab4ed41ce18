package admin

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
)

func TestReloadEndpoint(t *testing.T) {
	for _, c := range []struct {
		name     string
		key      func(t *testing.T, env *testEnv) string
		result   ReloadResult
		err      error
		status   int
		wantBody string
	}{
		{
			name:     "applied: the summary, with empty lists rather than null",
			result:   ReloadResult{Added: []string{"new"}},
			status:   200,
			wantBody: `{"added":["new"],"removed":[],"changed":[]}`,
		},
		{
			name:     "rejected: every problem, as check-config prints them",
			err:      config.Problems{{Path: "listen", Message: "changed: " + config.RestartMessage}, {Path: "services[0].upstreams[0]", Message: "bad"}},
			status:   400,
			wantBody: `{"error":{"code":"InvalidConfiguration","message":"the configuration was not applied; the running one is unchanged"},"problems":["listen: changed: restart the gateway to apply it","services[0].upstreams[0]: bad"]}`,
		},
		{
			name:     "failed otherwise",
			err:      errors.New("the gateway is shutting down"),
			status:   500,
			wantBody: `{"error":{"code":"InternalError","message":"the configuration could not be reloaded"}}`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, hs, env := newTestEnv(t)
			var initiator string
			env.reload = func(_ context.Context, who string) (ReloadResult, error) {
				initiator = who
				return c.result, c.err
			}
			status, body := callJSON(t, hs, "POST", "/v1/reload", ownerKey, "")
			if status != c.status {
				t.Fatalf("%d %s, want %d", status, body, c.status)
			}
			var got, want any
			json.Unmarshal([]byte(body), &got)
			json.Unmarshal([]byte(c.wantBody), &want)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("body (-want +got):\n%s", d)
			}
			if initiator != authn.OwnerName {
				t.Errorf("reloaded for %q, want the calling principal %q", initiator, authn.OwnerName)
			}
		})
	}
}

// Only a role with config:reload may reload; a refusal is a 403 recorded in the activity log, and
// the configuration is not read.
func TestReloadNeedsThePermission(t *testing.T) {
	_, hs, env := newTestEnv(t)
	called := false
	env.reload = func(context.Context, string) (ReloadResult, error) { called = true; return ReloadResult{}, nil }
	reader := createPrincipal(t, hs, "rita", "reader")
	if status, body := callJSON(t, hs, "POST", "/v1/reload", reader, ""); status != 403 {
		t.Fatalf("reader: %d %s, want 403", status, body)
	}
	if called {
		t.Fatal("a reader's call reloaded the configuration")
	}
	_, body := callJSON(t, hs, "GET", "/v1/activity?limit=1", ownerKey, "")
	var recs []authn.Activity
	if json.Unmarshal([]byte(body), &recs) != nil || len(recs) != 1 || recs[0].Operation != authn.OpConfigReload ||
		recs[0].Initiator != "rita" || recs[0].Result != authn.ResultDenied {
		t.Fatalf("activity = %s, want the denied config.reload by rita", body)
	}
}

// After SetConfig the admin API answers from the new services: listed, key-mode checks, tokens.
func TestSetConfigReplacesServices(t *testing.T) {
	s, hs, _ := newTestEnv(t)
	cfg := &config.Config{Services: []config.Service{
		{Name: "added", Auth: config.AuthKey, Upstreams: []string{"http://127.0.0.1:5009"}},
		{Name: "open", Auth: config.AuthKey, Upstreams: []string{"http://127.0.0.1:5002"}},
	}}
	cfg.ApplyDefaults()
	s.SetConfig(cfg)
	_, body := callJSON(t, hs, "GET", "/v1/services", ownerKey, "")
	var services []ServiceInfo
	if err := json.Unmarshal([]byte(body), &services); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range services {
		names = append(names, svc.Name+":"+svc.Auth)
	}
	if d := cmp.Diff([]string{"added:key", "open:key"}, names); d != "" {
		t.Errorf("GET /v1/services after SetConfig (-want +got):\n%s", d)
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/services/added/keys", 200},
		{"GET", "/v1/services/open/keys", 200}, // was auth none: 409 before
		{"GET", "/v1/services/iris/keys", 404}, // gone
		{"POST", "/v1/services/iris/keys/primary/regenerate", 404},
		{"POST", "/v1/services/scoring/token", 404},
	} {
		if status, body := callJSON(t, hs, c.method, c.path, ownerKey, ""); status != c.status {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, status, body, c.status)
		}
	}
}

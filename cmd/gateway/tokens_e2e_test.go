package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
)

func runAdmin(t *testing.T, p *proc, key string, args ...string) (string, int) {
	t.Helper()
	full := append([]string{args[0], "-admin", p.adminURL}, args[1:]...)
	out, errOut, code := runCLI(t, []string{"GATEWAY_ADMIN_KEY=" + key}, full...)
	if code != 0 {
		return errOut, code
	}
	return out, code
}

// The tokens issue's acceptance 1 and 4, as an operator does it: principals made with the CLI, a
// reader's token minted on the data plane and used to score, refused on another service; a
// key-mode service refuses tokens and a token-mode service refuses keys; the reader's
// regeneration attempt is a 403 in the activity log, the contributor's succeeds.
func TestTokensPrincipalsAndActivity(t *testing.T) {
	dir := t.TempDir()
	rec, upstream := newRecorder(t)
	cfgPath := writeConfig(t, dir, upstream.URL, "")
	os.WriteFile(cfgPath, append(mustRead(t, cfgPath), []byte(`  - name: scoring
    auth: token
    upstreams: ["`+upstream.URL+`"]
  - name: ranking
    auth: token
    upstreams: ["`+upstream.URL+`"]
`)...), 0o600)
	owner := "owner-key-for-e2e-0123456789abcdefghijkl"
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + owner}, "serve", "-config", cfgPath)

	newPrincipal := func(name, role string) string {
		out, code := runAdmin(t, p, owner, "principals", "create", name, role)
		var np struct{ Name, Role, Key string }
		if code != 0 || json.Unmarshal([]byte(out), &np) != nil || np.Key == "" {
			t.Fatalf("principals create %s: %d %s", name, code, out)
		}
		return np.Key
	}
	reader := newPrincipal("rita", "reader")
	contributor := newPrincipal("carol", "contributor")

	// The reader mints a token on the data plane, Azure ML style, and scores with it.
	req, _ := http.NewRequest(http.MethodPost, p.dataURL+"/api/v1/service/scoring/token", nil)
	req.Header.Set("Authorization", "Bearer "+reader)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		AccessToken         string `json:"accessToken"`
		TokenType           string `json:"tokenType"`
		ExpiryTimeUTC       int64  `json:"expiryTimeUtc"`
		RefreshAfterTimeUTC int64  `json:"refreshAfterTimeUtc"`
	}
	json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if resp.StatusCode != 200 || tr.TokenType != "Bearer" || tr.AccessToken == "" || tr.RefreshAfterTimeUTC >= tr.ExpiryTimeUTC {
		t.Fatalf("token: %d %+v", resp.StatusCode, tr)
	}
	before := rec.count()
	if resp, body := score(t, p.dataURL+"/api/v1/service/scoring/score", tr.AccessToken); resp.StatusCode != 200 {
		t.Fatalf("scoring with the token: %d %s", resp.StatusCode, body)
	}
	if rec.count() != before+1 || rec.last().Header.Get("Authorization") != "" {
		t.Fatal("the model did not get exactly the scoring request, without the token")
	}
	for name, c := range map[string]struct{ url, cred string }{
		"the token on another service":   {p.dataURL + "/api/v1/service/ranking/score", tr.AccessToken},
		"the token on a key service":     {p.dataURL + "/api/v1/service/iris/score", tr.AccessToken},
		"a principal key on a token one": {p.dataURL + "/api/v1/service/scoring/score", reader},
	} {
		resp, body := score(t, c.url, c.cred)
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %s", name, resp.StatusCode, body)
		}
	}
	adminKey := regenerateKey(t, p, owner, "primary")
	if resp, _ := score(t, p.dataURL+"/api/v1/service/scoring/score", adminKey); resp.StatusCode != 401 {
		t.Errorf("a service key on a token service: %d", resp.StatusCode)
	}
	if rec.count() != before+1 {
		t.Fatal("a refused request reached the model")
	}

	// The reader may not regenerate keys; the contributor may. Both show in the activity log.
	if out, code := runAdmin(t, p, reader, "keys", "regenerate", "iris", "secondary"); code != 1 || !strings.Contains(out, "403") {
		t.Fatalf("reader regenerate: exit %d %s", code, out)
	}
	if _, code := runAdmin(t, p, contributor, "keys", "regenerate", "iris", "secondary"); code != 0 {
		t.Fatalf("contributor regenerate: exit %d", code)
	}
	out, code := runAdmin(t, p, reader, "activity", "-limit", "3")
	var recs []struct{ Operation, Initiator, Target, Result string }
	if code != 0 || json.Unmarshal([]byte(out), &recs) != nil || len(recs) != 3 {
		t.Fatalf("activity: %d %s", code, out)
	}
	if recs[0] != (struct{ Operation, Initiator, Target, Result string }{"key.regenerate", "carol", "iris/secondary", "success"}) ||
		recs[1] != (struct{ Operation, Initiator, Target, Result string }{"key.regenerate", "rita", "iris/secondary", "denied"}) {
		t.Fatalf("activity: %+v", recs)
	}

	// Revoking the token through the CLI stops it; deleting the reader stops its key.
	if _, code := runAdmin(t, p, contributor, "revoke", "-token", tr.AccessToken); code != 0 {
		t.Fatal("revoke failed")
	}
	if resp, _ := score(t, p.dataURL+"/api/v1/service/scoring/score", tr.AccessToken); resp.StatusCode != 401 {
		t.Errorf("revoked token: %d", resp.StatusCode)
	}
	if _, code := runAdmin(t, p, owner, "principals", "delete", "rita"); code != 0 {
		t.Fatal("delete failed")
	}
	if _, code := runAdmin(t, p, reader, "activity"); code != 1 {
		t.Errorf("a deleted principal's key still opens the admin API")
	}
	for _, secret := range []string{reader, contributor, owner, tr.AccessToken, adminKey} {
		if strings.Contains(p.stderr.String(), secret) || strings.Contains(p.stdout.String(), secret) {
			t.Fatal("a secret appeared in the gateway's output")
		}
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

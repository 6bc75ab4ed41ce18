package proxy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/proxy"
)

// services[].rate_limit.per_principal is each service's own: one principal calling two token
// services has a rate on each, and its calls to one take nothing from its rate on the other. The
// same subject from another issuer is another principal.
func TestRateLimitPerPrincipalIsPerService(t *testing.T) {
	once := config.Rate{RequestsPerSecond: 0.001, Burst: 1} // one request, then none for 1000 s
	e := newTokenEnvWith(t, config.TokenBudget{}, config.TokenBudget{}, func(cfg *config.Config) {
		var chat2 config.Service
		for i := range cfg.Services {
			if cfg.Services[i].Name == "chat" {
				cfg.Services[i].RateLimit.PerPrincipal = once
				chat2 = cfg.Services[i]
			}
		}
		chat2.Name = "chat2"
		cfg.Services = append(cfg.Services, chat2)
	})
	addr := e.serve(t, proxy.WithRateLimiter(ratelimit.NewLocal()))
	body, _ := chatWith(16, false)
	for i, c := range []struct {
		service, issuer string
		want            int
	}{
		{"chat", idpA, http.StatusOK},
		{"chat2", idpA, http.StatusOK},
		{"chat", idpA, http.StatusTooManyRequests},
		{"chat2", idpA, http.StatusTooManyRequests},
		{"chat", idpB, http.StatusOK},
	} {
		resp, got := post(t, addr, c.service, e.token(t, c.issuer, "alice"), "/v1/chat/completions", body)
		if resp.StatusCode != c.want {
			t.Fatalf("call %d, alice of %s to %s: %d, want %d; %s", i+1, c.issuer, c.service, resp.StatusCode, c.want, got)
		}
		if c.want != http.StatusTooManyRequests {
			continue
		}
		var refusal struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(got, &refusal) != nil || refusal.Error.Code != "TooManyRequests" || !strings.Contains(refusal.Error.Message, "request rate") {
			t.Errorf("call %d: refusal %s", i+1, got)
		}
		if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Errorf("call %d: Retry-After %q", i+1, ra)
		}
	}
	if got := e.modelCalls(); got != 3 {
		t.Errorf("the model got %d calls, want the 3 admitted", got)
	}
}

//go:build !race

package proxy

import (
	"log/slog"
	"testing"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
)

// A token caller's rate limit makes one allocation, its key (the service's prefix with the
// issuer and the subject); a key caller's none, its key being built with the service. Built
// without the race detector only, which allocates on its own account.
func TestRateLimitAllocations(t *testing.T) {
	sc := config.Service{Name: "chat", Upstreams: []string{"http://127.0.0.1:1"}}
	sc.RateLimit.PerKey = config.Rate{RequestsPerSecond: 1e9, Burst: 1 << 20}
	sc.RateLimit.PerPrincipal = sc.RateLimit.PerKey
	svc, err := newService(sc, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{limiter: ratelimit.NewLocal()}
	for _, c := range []struct {
		name   string
		caller authn.Caller
		most   float64
	}{
		{"a key", authn.Caller{KeySlot: authn.SlotPrimary}, 0},
		{"a token", authn.Caller{Token: authn.TokenClaims{Issuer: "https://idp.example", Subject: "alice"}}, 1},
	} {
		got := testing.AllocsPerRun(1000, func() {
			if err := g.rateLimit(svc, c.caller); err != nil {
				t.Fatal(err)
			}
		})
		if got > c.most {
			t.Errorf("%s: the rate limit makes %v allocations, at most %v", c.name, got, c.most)
		}
	}
}

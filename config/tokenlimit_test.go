package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTokenLimit(t *testing.T) {
	const base = "services:\n  - {name: chat, api: openai, auth: %s, upstreams: [\"http://127.0.0.1:1\"], token_limit: %s}\n"
	for _, tc := range []struct {
		name, auth, limit string
		plain             bool // api: plain instead of openai
		want              TokenLimit
		problems          []string
	}{
		{name: "per key: a minute's budget and a monthly quota", auth: "key",
			limit: "{per_key: {tokens_per_minute: 2000, quota: {tokens: 1000000, period: monthly}}}",
			want:  TokenLimit{PerKey: TokenBudget{TokensPerMinute: 2000, Quota: TokenQuota{Tokens: 1000000, Period: PeriodMonthly}}}},
		{name: "per principal: a daily quota alone", auth: "token",
			limit: "{per_principal: {quota: {tokens: 50000, period: daily}}}",
			want:  TokenLimit{PerPrincipal: TokenBudget{Quota: TokenQuota{Tokens: 50000, Period: PeriodDaily}}}},
		{name: "zeros limit nothing, on any service", auth: "none",
			limit: "{per_key: {tokens_per_minute: 0, quota: {tokens: 0}}, per_principal: {quota: {period: hourly}}}",
			want:  TokenLimit{PerPrincipal: TokenBudget{Quota: TokenQuota{Period: PeriodHourly}}}},
		{name: "a quota needs its period", auth: "key",
			limit:    "{per_key: {quota: {tokens: 10}}}",
			problems: []string{"services[0].token_limit.per_key.quota.period: must be hourly, daily or monthly"}},
		{name: "a period is one of three", auth: "token",
			limit:    "{per_principal: {quota: {tokens: 10, period: weekly}}}",
			problems: []string{`services[0].token_limit.per_principal.quota.period: must be hourly, daily or monthly, not "weekly"`}},
		{name: "negative numbers, and one beyond what Redis counts exactly", auth: "key",
			limit: "{per_key: {tokens_per_minute: -1, quota: {tokens: 9007199254740993, period: daily}}}",
			problems: []string{
				"services[0].token_limit.per_key.tokens_per_minute: must be from 0 (no limit) to 1000000000000000, not -1",
				"services[0].token_limit.per_key.quota.tokens: must be from 0 (no quota) to 1000000000000000, not 9007199254740993",
			}},
		{name: "per key needs keys, per principal needs tokens", auth: "none",
			limit: "{per_key: {tokens_per_minute: 10}, per_principal: {quota: {tokens: 10, period: hourly}}}",
			problems: []string{
				"services[0].token_limit.per_key: only a service with auth: key has keys",
				"services[0].token_limit.per_principal: only a service with auth: token has principals calling it",
			}},
		{name: "tokens are counted only on a language-model service", auth: "key",
			limit: "{per_key: {tokens_per_minute: 10}}", plain: true,
			problems: []string{"services[0].token_limit: only a service with api: openai reports tokens"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(strings.Replace(base, "%s", tc.auth, 1), "%s", tc.limit, 1)
			if tc.plain {
				src = strings.Replace(src, "api: openai", "api: plain", 1)
			}
			c, err := Parse([]byte(src), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if err := c.Validate(); err != nil {
				for _, p := range err.(Problems) {
					got = append(got, p.String())
				}
			}
			if diff := cmp.Diff(tc.problems, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if tc.problems == nil {
				if diff := cmp.Diff(tc.want, c.Services[0].TokenLimit); diff != "" {
					t.Errorf("token_limit (-want +got):\n%s", diff)
				}
			}
		})
	}
}

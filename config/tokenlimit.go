package config

// TokenLimit limits the tokens a language-model service's callers use (prompt and completion
// together, as the model reports them), per calling key and per principal: a budget per minute,
// over which a request gets 429 with Retry-After, and a quota per hour, day or month, once spent
// 403. Each caller's budget is the service's own: a principal's tokens on another service do not
// count against it. Shared through Redis by every instance when the store is Redis; per instance
// otherwise.
type TokenLimit struct {
	// PerKey limits each key (primary and secondary separately; key mode).
	PerKey TokenBudget `yaml:"per_key"`
	// PerPrincipal limits each principal (the caller a token was minted for; token mode).
	PerPrincipal TokenBudget `yaml:"per_principal"`
}

// TokenBudget is one caller's allowance in tokens.
type TokenBudget struct {
	// TokensPerMinute caps the tokens used in any 60 seconds. Before forwarding, a request is
	// estimated (its body's bytes / 4, plus its max_tokens, or 256 without one); one the rest of
	// the minute's budget cannot cover gets 429 with Retry-After. Default 0 (no limit).
	TokensPerMinute int64 `yaml:"tokens_per_minute"`
	// Quota caps the tokens used in each hour, day or calendar month.
	Quota TokenQuota `yaml:"quota"`
}

// TokenQuota is a number of tokens per period; once they are used, requests get 403 until the
// next period begins.
type TokenQuota struct {
	// Tokens is the quota of one period. Default 0 (no quota).
	Tokens int64 `yaml:"tokens"`
	// Period is "hourly", "daily" or "monthly" (the calendar month), each beginning on the hour,
	// at midnight or on the first of the month in UTC. Required with tokens. Default "".
	Period string `yaml:"period"`
}

// Quota periods.
const (
	PeriodHourly  = "hourly"
	PeriodDaily   = "daily"
	PeriodMonthly = "monthly"
)

// maxTokenLimit bounds a number of tokens in a limit: far beyond any model's use, and within the
// integers a Redis script's numbers (doubles) hold exactly.
const maxTokenLimit = 1_000_000_000_000_000

func validateTokenLimit(p string, svc Service, add func(path, format string, args ...any)) {
	tl := svc.TokenLimit
	for _, b := range []struct {
		name string
		b    TokenBudget
	}{{"per_key", tl.PerKey}, {"per_principal", tl.PerPrincipal}} {
		bp := p + ".token_limit." + b.name
		if n := b.b.TokensPerMinute; n < 0 || n > maxTokenLimit {
			add(bp+".tokens_per_minute", "must be from 0 (no limit) to %d, not %d", int64(maxTokenLimit), n)
		}
		q := b.b.Quota
		if q.Tokens < 0 || q.Tokens > maxTokenLimit {
			add(bp+".quota.tokens", "must be from 0 (no quota) to %d, not %d", int64(maxTokenLimit), q.Tokens)
		}
		switch q.Period {
		case PeriodHourly, PeriodDaily, PeriodMonthly:
		case "":
			if q.Tokens > 0 {
				add(bp+".quota.period", "must be hourly, daily or monthly")
			}
		default:
			add(bp+".quota.period", "must be hourly, daily or monthly, not %q", q.Period)
		}
	}
	if tl.PerKey.on() && svc.Auth != AuthKey {
		add(p+".token_limit.per_key", "only a service with auth: key has keys")
	}
	if tl.PerPrincipal.on() && svc.Auth != AuthToken {
		add(p+".token_limit.per_principal", "only a service with auth: token has principals calling it")
	}
	if (tl.PerKey.on() || tl.PerPrincipal.on()) && svc.API != APIOpenAI {
		add(p+".token_limit", "only a service with api: openai reports tokens")
	}
}

// on reports whether b limits anything.
func (b TokenBudget) on() bool { return b.TokensPerMinute > 0 || b.Quota.Tokens > 0 }

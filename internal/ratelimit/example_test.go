package ratelimit_test

import (
	"context"
	"fmt"

	"github.com/scoregate/scoregate/internal/ratelimit"
)

// A principal allowed 2 requests a second with a burst of 3: the fourth request at once is
// refused, and RetryAfter (about half a second here) says when to come back.
func ExampleLocal() {
	limiter := ratelimit.NewLocal()
	limit := ratelimit.Limit{Rate: 2, Burst: 3}
	for range 4 {
		d := limiter.Allow(context.Background(), "principal:alice", limit)
		fmt.Println(d.Allowed, d.RetryAfter > 0)
	}
	// Output:
	// true false
	// true false
	// true false
	// false true
}

// A key allowed 1,000 tokens a minute and 100,000 a month calls a language model. Before
// forwarding, the call is estimated from its body (1,200 bytes) and its max_tokens (200) and
// reserved; the headers of the answer show the minute's budget; once the answer has ended, the
// model's usage (350 tokens) settles it, giving back what the estimate took in excess. The
// third call finds too little left, and would be answered 429.
func ExampleTokenLimiter() {
	ctx := context.Background()
	limiter := ratelimit.NewLocalTokenLimiter() // NewSharedTokenLimiter(shared) with Redis
	limit := ratelimit.TokenLimit{PerMinute: 1000, Quota: 100_000, Period: ratelimit.Monthly}

	estimate := ratelimit.EstimateTokens(1200, 200) // 300 for the prompt, 200 for the completion
	r := limiter.Reserve(ctx, "chat:key:primary", limit, estimate)
	switch r.Outcome {
	case ratelimit.TokensRateLimited: // 429, Retry-After: r.RetryAfter
	case ratelimit.TokensQuotaSpent: // 403
	}
	fmt.Println(r.Outcome, estimate, "x-ratelimit-limit-tokens:", r.Limit, "x-ratelimit-remaining-tokens:", r.Remaining)

	limiter.Settle(ctx, r, 350) // usage.prompt_tokens + usage.completion_tokens
	next := limiter.Reserve(ctx, "chat:key:primary", limit, estimate)
	fmt.Println(next.Outcome, "remaining:", next.Remaining)
	again := limiter.Reserve(ctx, "chat:key:primary", limit, estimate)
	fmt.Println(again.Outcome, "remaining:", again.Remaining, "quota remaining:", again.QuotaRemaining)
	// Output:
	// allowed 500 x-ratelimit-limit-tokens: 1000 x-ratelimit-remaining-tokens: 500
	// allowed remaining: 150
	// rate_limited remaining: 150 quota remaining: 99150
}

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

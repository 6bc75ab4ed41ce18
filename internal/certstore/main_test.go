package certstore

import (
	"testing"

	"go.uber.org/goleak"
)

// Every lease renewal goroutine must be gone when its lock is unlocked or lost, and every Redis
// client and certmagic cache a test opens must be closed. certmagic keeps one ACME rate limiter
// per CA and account for the life of the process and never stops it (a TODO in its
// acmeclient.go); that goroutine is certmagic's, not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"))
}

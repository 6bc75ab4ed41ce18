package authn

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine authn starts (key flushing, token maintenance, the replica, JWKS refreshes)
// must be gone when its test is.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

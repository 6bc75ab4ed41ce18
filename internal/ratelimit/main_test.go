package ratelimit

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// go-redis would report every refused connection of the outage tests on stderr.
func init() { redis.SetLogger(discardLogger{}) }

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// No test may leave a goroutine behind: neither a go-redis connection nor anything of ours.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

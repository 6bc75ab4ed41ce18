package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// errNoRedis means redis-server is not installed, so the Redis-backed tiers are absent.
var errNoRedis = errors.New("redis-server is not installed (apt-get install -y redis-server)")

// redisInstance is a redis-server of the harness's own.
type redisInstance struct {
	proc *process
	addr string
}

// startRedis starts a redis-server on a free loopback port, without persistence, in a folder of
// its own; never the machine's Redis.
func (h *harness) startRedis(ctx context.Context, name string) (*redisInstance, error) {
	bin, ok := lookBinary("redis-server")
	if !ok {
		return nil, errNoRedis
	}
	dir := filepath.Join(h.tmp, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	proc, addrs, err := startOnFreePorts(ctx, 1, 10*time.Second, func(a []string) (*process, error) {
		_, port, _ := strings.Cut(a[0], ":")
		return h.start(name, nil, bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
	})
	if err != nil {
		return nil, err
	}
	return &redisInstance{proc: proc, addr: addrs[0]}, nil
}

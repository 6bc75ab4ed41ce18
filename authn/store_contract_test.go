package authn_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/authn/storetest"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// The embedded store keeps the Store contract; each case has a folder of its own, opened again
// after the store is closed.
func TestBoltStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (authn.Store, func(*testing.T) authn.Store) {
		dir := t.TempDir()
		open := func(t *testing.T) authn.Store {
			t.Helper()
			s, err := authn.OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return open(t), open
	})
}

// The Redis store keeps the Store contract on a single server, on a Cluster and through
// Sentinel.
func TestRedisStoreContract(t *testing.T) {
	t.Run("single server", func(t *testing.T) {
		srv := redistest.Start(t)
		redisContract(t, config.Store{RedisURL: srv.URL()})
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.Cluster(t, 3)
		redisContract(t, config.Store{RedisAddrs: cl.Addrs})
	})
	t.Run("sentinel", func(t *testing.T) {
		sn := redistest.Sentinel(t)
		redisContract(t, config.Store{RedisAddrs: sn.SentinelAddrs, RedisMasterName: sn.MasterName})
	})
}

// redisContract runs the suite with a store of its own for each case: the same Redis under
// another prefix, opened again by a new client.
func redisContract(t *testing.T, base config.Store) {
	n := 0
	storetest.Run(t, func(t *testing.T) (authn.Store, func(*testing.T) authn.Store) {
		n++
		cfg := base
		cfg.RedisPrefix = fmt.Sprintf("{contract-%d}:", n) // braces: one hash slot in a Cluster
		cfg.RedisTimeout = time.Second
		cfg.ResyncInterval = 10 * time.Millisecond // a new store waits two of these
		open := func(t *testing.T) authn.Store {
			t.Helper()
			s, err := authn.OpenRedis(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return open(t), open
	})
}

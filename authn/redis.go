package authn

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/config"
)

// RedisStore is the shared store: every instance pointed at the same Redis (single server,
// Sentinel or Cluster) sees the same keys, principals, signing keys, revocations and activity.
// Every write bumps a generation counter and publishes a change notice, which Replica uses to keep
// each instance's in-memory copy current. All keys share one hash slot (the prefix is a hash tag),
// so a Cluster keeps them on one node and transactions work.
type RedisStore struct {
	client   redis.UniversalClient
	prefix   string
	timeout  time.Duration
	sentinel bool
}

var _ Store = (*RedisStore)(nil)

// ErrStoreLost means Redis has lost the gateway's data (its generation marker is gone, as after a
// restart without persistence or a FLUSHALL). The gateway then refuses to decide rather than trust
// an empty store.
var ErrStoreLost = errors.New("the Redis store lost its data (generation marker missing)")

// redisLogger sends go-redis's own messages to the gateway's log at debug level: the Replica
// already reports, once, what an outage means for requests.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}

// SetRedisLogger routes go-redis's messages (a process-wide setting) to log.
func SetRedisLogger(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }

// OpenRedis connects to the Redis described by cfg and makes sure it holds the installation's
// secret and generation marker. Every call is bounded by cfg.RedisTimeout; go-redis's own retries
// are off, so an unreachable Redis fails fast rather than stalling requests.
func OpenRedis(ctx context.Context, cfg config.Store) (*RedisStore, error) {
	s := &RedisStore{prefix: cfg.RedisPrefix, timeout: cfg.RedisTimeout, sentinel: cfg.RedisMasterName != ""}
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, errors.New("store.redis_url is not a valid Redis URL") // the URL may hold a password
		}
		if err := secureRedisTLS(opts.TLSConfig, cfg); err != nil {
			return nil, err
		}
		tune(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, cfg.RedisTimeout)
		opts.ContextTimeoutEnabled = true
		s.client = redis.NewClient(opts)
	} else {
		opts := &redis.UniversalOptions{
			Addrs:                 cfg.RedisAddrs,
			MasterName:            cfg.RedisMasterName,
			Username:              cfg.RedisUsername,
			Password:              cfg.RedisPassword,
			ContextTimeoutEnabled: true,
		}
		if cfg.RedisTLS {
			opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			if err := secureRedisTLS(opts.TLSConfig, cfg); err != nil {
				return nil, err
			}
		}
		tune(&opts.DialTimeout, &opts.ReadTimeout, &opts.WriteTimeout, &opts.PoolTimeout, &opts.MaxRetries, cfg.RedisTimeout)
		s.client = redis.NewUniversalClient(opts)
	}
	if err := s.init(ctx); err != nil {
		s.client.Close()
		return nil, err
	}
	return s, nil
}

func tune(dial, read, write, pool *time.Duration, retries *int, timeout time.Duration) {
	*dial = max(timeout, time.Second)
	*read, *write, *pool = timeout, timeout, timeout
	*retries = -1 // no retries: the caller's deadline is the budget
}

// Client is the store's Redis connection, shared with the TLS certificate storage. Its calls
// time out after store.redis_timeout and are never retried.
func (s *RedisStore) Client() redis.UniversalClient { return s.client }

func (s *RedisStore) key(name string) string { return s.prefix + name }

// changesChannel carries change notices: "<generation> <kind> [<detail>]".
func (s *RedisStore) changesChannel() string { return s.prefix + "changes" }

func (s *RedisStore) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func (s *RedisStore) init(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout*4, 2*time.Second))
	defer cancel()
	secret := make([]byte, 32)
	rand.Read(secret)
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, s.key("secret"), secret, 0)
		p.SetNX(ctx, s.key("gen"), 1, 0)
		return nil
	})
	if err != nil {
		return fmt.Errorf("connecting to Redis: %w", err)
	}
	return nil
}

// Secret implements Store.
func (s *RedisStore) Secret(ctx context.Context) ([]byte, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	b, err := s.client.Get(ctx, s.key("secret")).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrStoreLost
	}
	if err != nil {
		return nil, fmt.Errorf("reading the hashing secret: %w", err)
	}
	return b, nil
}

// Generation returns the store's change counter; ErrStoreLost when it is gone.
func (s *RedisStore) Generation(ctx context.Context) (int64, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := s.client.Get(ctx, s.key("gen")).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, ErrStoreLost
	}
	return n, err
}

// write runs fn in a transaction that also bumps the generation, then publishes a change notice
// of kind with detail. With Sentinel it waits (within the timeout) for a replica to have the write,
// and reports the write as failed when none has, so that a failover cannot silently lose it.
func (s *RedisStore) write(ctx context.Context, kind, detail string, fn func(p redis.Pipeliner)) error {
	ctx, cancel := context.WithTimeout(ctx, 3*s.timeout) // the transaction, WAIT and PUBLISH
	defer cancel()
	var gen *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fn(p)
		gen = p.Incr(ctx, s.key("gen"))
		return nil
	})
	if err != nil {
		return err
	}
	if s.sentinel {
		// A write no replica has seen can vanish in a failover (or have gone to a master that
		// was just demoted): report it as failed, so the caller tries again.
		n, err := s.client.Do(ctx, "WAIT", 1, s.timeout.Milliseconds()).Int64()
		if err != nil || n < 1 {
			return errors.New("the write was not confirmed by a replica; try again")
		}
	}
	msg := strconv.FormatInt(gen.Val(), 10) + " " + kind
	if detail != "" {
		msg += " " + detail
	}
	// A lost notice is caught by the next generation check; the write itself succeeded.
	s.client.Publish(ctx, s.changesChannel(), msg)
	return nil
}

// Keys implements Store.
func (s *RedisStore) Keys(ctx context.Context) ([]KeyRecord, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	var all, used *redis.MapStringStringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, s.key("keys"))
		used = p.HGetAll(ctx, s.key("keys-used"))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	var out []KeyRecord
	for field, v := range all.Val() {
		var rec KeyRecord
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return nil, fmt.Errorf("key record %q: %w", field, err)
		}
		if n, err := strconv.ParseInt(used.Val()[rec.ID], 10, 64); err == nil && n > rec.LastUsedAt.UnixNano() {
			rec.LastUsedAt = time.Unix(0, n).UTC()
		}
		out = append(out, rec)
	}
	return out, nil
}

// PutKey implements Store.
func (s *RedisStore) PutKey(ctx context.Context, rec KeyRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	field := rec.Service + "/" + rec.Slot
	old, _ := s.client.HGet(ctx, s.key("keys"), field).Result() // to drop its last-use entry
	var oldRec KeyRecord
	json.Unmarshal([]byte(old), &oldRec)
	err = s.write(ctx, "keys", "", func(p redis.Pipeliner) {
		p.HSet(ctx, s.key("keys"), field, v)
		if oldRec.ID != "" && oldRec.ID != rec.ID {
			p.HDel(ctx, s.key("keys-used"), oldRec.ID)
		}
	})
	if err != nil {
		return fmt.Errorf("saving key %s: %w", field, err)
	}
	return nil
}

// touchScript records a last-use time only when it is later than the one stored.
var touchScript = redis.NewScript(`
for i = 1, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if tonumber(ARGV[i+1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
end
return 0`)

// TouchKeys implements Store. Last-use times live beside the key records, so that recording one
// can never write back a key record that was replaced meanwhile.
func (s *RedisStore) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	args := make([]any, 0, 2*len(used))
	for id, t := range used {
		args = append(args, id, strconv.FormatInt(t.UnixNano(), 10))
	}
	if err := touchScript.Run(ctx, s.client, []string{s.key("keys-used")}, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("recording key use: %w", err)
	}
	return nil
}

func hashAll[T any](ctx context.Context, s *RedisStore, name string) ([]T, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	m, err := s.client.HGetAll(ctx, s.key(name)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	out := make([]T, 0, len(m))
	for field, v := range m {
		var rec T
		if err := json.Unmarshal([]byte(v), &rec); err != nil {
			return nil, fmt.Errorf("%s record %q: %w", name, field, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Principals implements Store.
func (s *RedisStore) Principals(ctx context.Context) ([]PrincipalRecord, error) {
	return hashAll[PrincipalRecord](ctx, s, "principals")
}

// PutPrincipal implements Store.
func (s *RedisStore) PutPrincipal(ctx context.Context, rec PrincipalRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	cctx, cancel := s.call(ctx)
	ok, err := s.client.HSetNX(cctx, s.key("principals"), rec.Name, v).Result()
	cancel()
	if err != nil {
		return fmt.Errorf("saving principal: %w", err)
	}
	if !ok {
		return ErrPrincipalExists
	}
	return s.write(ctx, "principals", "", func(redis.Pipeliner) {})
}

// DeletePrincipal implements Store.
func (s *RedisStore) DeletePrincipal(ctx context.Context, name string) error {
	cctx, cancel := s.call(ctx)
	n, err := s.client.HDel(cctx, s.key("principals"), name).Result()
	cancel()
	if err != nil {
		return fmt.Errorf("deleting principal: %w", err)
	}
	if n == 0 {
		return ErrPrincipalUnknown
	}
	return s.write(ctx, "principals", "", func(redis.Pipeliner) {})
}

// SigningKeys implements Store.
func (s *RedisStore) SigningKeys(ctx context.Context) ([]SigningKeyRecord, error) {
	return hashAll[SigningKeyRecord](ctx, s, "signing-keys")
}

// PutSigningKey implements Store.
func (s *RedisStore) PutSigningKey(ctx context.Context, rec SigningKeyRecord) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return s.write(ctx, "signing", "", func(p redis.Pipeliner) { p.HSet(ctx, s.key("signing-keys"), rec.KID, v) })
}

// DeleteSigningKey implements Store.
func (s *RedisStore) DeleteSigningKey(ctx context.Context, kid string) error {
	return s.write(ctx, "signing", "", func(p redis.Pipeliner) { p.HDel(ctx, s.key("signing-keys"), kid) })
}

// Revocations are a sorted set: member "<iss>\x00<jti>", score the expiry in unix milliseconds.
// Entries whose token has expired are removed on every write and read, so each leaves Redis when
// its token would have expired.

// Revocations implements Store.
func (s *RedisStore) Revocations(ctx context.Context) ([]Revocation, error) {
	ctx, cancel := context.WithTimeout(ctx, max(10*s.timeout, 5*time.Second)) // may be large
	defer cancel()
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	var zs *redis.ZSliceCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRemRangeByScore(ctx, s.key("revoked"), "-inf", "("+now)
		zs = p.ZRangeByScoreWithScores(ctx, s.key("revoked"), &redis.ZRangeBy{Min: now, Max: "+inf"})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading revocations: %w", err)
	}
	out := make([]Revocation, 0, len(zs.Val()))
	for _, z := range zs.Val() {
		iss, jti, ok := strings.Cut(z.Member.(string), "\x00")
		if !ok {
			continue
		}
		out = append(out, Revocation{Issuer: iss, JTI: jti, Expires: time.UnixMilli(int64(z.Score))})
	}
	return out, nil
}

// PutRevocation implements Store.
func (s *RedisStore) PutRevocation(ctx context.Context, r Revocation) error {
	member := r.Issuer + "\x00" + r.JTI
	exp := r.Expires.UnixMilli()
	detail := strconv.FormatInt(exp, 10) + " " + member
	err := s.write(ctx, "revoke", detail, func(p redis.Pipeliner) {
		p.ZAddGT(ctx, s.key("revoked"), redis.Z{Score: float64(exp), Member: member})
		p.ZRemRangeByScore(ctx, s.key("revoked"), "-inf", "("+strconv.FormatInt(time.Now().UnixMilli(), 10))
	})
	if err != nil {
		return fmt.Errorf("saving revocation: %w", err)
	}
	return nil
}

// redisActivityLimit bounds the shared activity log.
const redisActivityLimit = 100000

// AppendActivity implements Store.
func (s *RedisStore) AppendActivity(ctx context.Context, a Activity) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, s.key("activity"), v)
		p.LTrim(ctx, s.key("activity"), 0, redisActivityLimit-1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recording activity: %w", err)
	}
	return nil
}

// Activity implements Store.
func (s *RedisStore) Activity(ctx context.Context, limit int) ([]Activity, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	vals, err := s.client.LRange(ctx, s.key("activity"), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("reading activity: %w", err)
	}
	out := make([]Activity, 0, len(vals))
	for _, v := range vals {
		var a Activity
		if err := json.Unmarshal([]byte(v), &a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Ping checks that Redis answers.
func (s *RedisStore) Ping(ctx context.Context) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	return s.client.Ping(ctx).Err()
}

// Close implements Store.
func (s *RedisStore) Close() error { return s.client.Close() }

// subscribe opens the change-notice subscription.
func (s *RedisStore) subscribe(ctx context.Context) *redis.PubSub {
	return s.client.Subscribe(ctx, s.changesChannel())
}

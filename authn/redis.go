package authn

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/config"
)

// RedisStore is the shared store: every instance pointed at the same Redis (single server,
// Sentinel or Cluster) sees the same keys, principals, signing keys, revocations and activity.
// Every write bumps a generation counter and publishes a change notice, which Replica uses to keep
// each instance's in-memory copy current. All keys share one hash slot (the prefix is a hash tag),
// so a Cluster keeps them on one node and transactions work.
//
// A store remembers that it was made: its first start writes, in one script, the hashing secret,
// the generation counter, an initialisation marker (<prefix>initialized: a random store id, when
// and by what it was made) and an entry in each collection (keys, principals, signing keys,
// revocations) that is never removed. Any of these gone, the marker naming another store than the
// one this instance knows, or the generation going back, means Redis lost data: the store is then
// lost for good in this process (see Lost), no instance makes a new secret, and the gateway
// answers 503 until an operator restores Redis or re-initialises the store (ReinitRedis).
// Nothing is written into a store that lost data: the writes outside its transactions (last-use
// times, the activity log, token usage) check the marker in the same script, so that even those
// made before an instance noticed the loss write nothing.
type RedisStore struct {
	client   redis.UniversalClient
	prefix   string
	timeout  time.Duration
	sentinel bool
	// sharded: the client is a Cluster client, and change notices go by sharded pub/sub
	// (SPUBLISH, SSUBSCRIBE): published on, and delivered from, the master of the store's slot,
	// so they arrive in the order they were published. A keyless PUBLISH goes to any node and
	// is relayed over the cluster bus, which reorders notices.
	sharded bool
	resync  time.Duration // store.resync_interval, how often running instances look

	id        string // the store id this instance knows; set by OpenRedis
	idFile    string // where the store id is remembered between runs, or ""
	idFileErr error
	lost      atomic.Pointer[string]
}

var _ Store = (*RedisStore)(nil)

// ErrStoreLost means Redis has lost the gateway's data (its generation marker is gone, as after a
// restart without persistence or a FLUSHALL). The gateway then refuses to decide rather than trust
// an empty store.
var ErrStoreLost = errors.New("the Redis store lost the gateway's data")

// ErrNotReplicated is returned, with Sentinel, for a write that no replica confirmed in time: it
// may still be applied, or vanish in a failover.
var ErrNotReplicated = errors.New("the write was not confirmed by a replica")

// StoreUnreachable reports whether err means that the store could not be reached or did not
// answer in time (or, with Sentinel, that no replica confirmed a write): a retry may work, and a
// write that failed so may still have been applied. A full or read-only disk under the embedded
// store is not this.
func StoreUnreachable(err error) bool {
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, ErrNotReplicated), errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return true
	}
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// redisLogger sends go-redis's own messages to the gateway's log at debug level: the Replica
// already reports, once, what an outage means for requests.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "go-redis")
}

// SetRedisLogger routes go-redis's messages (a process-wide setting) to log.
func SetRedisLogger(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }

// RedisOption adds to OpenRedis.
type RedisOption func(*RedisStore)

// WithStoreIDFile makes the instance remember the store's id in the file at path (in store.dir)
// between runs, so that, restarted against a Redis that lost everything, it knows the store
// existed instead of making a new one.
func WithStoreIDFile(path string) RedisOption { return func(s *RedisStore) { s.idFile = path } }

// StoreIDFile is the name of the file in store.dir that remembers the Redis store's id.
const StoreIDFile = "redis-store-id"

// OpenRedis connects to the Redis described by cfg and makes sure it holds the installation's
// store: on an empty Redis, and when this instance knows of no store (no id in its store-id
// file), it makes one (secret, generation, marker), then waits two resync intervals and looks
// again, so that a running instance that knew the store before a wipe has had time to mark it
// lost. It returns an error wrapping ErrStoreLost when the store lost data. Every call is bounded
// by cfg.RedisTimeout; go-redis's own retries are off, so an unreachable Redis fails fast rather
// than stalling requests.
func OpenRedis(ctx context.Context, cfg config.Store, opts ...RedisOption) (*RedisStore, error) {
	s, err := dialRedis(cfg)
	if err != nil {
		return nil, err
	}
	for _, o := range opts {
		o(s)
	}
	if err := s.init(ctx); err != nil {
		s.client.Close()
		return nil, err
	}
	return s, nil
}

// dialRedis makes the client; it does not talk to Redis yet.
func dialRedis(cfg config.Store) (*RedisStore, error) {
	s := &RedisStore{prefix: cfg.RedisPrefix, timeout: cfg.RedisTimeout, sentinel: cfg.RedisMasterName != "", resync: cfg.ResyncInterval}
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
		_, s.sharded = s.client.(*redis.ClusterClient)
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

// changesChannel carries change notices: "<generation> <kind> [<detail>]". The prefix's hash tag
// puts it in the slot of the state it announces, so that on a Cluster its sharded notices come
// from the master that holds that state.
func (s *RedisStore) changesChannel() string { return s.prefix + "changes" }

// publish sends a change notice: by sharded pub/sub on a Cluster, else by PUBLISH.
func (s *RedisStore) publish(ctx context.Context, msg string) error {
	if s.sharded {
		return s.client.SPublish(ctx, s.changesChannel(), msg).Err()
	}
	return s.client.Publish(ctx, s.changesChannel(), msg).Err()
}

func (s *RedisStore) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// The store's keys besides the collections: the marker, the secret and the generation.
const (
	markerKey = "initialized"
	secretKey = "secret"
	genKey    = "gen"
)

// collections hold an entry named presence from the store's creation on, so that the key
// never goes away by itself: its absence means Redis lost it. Readers skip the entry.
var collections = []string{"keys", "principals", "signing-keys", "revoked"}

// presence is the field (hashes) or member (the revocations' sorted set, with score +inf) that
// keeps a collection present. No service, principal, signing key or revocation has this name.
const presence = ""

// Who made a store, as the marker's "by" says.
const (
	madeByFirstStart = "first start"
	madeByReinit     = "gateway store reinit"
)

// ownKeys lists the marker, the secret, the generation and the collections, in that order, for
// the scripts.
func (s *RedisStore) ownKeys() []string {
	keys := []string{s.key(markerKey), s.key(secretKey), s.key(genKey)}
	for _, c := range collections {
		keys = append(keys, s.key(c))
	}
	return keys
}

// initScript starts making the store when Redis holds none of its keys and the caller may
// (ARGV[4] is "1"): it writes only the marker, with state "new"; completeScript writes the rest
// once running instances have had time to object. It also adopts a store made before markers
// existed (a secret, no marker). KEYS: ownKeys. ARGV: store id, creation
// time, maker, may create. Returns the outcome: "found", "created", "adopted", "missing" (no
// marker, and the caller may not make one) or "partial" (some keys, but no marker or secret).
var initScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 'found' end
if ARGV[4] ~= '1' then return 'missing' end
local n = 0
for i = 2, #KEYS do n = n + redis.call('EXISTS', KEYS[i]) end
if n == 0 then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], 'by', ARGV[3], 'state', 'new')
  return 'created'
end
if redis.call('EXISTS', KEYS[2]) == 0 then return 'partial' end
redis.call('SET', KEYS[3], 1, 'NX')
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'createdAt', ARGV[2], 'by', ARGV[3])
for i = 4, #KEYS - 1 do redis.call('HSETNX', KEYS[i], '', '1') end
redis.call('ZADD', KEYS[#KEYS], 'NX', '+inf', '')
return 'adopted'`)

// completeScript finishes a store that initScript started, unless its marker changed meanwhile
// (an instance marked it lost, or it is gone). KEYS: ownKeys. ARGV: store id, secret. Returns 1
// when the store is complete.
var completeScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'lost') == 1 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'NX')
redis.call('SET', KEYS[3], 1, 'NX')
for i = 4, #KEYS - 1 do redis.call('HSETNX', KEYS[i], '', '1') end
redis.call('ZADD', KEYS[#KEYS], 'NX', '+inf', '')
redis.call('HDEL', KEYS[1], 'state')
return 1`)

// errStoreBeingMade: another instance is making the store; try again in a moment.
var errStoreBeingMade = errors.New("another instance is making the Redis store; trying again")

// markScript records in the marker that the store lost data, so that instances started later
// refuse it too, unless an operator re-initialised it meanwhile (a marker made by "gateway store
// reinit" with another id) or it is marked already. KEYS: the marker. ARGV: the id this
// instance knows ("" if none), the reason, the time.
var markScript = redis.NewScript(`
local id = redis.call('HGET', KEYS[1], 'id')
if id then
  if redis.call('HEXISTS', KEYS[1], 'lost') == 1 then return 0 end
  if id ~= ARGV[1] and redis.call('HGET', KEYS[1], 'by') == '` + madeByReinit + `' then return 0 end
else
  redis.call('HSET', KEYS[1], 'id', ARGV[1])
end
redis.call('HSET', KEYS[1], 'lost', ARGV[2], 'lostAt', ARGV[3])
return 1`)

func newStoreID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *RedisStore) init(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout*4, 2*time.Second)+2*s.resync)
	defer cancel()
	known, err := s.readIDFile()
	if err != nil {
		return err
	}
	mayCreate := "0"
	if known == "" {
		mayCreate = "1"
	}
	id := newStoreID()
	outcome, err := initScript.Run(ctx, s.client, s.ownKeys(), id, time.Now().UTC().Format(time.RFC3339), madeByFirstStart, mayCreate).Text()
	if err != nil {
		return fmt.Errorf("connecting to Redis: %w", err)
	}
	switch outcome {
	case "missing":
		return s.lostAtOpen(ctx, known, fmt.Sprintf("its marker %s is gone, and this instance knew it as store %s (%s)", s.key(markerKey), known, s.idFile))
	case "partial":
		return s.lostAtOpen(ctx, known, fmt.Sprintf("some of its keys are there but neither the marker %s nor the secret", s.key(markerKey)))
	case "created":
		// A running instance that knew the store marks it lost within a resync interval: give
		// it two before making a secret.
		select {
		case <-time.After(2 * s.resync):
		case <-ctx.Done():
			return fmt.Errorf("connecting to Redis: %w", ctx.Err())
		}
		secret := make([]byte, 32)
		rand.Read(secret)
		if err := completeScript.Run(ctx, s.client, s.ownKeys(), id, secret).Err(); err != nil {
			return fmt.Errorf("connecting to Redis: %w", err)
		}
	}
	st, err := s.inspect(ctx)
	if err != nil {
		return fmt.Errorf("connecting to Redis: %w", err)
	}
	if st.marker["state"] == "new" && st.marker["lost"] == "" {
		return errStoreBeingMade
	}
	if known != "" && st.marker["id"] != known && st.marker["by"] == madeByReinit && st.marker["lost"] == "" {
		known = "" // an operator re-initialised the store: this instance follows the new one
	}
	if why := st.lossReason(s.key(markerKey), known); why != "" {
		return s.lostAtOpen(ctx, known, why)
	}
	if s.sharded {
		// Change notices need sharded pub/sub (Redis 7.0): say so now rather than lose every
		// notice. An empty notice is ignored by every instance.
		if err := s.client.SPublish(ctx, s.changesChannel(), "").Err(); err != nil {
			return fmt.Errorf("connecting to Redis: a Redis Cluster needs Redis 7.0 or later for the change notices (SPUBLISH): %w", err)
		}
	}
	s.id = st.marker["id"]
	s.idFileErr = s.writeIDFile()
	return nil
}

// IDFileError says why the store id could not be remembered in the store-id file, or nil.
func (s *RedisStore) IDFileError() error { return s.idFileErr }

// ErrStoreHealthy is returned by ReinitRedis for a store that has lost nothing.
var ErrStoreHealthy = errors.New("the Redis store has lost nothing; it is not re-initialised")

// ReinitRedis makes a new store in a Redis whose store lost data, as an operator's deliberate
// step: it deletes what is left of the gateway's keys, principals, signing keys and revocations
// (the activity log stays), and writes a new marker, made by "gateway store reinit", and a new
// hashing secret. Every key must then be regenerated, principals created again and tokens minted
// again; instances started afterwards use the new store, running ones stay lost until restarted.
// It returns the new store id; ErrStoreHealthy when the store lost nothing.
func ReinitRedis(ctx context.Context, cfg config.Store) (string, error) {
	s, err := dialRedis(cfg)
	if err != nil {
		return "", err
	}
	defer s.client.Close()
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout*4, 2*time.Second))
	defer cancel()
	st, err := s.inspect(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the Redis store: %w", err)
	}
	if st.lossReason(s.key(markerKey), "") == "" {
		return "", fmt.Errorf("%w (store %s)", ErrStoreHealthy, st.marker["id"])
	}
	id := newStoreID()
	secret := make([]byte, 32)
	rand.Read(secret)
	now := time.Now().UTC()
	rec, _ := json.Marshal(Activity{Time: now.Truncate(time.Millisecond), Operation: OpStoreReinit, Initiator: madeByReinit,
		Target: "store " + id, Result: ResultSuccess})
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, append(s.ownKeys(), s.key("keys-used"))...)
		p.HSet(ctx, s.key(markerKey), "id", id, "createdAt", now.Format(time.RFC3339), "by", madeByReinit)
		p.Set(ctx, s.key(secretKey), secret, 0)
		p.Set(ctx, s.key(genKey), 1, 0)
		for _, c := range collections[:len(collections)-1] {
			p.HSet(ctx, s.key(c), presence, "1")
		}
		p.ZAdd(ctx, s.key("revoked"), redis.Z{Score: math.Inf(1), Member: presence})
		p.LPush(ctx, s.key("activity"), rec)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("re-initialising the Redis store: %w", err)
	}
	return id, nil
}

// lostAtOpen marks the store lost (for instances started later) and returns the error.
func (s *RedisStore) lostAtOpen(ctx context.Context, known, why string) error {
	s.id = known
	s.markLost(ctx, why)
	return fmt.Errorf("%w: %s", ErrStoreLost, why)
}

func (s *RedisStore) readIDFile() (string, error) {
	if s.idFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(s.idFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the Redis store's id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeIDFile remembers s.id in the store-id file, when there is one and the id is new to it.
func (s *RedisStore) writeIDFile() error {
	if s.idFile == "" {
		return nil
	}
	if old, _ := s.readIDFile(); old == s.id {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.idFile), 0o700); err != nil {
		return fmt.Errorf("remembering the Redis store's id: %w", err)
	}
	tmp := s.idFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(s.id+"\n"), 0o600); err != nil {
		return fmt.Errorf("remembering the Redis store's id: %w", err)
	}
	if err := os.Rename(tmp, s.idFile); err != nil {
		return fmt.Errorf("remembering the Redis store's id: %w", err)
	}
	return nil
}

// storeState is one look at the store's own keys.
type storeState struct {
	marker  map[string]string // the marker's fields; empty when it is gone
	gen     int64
	missing []string // names of the secret, generation and collections that are gone
}

// inspect reads the marker and the generation and checks that the secret and the collections
// are there, in one transaction.
func (s *RedisStore) inspect(ctx context.Context) (storeState, error) {
	var marker *redis.MapStringStringCmd
	var gen *redis.StringCmd
	names := append([]string{secretKey, genKey}, collections...)
	exists := make([]*redis.IntCmd, len(names))
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		marker = p.HGetAll(ctx, s.key(markerKey))
		gen = p.Get(ctx, s.key(genKey))
		for i, n := range names {
			exists[i] = p.Exists(ctx, s.key(n))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return storeState{}, err
	}
	st := storeState{marker: marker.Val()}
	st.gen, _ = gen.Int64()
	for i, n := range names {
		if exists[i].Val() == 0 {
			st.missing = append(st.missing, s.key(n))
		}
	}
	return st, nil
}

// lossReason says why st shows a store that lost data, or "": known is the id this instance
// knows ("" for none).
func (st storeState) lossReason(markerName, known string) string {
	m := st.marker
	switch {
	case len(m) == 0 && known != "":
		return fmt.Sprintf("its marker %s is gone (this instance knew it as store %s)", markerName, known)
	case len(m) == 0:
		return fmt.Sprintf("its marker %s is gone", markerName)
	case m["lost"] != "":
		return fmt.Sprintf("an instance found store %s lost at %s: %s", m["id"], m["lostAt"], m["lost"])
	case known != "" && m["id"] != known:
		return fmt.Sprintf("Redis now holds another store (%s, made by %s at %s) than the one this instance knew (%s)",
			m["id"], m["by"], m["createdAt"], known)
	case len(st.missing) > 0:
		return fmt.Sprintf("%s gone from store %s", strings.Join(st.missing, ", "), m["id"])
	}
	return ""
}

// markLost makes the store lost in this process, and records it in the marker for instances
// started later. It reports whether this call was the first to find the store lost.
func (s *RedisStore) markLost(ctx context.Context, why string) bool {
	if !s.lost.CompareAndSwap(nil, &why) {
		return false
	}
	ctx, cancel := s.call(context.WithoutCancel(ctx))
	defer cancel()
	// Best effort: Redis may be gone too, and instances started later find the loss themselves.
	markScript.Run(ctx, s.client, []string{s.key(markerKey)}, s.id, why, time.Now().UTC().Format(time.RFC3339))
	return true
}

// Lost says why the store lost data, or "" while it has not. Once lost, the store stays lost
// for the life of the process: every write is refused with ErrStoreLost.
func (s *RedisStore) Lost() string {
	if p := s.lost.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *RedisStore) errLost() error {
	if why := s.Lost(); why != "" {
		return fmt.Errorf("%w: %s", ErrStoreLost, why)
	}
	return nil
}

// ID is the store id this instance knows.
func (s *RedisStore) ID() string { return s.id }

// Secret implements Store.
func (s *RedisStore) Secret(ctx context.Context) ([]byte, error) {
	if err := s.errLost(); err != nil {
		return nil, err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	b, err := s.client.Get(ctx, s.key(secretKey)).Bytes()
	if errors.Is(err, redis.Nil) {
		s.markLost(ctx, s.key(secretKey)+" gone from store "+s.id)
		return nil, s.errLost()
	}
	if err != nil {
		return nil, fmt.Errorf("reading the hashing secret: %w", err)
	}
	return b, nil
}

// Generation checks that the store has lost nothing and returns its change counter; an error
// wrapping ErrStoreLost when it lost data, or when its counter went back below applied (the
// generation this instance has seen).
func (s *RedisStore) Generation(ctx context.Context, applied int64) (int64, error) {
	if err := s.errLost(); err != nil {
		return 0, err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	st, err := s.inspect(ctx)
	if err != nil {
		return 0, err
	}
	why := st.lossReason(s.key(markerKey), s.id)
	if why == "" && st.gen < applied {
		why = fmt.Sprintf("its generation went back from %d to %d", applied, st.gen)
	}
	if why != "" {
		s.markLost(ctx, why)
		return 0, s.errLost()
	}
	return st.gen, nil
}

// EvictionPolicy returns Redis's maxmemory-policy. Managed Redis services often deny CONFIG:
// the error says so.
func (s *RedisStore) EvictionPolicy(ctx context.Context) (string, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	m, err := s.client.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return "", err
	}
	p, ok := m["maxmemory-policy"]
	if !ok {
		return "", errors.New("CONFIG GET maxmemory-policy gave no value")
	}
	return p, nil
}

// write runs fn in a transaction that also bumps the generation, then publishes a change notice
// of kind with detail. With Sentinel it waits (within the timeout) for a replica to have the write,
// and reports the write as failed when none has, so that a failover cannot silently lose it.
func (s *RedisStore) write(ctx context.Context, kind, detail string, fn func(p redis.Pipeliner)) error {
	if err := s.errLost(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*s.timeout) // the transaction, WAIT and PUBLISH
	defer cancel()
	var gen *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		fn(p)
		gen = p.Incr(ctx, s.key(genKey))
		return nil
	})
	if err != nil {
		return err
	}
	return s.announce(ctx, gen.Val(), kind, detail)
}

// announce publishes the change notice of a write that made generation gen; with Sentinel it
// first waits for a replica to have the write (see write).
func (s *RedisStore) announce(ctx context.Context, gen int64, kind, detail string) error {
	if s.sentinel {
		// A write no replica has seen can vanish in a failover (or have gone to a master that
		// was just demoted): report it as failed, so the caller tries again.
		n, err := s.client.Do(ctx, "WAIT", 1, s.timeout.Milliseconds()).Int64()
		if err != nil || n < 1 {
			return ErrNotReplicated
		}
	}
	msg := strconv.FormatInt(gen, 10) + " " + kind
	if detail != "" {
		msg += " " + detail
	}
	// A lost notice is caught by the next generation check; the write itself succeeded.
	s.publish(ctx, msg)
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
		if field == presence {
			continue
		}
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

// guardLua starts a script that writes outside the store's transactions (last-use times, the
// activity log, token usage): it writes nothing, and answers "lost", unless the marker (KEYS[1])
// names the store this instance knows (ARGV[1]) and does not say that it is lost. A Redis that
// lost the gateway's data so gets nothing of it back, even before an instance has noticed.
const guardLua = `
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'lost') == 1 then return 'lost' end
`

// refusedAsLost makes the store lost after a guarded script refused to write, and returns the
// error: the reason is the one the store's keys show, when they show one.
func (s *RedisStore) refusedAsLost(ctx context.Context) error {
	ctx, cancel := s.call(context.WithoutCancel(ctx))
	defer cancel()
	why := fmt.Sprintf("its marker %s is gone, names another store than %s or says that it is lost", s.key(markerKey), s.id)
	if st, err := s.inspect(ctx); err == nil {
		if r := st.lossReason(s.key(markerKey), s.id); r != "" {
			why = r
		}
	}
	s.markLost(ctx, why)
	return s.errLost()
}

// touchScript records a last-use time only when it is later than the one stored. KEYS: the
// marker, keys-used. ARGV: the store id, then (key id, time) pairs.
var touchScript = redis.NewScript(guardLua + `
for i = 2, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[i]) or '0')
  if tonumber(ARGV[i+1]) > cur then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i+1]) end
end
return 'ok'`)

// TouchKeys implements Store. Last-use times live beside the key records, so that recording one
// can never write back a key record that was replaced meanwhile.
func (s *RedisStore) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	if err := s.errLost(); err != nil {
		return err
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	args := make([]any, 0, 1+2*len(used))
	args = append(args, s.id)
	for id, t := range used {
		args = append(args, id, strconv.FormatInt(t.UnixNano(), 10))
	}
	res, err := touchScript.Run(ctx, s.client, []string{s.key(markerKey), s.key("keys-used")}, args...).Text()
	if err != nil {
		return fmt.Errorf("recording key use: %w", err)
	}
	if res == "lost" {
		return fmt.Errorf("recording key use: %w", s.refusedAsLost(ctx))
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
		if field == presence {
			continue
		}
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
	if err := s.errLost(); err != nil {
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
	if name == presence {
		return ErrPrincipalUnknown
	}
	if err := s.errLost(); err != nil {
		return err
	}
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

// addSigningKeyScript saves a new signing key unless the store holds one that the caller does not
// know of, and bumps the generation. KEYS: the marker, signing-keys, the generation. ARGV: the
// store id, the new key's kid, its record, then the kids the caller knows. Returns the new
// generation, 0 when another key was there, or "lost" (see guardLua).
var addSigningKeyScript = redis.NewScript(guardLua + `
local known = {}
for i = 4, #ARGV do known[ARGV[i]] = true end
for _, kid in ipairs(redis.call('HKEYS', KEYS[2])) do
  if kid ~= '' and not known[kid] then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return redis.call('INCR', KEYS[3])`)

// AddSigningKey saves rec as a new signing key unless the store holds a signing key whose kid is
// not in known, that is, unless another instance made one meanwhile: then nothing is saved and
// it reports false. Instances that start together, or rotate together, so agree on one new key.
func (s *RedisStore) AddSigningKey(ctx context.Context, rec SigningKeyRecord, known []string) (bool, error) {
	v, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	if err := s.errLost(); err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*s.timeout) // the script, WAIT and PUBLISH
	defer cancel()
	args := append([]any{s.id, rec.KID, v}, anySlice(known)...)
	res, err := addSigningKeyScript.Run(ctx, s.client, []string{s.key(markerKey), s.key("signing-keys"), s.key(genKey)}, args...).Result()
	if err != nil {
		return false, err
	}
	switch gen := res.(type) {
	case string:
		return false, s.refusedAsLost(ctx)
	case int64:
		if gen == 0 {
			return false, nil
		}
		return true, s.announce(ctx, gen, "signing", "")
	}
	return false, fmt.Errorf("adding a signing key: unexpected answer %v", res)
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// DeleteSigningKey implements Store.
func (s *RedisStore) DeleteSigningKey(ctx context.Context, kid string) error {
	return s.write(ctx, "signing", "", func(p redis.Pipeliner) { p.HDel(ctx, s.key("signing-keys"), kid) })
}

// Revocations are a sorted set: member "<iss>\x00<jti>", score the expiry in unix milliseconds.
// Entries whose token has expired are removed on every write and read, so each leaves Redis when
// its token would have expired.

// revocationPage is how many revocations one ZSCAN step asks for: some 200 KB and a millisecond
// of Redis's time, well within store.redis_timeout, where reading a million at once would take
// the master for a quarter of a second and overrun the timeout.
const revocationPage = 4096

// Revocations implements Store. It reads the set in pages (ZSCAN), each within
// store.redis_timeout, so that a reload of a large set neither times out nor holds Redis up;
// a revocation added during the scan may be missed by it, but its change notice, of a later
// generation than the reload's, adds it.
func (s *RedisStore) Revocations(ctx context.Context) ([]Revocation, error) {
	ctx, cancel := context.WithTimeout(ctx, max(10*s.timeout, time.Minute)) // the whole read; each step has its own bound
	defer cancel()
	now := time.Now().UnixMilli()
	cctx, ccancel := s.call(ctx)
	err := s.client.ZRemRangeByScore(cctx, s.key("revoked"), "-inf", "("+strconv.FormatInt(now, 10)).Err()
	ccancel()
	if err != nil {
		return nil, fmt.Errorf("reading revocations: %w", err)
	}
	var out []Revocation
	seen := map[string]bool{} // a scan may return an entry twice
	var cursor uint64
	for {
		var page []string
		var next uint64
		// A step that times out is asked again (a step reads nothing twice that matters): ten
		// instances reloading at once on a busy machine may see one step overrun.
		for try := 1; ; try++ {
			cctx, ccancel := s.call(ctx)
			page, next, err = s.client.ZScan(cctx, s.key("revoked"), cursor, "", revocationPage).Result()
			ccancel()
			if err == nil || try == 3 || ctx.Err() != nil || !StoreUnreachable(err) {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("reading revocations: %w", err)
		}
		for i := 0; i+1 < len(page); i += 2 {
			member := page[i]
			iss, jti, ok := strings.Cut(member, "\x00")
			if !ok || seen[member] {
				continue
			}
			score, err := strconv.ParseFloat(page[i+1], 64)
			if err != nil || score < float64(now) {
				continue
			}
			seen[member] = true
			out = append(out, Revocation{Issuer: iss, JTI: jti, Expires: time.UnixMilli(int64(score))})
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
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

// appendActivityScript adds a record to the activity log and trims it. KEYS: the marker, the
// log. ARGV: the store id, the record, the log's bound.
var appendActivityScript = redis.NewScript(guardLua + `
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 'ok'`)

// AppendActivity implements Store.
func (s *RedisStore) AppendActivity(ctx context.Context, a Activity) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := s.errLost(); err != nil {
		return fmt.Errorf("recording activity: %w", err)
	}
	ctx, cancel := s.call(ctx)
	defer cancel()
	res, err := appendActivityScript.Run(ctx, s.client, []string{s.key(markerKey), s.key("activity")}, s.id, v, redisActivityLimit).Text()
	if err != nil {
		return fmt.Errorf("recording activity: %w", err)
	}
	if res == "lost" {
		return fmt.Errorf("recording activity: %w", s.refusedAsLost(ctx))
	}
	return nil
}

// Activity implements Store.
func (s *RedisStore) Activity(ctx context.Context, limit int) ([]Activity, error) {
	if limit <= 0 { // LRANGE 0 -1 would be the whole log
		return nil, nil
	}
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

// refreshTopology makes a Cluster client read the cluster's slots again, so that a subscription
// follows a slot that moved.
func (s *RedisStore) refreshTopology(ctx context.Context) {
	if c, ok := s.client.(*redis.ClusterClient); ok {
		ctx, cancel := s.call(ctx)
		defer cancel()
		c.ReloadState(ctx)
	}
}

// subscribe opens the change-notice subscription: sharded on a Cluster (see RedisStore.sharded).
func (s *RedisStore) subscribe(ctx context.Context) *redis.PubSub {
	if s.sharded {
		return s.client.SSubscribe(ctx, s.changesChannel())
	}
	return s.client.Subscribe(ctx, s.changesChannel())
}

// Package certstore keeps certmagic's certificates, private keys, ACME accounts and OCSP staples
// in Redis, and provides the distributed lock certmagic takes around an ACME order, so that
// several gateway instances pointed at the same Redis share one certificate per name and only one
// of them talks to the ACME server at a time. Storage implements certmagic.Storage,
// certmagic.TryLocker and certmagic.LockLeaseRenewer.
//
// Keys follow certmagic.FileStorage's file-and-directory semantics (see Storage for where it
// deliberately differs). Locks are leases: SET NX PX with a random token, renewed by a goroutine
// while held and released only by the token's owner, so a crashed instance holds a lock for one
// lease at most.
//
// It does not open, configure or close the Redis client, and it does not obtain certificates or
// choose which names get one: that is certmagic's job, configured by the caller.
package certstore

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// Defaults for the options.
const (
	DefaultLockLease = 30 * time.Second
	DefaultLockPoll  = time.Second
	DefaultTimeout   = 5 * time.Second
)

// Storage is a certmagic.Storage on Redis. Every instance given the same Redis and prefix sees the
// same keys and the same locks. It is safe for concurrent use.
//
// The data lives in three Redis keys, so every operation is one atomic Lua script:
//
//	<prefix>certmagic:index     sorted set of every stored key (all scores 0, ordered by name)
//	<prefix>certmagic:values    hash: key -> value
//	<prefix>certmagic:modified  hash: key -> modification time, Unix nanoseconds (the writer's clock)
//
// and each held lock in <prefix>certmagic:lock:<name>. Listing a directory is a ZRANGEBYLEX on the
// index, never a SCAN, so it works on a Cluster, where the prefix must carry a hash tag (such as
// "{scoregate}:") to keep the three data keys in one slot.
//
// Keys behave as in certmagic.FileStorage: they are cleaned like file paths ("a//b/" is "a/b"), a
// key is either a file (it has a value) or a directory (a prefix of files), storing a file below
// a file or over a directory fails, Delete removes a file or a whole directory, and List and Stat
// see directories. Where FileStorage shows an artefact of the file system rather than the
// certmagic.Storage contract, Storage follows the contract: a directory exists only while it has
// files in it (FileStorage keeps empty directories behind), and a key below a file does not exist
// (FileStorage reports "not a directory", which its Exists takes for existence and its Delete for
// failure). Delete("") is refused rather than wiping everything. A directory's Stat reports Size 0
// and, as Modified, the latest modification of a file in it.
type Storage struct {
	client  redis.UniversalClient
	prefix  string // "<prefix>certmagic:"
	lease   time.Duration
	poll    time.Duration
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	locals map[string]*localLock // lock name -> this process's claim on it
}

var (
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.TryLocker        = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)

// Option configures a Storage.
type Option func(*Storage)

// WithLockLease sets how long a lock outlives its holder's last renewal (default 30 s). The holder
// renews it every third of that while it runs, so a lock is lost only when the holder has not
// reached Redis for a whole lease, and a crashed holder blocks the other instances for at most
// one lease. Values below 30 ms are raised to 30 ms.
func WithLockLease(d time.Duration) Option {
	return func(s *Storage) { s.lease = max(d, 30*time.Millisecond) }
}

// WithLockPoll sets the longest wait between two attempts to take a lock somebody else holds
// (default 1 s). Waits start at a twentieth of it (at most 50 ms) and double, with jitter.
func WithLockPoll(d time.Duration) Option {
	return func(s *Storage) { s.poll = max(d, time.Millisecond) }
}

// WithTimeout bounds each Redis call (default 5 s; zero or less keeps it), in addition to the
// caller's context. Lease renewals are bounded by a third of the lease as well. The deadlines
// reach a hung connection only when the client was built with ContextTimeoutEnabled; otherwise
// its read timeout applies.
func WithTimeout(d time.Duration) Option {
	return func(s *Storage) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithLogger sets where lease renewal trouble and lost locks are reported (default, or nil:
// nowhere).
func WithLogger(log *slog.Logger) Option {
	return func(s *Storage) {
		if log != nil {
			s.log = log
		}
	}
}

// New returns a Storage keeping its keys under prefix + "certmagic:" in client. It does not
// contact Redis; the client stays the caller's to close, after every lock has been unlocked.
func New(client redis.UniversalClient, prefix string, opts ...Option) *Storage {
	s := &Storage{
		client:  client,
		prefix:  prefix + "certmagic:",
		lease:   DefaultLockLease,
		poll:    DefaultLockPoll,
		timeout: DefaultTimeout,
		log:     slog.New(slog.DiscardHandler),
		locals:  map[string]*localLock{},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// String names the storage in certmagic's logs.
func (s *Storage) String() string { return "certstore:" + s.prefix }

func (s *Storage) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// dataKeys are KEYS[1..3] of every data script.
func (s *Storage) dataKeys() []string {
	return []string{s.prefix + "index", s.prefix + "values", s.prefix + "modified"}
}

func (s *Storage) lockKey(name string) string { return s.prefix + "lock:" + name }

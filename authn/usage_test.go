package authn

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// usageBackend opens a store that keeps usage; open again gives a second handle on the same data
// (the same file once the first is closed, or a second client of the same Redis and prefix).
type usageBackend struct {
	name string
	open func(t *testing.T) (first UsageStore, again func(t *testing.T) UsageStore)
}

// usageBackends are the embedded store and the Redis store on a single server, and on a Cluster
// when cluster is set (a batch's script names several keys: they must share the store's slot).
func usageBackends(t *testing.T, cluster bool) []usageBackend {
	bolts := usageBackend{name: "embedded", open: func(t *testing.T) (UsageStore, func(*testing.T) UsageStore) {
		dir := t.TempDir()
		open := func(t *testing.T) UsageStore {
			s, err := OpenBolt(dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		first := open(t)
		return first, func(t *testing.T) UsageStore {
			// One process holds the file at a time: the data again is the file reopened.
			first.(*BoltStore).Close()
			return open(t)
		}
	}}
	srv := redistest.Start(t)
	n := 0
	redisOpen := func(base config.Store) func(t *testing.T) (UsageStore, func(*testing.T) UsageStore) {
		return func(t *testing.T) (UsageStore, func(*testing.T) UsageStore) {
			n++
			cfg := base
			cfg.RedisPrefix = fmt.Sprintf("{usage-%d}:", n)
			cfg.RedisTimeout = time.Second
			cfg.ResyncInterval = 10 * time.Millisecond
			open := func(t *testing.T) UsageStore {
				s, err := OpenRedis(context.Background(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			return open(t), open
		}
	}
	backends := []usageBackend{bolts, {name: "redis", open: redisOpen(config.Store{RedisURL: srv.URL()})}}
	if cluster {
		cl := redistest.Cluster(t, 3)
		backends = append(backends, usageBackend{name: "redis cluster", open: redisOpen(config.Store{RedisAddrs: cl.Addrs})})
	}
	return backends
}

func hourAgo(h int) time.Time {
	return time.Now().UTC().Truncate(time.Hour).Add(-time.Duration(h) * time.Hour)
}

func readUsage(t *testing.T, s UsageStore, q UsageQuery) []UsageRow {
	t.Helper()
	if q.Until.IsZero() {
		q.Until = time.Now().Add(time.Hour)
	}
	if q.Since.IsZero() {
		q.Since = time.Now().Add(-UsageRetention)
	}
	rows, err := s.Usage(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// Both stores add usage to hourly totals, answer queries by service and caller in order, and
// count a repeated batch once (issue 22: usage you can read).
func TestUsageStores(t *testing.T) {
	ctx := context.Background()
	for _, b := range usageBackends(t, true) {
		t.Run(b.name, func(t *testing.T) {
			t.Run("adds to hourly totals", func(t *testing.T) {
				s, _ := b.open(t)
				h2, h1 := hourAgo(2), hourAgo(1)
				add := func(id string, rows ...UsageRow) {
					t.Helper()
					if err := s.AddUsage(ctx, UsageBatch{ID: id, Rows: rows}); err != nil {
						t.Fatal(err)
					}
				}
				add("a",
					UsageRow{Hour: h1.Add(5 * time.Minute), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 10, OutputTokens: 5, Calls: 1},
					UsageRow{Hour: h1.Add(50 * time.Minute), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 1, OutputTokens: 2, Calls: 1},
					UsageRow{Hour: h2, Service: "chat", Caller: "principal:ann", Model: "m", InputTokens: 7, Calls: 1},
				)
				add("b",
					UsageRow{Hour: h1, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 100, OutputTokens: 50, Calls: 3},
					UsageRow{Hour: h1, Service: "embed", Caller: "key:k2", Model: "e", InputTokens: 4, Calls: 2},
					UsageRow{Hour: h1, Service: "chat", Caller: "key:k1", Model: "big", OutputTokens: 9, Calls: 1},
				)
				all := []UsageRow{
					{Hour: h2, Service: "chat", Caller: "principal:ann", Model: "m", InputTokens: 7, Calls: 1},
					{Hour: h1, Service: "chat", Caller: "key:k1", Model: "big", OutputTokens: 9, Calls: 1},
					{Hour: h1, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 111, OutputTokens: 57, Calls: 5},
					{Hour: h1, Service: "embed", Caller: "key:k2", Model: "e", InputTokens: 4, Calls: 2},
				}
				if d := cmp.Diff(all, readUsage(t, s, UsageQuery{})); d != "" {
					t.Errorf("every row (-want +got):\n%s", d)
				}
				if d := cmp.Diff(all[1:3], readUsage(t, s, UsageQuery{Service: "chat", Caller: "key:k1"})); d != "" {
					t.Errorf("chat, key:k1 (-want +got):\n%s", d)
				}
				if d := cmp.Diff(all[1:], readUsage(t, s, UsageQuery{Since: h1.Add(30 * time.Minute)})); d != "" {
					t.Errorf("since within the last hour (-want +got):\n%s", d)
				}
				if d := cmp.Diff(all[:1], readUsage(t, s, UsageQuery{Until: h1})); d != "" {
					t.Errorf("until the last hour (-want +got):\n%s", d)
				}
				if d := cmp.Diff(all[:2], readUsage(t, s, UsageQuery{Limit: 2})); d != "" {
					t.Errorf("limit 2 (-want +got):\n%s", d)
				}
			})
			t.Run("a repeated batch counts once", func(t *testing.T) {
				s, _ := b.open(t)
				row := UsageRow{Hour: hourAgo(0), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 3, OutputTokens: 4, Calls: 1}
				for _, id := range []string{"x", "x", "y"} {
					if err := s.AddUsage(ctx, UsageBatch{ID: id, Rows: []UsageRow{row}}); err != nil {
						t.Fatal(err)
					}
				}
				want := []UsageRow{{Hour: hourAgo(0), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 6, OutputTokens: 8, Calls: 2}}
				if d := cmp.Diff(want, readUsage(t, s, UsageQuery{})); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			})
			t.Run("a batch larger than one script call", func(t *testing.T) {
				s, again := b.open(t)
				var rows []UsageRow
				for i := range 3*usageChunk + 7 {
					rows = append(rows, UsageRow{Hour: hourAgo(i % 3), Service: "chat", Caller: "key:k" + strconv.Itoa(i), Model: "m", InputTokens: 1, Calls: 1})
				}
				for range 2 { // the second time changes nothing
					if err := s.AddUsage(ctx, UsageBatch{ID: "big", Rows: rows}); err != nil {
						t.Fatal(err)
					}
				}
				got := readUsage(t, again(t), UsageQuery{})
				var sum int64
				for _, r := range got {
					sum += r.InputTokens
				}
				if len(got) != len(rows) || sum != int64(len(rows)) {
					t.Errorf("%d rows summing to %d input tokens, want %d and %d", len(got), sum, len(rows), len(rows))
				}
			})
			t.Run("names are kept without control characters", func(t *testing.T) {
				s, _ := b.open(t)
				row := UsageRow{Hour: hourAgo(0), Service: "chat", Caller: "key:k1", Model: "evil\tmodel\x00\xff" + strings.Repeat("x", 300), InputTokens: 1, Calls: 1}
				if err := s.AddUsage(ctx, UsageBatch{ID: "n", Rows: []UsageRow{row}}); err != nil {
					t.Fatal(err)
				}
				got := readUsage(t, s, UsageQuery{})
				if len(got) != 1 || !strings.HasPrefix(got[0].Model, "evil\uFFFDmodel\uFFFD\uFFFD") || len(got[0].Model) > maxUsageName || got[0].Calls != 1 {
					t.Errorf("got %+v", got)
				}
			})
			t.Run("hours past retention are neither added nor read", func(t *testing.T) {
				s, _ := b.open(t)
				cutoff := usageCutoff(time.Now())
				rows := []UsageRow{
					{Hour: cutoff.Add(-time.Hour), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 1, Calls: 1},
					{Hour: cutoff.Add(time.Hour), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 2, Calls: 1},
				}
				if err := s.AddUsage(ctx, UsageBatch{ID: "r", Rows: rows}); err != nil {
					t.Fatal(err)
				}
				got := readUsage(t, s, UsageQuery{Since: cutoff.Add(-48 * time.Hour)})
				if d := cmp.Diff(rows[1:], got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			})
		})
	}
}

// Instances sharing one Redis add to the same totals: concurrent batches from two clients lose
// nothing.
func TestRedisUsageSharedTotals(t *testing.T) {
	b := usageBackends(t, false)[1]
	s1, again := b.open(t)
	s2 := again(t)
	var wg sync.WaitGroup
	for i := range 40 {
		s := []UsageStore{s1, s2}[i%2]
		wg.Go(func() {
			row := UsageRow{Hour: hourAgo(0), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 10, OutputTokens: 1, Calls: 1}
			if err := s.AddUsage(context.Background(), UsageBatch{ID: "c" + strconv.Itoa(i), Rows: []UsageRow{row}}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	want := []UsageRow{{Hour: hourAgo(0), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 400, OutputTokens: 40, Calls: 40}}
	if d := cmp.Diff(want, readUsage(t, s1, UsageQuery{})); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// In Redis an hour's hash expires 31 days after the hour ends, and a batch's marker after a day;
// neither takes part in the loss detection.
func TestRedisUsageExpiry(t *testing.T) {
	srv := redistest.Start(t)
	cfg := config.Store{RedisURL: srv.URL(), RedisPrefix: "{scoregate}:", RedisTimeout: time.Second, ResyncInterval: 10 * time.Millisecond}
	s, err := OpenRedis(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hour := hourAgo(3)
	row := UsageRow{Hour: hour, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 1, Calls: 1}
	if err := s.AddUsage(context.Background(), UsageBatch{ID: "e", Rows: []UsageRow{row}}); err != nil {
		t.Fatal(err)
	}
	key := "{scoregate}:usage:" + hour.Format("2006010215")
	at, _ := strconv.ParseInt(strings.TrimSpace(srv.Do(t, "EXPIRETIME", key)), 10, 64)
	if want := hour.Add(time.Hour + UsageRetention).Unix(); at != want {
		t.Errorf("%s expires at %d, want %d (31 days after the hour ends)", key, at, want)
	}
	if ttl, _ := strconv.Atoi(strings.TrimSpace(srv.Do(t, "TTL", "{scoregate}:usage-batch:e:0"))); ttl <= 0 || ttl > int(UsageBatchMemory/time.Second) {
		t.Errorf("batch marker TTL %d", ttl)
	}
	// The usage gone (as when it expires) is not the store losing data.
	srv.Do(t, "DEL", key)
	if _, err := s.Generation(context.Background(), 0); err != nil {
		t.Errorf("after the usage hash went: %v", err)
	}
}

// The embedded store deletes the hours past retention when it adds usage.
func TestBoltUsageRetention(t *testing.T) {
	s, err := OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := usageCutoff(time.Now()).Add(-time.Hour)
	err = s.db.Update(func(tx *bolt.Tx) error { // as if written 31 days ago
		b, err := tx.CreateBucketIfNotExists(bucketUsage)
		if err != nil {
			return err
		}
		return b.Put(boltUsageKey(old, usageTriple{"chat", "key:k1", "m"}), make([]byte, 24))
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func() (n int) {
		s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketUsage).Stats().KeyN; return nil })
		return n
	}
	if count() != 1 {
		t.Fatal("the old row was not written")
	}
	row := UsageRow{Hour: hourAgo(0), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 1, Calls: 1}
	if err := s.AddUsage(context.Background(), UsageBatch{ID: "x", Rows: []UsageRow{row}}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("%d rows after adding one: the hour past retention was kept", n)
	}
}

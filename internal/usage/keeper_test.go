package usage

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// go-redis would report every refused connection of the outage tests on stderr.
func init() { redis.SetLogger(discardLogger{}) }

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// The flush loop is gone once its keeper is closed; so are the stores' connections.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openRedis(t *testing.T, url string) *authn.RedisStore {
	t.Helper()
	cfg := config.Store{RedisURL: url, RedisPrefix: "{scoregate}:", RedisTimeout: 200 * time.Millisecond, ResyncInterval: 10 * time.Millisecond}
	s, err := authn.OpenRedis(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openBolt(t *testing.T, dir string) *authn.BoltStore {
	t.Helper()
	s, err := authn.OpenBolt(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, s authn.UsageStore) []authn.UsageRow {
	t.Helper()
	rows, err := s.Usage(context.Background(), authn.UsageQuery{Since: time.Now().Add(-authn.UsageRetention), Until: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func closeKeeper(t *testing.T, k *Keeper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// logBuffer is a log that tests read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), msg)
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// Two gateway instances on one Redis, each with its keeper, flushing while calls keep coming:
// the stored totals are exactly the sum of every call (issue 22: usage you can read).
func TestKeepersOnOneRedisAddUpExactly(t *testing.T) {
	srv := redistest.Start(t)
	keepers := []*Keeper{
		NewKeeper(openRedis(t, srv.URL()), WithFlushInterval(10*time.Millisecond)),
		NewKeeper(openRedis(t, srv.URL()), WithFlushInterval(10*time.Millisecond)),
	}
	now := time.Now()
	callers := []string{"key:k1", "key:k2", "principal:ann"}
	var wg sync.WaitGroup
	for w := range 8 {
		k := keepers[w%2]
		wg.Go(func() {
			for i := range 500 {
				k.Add(Event{Time: now, Service: "chat", Deployment: "blue", Caller: callers[i%3], Model: "markov", InputTokens: 3, OutputTokens: 2})
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // let flushes happen between calls
				}
			}
		})
	}
	wg.Wait()
	for _, k := range keepers {
		closeKeeper(t, k)
	}
	hour := now.UTC().Truncate(time.Hour)
	var want []authn.UsageRow
	for _, c := range []string{"key:k1", "key:k2", "principal:ann"} { // 4000 calls, a third each (rounded)
		n := int64(0)
		for i := range 500 {
			if callers[i%3] == c {
				n += 8
			}
		}
		want = append(want, authn.UsageRow{Hour: hour, Service: "chat", Caller: c, Model: "markov", InputTokens: 3 * n, OutputTokens: 2 * n, Calls: n})
	}
	if d := cmp.Diff(want, readAll(t, openRedis(t, srv.URL()))); d != "" {
		t.Errorf("stored totals (-want +got):\n%s", d)
	}
}

// Close adds what is left to the store, without waiting for the next flush; usage of an hour
// past retention is not kept.
func TestKeeperFlushesOnClose(t *testing.T) {
	dir := t.TempDir()
	store := openBolt(t, dir)
	k := NewKeeper(store, WithFlushInterval(time.Hour))
	now := time.Now()
	k.Add(Event{Time: now, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 10, OutputTokens: 20})
	k.Add(Event{Time: now, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 1, OutputTokens: 2})
	k.Add(Event{Time: now.Add(-authn.UsageRetention - 2*time.Hour), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 5})
	if rows := readAll(t, store); len(rows) != 0 {
		t.Fatalf("stored before the flush: %+v", rows)
	}
	closeKeeper(t, k)
	store.Close()
	store = openBolt(t, dir)
	defer store.Close()
	want := []authn.UsageRow{{Hour: now.UTC().Truncate(time.Hour), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 11, OutputTokens: 22, Calls: 2}}
	if d := cmp.Diff(want, readAll(t, store)); d != "" {
		t.Errorf("after Close and reopening (-want +got):\n%s", d)
	}
}

// A store that fails keeps the totals for the next flush; the outage is logged once, however
// many flushes fail, and the recovery once; nothing is lost, and a write that Redis applied but
// whose answer came too late is not counted twice.
func TestKeeperStoreFailsThenRecovers(t *testing.T) {
	srv := redistest.Start(t)
	px := redistest.NewProxy(t, srv.Addr)
	store := openRedis(t, px.URL())
	var log logBuffer
	k := NewKeeper(store, WithFlushInterval(time.Hour), WithLogger(log.logger()))
	defer closeKeeper(t, k)
	ctx := context.Background()
	now := time.Now()
	calls := 0
	add := func(caller string) {
		k.Add(Event{Time: now, Service: "chat", Caller: caller, Model: "m", InputTokens: 7, OutputTokens: 1})
		calls++
	}

	add("key:k1")
	px.Cut(t)
	for range 3 {
		add("key:k1")
		add("key:k2")
		if err := k.Flush(ctx); err == nil {
			t.Fatal("a flush to an unreachable Redis succeeded")
		}
	}
	if n := log.count("saving token usage to the store failed"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, log.b.String())
	}
	px.Restore(t)
	if err := k.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := log.count("token usage is saved to the store again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once", n)
	}

	// Redis applies the write, its answer arrives after the deadline: the flush fails, and the
	// next one repeats the batch, which Redis counts once.
	add("key:k1")
	px.SetDelay(2 * time.Second)
	if err := k.Flush(ctx); err == nil {
		t.Fatal("a flush whose answer came after its deadline succeeded")
	}
	px.SetDelay(0)
	if err := k.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	hour := now.UTC().Truncate(time.Hour)
	want := []authn.UsageRow{
		{Hour: hour, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 7 * 5, OutputTokens: 5, Calls: 5},
		{Hour: hour, Service: "chat", Caller: "key:k2", Model: "m", InputTokens: 7 * 3, OutputTokens: 3, Calls: 3},
	}
	if calls != 8 {
		t.Fatalf("test bug: %d calls", calls)
	}
	if d := cmp.Diff(want, readAll(t, store)); d != "" {
		t.Errorf("stored totals (-want +got):\n%s", d)
	}
}

// Past its bound the keeper drops the calls of new rows, counts them and logs once; calls that
// add to a row it keeps still count.
func TestKeeperBound(t *testing.T) {
	store := openBolt(t, t.TempDir())
	defer store.Close()
	var log logBuffer
	k := NewKeeper(store, WithFlushInterval(time.Hour), WithMaxRows(2), WithLogger(log.logger()))
	now := time.Now()
	for _, c := range []string{"key:a", "key:b", "key:c", "key:d", "key:a"} {
		k.Add(Event{Time: now, Service: "chat", Caller: c, Model: "m", InputTokens: 1})
	}
	if d := k.Dropped(); d != 2 {
		t.Errorf("Dropped() = %d, want 2", d)
	}
	if n := log.count("reached its bound"); n != 1 {
		t.Errorf("dropping logged %d times, want once", n)
	}
	closeKeeper(t, k)
	rows := readAll(t, store)
	if len(rows) != 2 || rows[0].Caller != "key:a" || rows[0].Calls != 2 || rows[1].Caller != "key:b" {
		t.Errorf("stored %+v, want key:a twice and key:b once", rows)
	}
}

// The status page's figure: tokens of the calls that ended in the last minute, per service.
func TestKeeperTokensPerMinute(t *testing.T) {
	store := openBolt(t, t.TempDir())
	defer store.Close()
	k := NewKeeper(store, WithFlushInterval(time.Hour))
	defer closeKeeper(t, k)
	now := time.Now()
	if _, ok := k.TokensPerMinute("chat", now); ok {
		t.Error("a service without calls has a figure")
	}
	k.Add(Event{Time: now.Add(-30 * time.Second), Service: "chat", InputTokens: 100, OutputTokens: 20})
	k.Add(Event{Time: now.Add(-90 * time.Second), Service: "chat", InputTokens: 1000}) // ended long ago, reported late
	k.Add(Event{Time: now, Service: "chat", OutputTokens: 3})
	k.Add(Event{Time: now, Service: "embed", InputTokens: 9})
	if n, ok := k.TokensPerMinute("chat", now); !ok || n != 123 {
		t.Errorf("chat: %d (%v), want 123", n, ok)
	}
	if n, _ := k.TokensPerMinute("chat", now.Add(2*time.Minute)); n != 0 {
		t.Errorf("chat two minutes later: %d, want 0", n)
	}
}

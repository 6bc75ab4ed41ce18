package authn

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/redistest"
)

// countLog returns how many records with msg rec holds.
func (h *logRecorder) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Message == msg {
			n++
		}
	}
	return n
}

// After Redis lost the gateway's data, nothing of the gateway's is written into it again until an
// operator acts: not key last-use times (the keyring's flusher), not activity records, not token
// usage, not even by an instance that has not noticed the loss yet. The one key that comes back
// is the marker, which the first instance to notice rewrites to say that the store is lost
// (issue 23).
func TestNothingIsWrittenToAStoreThatLostItsData(t *testing.T) {
	srv := redistest.Start(t)
	cfg := redisConfig(t, config.Store{RedisURL: srv.URL()})
	rec := &logRecorder{}
	a := startLoggedInstance(t, cfg, slog.New(rec))
	ctx := context.Background()
	key, err := a.keys.Regenerate(ctx, "iris", SlotPrimary)
	if err != nil {
		t.Fatal(err)
	}
	const flushEvery = 50 * time.Millisecond
	flushCtx, stopFlusher := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.keys.RunFlusher(flushCtx, flushEvery) })
	t.Cleanup(func() { stopFlusher(); wg.Wait() })
	// b is an instance that never checks the store, so it does not notice the loss by itself.
	b, err := OpenRedis(ctx, cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	activity := NewActivityLog(a.store, slog.New(rec))
	usage := UsageBatch{Rows: []UsageRow{{Hour: time.Now().UTC().Truncate(time.Hour), Service: "iris", Caller: "rita", Model: "m", Calls: 1}}}

	// Before the loss, every writer writes.
	if err := a.checkKey(key); err != nil {
		t.Fatal(err)
	}
	activity.Record(ctx, OpServicesRead, "rita", "iris", ResultSuccess)
	if err := b.AddUsage(ctx, usage); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "key use recorded", func() bool { return srv.Do(t, "EXISTS", "{scoregate}:keys-used") == "1" })
	for _, k := range []string{"{scoregate}:activity", "{scoregate}:usage:" + usage.Rows[0].Hour.Format("2006010215")} {
		if srv.Do(t, "EXISTS", k) != "1" {
			t.Fatalf("%s not written before the loss", k)
		}
	}

	if err := a.checkKey(key); err != nil { // a last-use time that the flusher has yet to write
		t.Fatal(err)
	}
	srv.Do(t, "FLUSHALL")
	// b has not noticed: its writes are refused by Redis itself, and b then knows.
	if err := b.TouchKeys(ctx, map[string]time.Time{"k": time.Now()}); !errors.Is(err, ErrStoreLost) {
		t.Errorf("TouchKeys on an instance that had not noticed the loss: %v, want ErrStoreLost", err)
	}
	if b.Lost() == "" {
		t.Error("b does not know that the store is lost after a refused write")
	}
	if err := b.AddUsage(ctx, usage); !errors.Is(err, ErrStoreLost) {
		t.Errorf("AddUsage: %v, want ErrStoreLost", err)
	}
	if err := b.AppendActivity(ctx, Activity{Time: time.Now(), Operation: OpServicesRead}); !errors.Is(err, ErrStoreLost) {
		t.Errorf("AppendActivity: %v, want ErrStoreLost", err)
	}
	eventually(t, 2*time.Second, "a notices the loss", func() bool { return a.replica.Lost() != "" })

	want := []string{"{scoregate}:initialized"}
	for i := range 6 { // a few of the flusher's intervals, with activity and usage on both
		if err := a.checkKey(key); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("a key on an instance whose store lost data: %v, want ErrUnavailable", err)
		}
		for _, e := range a.keys.snapshot() { // a use the flusher tries to record every interval
			e.lastUsed.Store(time.Now().UnixNano())
		}
		activity.Record(ctx, OpServicesRead, "rita", "iris", ResultSuccess)
		if err := a.store.AddUsage(ctx, usage); !errors.Is(err, ErrStoreLost) {
			t.Errorf("AddUsage on a: %v, want ErrStoreLost", err)
		}
		time.Sleep(flushEvery)
		keys := strings.Fields(srv.Do(t, "KEYS", "*"))
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Fatalf("Redis holds %q %s after the loss was noticed, want only the marker %q", keys, time.Duration(i+1)*flushEvery, want)
		}
	}
	if m := srv.Do(t, "HGET", "{scoregate}:initialized", "lost"); m == "" {
		t.Error("the marker does not say that the store is lost")
	}
	if n := rec.count("recording key use: the store lost data; last-use times are kept in memory"); n != 1 {
		t.Errorf("the flusher logged the loss %d times, want once", n)
	}
	if n := rec.count("recording key use"); n != 0 {
		t.Errorf("the flusher logged %d failures besides the loss", n)
	}
}

package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/authn"
)

// Keeper is the Sink that keeps usage in the store: Add sums calls in memory per hour, service,
// caller and model, and a background loop adds the sums to the store's hourly totals every
// interval, and once more at Close.
//
// Memory is bounded: at most maxRows sums wait for the next flush, and at most as many again
// that the store did not take (kept as one batch and tried again, under the same batch id, so a
// write whose answer was lost counts once). Past the bound a call of a new hour, service, caller
// and model is dropped and counted (Dropped), and logged once until the next flush; calls that
// add to a sum already kept are never dropped.
type Keeper struct {
	store    authn.UsageStore
	log      *slog.Logger
	interval time.Duration
	maxRows  int

	mu       sync.Mutex
	current  map[rowKey]*sums
	dropping bool // a call was dropped since the last flush (logged once)
	pending  *authn.UsageBatch
	recent   map[string]*window

	dropped atomic.Int64

	flushMu sync.Mutex // one flush at a time
	failing bool       // the store failed the last flush (guarded by flushMu)

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ Sink = (*Keeper)(nil)

type rowKey struct {
	hour                   int64 // Unix seconds of the hour's start
	service, caller, model string
}

type sums struct{ in, out, calls int64 }

// Defaults of a Keeper.
const (
	DefaultFlushInterval = 5 * time.Second
	DefaultMaxRows       = 10000
)

// maxModelName bounds a model's name as kept (it comes from the model's answer).
const maxModelName = 256

// maxRecentServices bounds the services whose recent tokens are kept for the status page.
const maxRecentServices = 1000

// Option adds to NewKeeper.
type Option func(*Keeper)

// WithLogger logs the store's failures (once per outage) and dropped calls there.
func WithLogger(log *slog.Logger) Option { return func(k *Keeper) { k.log = log } }

// WithFlushInterval sets how often the sums are added to the store (DefaultFlushInterval).
func WithFlushInterval(d time.Duration) Option { return func(k *Keeper) { k.interval = d } }

// WithMaxRows bounds the sums kept in memory (DefaultMaxRows); see Keeper.
func WithMaxRows(n int) Option { return func(k *Keeper) { k.maxRows = n } }

// NewKeeper returns a Keeper over store and starts its flush loop; Close stops it.
func NewKeeper(store authn.UsageStore, opts ...Option) *Keeper {
	k := &Keeper{store: store, interval: DefaultFlushInterval, maxRows: DefaultMaxRows,
		current: map[rowKey]*sums{}, recent: map[string]*window{}, stop: make(chan struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(k)
	}
	if k.log == nil {
		k.log = slog.New(slog.DiscardHandler)
	}
	go k.run()
	return k
}

// Add implements Sink: it only takes a lock and updates a map.
func (k *Keeper) Add(e Event) {
	t := e.Time
	if t.IsZero() {
		t = time.Now()
	}
	model := e.Model
	if len(model) > maxModelName {
		model = model[:maxModelName] // the store mends a rune cut in half
	}
	in, out := max(e.InputTokens, 0), max(e.OutputTokens, 0)
	key := rowKey{t.UTC().Truncate(time.Hour).Unix(), e.Service, e.Caller, model}
	k.mu.Lock()
	s := k.current[key]
	if s == nil {
		if len(k.current) >= k.maxRows {
			first := !k.dropping
			k.dropping = true
			k.mu.Unlock()
			k.dropped.Add(1)
			if first {
				k.log.Warn("token usage kept in memory reached its bound; the usage of new callers and models is dropped until the store takes what is kept",
					"max_rows", k.maxRows)
			}
			return
		}
		s = &sums{}
		k.current[key] = s
	}
	s.in += in
	s.out += out
	s.calls++
	k.addRecent(e.Service, t, in+out)
	k.mu.Unlock()
}

// Dropped is how many calls' usage was dropped because memory was at its bound.
func (k *Keeper) Dropped() int64 { return k.dropped.Load() }

// Flush adds what is kept to the store now: first a batch the store failed before (as it was,
// under its id), then the sums since. On an error what is kept stays for the next flush; the
// first error of an outage is logged, and the store's recovery.
func (k *Keeper) Flush(ctx context.Context) error {
	k.flushMu.Lock()
	defer k.flushMu.Unlock()
	for {
		k.mu.Lock()
		if k.pending == nil && len(k.current) > 0 {
			k.pending = k.batchLocked()
		}
		b := k.pending
		k.mu.Unlock()
		if b == nil {
			if k.failing {
				k.failing = false
				k.log.Info("token usage is saved to the store again")
			}
			return nil
		}
		if err := k.store.AddUsage(ctx, *b); err != nil {
			if !k.failing {
				k.failing = true
				k.log.Warn("saving token usage to the store failed; it is kept in memory and saved when the store answers",
					"rows", len(b.Rows), "err", err)
			}
			return err
		}
		k.mu.Lock()
		k.pending = nil
		more := len(k.current) > 0
		k.mu.Unlock()
		if !more {
			if k.failing {
				k.failing = false
				k.log.Info("token usage is saved to the store again")
			}
			return nil
		}
	}
}

// batchLocked turns the current sums into a batch with a new id, and starts new sums (mu held).
func (k *Keeper) batchLocked() *authn.UsageBatch {
	var id [12]byte
	rand.Read(id[:])
	b := &authn.UsageBatch{ID: hex.EncodeToString(id[:]), Rows: make([]authn.UsageRow, 0, len(k.current))}
	for key, s := range k.current {
		b.Rows = append(b.Rows, authn.UsageRow{Hour: time.Unix(key.hour, 0).UTC(), Service: key.service, Caller: key.caller,
			Model: key.model, InputTokens: s.in, OutputTokens: s.out, Calls: s.calls})
	}
	k.current = map[rowKey]*sums{}
	k.dropping = false
	return b
}

// Usage implements authn.UsageStore's reading: what this instance kept is added to the store
// first (as far as the store takes it within a few seconds), then the store is read, so that a
// call shows as soon as it has ended. Other instances' calls show after their next flush.
func (k *Keeper) Usage(ctx context.Context, q authn.UsageQuery) ([]authn.UsageRow, error) {
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	k.Flush(fctx) // a failure is logged; the store's answer is still worth giving
	cancel()
	return k.store.Usage(ctx, q)
}

func (k *Keeper) run() {
	defer close(k.done)
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), max(k.interval, 5*time.Second))
			k.Flush(ctx)
			cancel()
		}
	}
}

// Close stops the flush loop and adds what is left to the store within ctx; the error says
// that some was not saved. Calling it again does nothing and returns the same error.
func (k *Keeper) Close(ctx context.Context) error {
	k.closeOnce.Do(func() {
		close(k.stop)
		<-k.done
		k.closeErr = k.Flush(ctx)
	})
	return k.closeErr
}

// Recent tokens, for the status page: per service, the tokens of the calls that ended in each
// of the last recentSlots slots of recentSlot.
const (
	recentSlot  = 5 * time.Second
	recentSlots = 12
)

type window struct {
	slot   [recentSlots]int64 // slot number (Unix time / recentSlot) each bucket holds
	tokens [recentSlots]int64
}

func (k *Keeper) addRecent(service string, t time.Time, tokens int64) {
	w := k.recent[service]
	if w == nil {
		if len(k.recent) >= maxRecentServices {
			return
		}
		w = &window{}
		k.recent[service] = w
	}
	n := t.UnixNano() / int64(recentSlot)
	i := int(n % recentSlots)
	switch {
	case w.slot[i] > n:
		return // older than the window
	case w.slot[i] < n:
		w.slot[i], w.tokens[i] = n, 0
	}
	w.tokens[i] += tokens
}

// TokensPerMinute is the input and output tokens of the service's calls that ended on this
// instance in the minute before now; ok is false while the service has had no call with usage
// since the gateway started.
func (k *Keeper) TokensPerMinute(service string, now time.Time) (tokens int64, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.recent[service]
	if w == nil {
		return 0, false
	}
	n := now.UnixNano() / int64(recentSlot)
	for i := range recentSlots {
		if s := w.slot[i]; s > n-recentSlots && s <= n {
			tokens += w.tokens[i]
		}
	}
	return tokens, true
}

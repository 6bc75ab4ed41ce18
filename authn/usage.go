package authn

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// UsageStore keeps the token usage of language-model services as hourly totals, beside the
// credentials: the embedded store and the Redis store both satisfy it. It is apart from Store so
// that a store that keeps no usage (a test's) need not implement it.
//
// Usage is statistics, not state the gateway decides by: hours older than UsageRetention are
// deleted, and usage missing from Redis never counts as the store losing data.
type UsageStore interface {
	// AddUsage adds the batch's rows to the stored totals (it never replaces them). A batch added
	// again under the same ID, within UsageBatchMemory of the first time, counts once, so that a
	// caller may repeat a write whose answer it did not get. Rows of hours older than
	// UsageRetention are left out.
	AddUsage(ctx context.Context, b UsageBatch) error
	// Usage returns the stored totals that q selects, ordered by hour, service, caller and model.
	Usage(ctx context.Context, q UsageQuery) ([]UsageRow, error)
}

var (
	_ UsageStore = (*BoltStore)(nil)
	_ UsageStore = (*RedisStore)(nil)
)

// UsageRetention is how long the hourly totals are kept: an hour's totals are deleted 31 days
// after the hour ends.
const UsageRetention = 31 * 24 * time.Hour

// UsageBatchMemory is how long a store remembers the ID of a batch it added.
const UsageBatchMemory = 24 * time.Hour

// UsageRow is the token usage of one caller of one service with one model in one hour.
type UsageRow struct {
	// Hour is the hour's start, in UTC.
	Hour    time.Time `json:"hour"`
	Service string    `json:"service"`
	// Caller is "key:<key id>" or "principal:<name>", never a credential.
	Caller string `json:"caller"`
	Model  string `json:"model"`
	// InputTokens and OutputTokens are the model's counts; Calls the calls they came from.
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	Calls        int64 `json:"calls"`
}

// UsageBatch is rows added to the totals at once, under an ID that makes repeating it safe.
type UsageBatch struct {
	ID   string
	Rows []UsageRow
}

// UsageQuery selects stored usage: the hours that overlap [Since, Until), of one service and one
// caller when those are set.
type UsageQuery struct {
	Since, Until time.Time
	Service      string // "" for every service
	Caller       string // "" for every caller
	// Limit bounds the rows returned, the earliest first; 0 for no bound.
	Limit int
}

// maxUsageName bounds a service, caller or model name as stored, in bytes.
const maxUsageName = 256

// usageName is name as stored: valid UTF-8 without control characters (a model's name comes
// from its answer), at most maxUsageName bytes.
func usageName(name string) string {
	clean := func(s string) bool {
		for _, r := range s {
			if r == utf8.RuneError || unicode.IsControl(r) {
				return false
			}
		}
		return len(s) <= maxUsageName
	}
	if clean(name) {
		return name
	}
	name = strings.ToValidUTF8(name, "\uFFFD")
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '\uFFFD'
		}
		return r
	}, name)
	for len(name) > maxUsageName {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}

// usageHour is the start of t's hour, in UTC.
func usageHour(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// usageCutoff is the earliest hour still kept at now.
func usageCutoff(now time.Time) time.Time { return usageHour(now.Add(-UsageRetention)) }

// usageTriple names a row within its hour.
type usageTriple struct{ service, caller, model string }

// mergeUsage sums rows of the same hour, service, caller and model (cleaning the names as the
// stores keep them) and orders them.
func mergeUsage(rows []UsageRow) []UsageRow {
	type key struct {
		hour int64
		usageTriple
	}
	byKey := make(map[key]int, len(rows))
	var out []UsageRow
	for _, r := range rows {
		r.Hour = usageHour(r.Hour)
		r.Service, r.Caller, r.Model = usageName(r.Service), usageName(r.Caller), usageName(r.Model)
		k := key{r.Hour.Unix(), usageTriple{r.Service, r.Caller, r.Model}}
		if i, ok := byKey[k]; ok {
			out[i].InputTokens += r.InputTokens
			out[i].OutputTokens += r.OutputTokens
			out[i].Calls += r.Calls
			continue
		}
		byKey[k] = len(out)
		out = append(out, r)
	}
	sortUsage(out)
	return out
}

// sortUsage orders rows by hour, service, caller and model.
func sortUsage(rows []UsageRow) {
	slices.SortFunc(rows, func(a, b UsageRow) int {
		return cmp.Or(a.Hour.Compare(b.Hour), strings.Compare(a.Service, b.Service),
			strings.Compare(a.Caller, b.Caller), strings.Compare(a.Model, b.Model))
	})
}

// selects reports whether q selects a row of service and caller.
func (q UsageQuery) selects(service, caller string) bool {
	return (q.Service == "" || q.Service == service) && (q.Caller == "" || q.Caller == caller)
}

// hours is the first hour q selects that is still kept at now, and the end of its hours.
func (q UsageQuery) hours(now time.Time) (first, end time.Time) {
	first = usageHour(q.Since)
	if c := usageCutoff(now); first.Before(c) {
		first = c
	}
	return first, q.Until
}

package authn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Redis store keeps usage in a hash per hour, apart from the state that credentials are
// decided by (no generation bump, no change notice, no marker of its own):
//
//   - <prefix>usage:<YYYYMMDDHH> (the hour's start in UTC), fields
//     "<service>\t<caller>\t<model>\t<in|out|calls>" (names never hold control characters),
//     values the totals. Every instance adds with HINCRBY, so instances sharing the store add to
//     the same totals without losing any. The hash expires (EXPIREAT) UsageRetention after its
//     hour ends.
//   - <prefix>usage-batch:<batch id>:<part> marks a part of a batch as added, for
//     UsageBatchMemory, so that a repeated batch counts once.
//
// The keys carry the store's prefix, whose hash tag keeps them in the store's one Cluster slot,
// as the script that adds a batch part needs. A usage hash that is gone is not data loss: the
// loss detection (see RedisStore) does not look at these keys. Usage is added only while the
// store's marker names the store this instance knows (see guardLua): nothing goes into a Redis
// that lost the gateway's data.

// usageChunk bounds the rows one script call adds, so that Redis is never busy long with one.
const usageChunk = 500

// addUsageScript adds one part of a batch unless it was added before, and only to the store this
// instance knows (see guardLua). KEYS[1]: the store's marker; KEYS[2]: the part's marker;
// KEYS[3..n]: the hours' hashes. ARGV[1]: the store id; ARGV[2]: the part marker's lifetime (s);
// ARGV[i] for i in 3..n: when KEYS[i] expires (Unix s); then (hash index in KEYS, field,
// increment) triples. Returns "added", "repeated" (it had been added) or "lost".
var addUsageScript = redis.NewScript(guardLua + `
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return 'repeated' end
for i = #KEYS + 1, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i+1], ARGV[i+2])
end
for i = 3, #KEYS do redis.call('EXPIREAT', KEYS[i], ARGV[i]) end
return 'added'`)

func (s *RedisStore) usageKey(hour time.Time) string {
	return s.key("usage:" + hour.UTC().Format("2006010215"))
}

// Usage fields' kinds.
var usageKinds = [3]string{"in", "out", "calls"}

// AddUsage implements UsageStore. The batch is added in parts of usageChunk rows, each in one
// script call; a part that was added and whose answer was lost is not added again when the
// batch is repeated. With Sentinel it does not wait for a replica: a failover may lose the last
// seconds of usage, never a credential's state.
func (s *RedisStore) AddUsage(ctx context.Context, b UsageBatch) error {
	if err := s.errLost(); err != nil {
		return fmt.Errorf("saving token usage: %w", err)
	}
	id := b.ID
	if id == "" {
		var r [12]byte
		rand.Read(r[:])
		id = hex.EncodeToString(r[:])
	}
	rows := mergeUsage(b.Rows)
	cutoff := usageCutoff(time.Now())
	for part := 0; part*usageChunk < len(rows); part++ {
		chunk := rows[part*usageChunk : min((part+1)*usageChunk, len(rows))]
		keys := []string{s.key(markerKey), s.key("usage-batch:" + id + ":" + strconv.Itoa(part))}
		args := []any{s.id, int64(UsageBatchMemory / time.Second)}
		index := map[int64]int{} // hour → its index in keys
		var incr []any
		for _, r := range chunk {
			if r.Hour.Before(cutoff) {
				continue
			}
			i, ok := index[r.Hour.Unix()]
			if !ok {
				i = len(keys) + 1
				index[r.Hour.Unix()] = i
				keys = append(keys, s.usageKey(r.Hour))
				args = append(args, r.Hour.Add(time.Hour+UsageRetention).Unix())
			}
			prefix := r.Service + "\t" + r.Caller + "\t" + r.Model + "\t"
			for k, n := range [3]int64{r.InputTokens, r.OutputTokens, r.Calls} {
				if n > 0 {
					incr = append(incr, i, prefix+usageKinds[k], n)
				}
			}
		}
		if len(incr) == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*s.timeout)
		res, err := addUsageScript.Run(cctx, s.client, keys, append(args, incr...)...).Text()
		cancel()
		if err != nil {
			return fmt.Errorf("saving token usage: %w", err)
		}
		if res == "lost" {
			return fmt.Errorf("saving token usage: %w", s.refusedAsLost(ctx))
		}
	}
	return nil
}

// Usage implements UsageStore: one HGETALL per hour, in one pipeline.
func (s *RedisStore) Usage(ctx context.Context, q UsageQuery) ([]UsageRow, error) {
	first, end := q.hours(time.Now())
	var hours []time.Time
	for h := first; h.Before(end); h = h.Add(time.Hour) {
		hours = append(hours, h)
	}
	if len(hours) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(10*s.timeout, 5*time.Second)) // may be large
	defer cancel()
	cmds := make([]*redis.MapStringStringCmd, len(hours))
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, h := range hours {
			cmds[i] = p.HGetAll(ctx, s.usageKey(h))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reading token usage: %w", err)
	}
	var out []UsageRow
	for i, h := range hours {
		byTriple := map[usageTriple]*UsageRow{}
		var rows []*UsageRow
		for field, v := range cmds[i].Val() {
			parts := strings.Split(field, "\t")
			if len(parts) != 4 {
				continue // not a usage field
			}
			t := usageTriple{parts[0], parts[1], parts[2]}
			if !q.selects(t.service, t.caller) {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			r := byTriple[t]
			if r == nil {
				r = &UsageRow{Hour: h, Service: t.service, Caller: t.caller, Model: t.model}
				byTriple[t] = r
				rows = append(rows, r)
			}
			switch parts[3] {
			case "in":
				r.InputTokens += n
			case "out":
				r.OutputTokens += n
			case "calls":
				r.Calls += n
			}
		}
		hourRows := make([]UsageRow, len(rows))
		for j, r := range rows {
			hourRows[j] = *r
		}
		sortUsage(hourRows)
		out = append(out, hourRows...)
		if q.Limit > 0 && len(out) >= q.Limit {
			return out[:q.Limit], nil
		}
	}
	return out, nil
}

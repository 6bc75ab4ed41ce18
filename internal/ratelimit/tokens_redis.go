package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// tokenReserveScript is Reserve in Redis, on Redis's clock for the minute's window, so that every
// instance measures it alike. The window is a hash of Unix second → tokens taken in it; a
// second's field is dropped once it is windowSeconds old, and the hash expires a second after
// its newest field would. The quota is a counter that expires when its period ends (ARGV[3],
// computed by the caller, whose clock names the period). A refused call takes nothing.
//
//	KEYS[1]  the window (unused when ARGV[1] is 0)
//	KEYS[2]  the quota's counter for the current period (unused when ARGV[2] is 0)
//	ARGV[1]  tokens per minute, 0 for none
//	ARGV[2]  the quota, 0 for none
//	ARGV[3]  milliseconds until the quota's period ends
//	ARGV[4]  the estimate
//	returns  {outcome, detail, tokens in the window, ms until the window is empty (0: it is),
//	         the quota's count}: outcome 0 (allowed; detail: the second the estimate was
//	         taken in), 1 (rate limited; detail: ms until the estimate fits), 2 (quota spent)
var tokenReserveScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end -- Redis < 5: allow writes after TIME
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, quota, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local base = sec - 60 -- the window's oldest second; offset k's tokens leave it at (sec + 1 + k) s
local used, sum, newest, slots = 0, 0, -1, {}
if quota > 0 then
  used = tonumber(redis.call('GET', KEYS[2])) or 0
end
if limit > 0 then
  local h = redis.call('HGETALL', KEYS[1])
  for i = 1, #h, 2 do
    local k, v = tonumber(h[i]) - base, tonumber(h[i + 1])
    if k < 0 then
      redis.call('HDEL', KEYS[1], h[i])
    elseif v > 0 then
      k = math.min(k, 60) -- a second ahead of this clock counts as now
      slots[k] = (slots[k] or 0) + v
      sum = sum + v
      newest = math.max(newest, k)
    end
  end
end
local reset = 0
if newest >= 0 then reset = (sec + 1 + newest) * 1000 - now end
if quota > 0 and used >= quota then
  return {2, 0, sum, reset, used}
end
if limit > 0 then
  local excess = sum + math.min(n, limit) - limit
  if excess > 0 then
    local freed = 0
    for k = 0, 60 do
      if slots[k] then
        freed = freed + slots[k]
        if freed >= excess then
          return {1, (sec + 1 + k) * 1000 - now, sum, reset, used}
        end
      end
    end
    return {1, 61000, sum, reset, used}
  end
  redis.call('HINCRBY', KEYS[1], sec, n)
  redis.call('PEXPIRE', KEYS[1], 62000)
  sum = sum + n
  reset = (sec + 61) * 1000 - now
end
if quota > 0 then
  used = redis.call('INCRBY', KEYS[2], n)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return {0, sec, sum, reset, used}`)

// tokenSettleScript is Settle in Redis: it adds ARGV[3] (actual − estimate) to the window, in
// the current second when it is an overrun, or back to the second the estimate was taken in
// (ARGV[2]) when it is a refund and that second is still in the window; and to the quota's
// counter of the period the estimate was taken in, if it has not ended. Counts never go below 0.
//
//	KEYS[1]  the window; KEYS[2] the quota's counter (as for tokenReserveScript)
//	ARGV[1]  1 when there is a window, else 0;  ARGV[4]  1 when there is a quota, else 0
//	ARGV[2]  the second the estimate was taken in;  ARGV[3]  the correction
var tokenSettleScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local d = tonumber(ARGV[3])
if ARGV[1] == '1' then
  local sec = tonumber(redis.call('TIME')[1])
  if d > 0 then
    redis.call('HINCRBY', KEYS[1], sec, d)
    redis.call('PEXPIRE', KEYS[1], 62000)
  elseif tonumber(ARGV[2]) > sec - 61 then
    local v = tonumber(redis.call('HGET', KEYS[1], ARGV[2]))
    if v then
      if v + d > 0 then
        redis.call('HINCRBY', KEYS[1], ARGV[2], d)
      else
        redis.call('HDEL', KEYS[1], ARGV[2])
      end
    end
  end
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  local v = redis.call('INCRBY', KEYS[2], d)
  if v < 0 then redis.call('INCRBY', KEYS[2], -v) end
end
return 1`)

// tokenKeys are the Redis keys of r's window, "<base>tpm:{<key>}", and of its quota's counter,
// "<base>tq:{<key>}:<period>" (see counterKey): both carry the caller's key as their hash tag
// (the quota's not its qkey, which adds the period), so that they share a Cluster slot, as the
// scripts that take both need. A key r does not use is the other one.
func (s *Shared) tokenKeys(r *TokenReservation) []string {
	var window, quota string
	if r.limit.PerMinute > 0 {
		window = s.counterKey("tpm:", r.key, "")
	}
	if r.limit.Quota > 0 {
		quota = s.counterKey("tq:", r.key, strings.TrimPrefix(r.qkey, r.key)) // ":" + the period
	}
	switch {
	case quota == "":
		quota = window
	case window == "":
		window = quota
	}
	return []string{window, quota}
}

// reserveRedis runs tokenReserveScript for r and fills r from its answer; it returns the quota's
// count.
func (tl *TokenLimiter) reserveRedis(ctx context.Context, r *TokenReservation) (int64, error) {
	s := tl.shared
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	res, err := tokenReserveScript.Run(ctx, s.client, s.tokenKeys(r),
		r.limit.PerMinute, r.limit.Quota, max(r.QuotaReset.Milliseconds(), 1), r.estimate).Int64Slice()
	if err != nil {
		return 0, err
	}
	if len(res) != 5 || res[0] < 0 || res[0] > 2 {
		return 0, fmt.Errorf("the token limit script answered %v", res)
	}
	ms := func(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
	r.shared = true
	switch res[0] {
	case 0:
		r.second = res[1]
		r.fill(TokensAllowed, 0, res[2], ms(res[3]), res[4])
	case 1:
		r.fill(TokensRateLimited, ms(res[1]), res[2], ms(res[3]), res[4])
	default:
		r.fill(TokensQuotaSpent, 0, res[2], ms(res[3]), res[4])
	}
	return res[4], nil
}

func (tl *TokenLimiter) settleRedis(ctx context.Context, r TokenReservation, delta int64) error {
	s := tl.shared
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	flag := func(on bool) int {
		if on {
			return 1
		}
		return 0
	}
	return tokenSettleScript.Run(ctx, s.client, s.tokenKeys(&r),
		flag(r.limit.PerMinute > 0), r.second, delta, flag(r.limit.Quota > 0)).Err()
}

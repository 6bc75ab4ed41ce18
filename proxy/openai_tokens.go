package proxy

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
)

// Token limits (services[].token_limit) hold for the language-model calls of an api: openai
// service: before a call is forwarded its estimate is reserved under its caller's key
// (reserveTokens), and once its usage is known the estimate is settled by the model's own count
// (settleTokens). A refused call never reaches the model: 429 with Retry-After when the minute's
// budget cannot cover it, 403 when the quota is spent. The answers of a service with
// tokens_per_minute carry the x-ratelimit-*-tokens headers, as OpenAI's API sends them.
// docs/language-models.md is the user's account.

// WithTokenLimiter counts the services' token limits with tl (through Redis, or in this
// instance's memory). Without it the gateway counts them in its own memory
// (ratelimit.NewLocalTokenLimiter): a configured token limit always holds.
func WithTokenLimiter(tl *ratelimit.TokenLimiter) Option {
	return func(g *Gateway) { g.tokenLimiter = tl }
}

// The token-limit headers of an answer, as OpenAI's API names them.
const (
	headerLimitTokens     = "X-Ratelimit-Limit-Tokens"
	headerRemainingTokens = "X-Ratelimit-Remaining-Tokens"
	headerResetTokens     = "X-Ratelimit-Reset-Tokens"
)

// tokenLimits is a service's token_limit, ready for each call.
type tokenLimits struct {
	perKey, perPrincipal ratelimit.TokenLimit
	keyKeys              map[string]string // key slot → the limiter's key, built once
	prefix               string            // "<service>:principal:", the start of a principal's key
}

// newTokenLimits reads sc's token_limit. The limiter's keys name the service and the caller,
// never a credential: "<service>:key:<slot>" (the primary and the secondary key each, as
// rate_limit counts them, so that a key's regeneration does not renew its budget) and
// "<service>:principal:<issuer>|<subject>" (see principalKey).
func newTokenLimits(sc config.Service) tokenLimits {
	limit := func(b config.TokenBudget) ratelimit.TokenLimit {
		return ratelimit.TokenLimit{PerMinute: b.TokensPerMinute, Quota: b.Quota.Tokens, Period: ratelimit.Period(b.Quota.Period)}
	}
	t := tokenLimits{
		perKey:       limit(sc.TokenLimit.PerKey),
		perPrincipal: limit(sc.TokenLimit.PerPrincipal),
		prefix:       sc.Name + ":principal:",
	}
	if limitsTokens(t.perKey) {
		t.keyKeys = map[string]string{
			authn.SlotPrimary:   sc.Name + ":key:" + authn.SlotPrimary,
			authn.SlotSecondary: sc.Name + ":key:" + authn.SlotSecondary,
		}
	}
	return t
}

// limitsTokens reports whether l limits anything.
func limitsTokens(l ratelimit.TokenLimit) bool {
	return l.PerMinute > 0 || l.Quota > 0 && l.Period != ""
}

// limitFor returns the limit that applies to c and its key; ok is false when none does.
func (t *tokenLimits) limitFor(c *authn.Caller) (key string, l ratelimit.TokenLimit, ok bool) {
	switch {
	case c.KeySlot != "" && limitsTokens(t.perKey):
		key, ok = t.keyKeys[c.KeySlot]
		return key, t.perKey, ok
	case c.Token.Subject != "" && limitsTokens(t.perPrincipal):
		return principalKey(t.prefix, c.Token.Issuer, c.Token.Subject), t.perPrincipal, true
	}
	return "", ratelimit.TokenLimit{}, false
}

// principalKey is a limiter's key of a token's principal: prefix (which names the service and
// the limit), then the issuer with the subject, so that the same subject from two issuers has two
// budgets. A "%" or "|" in the issuer is escaped ("%25", "%7C"), so that the first "|" always
// ends it and no two principals share a key. For an issuer without either it makes one
// allocation, the key's.
func principalKey(prefix, issuer, subject string) string {
	if strings.ContainsAny(issuer, "%|") {
		issuer = issuerEscaper.Replace(issuer)
	}
	return prefix + issuer + "|" + subject
}

var issuerEscaper = strings.NewReplacer("%", "%25", "|", "%7C")

// The refusals of token limits. A 403 for a spent quota is built per refusal: its message says
// when the quota renews.
var errTokenRateLimited = newError(fasthttp.StatusTooManyRequests, "TooManyRequests", "token_rate_limited",
	"the caller's tokens per minute are over its limit; retry later")

const reasonTokenQuota = "token_quota_exceeded"

// estimate is the call's tokens as guessed before it is forwarded (ratelimit.EstimateTokens):
// its prompt from the body's size, plus the completion it allows (max tokens, or the default,
// times the choices it asks for); an embeddings call is its prompt alone. A body that streamed
// through unread without a Content-Length is over openAIBodyBytes, and is estimated at that size,
// the least it can be; its completion is the default.
func (c *llmCall) estimate() int64 {
	body := c.req.BodyBytes
	if body < 0 {
		body = openAIBodyBytes + 1
	}
	if c.op == opEmbeddings {
		return ratelimit.EstimatePromptTokens(body)
	}
	completion := c.req.MaxTokens
	if completion <= 0 {
		completion = ratelimit.DefaultCompletionTokens
	}
	if n := c.req.Choices; n > 1 {
		if completion > math.MaxInt64/n {
			completion = math.MaxInt64 // EstimateTokens bounds it
		} else {
			completion *= n
		}
	}
	return ratelimit.EstimateTokens(body, completion)
}

// reserveTokens takes the call's estimate from its caller's token limit before it is
// forwarded: nil when it fits (the reservation is then settled in usageKnown) or when no limit
// applies to the caller; otherwise the refusal, 429 or 403, with the x-ratelimit-*-tokens
// headers.
func (g *Gateway) reserveTokens(c *llmCall) error {
	key, l, ok := c.svc.tokens.limitFor(&c.caller)
	if !ok {
		return nil
	}
	r := g.tokenLimiter.Reserve(context.Background(), key, l, c.estimate())
	switch r.Outcome {
	case ratelimit.TokensAllowed:
		c.tokens, c.reserved = r, true
		return nil
	case ratelimit.TokensRateLimited:
		e := *errTokenRateLimited // a copy: the shared error must not change
		e.RetryAfter = max(1, int((r.RetryAfter+time.Second-1)/time.Second))
		e.tokenLimit = &r
		return &e
	}
	renews := time.Now().Add(r.QuotaReset).UTC().Round(time.Second)
	e := newError(fasthttp.StatusForbidden, "Forbidden", reasonTokenQuota,
		"the caller's "+string(l.Period)+" token quota of "+strconv.FormatInt(l.Quota, 10)+
			" tokens is spent; it renews at "+renews.Format(time.RFC3339))
	e.tokenLimit = &r
	return e
}

// settleTokens settles the call's reservation, once, by what is known of its usage: the model's
// own count (input and output) when it reported one; nothing when the call cannot have reached
// the model, or the model answered with an error (status 400 or above) and no usage. Otherwise
// (the answer was cut, had no usage or could not be read, or the call failed after it was sent,
// a timeout say) the estimate stays taken.
func (g *Gateway) settleTokens(c *llmCall) {
	if !c.reserved {
		return
	}
	c.reserved = false
	switch {
	case c.genAI.Usage == usageReported:
		g.tokenLimiter.Settle(context.Background(), c.tokens, c.genAI.InputTokens+c.genAI.OutputTokens)
	case c.unsent || c.status >= 400:
		g.tokenLimiter.Settle(context.Background(), c.tokens, 0)
	}
}

// unsentError reports whether a call that failed with err cannot have reached the model: no
// replica was to be had, or no connection could be made or taken.
func unsentError(r *replica, err error) bool {
	return r == nil || neverSent(err) || errors.Is(err, fasthttp.ErrNoFreeConns)
}

// setTokenHeaders sets the x-ratelimit-*-tokens headers of r on an answer, when r's limit has a
// budget per minute: the limit, what is left of it, and how long until it is whole again,
// written as OpenAI writes it ("1m0s", "59.5s", "250ms").
func setTokenHeaders(h *fasthttp.ResponseHeader, r *ratelimit.TokenReservation) {
	if r.Limit <= 0 {
		return
	}
	var buf [24]byte
	h.SetBytesV(headerLimitTokens, strconv.AppendInt(buf[:0], r.Limit, 10))
	h.SetBytesV(headerRemainingTokens, strconv.AppendInt(buf[:0], r.Remaining, 10))
	h.Set(headerResetTokens, r.Reset.Round(time.Millisecond).String())
}

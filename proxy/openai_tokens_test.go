package proxy_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/internal/testing/redistest"
	"github.com/scoregate/scoregate/proxy"
)

// ---------------------------------------------------------------------------------------------
// Token limits (issue 22): a gateway in front of the small OpenAI-compatible model of
// openai_test.go, which reports llmPrompt + llmCompletion = 14 tokens for every call that has
// usage.

const (
	idpA         = "https://idp-a.example"
	idpB         = "https://idp-b.example"
	chatAudience = "scoregate-chat"
)

// tokenEnv is what one or more gateways share: the model, the keys and the token checks, for
//
//	llm   auth: key, api: openai, token_limit.per_key
//	chat  auth: token (tokens of idpA and idpB), api: openai, token_limit.per_principal
//	gone  auth: key, api: openai, token_limit.per_key, its model's port closed
type tokenEnv struct {
	model        *llmModelServer
	cfg          *config.Config
	auth         *authn.Authenticator
	key, second  string // llm's primary and secondary keys
	goneKey      string
	idp          map[string]ed25519.PrivateKey
	jti          atomic.Int64
	mu           sync.Mutex
	calls        []proxy.LLMCallSeen
	perKey, perP config.TokenBudget
}

// edKey is an external issuer's one Ed25519 key.
type edKey struct{ pub ed25519.PublicKey }

func (k edKey) Key(_ context.Context, kid string) (crypto.PublicKey, string, error) {
	if kid != "k1" {
		return nil, "", authn.ErrUnknownKey
	}
	return k.pub, "EdDSA", nil
}

func newTokenEnv(t *testing.T, perKey, perPrincipal config.TokenBudget) *tokenEnv {
	t.Helper()
	return newTokenEnvWith(t, perKey, perPrincipal, nil)
}

// newTokenEnvWith is newTokenEnv with its configuration changed by edit (unless nil) before it
// is checked. Every auth: token service of it takes the tokens of idpA and idpB that its
// issuers list.
func newTokenEnvWith(t *testing.T, perKey, perPrincipal config.TokenBudget, edit func(*config.Config)) *tokenEnv {
	t.Helper()
	ctx := context.Background()
	store, err := authn.OpenBolt(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	keys, err := authn.NewKeyring(ctx, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &tokenEnv{model: newLLMModel(t), idp: map[string]ed25519.PrivateKey{}, perKey: perKey, perP: perPrincipal}
	for _, k := range []struct {
		dst           *string
		service, slot string
	}{{&e.key, "llm", authn.SlotPrimary}, {&e.second, "llm", authn.SlotSecondary}, {&e.goneKey, "gone", authn.SlotPrimary}} {
		if *k.dst, err = keys.Regenerate(ctx, k.service, k.slot); err != nil {
			t.Fatal(err)
		}
	}
	var issuers []config.Issuer
	pubs := map[string]ed25519.PublicKey{}
	for _, iss := range []string{idpA, idpB} {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		e.idp[iss], pubs[iss] = priv, pub
		issuers = append(issuers, config.Issuer{Issuer: iss, JWKSURL: "http://127.0.0.1:1/jwks.json", Audience: chatAudience, Algorithms: []string{"EdDSA"}})
	}
	e.cfg = &config.Config{Services: []config.Service{
		{Name: "llm", Auth: config.AuthKey, API: config.APIOpenAI, Upstreams: []string{e.model.srv.URL},
			TokenLimit: config.TokenLimit{PerKey: perKey}},
		{Name: "chat", Auth: config.AuthToken, API: config.APIOpenAI, Upstreams: []string{e.model.srv.URL}, Issuers: issuers,
			TokenLimit: config.TokenLimit{PerPrincipal: perPrincipal}},
		{Name: "gone", Auth: config.AuthKey, API: config.APIOpenAI, Upstreams: []string{closedPortURL(t)},
			TokenLimit: config.TokenLimit{PerKey: perKey}},
	}}
	if edit != nil {
		edit(e.cfg)
	}
	e.cfg.ApplyDefaults()
	if err := e.cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var opts []authn.TokensOption
	for _, sc := range e.cfg.Services {
		for _, iss := range sc.Issuers {
			if pub, ok := pubs[iss.Issuer]; ok {
				opts = append(opts, authn.WithIssuerKeys(sc.Name, iss.Issuer, edKey{pub}))
			}
		}
	}
	principals, err := authn.NewPrincipals(ctx, store, keys, authn.NewRoles(e.cfg), "owner-key-for-the-token-limit-tests-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := authn.NewTokens(ctx, e.cfg, store, principals, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	e.auth = authn.NewAuthenticator(keys, authn.WithTokens(tokens))
	return e
}

// serve starts a gateway of e with opts, and returns its address.
func (e *tokenEnv) serve(t *testing.T, opts ...proxy.Option) string {
	t.Helper()
	opts = append(opts, proxy.WithLLMCallObserver(func(c proxy.LLMCallSeen) {
		e.mu.Lock()
		e.calls = append(e.calls, c)
		e.mu.Unlock()
	}))
	gw, err := proxy.New(e.cfg, e.auth, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return serveGateway(t, gw, nil)
}

// ended waits until n language-model calls have ended (and so been settled), on any gateway.
func (e *tokenEnv) ended(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d language-model calls to end", n), func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.calls) >= n
	})
}

// token is a token of issuer for subject, for service chat.
func (e *tokenEnv) token(t *testing.T, issuer, subject string) string {
	t.Helper()
	now := time.Now().Unix()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": issuer, "sub": subject, "aud": chatAudience, "iat": now, "exp": now + 3600,
		"jti": fmt.Sprintf("t-%d", e.jti.Add(1)),
	})
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(e.idp[issuer])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// modelCalls is how many requests the model has had.
func (e *tokenEnv) modelCalls() int {
	e.model.mu.Lock()
	defer e.model.mu.Unlock()
	return len(e.model.seen)
}

// postTo sends body to service's path on the gateway at addr with cred, and returns the answer
// whole.
func postTo(t *testing.T, addr, service, cred, path string, body io.Reader, size int64) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/service/"+service+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size // -1: chunked
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+cred)
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp, got
}

func post(t *testing.T, addr, service, cred, path, body string) (*http.Response, []byte) {
	t.Helper()
	return postTo(t, addr, service, cred, path, strings.NewReader(body), int64(len(body)))
}

// chatWith is a chat completion's body that lets the model write maxTokens, and its estimate.
func chatWith(maxTokens int, stream bool) (string, int64) {
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Say hello"}],"max_tokens":%d,"stream":%v}`, llmModel, maxTokens, stream)
	return body, ratelimit.EstimateTokens(int64(len(body)), int64(maxTokens))
}

// tokenHeaders are an answer's x-ratelimit-*-tokens headers.
type tokenHeaders struct {
	limit, remaining int64
	reset            time.Duration
	present          bool
}

func tokenHeadersOf(t *testing.T, resp *http.Response) tokenHeaders {
	t.Helper()
	h := resp.Header
	if h.Get("X-Ratelimit-Limit-Tokens") == "" && h.Get("X-Ratelimit-Remaining-Tokens") == "" && h.Get("X-Ratelimit-Reset-Tokens") == "" {
		return tokenHeaders{}
	}
	var th tokenHeaders
	var err1, err2, err3 error
	th.limit, err1 = strconv.ParseInt(h.Get("X-Ratelimit-Limit-Tokens"), 10, 64)
	th.remaining, err2 = strconv.ParseInt(h.Get("X-Ratelimit-Remaining-Tokens"), 10, 64)
	th.reset, err3 = time.ParseDuration(h.Get("X-Ratelimit-Reset-Tokens"))
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("token headers %v: %v %v %v", h, err1, err2, err3)
	}
	th.present = true
	return th
}

// checkRefused checks a 429 of a token limit: Retry-After in whole seconds within the window,
// the contract's error body, and the headers showing limit and remaining.
func checkRefused(t *testing.T, resp *http.Response, body []byte, limit, remaining int64) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429; %s", resp.StatusCode, body)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 61 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code != "TooManyRequests" || !strings.Contains(e.Error.Message, "tokens per minute") {
		t.Errorf("error body %s", body)
	}
	if th := tokenHeadersOf(t, resp); th.limit != limit || th.remaining != remaining || th.reset <= 0 || th.reset > 61*time.Second {
		t.Errorf("headers %+v, want limit %d, remaining %d", th, limit, remaining)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("a refusal without its request id")
	}
}

// A key's minute's budget: an allowed answer (JSON or streamed) carries the headers; once the
// answer ends the estimate is settled by the model's count (what it took in excess comes back),
// a model's error answer without usage takes nothing, an answer without usage keeps its
// estimate, a call that could not reach the model takes nothing; a call the rest of the budget
// cannot cover gets 429 with Retry-After and never reaches the model.
func TestTokenLimitPerMinute(t *testing.T) {
	const limit = 200
	e := newTokenEnv(t, config.TokenBudget{TokensPerMinute: limit}, config.TokenBudget{})
	addr := e.serve(t)
	var used int64 // what the window holds, by the model's counts and the estimates kept
	n := 0         // language-model calls ended
	call := func(name, path, body string, est int64, wantStatus int, settled int64) *http.Response {
		t.Helper()
		resp, got := post(t, addr, "llm", e.key, path, body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s: status %d, want %d; %s", name, resp.StatusCode, wantStatus, got)
		}
		th := tokenHeadersOf(t, resp)
		if want := (tokenHeaders{limit: limit, remaining: limit - used - est, present: true}); th.limit != want.limit || th.remaining != want.remaining ||
			th.reset < 59*time.Second || th.reset > 61*time.Second {
			t.Errorf("%s: headers %+v, want limit %d remaining %d, reset about a minute", name, th, want.limit, want.remaining)
		}
		n++
		e.ended(t, n)
		used += settled
		return resp
	}

	body, est := chatWith(100, false)
	call("JSON", "/v1/chat/completions", body, est, 200, llmPrompt+llmCompletion)
	body, est = chatWith(100, true)
	if resp := call("streamed", "/v1/chat/completions", body, est, 200, llmPrompt+llmCompletion); resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Errorf("streamed answer's Content-Type %q", resp.Header.Get("Content-Type"))
	}
	body, est = chatWith(100, false)
	call("the model's error without usage", "/v1/chat/completions?status=500&nousage", body, est, 500, 0)
	call("no usage", "/v1/chat/completions?nousage", body, est, 200, est)
	body, est = chatWith(1, false)
	call("a small one", "/v1/chat/completions", body, est, 200, llmPrompt+llmCompletion)

	before := e.modelCalls()
	body, est = chatWith(180, false)
	if limit-used >= est {
		t.Fatalf("the test's numbers: %d left, estimate %d", limit-used, est)
	}
	resp, got := post(t, addr, "llm", e.key, "/v1/chat/completions", body)
	checkRefused(t, resp, got, limit, limit-used)
	// the secondary key has a budget of its own
	if resp, got := post(t, addr, "llm", e.second, "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Errorf("the secondary key: %d %s", resp.StatusCode, got)
	}
	if got := e.modelCalls(); got != before+1 {
		t.Errorf("the model got %d calls, want %d: a refused call reached it", got, before+1)
	}

	// A model that cannot be reached: the estimate comes back, so the second call fits too.
	body, est = chatWith(150, false)
	for i := range 2 {
		if resp, got := post(t, addr, "gone", e.goneKey, "/v1/chat/completions", body); resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("call %d to a model that is gone: %d %s (estimate %d of %d)", i+1, resp.StatusCode, got, est, limit)
		}
	}
}

// A spent quota: 403 with a message saying when it renews; the model never sees the call; no
// minute's budget, so no x-ratelimit headers.
func TestTokenQuotaSpent(t *testing.T) {
	e := newTokenEnv(t, config.TokenBudget{Quota: config.TokenQuota{Tokens: 100, Period: config.PeriodHourly}}, config.TokenBudget{})
	addr := e.serve(t)
	body, est := chatWith(64, false)
	for i := range 2 { // without usage each keeps its estimate; the second takes the quota over
		resp, got := post(t, addr, "llm", e.key, "/v1/chat/completions?nousage", body)
		if resp.StatusCode != 200 || tokenHeadersOf(t, resp).present {
			t.Fatalf("call %d (estimate %d, quota 100): %d %v %s", i+1, est, resp.StatusCode, resp.Header, got)
		}
		e.ended(t, i+1)
	}
	resp, got := post(t, addr, "llm", e.key, "/v1/chat/completions", body)
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Retry-After") != "" || tokenHeadersOf(t, resp).present {
		t.Fatalf("status %d, headers %v; %s", resp.StatusCode, resp.Header, got)
	}
	var answer struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(got, &answer); err != nil || answer.Error.Code != "Forbidden" {
		t.Fatalf("error body %s", got)
	}
	const prefix = "the caller's hourly token quota of 100 tokens is spent; it renews at "
	msg := answer.Error.Message
	renews, err := time.Parse(time.RFC3339, strings.TrimPrefix(msg, prefix))
	nextHour := time.Now().UTC().Truncate(time.Hour).Add(time.Hour)
	if !strings.HasPrefix(msg, prefix) || err != nil || !renews.Equal(nextHour) && !renews.Equal(nextHour.Add(time.Hour)) {
		t.Errorf("message %q; want it to renew at %s", msg, nextHour.Format(time.RFC3339))
	}
	// however the path is spelt for the model's server to read it as chat
	for _, path := range []string{"/v1/chat/c%6Fmpletions", "/v1/Chat/Completions", "/v1/chat/completions/"} {
		if resp, got := post(t, addr, "llm", e.key, path, body); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d %s", path, resp.StatusCode, got)
		}
	}
	if got := e.modelCalls(); got != 2 {
		t.Errorf("the model got %d calls, want 2", got)
	}
}

// In token mode each principal has its own budget, and a principal is its issuer's: the same
// subject from another issuer is another caller.
func TestTokenLimitPerPrincipal(t *testing.T) {
	const limit = 300
	e := newTokenEnv(t, config.TokenBudget{}, config.TokenBudget{TokensPerMinute: limit})
	addr := e.serve(t)
	body, est := chatWith(200, false)
	resp, got := post(t, addr, "chat", e.token(t, idpA, "alice"), "/v1/chat/completions", body)
	if th := tokenHeadersOf(t, resp); resp.StatusCode != 200 || th.remaining != limit-est {
		t.Fatalf("first call: %d %+v %s", resp.StatusCode, th, got)
	}
	e.ended(t, 1)
	over, overEst := chatWith(275, false)
	if overEst <= limit-llmPrompt-llmCompletion {
		t.Fatalf("the test's numbers: estimate %d", overEst)
	}
	resp, got = post(t, addr, "chat", e.token(t, idpA, "alice"), "/v1/chat/completions", over)
	checkRefused(t, resp, got, limit, limit-llmPrompt-llmCompletion)
	for _, who := range []struct{ issuer, subject string }{{idpB, "alice"}, {idpA, "bob"}} {
		resp, got := post(t, addr, "chat", e.token(t, who.issuer, who.subject), "/v1/chat/completions", body)
		if th := tokenHeadersOf(t, resp); resp.StatusCode != 200 || th.remaining != limit-est {
			t.Errorf("%s of %s: %d %+v %s", who.subject, who.issuer, resp.StatusCode, th, got)
		}
	}
	if got := e.modelCalls(); got != 3 {
		t.Errorf("the model got %d calls, want 3", got)
	}
}

// A body the gateway does not read (over 4 MiB) is estimated from its Content-Length, or, sent
// chunked, as 4 MiB, the least it can be: either is above the whole minute's budget, admitted
// into an empty window and taken whole, then settled by the model's count.
func TestTokenLimitUnreadBody(t *testing.T) {
	const limit = 2000
	e := newTokenEnv(t, config.TokenBudget{TokensPerMinute: limit}, config.TokenBudget{})
	addr := e.serve(t)
	huge := `{"model":"` + llmModel + `","messages":[{"role":"user","content":"` + strings.Repeat("x", 5<<20) + `"}]}`
	small, smallEst := chatWith(16, false)
	for i, tc := range []struct {
		name string
		key  string
		size int64
	}{{"with a Content-Length", e.key, int64(len(huge))}, {"chunked", e.second, -1}} {
		resp, got := postTo(t, addr, "llm", tc.key, "/v1/chat/completions", io.MultiReader(strings.NewReader(huge)), tc.size)
		if th := tokenHeadersOf(t, resp); resp.StatusCode != 200 || th.remaining != 0 {
			t.Fatalf("%s: %d %+v %.200s", tc.name, resp.StatusCode, th, got)
		}
		e.ended(t, 2*i+1)
		resp, got = post(t, addr, "llm", tc.key, "/v1/chat/completions", small)
		if th := tokenHeadersOf(t, resp); resp.StatusCode != 200 || th.remaining != limit-llmPrompt-llmCompletion-smallEst {
			t.Errorf("%s: after it was settled: %d %+v %s", tc.name, resp.StatusCode, th, got)
		}
		e.ended(t, 2*i+2)
	}
}

// sharedTokenLimiter is a token limiter on the Redis at url, as an instance of the gateway
// makes it, with a client of its own.
func sharedTokenLimiter(t *testing.T, url string, opts ...ratelimit.SharedOption) *ratelimit.TokenLimiter {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	o.MaxRetries = -1
	client := redis.NewClient(o)
	t.Cleanup(func() { client.Close() })
	return ratelimit.NewSharedTokenLimiter(ratelimit.NewShared(client, "{scoregate}:", nil, opts...))
}

// Two gateways on one Redis count one budget: what one took, the other refuses; the limiter's
// keys name the service and the key slot, never the key.
func TestTokenLimitSharedThroughRedis(t *testing.T) {
	const limit = 200
	srv := redistest.Start(t)
	e := newTokenEnv(t, config.TokenBudget{TokensPerMinute: limit}, config.TokenBudget{})
	a := e.serve(t, proxy.WithTokenLimiter(sharedTokenLimiter(t, srv.URL(), ratelimit.WithTimeout(2*time.Second))))
	b := e.serve(t, proxy.WithTokenLimiter(sharedTokenLimiter(t, srv.URL(), ratelimit.WithTimeout(2*time.Second))))
	body, est := chatWith(150, false)
	if resp, got := post(t, a, "llm", e.key, "/v1/chat/completions", body); resp.StatusCode != 200 || tokenHeadersOf(t, resp).remaining != limit-est {
		t.Fatalf("on A: %d %v %s", resp.StatusCode, resp.Header, got)
	}
	e.ended(t, 1)
	used := int64(llmPrompt + llmCompletion)
	over, overEst := chatWith(180, false)
	if overEst <= limit-used {
		t.Fatalf("the test's numbers: estimate %d", overEst)
	}
	resp, got := post(t, b, "llm", e.key, "/v1/chat/completions", over)
	checkRefused(t, resp, got, limit, limit-used)
	body, est = chatWith(100, true)
	if resp, got := post(t, b, "llm", e.key, "/v1/chat/completions", body); resp.StatusCode != 200 || tokenHeadersOf(t, resp).remaining != limit-used-est {
		t.Errorf("on B: %d %v %s", resp.StatusCode, resp.Header, got)
	}
	if got := e.modelCalls(); got != 2 {
		t.Errorf("the model got %d calls, want 2", got)
	}
	keys := srv.Do(t, "KEYS", "*")
	if !strings.Contains(keys, "scoregate:rl:tpm:{llm:key:primary}") || strings.Contains(keys, e.key) || strings.Contains(keys, e.key[len(e.key)-12:]) {
		t.Errorf("Redis keys:\n%s", keys)
	}
}

// While Redis does not answer, each gateway decides alone, with the whole budget: a call over it
// is still refused.
func TestTokenLimitRedisDown(t *testing.T) {
	const limit = 200
	srv := redistest.Start(t)
	e := newTokenEnv(t, config.TokenBudget{TokensPerMinute: limit}, config.TokenBudget{})
	addr := e.serve(t, proxy.WithTokenLimiter(sharedTokenLimiter(t, srv.URL(), ratelimit.WithTimeout(500*time.Millisecond))))
	srv.Stop(t)
	body, est := chatWith(150, false)
	resp, got := post(t, addr, "llm", e.key, "/v1/chat/completions?nousage", body) // keeps its estimate
	if th := tokenHeadersOf(t, resp); resp.StatusCode != 200 || th.remaining != limit-est {
		t.Fatalf("first call with Redis down: %d %+v %s", resp.StatusCode, th, got)
	}
	e.ended(t, 1)
	resp, got = post(t, addr, "llm", e.key, "/v1/chat/completions", body)
	checkRefused(t, resp, got, limit, limit-est)
	if got := e.modelCalls(); got != 1 {
		t.Errorf("the model got %d calls, want 1", got)
	}
}

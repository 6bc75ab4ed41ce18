package proxy

import (
	"math"
	"testing"

	"github.com/scoregate/scoregate/internal/ratelimit"
)

// A call's estimate: the body's size, plus the completion it allows times its choices; an
// embeddings call is its prompt alone; a body that streamed through unread and unmeasured counts
// as just over openAIBodyBytes.
func TestLLMCallEstimate(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   operation
		req  openaiRequest
		want int64
	}{
		{"max tokens", opChat, openaiRequest{BodyBytes: 400, MaxTokens: 50}, 100 + 50},
		{"no max tokens", opChat, openaiRequest{BodyBytes: 401}, 101 + ratelimit.DefaultCompletionTokens},
		{"n choices", opChat, openaiRequest{BodyBytes: 40, MaxTokens: 50, Choices: 3}, 10 + 150},
		{"n choices without max tokens", opTextCompletion, openaiRequest{BodyBytes: 40, Choices: 2}, 10 + 2*ratelimit.DefaultCompletionTokens},
		{"choices past int64", opResponses, openaiRequest{BodyBytes: 40, MaxTokens: math.MaxInt64 / 2, Choices: 3}, ratelimit.EstimateTokens(40, math.MaxInt64)},
		{"embeddings", opEmbeddings, openaiRequest{BodyBytes: 400, MaxTokens: 50}, 100},
		{"unread with a Content-Length", opChat, openaiRequest{BodyBytes: 8 << 20}, 2<<20 + ratelimit.DefaultCompletionTokens},
		{"unread, chunked", opChat, openaiRequest{BodyBytes: -1}, 1<<20 + 1 + ratelimit.DefaultCompletionTokens},
	} {
		c := &llmCall{op: tc.op, req: tc.req}
		if got := c.estimate(); got != tc.want {
			t.Errorf("%s: estimate %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A principal's key is its issuer's: no issuer and subject, however they are spelt, share one
// with another pair.
func TestPrincipalKey(t *testing.T) {
	seen := map[string][2]string{}
	for _, p := range [][2]string{
		{"https://a", "alice"}, {"https://b", "alice"},
		{"x|y", "z"}, {"x", "y|z"}, {"x%7Cy", "z"}, {"x%", "7Cy|z"},
	} {
		k := principalKey("chat:principal:", p[0], p[1])
		if other, ok := seen[k]; ok {
			t.Errorf("%q and %q share the key %q", p, other, k)
		}
		seen[k] = p
	}
	if got := principalKey("chat:principal:", "https://a", "alice"); got != "chat:principal:https://a|alice" {
		t.Errorf("key %q", got)
	}
}

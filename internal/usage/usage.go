// Package usage carries the token usage of language-model calls (services with api: openai) from
// the gateway's data plane to whatever keeps it: the hourly totals in the store that
// GET /v1/usage and `gateway usage` read. Keeper is the Sink that sums calls in memory and adds
// the sums to the store in the background; it does not measure usage (the data plane does) nor
// serve it (the admin API does).
package usage

import "time"

// Event is the usage of one call, as the model reported it.
type Event struct {
	// Time is when the call ended.
	Time time.Time
	// Service and Deployment are the gateway's names for what was called.
	Service, Deployment string
	// Caller names who called: "key:<key id>" for a service key, "principal:<name>" for a token.
	// Never the credential itself.
	Caller string
	// Model is the model's own name for itself (the answer's "model"), else the request's.
	Model string
	// InputTokens and OutputTokens are the model's counts (prompt_tokens and
	// completion_tokens, or input_tokens and output_tokens).
	InputTokens, OutputTokens int64
}

// Sink receives every call's usage. Add is called on the request path once the answer has ended,
// so it must not block: an implementation buffers and writes in the background.
type Sink interface {
	Add(Event)
}

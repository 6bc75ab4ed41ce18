package proxy

import "github.com/scoregate/scoregate/telemetry"

// LLMCallSeen is what the gateway knew of a language-model call when it ended (usageKnown).
type LLMCallSeen struct {
	Service, Deployment, Caller string
	GenAI                       telemetry.GenAI
	Request                     OpenAIRequest
	Rewrote                     bool
}

// OpenAIRequest is openaiRequest, for tests.
type OpenAIRequest = openaiRequest

// WithLLMCallObserver calls f with every language-model call as it ends, for tests.
func WithLLMCallObserver(f func(LLMCallSeen)) Option {
	return func(g *Gateway) {
		g.llmObserver = func(c *llmCall) {
			s := LLMCallSeen{Service: c.svc.name, Caller: c.caller.Name, GenAI: c.genAI, Request: c.req, Rewrote: c.rewrote}
			if c.dep != nil {
				s.Deployment = c.dep.name
			}
			f(s)
		}
	}
}

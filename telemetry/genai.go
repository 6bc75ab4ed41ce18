package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
)

// What a language-model call (GenAI.Operation set) adds to its span, after the OpenTelemetry GenAI
// semantic conventions: the operation, the provider, the models, the token counts when the model
// reported them, where the counts came from (so that a call without counts is never read as a
// call of zero tokens), and the time to the first token of a streamed answer. The three span
// encoders (span, fillOTLP, spanEncoder.add) write them in this order.
const (
	attrGenAIOperation     = "gen_ai.operation.name"
	attrGenAIProvider      = "gen_ai.provider.name"
	attrGenAIRequestModel  = "gen_ai.request.model"
	attrGenAIResponseModel = "gen_ai.response.model"
	attrGenAIUsage         = "scoregate.gen_ai.usage"
	attrGenAIInputTokens   = "gen_ai.usage.input_tokens"
	attrGenAIOutputTokens  = "gen_ai.usage.output_tokens"
	attrGenAIFirstChunk    = "gen_ai.response.time_to_first_chunk"

	// attrEndUser names who called (Record.Caller) on every authenticated request's span: the
	// conventions' enduser.id, which the Azure Monitor exporter makes the request's user_Id in
	// Application Insights. Once: a second name for it would cost every span its bytes.
	attrEndUser = "enduser.id"

	// genAIMaxAttrs is the most attributes a language-model call adds.
	genAIMaxAttrs = 8
)

// providerOpenAI is every language-model call's gen_ai.provider.name: the gateway speaks the
// OpenAI API to the model (api: openai), whoever serves it.
const providerOpenAI = "openai"

// usageReported is GenAI.Usage when the model's answer gave the token counts.
const usageReported = "reported"

// appendGenAIAttrs appends the attributes of the language-model call g to a span's (span).
func appendGenAIAttrs(attrs []attribute.KeyValue, g *GenAI) []attribute.KeyValue {
	attrs = append(attrs,
		attribute.String(attrGenAIOperation, g.Operation),
		attribute.String(attrGenAIProvider, providerOpenAI))
	if g.RequestModel != "" {
		attrs = append(attrs, attribute.String(attrGenAIRequestModel, g.RequestModel))
	}
	if g.ResponseModel != "" {
		attrs = append(attrs, attribute.String(attrGenAIResponseModel, g.ResponseModel))
	}
	if g.Usage != "" {
		attrs = append(attrs, attribute.String(attrGenAIUsage, g.Usage))
	}
	if g.Usage == usageReported {
		attrs = append(attrs,
			attribute.Int64(attrGenAIInputTokens, g.InputTokens),
			attribute.Int64(attrGenAIOutputTokens, g.OutputTokens))
	}
	if g.TimeToFirstToken > 0 {
		attrs = append(attrs, attribute.Float64(attrGenAIFirstChunk, g.TimeToFirstToken.Seconds()))
	}
	return attrs
}

// genAI writes the attributes of the language-model call g into s, as appendGenAIAttrs does
// (fillOTLP).
func (s *otlpSpan) genAI(g *GenAI) {
	s.str(attrGenAIOperation, g.Operation)
	s.str(attrGenAIProvider, providerOpenAI)
	if g.RequestModel != "" {
		s.str(attrGenAIRequestModel, g.RequestModel)
	}
	if g.ResponseModel != "" {
		s.str(attrGenAIResponseModel, g.ResponseModel)
	}
	if g.Usage != "" {
		s.str(attrGenAIUsage, g.Usage)
	}
	if g.Usage == usageReported {
		s.int(attrGenAIInputTokens, g.InputTokens)
		s.int(attrGenAIOutputTokens, g.OutputTokens)
	}
	if g.TimeToFirstToken > 0 {
		s.double(attrGenAIFirstChunk, g.TimeToFirstToken.Seconds())
	}
}

// appendGenAIWire appends the attributes of the language-model call g in the wire format, as
// appendGenAIAttrs does (spanEncoder.add).
func appendGenAIWire(b []byte, g *GenAI) []byte {
	b = appendStringAttr(b, attrGenAIOperation, g.Operation)
	b = appendStringAttr(b, attrGenAIProvider, providerOpenAI)
	if g.RequestModel != "" {
		b = appendStringAttr(b, attrGenAIRequestModel, g.RequestModel)
	}
	if g.ResponseModel != "" {
		b = appendStringAttr(b, attrGenAIResponseModel, g.ResponseModel)
	}
	if g.Usage != "" {
		b = appendStringAttr(b, attrGenAIUsage, g.Usage)
	}
	if g.Usage == usageReported {
		b = appendIntAttr(b, attrGenAIInputTokens, g.InputTokens)
		b = appendIntAttr(b, attrGenAIOutputTokens, g.OutputTokens)
	}
	if g.TimeToFirstToken > 0 {
		b = appendDoubleAttr(b, attrGenAIFirstChunk, g.TimeToFirstToken.Seconds())
	}
	return b
}

// boundChosenValues makes the values a client or a model chose, the caller and the
// language-model call's operation, models and usage source, fit for every exporter
// (boundedString: a credential REDACTED, at most maxValueLen bytes, valid UTF-8). The recorder
// does it once per Record, before anything reads them, so that the request path does not pay
// for it.
func (r *Record) boundChosenValues() {
	if r.Caller != "" {
		r.Caller = boundedString(r.Caller)
	}
	if g := &r.GenAI; g.Operation != "" {
		g.Operation = boundedString(g.Operation)
		g.RequestModel = boundedString(g.RequestModel)
		g.ResponseModel = boundedString(g.ResponseModel)
		g.Usage = boundedString(g.Usage)
	}
}

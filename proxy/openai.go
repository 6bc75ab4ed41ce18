package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/internal/ratelimit"
	"github.com/scoregate/scoregate/internal/usage"
	"github.com/scoregate/scoregate/telemetry"
)

// A service with api: openai is an OpenAI-compatible language model. For a POST to one of its
// operations (a path ending in /chat/completions, /completions, /embeddings or /responses) the
// gateway reads the request's JSON body for the model, stream, stream_options.include_usage and
// max tokens; when the client streams a chat or text completion without asking for usage, it asks
// the model for it and takes out of the stream what the client did not ask for (openai_answer.go);
// and it reads the token usage the model reports in its answer, for the request's telemetry
// record, the usage sink and token limits (usageKnown). Any other request of such a service, and
// every request of a plain service, is forwarded as it is: none of this runs for it.
//
// docs/language-models.md is the user's account of all this.

// WithUsageSink hands the token usage of every language-model call (api: openai services) whose
// model reported it to s, once the call's answer has ended. Without it usage goes to telemetry
// alone.
func WithUsageSink(s usage.Sink) Option { return func(g *Gateway) { g.usageSink = s } }

// operation is a language-model operation of an api: openai service.
type operation uint8

const (
	opNone           operation = iota // not a language-model call: forwarded as it is
	opChat                            // POST …/chat/completions
	opTextCompletion                  // POST …/completions
	opEmbeddings                      // POST …/embeddings
	opResponses                       // POST …/responses
)

// name is the operation's gen_ai.operation.name, after the OpenTelemetry GenAI semantic
// conventions: their well-known values where one applies. A Responses API call is an inference
// of the conventions' "chat" kind (their OpenAI page tells the two APIs apart by openai.api.type,
// not by the operation's name), so it is "chat" too.
func (o operation) name() string {
	switch o {
	case opChat, opResponses:
		return "chat"
	case opTextCompletion:
		return "text_completion"
	case opEmbeddings:
		return "embeddings"
	}
	return ""
}

// operationOf is the operation of a request to an api: openai service, from its method and the
// target forwarded to the model (its path's ending; the query is not looked at): only POSTs are
// operations. /v1/chat/completions and an Azure-style /openai/deployments/d/chat/completions are
// both chat. The ending is matched as a model's server may read it: percent-decoded, in any case
// and with a slash after it (/v1/Chat/c%6Fmpletions/ is chat), so that no spelling of an
// operation the model would serve passes unread, and untaken by token limits.
func operationOf(method, target []byte) operation {
	if string(method) != fasthttp.MethodPost {
		return opNone
	}
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		target = target[:q]
	}
	var buf [32]byte
	tail := pathEnding(&buf, target)
	switch {
	case bytes.HasSuffix(tail, []byte("/chat/completions")):
		return opChat
	case bytes.HasSuffix(tail, []byte("/completions")):
		return opTextCompletion
	case bytes.HasSuffix(tail, []byte("/embeddings")):
		return opEmbeddings
	case bytes.HasSuffix(tail, []byte("/responses")):
		return opResponses
	}
	return opNone
}

// pathEnding returns the end of path (up to len(buf) bytes, written at the end of buf) as a
// model's server may read it: percent-decoded, in lower case, without a trailing slash. (Route
// checks have refused encoded slashes, dots and percent signs, and bare percent signs.)
func pathEnding(buf *[32]byte, path []byte) []byte {
	path = bytes.TrimSuffix(path, []byte("/"))
	k := len(buf)
	for i := len(path) - 1; i >= 0 && k > 0; i-- {
		c := path[i]
		if i >= 2 && path[i-2] == '%' && isHex(path[i-1]) && isHex(c) {
			c = unhex(path[i-1])<<4 | unhex(c)
			i -= 2
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		k--
		buf[k] = c
	}
	return buf[k:]
}

// openAIBodyBytes bounds the request body the gateway reads for a language-model call. A body up
// to it (and within max_body_bytes) is read whole before it is forwarded, so that it can be read
// and, for a stream, asked for usage; a larger one streams through to the model unread: the call
// then has no request model and is never rewritten, and its usage is still read from the answer
// (a stream that does not carry usage of its own then has Usage "missing").
const openAIBodyBytes = 4 << 20

// openaiRequest is what the gateway read of a language-model request's JSON body.
type openaiRequest struct {
	// Read is true when the body was read: a JSON object of up to openAIBodyBytes. When false,
	// the fields below but BodyBytes are zero.
	Read bool
	// Model is the body's "model" (gen_ai.request.model).
	Model string
	// Stream is the body's "stream": the client asked for the answer as server-sent events.
	Stream bool
	// ClientAskedUsage is stream_options.include_usage: the client asked for the stream's
	// usage chunk itself.
	ClientAskedUsage bool
	// MaxTokens is the most tokens the client let the model write: max_completion_tokens, else
	// max_tokens, else max_output_tokens (the Responses API's); 0 when the body sets none.
	MaxTokens int64
	// Choices is how many completions the model is asked to write: n, or a text completion's
	// best_of when larger; 0 when the body sets neither above 1.
	Choices int64
	// BodyBytes is the length of the body as the client sent it: -1 when it streamed through
	// unread without a Content-Length.
	BodyBytes int64
}

// llmCall is one language-model call of an api: openai service, from its request to the end of
// its answer. It is made only for an operation (operationOf); a plain service's request never
// has one.
type llmCall struct {
	g      *Gateway
	svc    *service
	dep    *deployment
	caller authn.Caller // who called, as admission found (token limits count by it)
	op     operation
	req    openaiRequest
	// rewrote is true when the gateway added stream_options.include_usage to the request: the
	// answer's usage chunk and "usage":null members are then the gateway's to take out.
	rewrote bool
	start   time.Time // the call to the model began (for the time to first token)
	// streamed is true once the answer is a modelStream, which ends the call when it ends.
	streamed bool
	genAI    telemetry.GenAI
	ended    bool

	// Token limits (openai_tokens.go): the reservation taken before the call was forwarded
	// (reserved until it is settled), the model's answer status (0 without an answer), and
	// whether the call failed before it could reach the model.
	tokens   ratelimit.TokenReservation
	reserved bool
	status   int
	unsent   bool
}

// newLLMCall begins the call of op on svc by caller: nil when op is opNone.
func (g *Gateway) newLLMCall(svc *service, op operation, caller *authn.Caller) *llmCall {
	if op == opNone {
		return nil
	}
	c := &llmCall{g: g, svc: svc, op: op, caller: *caller}
	c.genAI.Operation = op.name()
	return c
}

// readRequest reads the request's body when it was read whole (prepareLLMBody), and when the
// client streams a chat or text completion without asking for usage, asks the model for it. It
// removes Accept-Encoding: the gateway must read the answer, so it asks for it uncompressed
// (every client takes an answer it did not ask to have compressed).
func (c *llmCall) readRequest(req *fasthttp.Request) {
	req.Header.Del(fasthttp.HeaderAcceptEncoding)
	if req.IsBodyStream() {
		c.req.BodyBytes = int64(req.Header.ContentLength())
		if c.req.BodyBytes < 0 {
			c.req.BodyBytes = -1
		}
		return
	}
	body := req.Body()
	c.req.BodyBytes = int64(len(body))
	var t jsonTop
	c.req = parseOpenAIRequest(body, &t)
	c.genAI.RequestModel = c.req.Model
	if c.req.Stream && !c.req.ClientAskedUsage && (c.op == opChat || c.op == opTextCompletion) {
		if asked, ok := askForUsage(body, &t); ok {
			req.SetBody(asked) // fasthttp sends the new Content-Length
			c.rewrote = true
		}
	}
}

// parseOpenAIRequest reads what the gateway needs of a request body; a body that is not a JSON
// object, or whose members have other types than the API's, gives what could be read (the
// model answers such a request with its own error).
func parseOpenAIRequest(body []byte, t *jsonTop) openaiRequest {
	r := openaiRequest{BodyBytes: int64(len(body))}
	members, ok := t.topMembers(body)
	if !ok {
		return r
	}
	r.Read = true
	if m, ok := lastMember(members, body, "model"); ok {
		_ = json.Unmarshal(m.value(body), &r.Model)
	}
	if m, ok := lastMember(members, body, "stream"); ok {
		r.Stream = string(m.value(body)) == "true"
	}
	if m, ok := lastMember(members, body, "stream_options"); ok {
		opts := m.value(body)
		var sub jsonTop
		if sm, whole := sub.topMembers(opts); whole {
			if iu, ok := lastMember(sm, opts, "include_usage"); ok {
				r.ClientAskedUsage = string(iu.value(opts)) == "true"
			}
		}
	}
	for _, name := range [...]string{"max_completion_tokens", "max_tokens", "max_output_tokens"} {
		if m, ok := lastMember(members, body, name); ok {
			if n, err := strconv.ParseInt(string(m.value(body)), 10, 64); err == nil && n > 0 {
				r.MaxTokens = n
				break
			}
		}
	}
	for _, name := range [...]string{"n", "best_of"} {
		if m, ok := lastMember(members, body, name); ok {
			if n, err := strconv.ParseInt(string(m.value(body)), 10, 64); err == nil && n > 1 {
				r.Choices = max(r.Choices, n)
			}
		}
	}
	return r
}

// askForUsage returns body with stream_options.include_usage set to true: added to an existing
// stream_options object (or replacing its include_usage), or a new stream_options member after
// the last one (replacing a null one). t holds body's members (parseOpenAIRequest). A body that
// is not valid JSON, or whose stream_options is neither an object nor null, is left alone.
func askForUsage(body []byte, t *jsonTop) ([]byte, bool) {
	if !t.whole() || !json.Valid(body) {
		return nil, false
	}
	members := t.members
	splice := func(from, to int, with string) []byte {
		out := make([]byte, 0, len(body)+len(with)-(to-from))
		out = append(out, body[:from]...)
		out = append(out, with...)
		return append(out, body[to:]...)
	}
	const opts = `{"include_usage":true}`
	m, ok := lastMember(members, body, "stream_options")
	switch {
	case !ok && len(members) == 0:
		return splice(t.closeAt, t.closeAt, `"stream_options":`+opts), true
	case !ok:
		end := members[len(members)-1].valEnd
		return splice(end, end, `,"stream_options":`+opts), true
	}
	v := m.value(body)
	switch v[0] {
	case 'n': // null
		return splice(m.valStart, m.valEnd, opts), true
	case '{':
	default:
		return nil, false
	}
	var sub jsonTop
	sm, _ := sub.topMembers(v)
	if iu, ok := lastMember(sm, v, "include_usage"); ok {
		return splice(m.valStart+iu.valStart, m.valStart+iu.valEnd, "true"), true
	}
	if len(sm) == 0 {
		return splice(m.valStart+sub.closeAt, m.valStart+sub.closeAt, `"include_usage":true`), true
	}
	return splice(m.valStart+1, m.valStart+1, `"include_usage":true,`), true
}

// prepareLLMBody is prepareBody for a language-model call: a body of up to openAIBodyBytes (and
// within the service's max_body_bytes) is read whole, whether it came with a Content-Length or
// chunked, so that readRequest can read it; a larger one streams through as prepareBody streams
// it.
func prepareLLMBody(req *fasthttp.Request, maxBody int64) (*streamedBody, error) {
	cl := int64(req.Header.ContentLength())
	limit := min(maxBody, openAIBodyBytes)
	if cl >= 0 && cl <= bufferedBodyBytes || cl > limit {
		return prepareBody(req, maxBody)
	}
	stream := req.BodyStream()
	if cl >= 0 { // declared, over bufferedBodyBytes and within limit
		buf := make([]byte, cl)
		n, err := readFull(stream, buf)
		switch {
		case err == nil || err == io.EOF && int64(n) == cl:
		case err == io.EOF:
			return nil, errClientAborted.withCause(io.ErrUnexpectedEOF)
		default:
			return nil, errBadFraming.withCause(err)
		}
		req.SetBody(buf)
		return nil, nil
	}
	// chunked: read until the body ends or is over the limit
	buf := make([]byte, 0, 2*bufferedBodyBytes)
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf))
		}
		n, err := stream.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF && int64(len(buf)) > maxBody:
			return nil, errBodyTooLarge
		case err == io.EOF:
			req.SetBody(buf)
			return nil, nil
		case err != nil:
			return nil, errBadFraming.withCause(err)
		}
	}
	if int64(len(buf)) > maxBody {
		return nil, errBodyTooLarge
	}
	b := &streamedBody{r: io.MultiReader(bytes.NewReader(buf), stream), left: maxBody}
	req.SetBodyStream(b, -1)
	return b, nil
}

// end ends the call with what meter read of its answer (nil when there was no answer: the call
// failed, or was never made), whole telling whether the answer reached its end: it fills rec's
// GenAI (rec may be nil) and hands the usage on (usageKnown). It runs once per call.
func (c *llmCall) end(meter *answerMeter, whole bool, rec *telemetry.Record) {
	if c.ended {
		return
	}
	c.ended = true
	if meter == nil {
		c.genAI.Usage = usageMissing
	} else {
		meter.finish(whole)
	}
	if rec != nil {
		rec.GenAI = c.genAI
	}
	c.g.usageKnown(c)
}

// The values of GenAI.Usage.
const (
	usageReported   = "reported"   // the model's answer gave the counts
	usageMissing    = "missing"    // the answer had no usage (or there was no answer)
	usageUnparsable = "unparsable" // the answer, or its usage, could not be read
	usageCut        = "cut"        // the answer ended early, before its usage
)

// usageKnown is the one place where the actual usage of a language-model call is known. It runs
// exactly once for every call that was forwarded (or tried), when the gateway is done with it:
// for an answer read whole, once it is read; for a streamed one, when the stream ends (written
// whole, cut, or the client gone); for a call that got no answer, when it failed. c.genAI.Usage
// says whether counts exist ("reported") or why not; c.caller, c.svc and c.dep say whose call it
// was and where it went, c.req what was asked (the model, MaxTokens, the body's size). The call's
// token-limit reservation is settled here (settleTokens). Reported usage goes to the usage sink.
func (g *Gateway) usageKnown(c *llmCall) {
	g.settleTokens(c)
	if g.llmObserver != nil {
		g.llmObserver(c)
	}
	if g.usageSink == nil || c.genAI.Usage != usageReported {
		return
	}
	model := c.genAI.ResponseModel
	if model == "" {
		model = c.genAI.RequestModel
	}
	ev := usage.Event{
		Time:         time.Now(),
		Service:      c.svc.name,
		Caller:       c.caller.Name,
		Model:        model,
		InputTokens:  c.genAI.InputTokens,
		OutputTokens: c.genAI.OutputTokens,
	}
	if c.dep != nil {
		ev.Deployment = c.dep.name
	}
	g.usageSink.Add(ev)
}

// endLLMCall ends a call whose answer was not streamed: read whole into resp (err nil), or none
// (err set: the call failed, or no replica could be had).
func (g *Gateway) endLLMCall(c *llmCall, resp *fasthttp.Response, err error, rec *telemetry.Record) {
	if err != nil {
		c.end(nil, false, rec)
		return
	}
	m := newAnswerMeter(c, &resp.Header, false)
	m.whole(resp)
	c.end(m, true, rec)
}

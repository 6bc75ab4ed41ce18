package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/valyala/fasthttp"
)

// The answer of a language-model call is read as it passes (answerMeter), for the model's own
// count of the tokens it read and wrote, and the model's name:
//
//   - a JSON answer (read whole, or streamed through chunked): its top-level "usage" and
//     "model", found without decoding the rest (jsonTop);
//   - a text/event-stream answer, event by event: the usage of a chat or text completion's
//     usage chunk, or of the Responses API's response.completed (or .incomplete, .failed)
//     event; the time to its first token.
//
// When the gateway asked for the usage (llmCall.rewrote), the stream is given to the client
// event by event, each as soon as it is complete, without what the client did not ask for: the
// usage chunk (an event whose "choices" is empty and whose "usage" is an object) is dropped, and
// the "usage":null member the model adds to every other chunk is cut out with its comma, so that
// the client gets the bytes the model sends without include_usage. A usage object on a chunk that
// has choices is left where it is (the model may send it unasked). Otherwise every byte is passed
// on as it arrives, and read beside.
//
// The first token is the first event that carries generated output: for a chat completion, a
// choice whose delta has a non-empty content, reasoning_content, reasoning or refusal, or
// tool_calls or a function_call; for a text completion, a choice with non-empty text; for the
// Responses API, an event whose type ends in ".delta" (response.output_text.delta and the
// like). A role-only first chunk does not count.

// maxEventBytes bounds one server-sent event the gateway reads: a larger one is passed on
// unread (and, when the gateway asked for usage, untouched), and the call's usage is then
// "unparsable" unless another event reported it.
const maxEventBytes = 4 << 20

// maxAnswerMember bounds the copy kept of a JSON answer's "usage" or "model" value.
const maxAnswerMember = 16 << 10

// answerMeter reads one language-model answer (see above). For a streamed answer its read is the
// modelStream's Read; for one read whole, whole reads it at once.
type answerMeter struct {
	c        *llmCall
	sse      bool // the answer is text/event-stream
	strip    bool // the gateway asked for the usage: take out what the client did not ask for
	opaque   bool // compressed: nothing of it can be read
	streamed bool // the client gets it as it arrives (for the time to the first token)

	// A JSON answer.
	top   jsonTop
	bytes int64

	// A text/event-stream answer: the event being read, and what is ready for the client.
	pending     []byte
	out         []byte
	off         int
	rerr        error // the model stream's error, given once out is drained
	data        []byte
	skip        bool // the current event is over maxEventBytes: its rest passes unread
	atLineStart bool
	lastCR      bool
	endAfterCR  bool // the event's blank line ended with a CR: a LF right after is part of it
	events      jsonTop

	seenContent bool
	reported    bool
	bad         bool // something of the answer could not be read
	in, outTok  int64
}

// newAnswerMeter readies the reading of the answer whose headers are h.
func newAnswerMeter(c *llmCall, h *fasthttp.ResponseHeader, streamed bool) *answerMeter {
	m := &answerMeter{c: c, streamed: streamed, atLineStart: true}
	if enc := h.ContentEncoding(); len(enc) > 0 && !bytes.EqualFold(enc, []byte("identity")) {
		m.opaque = true
		return m
	}
	m.sse = isEventStream(h.ContentType())
	m.strip = m.sse && c.rewrote
	m.top.want, m.top.max, m.top.capture = [2]string{"model", "usage"}, maxAnswerMember, -1
	return m
}

// read is the Read of a modelStream with a meter: the model's bytes, read through readModel,
// given to the client as they come, or, when the meter strips the stream, event by event. It
// runs outside the handler (fasthttp's server writes the body after it): a panic in reading the
// model's bytes cuts this stream, as a failure of the model's would, instead of the process.
func (m *answerMeter) read(s *modelStream, p []byte) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.err = fmt.Errorf("reading a language-model answer: panic: %s", panicValue(r))
			m.bad, m.rerr, m.out, m.off = true, errStreamCut, m.out[:0], 0
			n, err = 0, errStreamCut
		}
	}()
	for {
		if m.off < len(m.out) {
			n := copy(p, m.out[m.off:])
			if m.off += n; m.off == len(m.out) {
				m.out, m.off = m.out[:0], 0
			}
			return n, nil
		}
		if m.rerr != nil {
			return 0, m.rerr
		}
		n, err := s.readModel(p)
		m.feed(p[:n])
		if err == io.EOF {
			m.eof()
		}
		if !m.strip {
			return n, err
		}
		m.rerr = err
	}
}

// whole reads an answer read whole into resp, and puts back the body the client gets.
func (m *answerMeter) whole(resp *fasthttp.Response) {
	m.feed(resp.Body())
	m.eof()
	if m.strip {
		resp.SetBody(m.out)
		m.out = m.out[:0]
	}
}

// feed reads the next piece of the answer.
func (m *answerMeter) feed(p []byte) {
	switch {
	case len(p) == 0:
	case m.opaque:
	case m.sse:
		m.feedSSE(p)
	default:
		m.bytes += int64(len(p))
		m.top.feed(p)
	}
}

// feedSSE reads the next piece of an event stream: each event, once complete, is read (event)
// and, when the meter strips the stream, goes to out as it is to be sent.
func (m *answerMeter) feedSSE(p []byte) {
	for len(p) > 0 {
		e := m.nextEnd(p)
		if e < 0 {
			m.takePart(p)
			return
		}
		m.takePart(p[:e])
		m.endEvent()
		p = p[e:]
	}
}

// nextEnd reads b for the end of the current event (a blank line; lines end in CRLF, LF or CR)
// and returns the index just after it, or -1 when the event goes on after b.
func (m *answerMeter) nextEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if m.endAfterCR {
			m.endAfterCR = false
			if c == '\n' {
				m.lastCR = false
				return i + 1
			}
			return i
		}
		switch {
		case c == '\n' && m.lastCR: // the LF of a CRLF: its CR ended the line
			m.lastCR = false
		case c == '\n' || c == '\r':
			m.lastCR = c == '\r'
			if m.atLineStart {
				if c == '\r' {
					m.endAfterCR = true
					continue
				}
				return i + 1
			}
			m.atLineStart = true
		default:
			m.lastCR, m.atLineStart = false, false
			j := bytes.IndexAny(b[i+1:], "\r\n")
			if j < 0 {
				return -1
			}
			i += j
		}
	}
	return -1
}

// takePart adds part of the current event.
func (m *answerMeter) takePart(b []byte) {
	if m.skip {
		if m.strip {
			m.out = append(m.out, b...)
		}
		return
	}
	m.pending = append(m.pending, b...)
	if len(m.pending) > maxEventBytes {
		if m.strip {
			m.out = append(m.out, m.pending...)
		}
		m.pending, m.skip, m.bad = m.pending[:0], true, true
	}
}

// endEvent reads the event just completed, and when stripping sends it on as the client is to
// get it.
func (m *answerMeter) endEvent() {
	if m.skip {
		m.skip = false
		return
	}
	raw := m.pending
	drop, from, to := m.event(raw)
	if m.strip && !drop {
		m.out = append(m.out, raw[:from]...)
		m.out = append(m.out, raw[to:]...)
	}
	m.pending = m.pending[:0]
}

// eof ends the answer's bytes: an event the stream ended without a blank line after is read as
// one (a client would drop it).
func (m *answerMeter) eof() {
	if m.sse && (len(m.pending) > 0 || m.skip || m.endAfterCR) {
		m.endAfterCR = false
		m.endEvent()
	}
}

// event reads one server-sent event (raw, with its ending blank line) and says what of it the
// client is not to get: all of it (drop), or raw[from:to].
func (m *answerMeter) event(raw []byte) (drop bool, from, to int) {
	data, start, lines := m.eventData(raw)
	if lines == 0 || string(bytes.TrimSpace(data)) == "[DONE]" {
		return false, 0, 0
	}
	members, ok := m.events.topMembers(data)
	if !ok {
		m.bad = true
		return false, 0, 0
	}
	if mm, ok := lastMember(members, data, "model"); ok && m.c.genAI.ResponseModel == "" {
		m.takeModel(mm.value(data))
	}
	if m.c.op == opResponses {
		m.responsesEvent(members, data)
		return false, 0, 0
	}
	choices, hasChoices := lastMember(members, data, "choices")
	if hasChoices && !m.seenContent && choicesCarryOutput(choices.value(data)) {
		m.firstToken()
	}
	for i := len(members) - 1; i >= 0; i-- {
		if string(members[i].key(data)) != "usage" {
			continue
		}
		u := members[i].value(data)
		if string(u) == "null" {
			if m.strip && lines == 1 {
				f, t := removal(members, i)
				return false, start + f, start + t
			}
			return false, 0, 0
		}
		m.takeUsage(u)
		return m.strip && hasChoices && isEmptyArray(choices.value(data)), 0, 0
	}
	return false, 0, 0
}

// eventData returns the data of an event (its data lines' values joined by LF), where the first
// one starts in raw, and how many data lines it has.
func (m *answerMeter) eventData(raw []byte) (data []byte, start, lines int) {
	for i := 0; i < len(raw); {
		j := i
		for j < len(raw) && raw[j] != '\n' && raw[j] != '\r' {
			j++
		}
		line := raw[i:j]
		if bytes.HasPrefix(line, []byte("data:")) {
			v, vs := line[5:], i+5
			if len(v) > 0 && v[0] == ' ' {
				v, vs = v[1:], vs+1
			}
			lines++
			switch lines {
			case 1:
				data, start = v, vs
			case 2:
				m.data = append(append(append(m.data[:0], data...), '\n'), v...)
				data = m.data
			default:
				m.data = append(append(m.data, '\n'), v...)
				data = m.data
			}
		}
		if j < len(raw) && raw[j] == '\r' && j+1 < len(raw) && raw[j+1] == '\n' {
			j++
		}
		i = j + 1
	}
	return data, start, lines
}

// responsesEvent reads an event of the Responses API's stream.
func (m *answerMeter) responsesEvent(members []jsonMember, data []byte) {
	t, ok := lastMember(members, data, "type")
	if !ok {
		return
	}
	typ := t.value(data)
	if !m.seenContent && bytes.HasSuffix(typ, []byte(`.delta"`)) {
		m.firstToken()
	}
	switch string(typ) {
	case `"response.completed"`, `"response.incomplete"`, `"response.failed"`:
	default:
		return
	}
	r, ok := lastMember(members, data, "response")
	if !ok {
		return
	}
	var resp struct {
		Model string          `json:"model"`
		Usage json.RawMessage `json:"usage"`
	}
	if json.Unmarshal(r.value(data), &resp) != nil {
		m.bad = true
		return
	}
	if resp.Model != "" {
		m.c.genAI.ResponseModel = resp.Model
	}
	if len(resp.Usage) > 0 && string(resp.Usage) != "null" {
		m.takeUsage(resp.Usage)
	}
}

// choicesCarryOutput reports whether a chunk's choices carry generated output (see above).
func choicesCarryOutput(v []byte) bool {
	if isEmptyArray(v) || string(v) == "null" {
		return false
	}
	var choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string          `json:"content"`
			ReasoningContent string          `json:"reasoning_content"`
			Reasoning        string          `json:"reasoning"`
			Refusal          string          `json:"refusal"`
			ToolCalls        json.RawMessage `json:"tool_calls"`
			FunctionCall     json.RawMessage `json:"function_call"`
		} `json:"delta"`
	}
	_ = json.Unmarshal(v, &choices) // what could be read counts
	some := func(r json.RawMessage) bool { return len(r) > 0 && string(r) != "null" && !isEmptyArray(r) }
	for _, c := range choices {
		d := c.Delta
		if c.Text != "" || d.Content != "" || d.ReasoningContent != "" || d.Reasoning != "" || d.Refusal != "" ||
			some(d.ToolCalls) || some(d.FunctionCall) {
			return true
		}
	}
	return false
}

// isEmptyArray reports whether a JSON value is [] (with any whitespace inside).
func isEmptyArray(v []byte) bool {
	v = bytes.TrimSpace(v)
	return len(v) >= 2 && v[0] == '[' && v[len(v)-1] == ']' && len(bytes.TrimSpace(v[1:len(v)-1])) == 0
}

// firstToken notes the first event that carries output.
func (m *answerMeter) firstToken() {
	m.seenContent = true
	if m.streamed {
		m.c.genAI.TimeToFirstToken = max(time.Since(m.c.start), time.Nanosecond)
	}
}

// takeModel notes the answer's model (a JSON string).
func (m *answerMeter) takeModel(v []byte) {
	var s string
	if json.Unmarshal(v, &s) == nil {
		m.c.genAI.ResponseModel = s
	}
}

// takeUsage reads a usage object: prompt_tokens and completion_tokens (input_tokens and
// output_tokens for the Responses API). Without the input count, or with a count that is not a
// whole number of zero or more, it is not usable. A later one replaces an earlier one (a model
// that reports running totals).
func (m *answerMeter) takeUsage(v []byte) {
	var u struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
	}
	if json.Unmarshal(v, &u) != nil {
		m.bad = true
		return
	}
	in, out := u.PromptTokens, u.CompletionTokens
	if m.c.op == opResponses {
		in, out = u.InputTokens, u.OutputTokens
	}
	if in == nil || *in < 0 || out != nil && *out < 0 {
		m.bad = true
		return
	}
	m.reported, m.in, m.outTok = true, *in, 0
	if out != nil {
		m.outTok = *out
	}
}

// finish ends the reading, whole telling whether the answer reached its end, and fills the call's
// GenAI: counts reported by the model win; otherwise "cut" for an answer that ended early,
// "unparsable" for one that could not be read, "missing" for one that had no usage.
func (m *answerMeter) finish(whole bool) {
	if !m.sse && !m.opaque && m.top.whole() {
		t := &m.top
		if t.found[0] && !t.overflow[0] {
			m.takeModel(t.got[0])
		}
		switch {
		case t.found[1] && t.overflow[1]:
			m.bad = true
		case t.found[1] && string(t.got[1]) != "null":
			m.takeUsage(t.got[1])
		}
	} else if !m.sse && !m.opaque && m.bytes > 0 {
		m.bad = true // not a JSON object
	}
	g := &m.c.genAI
	switch {
	case m.reported:
		g.Usage, g.InputTokens, g.OutputTokens = usageReported, m.in, m.outTok
	case !whole:
		g.Usage = usageCut
	case m.bad || m.opaque:
		g.Usage = usageUnparsable
	default:
		g.Usage = usageMissing
	}
}

package proxy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// sseMeter is a meter of a chat stream for which the gateway asked the usage (stripping).
func sseMeter(op operation, rewrote bool) *answerMeter {
	var h fasthttp.ResponseHeader
	h.SetContentType("text/event-stream")
	return newAnswerMeter(&llmCall{op: op, rewrote: rewrote}, &h, true)
}

// strip runs a stream through a stripping meter, fed in the given pieces, and returns what the
// client gets.
func strip(pieces ...string) (string, *answerMeter) {
	m := sseMeter(opChat, true)
	var out []byte
	for _, p := range pieces {
		m.feed([]byte(p))
		out = append(out, m.out...)
		m.out = m.out[:0]
	}
	m.eof()
	out = append(out, m.out...)
	m.finish(true)
	return string(out), m
}

const (
	withUsage = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n" +
		": a comment\n\n" +
		"data: {\"usage\": null, \"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n" +
		"data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\r\r" +
		"data: [DONE]\n\n"
	withoutUsage = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n" +
		": a comment\n\n" +
		"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\n" +
		"data: [DONE]\n\n"
)

// An event split anywhere between two reads, or read one byte at a time, is read as one: the
// client gets the same bytes and the usage is the same, whatever the boundaries.
func TestStripAtEveryBoundary(t *testing.T) {
	whole, m := strip(withUsage)
	if whole != withoutUsage || m.c.genAI.Usage != usageReported || m.c.genAI.InputTokens != 5 || m.c.genAI.OutputTokens != 2 {
		t.Fatalf("whole: got\n%q\nusage %+v", whole, m.c.genAI)
	}
	for i := range len(withUsage) + 1 {
		if got, m := strip(withUsage[:i], withUsage[i:]); got != withoutUsage || m.c.genAI.InputTokens != 5 {
			t.Fatalf("split at %d: got\n%q\nusage %+v", i, got, m.c.genAI)
		}
	}
	var bytewise []string
	for i := range len(withUsage) {
		bytewise = append(bytewise, withUsage[i:i+1])
	}
	if got, m := strip(bytewise...); got != withoutUsage || m.c.genAI.OutputTokens != 2 {
		t.Fatalf("one byte at a time: got\n%q\nusage %+v", got, m.c.genAI)
	}
}

// Each event goes to the client as soon as it is complete, not later.
func TestStripSendsEachEventWhenComplete(t *testing.T) {
	m := sseMeter(opChat, true)
	ev := "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n"
	m.feed([]byte(ev))
	if len(m.out) != 0 {
		t.Fatalf("an incomplete event went out: %q", m.out)
	}
	m.feed([]byte("\n"))
	if want := "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"; string(m.out) != want {
		t.Fatalf("got %q, want %q", m.out, want)
	}
}

// A multi-line data event, and a usage object on a chunk with choices, are left as they are.
func TestStripLeavesWhatItCannotTellApart(t *testing.T) {
	in := "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\ndata: \"usage\":null}\n\n" +
		"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n"
	got, m := strip(in)
	if got != in || m.c.genAI.Usage != usageReported {
		t.Fatalf("got\n%q\nusage %+v", got, m.c.genAI)
	}
}

// An event the model ends without the blank line after it is still read at the end.
func TestStripLastEventWithoutBlankLine(t *testing.T) {
	got, m := strip("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":0}}")
	if got != "" || m.c.genAI.InputTokens != 4 {
		t.Fatalf("got %q, usage %+v", got, m.c.genAI)
	}
}

// The request is asked for usage in every shape stream_options can have, and the result is
// valid JSON with the client's members kept.
func TestAskForUsage(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"stream":true}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{ "stream" : true }`, `{ "stream" : true,"stream_options":{"include_usage":true} }`},
		{`{"stream":true,"stream_options":null}`, `{"stream":true,"stream_options":{"include_usage":true}}`},
		{`{"stream_options":{},"stream":true}`, `{"stream_options":{"include_usage":true},"stream":true}`},
		{`{"stream_options":{ },"stream":true}`, `{"stream_options":{ "include_usage":true},"stream":true}`},
		{`{"stream_options":{"a":1},"stream":true}`, `{"stream_options":{"include_usage":true,"a":1},"stream":true}`},
		{`{"stream_options":{"include_usage":false},"stream":true}`, `{"stream_options":{"include_usage":true},"stream":true}`},
		{`{"stream_options":{"include_usage":null,"b":[1,{"c":"}"}]},"stream":true}`, `{"stream_options":{"include_usage":true,"b":[1,{"c":"}"}]},"stream":true}`},
		{`{"stream":true,"stream_options":"x"}`, ""},
		{`{"stream":true,"messages":[}`, ""},
	} {
		var top jsonTop
		r := parseOpenAIRequest([]byte(tc.in), &top)
		got, ok := askForUsage([]byte(tc.in), &top)
		if tc.want == "" {
			if ok {
				t.Errorf("%s: rewritten to %s", tc.in, got)
			}
			continue
		}
		if !ok || string(got) != tc.want || !json.Valid(got) || !r.Stream {
			t.Errorf("%s: got %s (%v), want %s", tc.in, got, ok, tc.want)
		}
		var again jsonTop
		if r := parseOpenAIRequest(got, &again); !r.ClientAskedUsage {
			t.Errorf("%s: the rewritten body %s does not ask for usage", tc.in, got)
		}
	}
}

// What the gateway reads of a request body.
func TestParseOpenAIRequest(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want openaiRequest
	}{
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5}`, openaiRequest{Read: true, Model: "m", Stream: true, ClientAskedUsage: true, MaxTokens: 5}},
		{`{"model":"m\u00e9","max_completion_tokens":7,"max_tokens":5}`, openaiRequest{Read: true, Model: "mé", MaxTokens: 7}},
		{`{"max_output_tokens":9,"stream":false}`, openaiRequest{Read: true, MaxTokens: 9}},
		{`{"model":1,"stream":"yes","max_tokens":-1}`, openaiRequest{Read: true}},
		{`{"stream":false,"stream":true}`, openaiRequest{Read: true, Stream: true}},
		{`{"n":3,"max_tokens":5}`, openaiRequest{Read: true, MaxTokens: 5, Choices: 3}},
		{`{"n":2,"best_of":4}`, openaiRequest{Read: true, Choices: 4}},
		{`{"n":1,"best_of":"x"}`, openaiRequest{Read: true}},
		{`[1,2]`, openaiRequest{}},
		{``, openaiRequest{}},
	} {
		var top jsonTop
		got := parseOpenAIRequest([]byte(tc.in), &top)
		tc.want.BodyBytes = int64(len(tc.in))
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// The operation comes from the method and the path's ending.
func TestOperationOf(t *testing.T) {
	for target, want := range map[string]operation{
		"/v1/chat/completions":                                 opChat,
		"/v1/chat/completions?api-version=1":                   opChat,
		"/openai/deployments/gpt/chat/completions":             opChat,
		"/v1/completions":                                      opTextCompletion,
		"/v1/embeddings":                                       opEmbeddings,
		"/v1/responses":                                        opResponses,
		"/v1/models":                                           opNone,
		"/v1/responses/resp_1":                                 opNone,
		"/v1/chat/completions/x":                               opNone,
		"/score?next=/v1/chat/completions":                     opNone,
		"/v1/chat/completionsX":                                opNone,
		"/v1/chat/c%6Fmpletions":                               opChat,
		"/v1/Chat/Completions":                                 opChat,
		"/v1/chat/completions/":                                opChat,
		"/v1/EMBEDDINGS/?x=1":                                  opEmbeddings,
		"/v1/chat%2fcompletions":                               opChat,
		"/v1/%63hat/completions":                               opChat,
		"/v1/chat/completions//":                               opNone,
		"/v1/chat/completions%":                                opNone,
		"/v1/files":                                            opNone,
		"/api/v1/service/x/v1/embeddings?model=/v1/embeddings": opEmbeddings,
	} {
		if got := operationOf([]byte("POST"), []byte(target)); got != want {
			t.Errorf("POST %s: %v, want %v", target, got, want)
		}
	}
	if got := operationOf([]byte("GET"), []byte("/v1/chat/completions")); got != opNone {
		t.Errorf("GET is an operation: %v", got)
	}
}

// FuzzJSONTop checks jsonTop against encoding/json: a valid JSON object is read as whole, its
// top-level members are found with their values as written (the last of a key winning for the
// captured ones), and feeding it in two pieces anywhere gives the same capture.
func FuzzJSONTop(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"model":"m","usage":{"prompt_tokens":1}}`, ` { "a" : [1, "]", {"b":"\"}"}], "usage" : null } `,
		`{"usage":1e5,"model":"x\\"}`, `{"a":true,"b":false,"c":null,"d":-1.5E+3}`, `{"a":1,}`, `[]`, `{"a" 1}`,
	} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, split int) {
		data := []byte(s)
		var top jsonTop
		members, whole := top.topMembers(data)
		var obj map[string]json.RawMessage
		valid := json.Valid(data) && json.Unmarshal(data, &obj) == nil
		if valid && !whole {
			t.Fatalf("%q is a JSON object, read as not whole", s)
		}
		if !valid || !whole {
			return
		}
		for _, m := range members {
			var key string
			if json.Unmarshal(data[m.keyStart:m.keyEnd], &key) != nil {
				t.Fatalf("%q: key %q", s, data[m.keyStart:m.keyEnd])
			}
			if !json.Valid(m.value(data)) {
				t.Fatalf("%q: value of %s is %q", s, key, m.value(data))
			}
		}
		capture := func(pieces ...[]byte) (got [2][]byte, found [2]bool) {
			c := jsonTop{want: [2]string{"model", "usage"}, max: 1 << 20, capture: -1}
			for _, p := range pieces {
				c.feed(p)
			}
			if !c.whole() {
				t.Fatalf("%q fed in pieces is not whole", s)
			}
			return [2][]byte{bytes.Clone(c.got[0]), bytes.Clone(c.got[1])}, c.found
		}
		split = max(0, min(split, len(data)))
		a, fa := capture(data)
		b, fb := capture(data[:split], data[split:])
		if fa != fb || !bytes.Equal(a[0], b[0]) || !bytes.Equal(a[1], b[1]) {
			t.Fatalf("%q: whole %q, split at %d %q", s, a, split, b)
		}
		for i, name := range []string{"model", "usage"} {
			raw, ok := obj[name]
			if ok != fa[i] || ok && !bytes.Equal(bytes.TrimSpace(raw), a[i]) && !strings.Contains(s, `\`) {
				t.Fatalf("%q: %s captured %q (%v), encoding/json has %q (%v)", s, name, a[i], fa[i], raw, ok)
			}
		}
	})
}

// FuzzStripSplit checks that a stream, however it is cut into pieces, gives the client the same
// bytes and the gateway the same usage, and that nothing of a model's stream makes it panic.
func FuzzStripSplit(f *testing.F) {
	f.Add(withUsage, 10, 100)
	f.Add("data: x\r\rdata: {\"choices\":[],\"usage\":{}}\r\n", 3, 9)
	f.Fuzz(func(t *testing.T, s string, a, b int) {
		a = max(0, min(a, len(s)))
		b = max(a, min(b, len(s)))
		whole, m1 := strip(s)
		split, m2 := strip(s[:a], s[a:b], s[b:])
		if whole != split || m1.c.genAI != m2.c.genAI {
			t.Fatalf("%q: whole gives %q %+v, split at %d and %d gives %q %+v", s, whole, m1.c.genAI, a, b, split, m2.c.genAI)
		}
	})
}

package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/usage"
	"github.com/scoregate/scoregate/proxy"
	"github.com/scoregate/scoregate/telemetry"
)

// ---------------------------------------------------------------------------------------------
// A small OpenAI-compatible model (issue 22): it answers chat and text completions (JSON or
// streamed), embeddings and the Responses API (JSON or streamed) the way OpenAI's API and vLLM
// do, and notes every request it gets. The query string picks a misbehaviour:
//
//	nousage   the answer has no usage, whatever was asked
//	cut       a stream stops after two events, its connection closed
//	bytewise  a stream is written one byte at a time, each flushed
//	crlf      a stream's lines end in CRLF
//	delay=D   the first token comes D after the role-only first chunk
//	text      the answer is text/plain, not JSON
//	chunked   a JSON answer is sent chunked, in two pieces
//	status=N  the answer has status N

const (
	llmModel      = "toy-1"      // what clients ask for
	llmModelFull  = "toy-1-0613" // what the model says it is
	llmPrompt     = 11
	llmCompletion = 3
)

var llmTokens = []string{"Hello", ",", " world"}

type llmSeen struct {
	Path          string
	Body          []byte
	ContentLength int64
	Header        http.Header
}

type llmModelServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []llmSeen
}

func newLLMModel(t *testing.T) *llmModelServer {
	m := &llmModelServer{}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *llmModelServer) last(t *testing.T) llmSeen {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.seen) == 0 {
		t.Fatal("the model got no request")
	}
	return m.seen[len(m.seen)-1]
}

// chatChunk is one chunk of a streamed chat or text completion, as OpenAI's API writes it;
// withUsage adds the "usage":null a model adds when the stream's usage was asked for.
func chatChunk(text bool, choice string, withUsage bool) string {
	object := "chat.completion.chunk"
	if text {
		object = "text_completion"
	}
	s := `{"id":"cmpl-1","object":"` + object + `","created":1700000000,"model":"` + llmModelFull + `","system_fingerprint":"fp_1","choices":[` + choice + `]`
	if withUsage {
		s += `,"usage":null`
	}
	return s + "}"
}

// llmStream is the event stream a model sends for a streamed chat (or text) completion, with
// or without the usage chunk and "usage":null members that include_usage adds.
func llmStream(text, includeUsage, crlf bool) []string {
	var events []string
	add := func(data string) {
		nl := "\n"
		if crlf {
			nl = "\r\n"
		}
		events = append(events, "data: "+data+nl+nl)
	}
	if !text {
		add(chatChunk(text, `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}`, includeUsage))
	}
	for _, tok := range llmTokens {
		if text {
			add(chatChunk(text, `{"index":0,"text":"`+tok+`","logprobs":null,"finish_reason":null}`, includeUsage))
		} else {
			add(chatChunk(text, `{"index":0,"delta":{"content":"`+tok+`"},"logprobs":null,"finish_reason":null}`, includeUsage))
		}
	}
	if text {
		add(chatChunk(text, `{"index":0,"text":"","logprobs":null,"finish_reason":"stop"}`, includeUsage))
	} else {
		add(chatChunk(text, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}`, includeUsage))
	}
	if includeUsage {
		add(fmt.Sprintf(`{"id":"cmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"%s","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
			llmModelFull, llmPrompt, llmCompletion, llmPrompt+llmCompletion))
	}
	add("[DONE]")
	return events
}

// responsesStream is the event stream of a streamed Responses API call.
func responsesStream(withUsage bool) []string {
	u := "null"
	if withUsage {
		u = fmt.Sprintf(`{"input_tokens":%d,"output_tokens":%d,"total_tokens":%d}`, llmPrompt, llmCompletion, llmPrompt+llmCompletion)
	}
	ev := func(typ, data string) string { return "event: " + typ + "\ndata: " + data + "\n\n" }
	out := []string{ev("response.created", `{"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","model":"`+llmModelFull+`","usage":null}}`)}
	for _, tok := range llmTokens {
		out = append(out, ev("response.output_text.delta", `{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"`+tok+`"}`))
	}
	return append(out, ev("response.completed", `{"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","model":"`+llmModelFull+`","output":[{"type":"message","content":[{"type":"output_text","text":"Hello, world"}]}],"usage":`+u+`}}`))
}

func (m *llmModelServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	m.mu.Lock()
	m.seen = append(m.seen, llmSeen{Path: r.URL.Path, Body: body, ContentLength: r.ContentLength, Header: r.Header.Clone()})
	m.mu.Unlock()
	q := r.URL.Query()
	_, noUsage := q["nousage"]
	var req struct {
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"message":"the body is not JSON","type":"invalid_request_error"}}`)
		return
	}
	if _, ok := q["text"]; ok {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "Hello, world")
		return
	}
	status := http.StatusOK
	if s := q.Get("status"); s != "" {
		fmt.Sscan(s, &status)
	}
	usageJSON := fmt.Sprintf(`,"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}`, llmPrompt, llmCompletion, llmPrompt+llmCompletion)
	if noUsage {
		usageJSON = ""
	}
	var events []string
	var answer string
	switch {
	case strings.HasSuffix(r.URL.Path, "/chat/completions"), strings.HasSuffix(r.URL.Path, "/completions"):
		text := !strings.HasSuffix(r.URL.Path, "/chat/completions")
		if req.Stream {
			include := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !noUsage
			_, crlf := q["crlf"]
			events = llmStream(text, include, crlf)
		} else {
			answer = `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"` + llmModelFull + `","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, world"},"finish_reason":"stop"}]` + usageJSON + `}`
		}
	case strings.HasSuffix(r.URL.Path, "/embeddings"):
		u := fmt.Sprintf(`,"usage":{"prompt_tokens":%d,"total_tokens":%d}`, llmPrompt, llmPrompt)
		if noUsage {
			u = ""
		}
		answer = `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-0.5,1e-3]}],"model":"toy-embed"` + u + `}`
	case strings.HasSuffix(r.URL.Path, "/responses"):
		if req.Stream {
			events = responsesStream(!noUsage)
		} else {
			u := fmt.Sprintf(`,"usage":{"input_tokens":%d,"output_tokens":%d,"total_tokens":%d}`, llmPrompt, llmCompletion, llmPrompt+llmCompletion)
			if noUsage {
				u = ""
			}
			answer = `{"id":"resp_1","object":"response","status":"completed","model":"` + llmModelFull + `","output":[{"type":"message","content":[{"type":"output_text","text":"Hello, world"}]}]` + u + `}`
		}
	default:
		answer = `{"object":"list","data":[{"id":"` + llmModel + `","object":"model"}]}`
	}
	fl := w.(http.Flusher)
	if events == nil {
		w.Header().Set("Content-Type", "application/json")
		if _, ok := q["chunked"]; ok {
			w.WriteHeader(status)
			io.WriteString(w, answer[:len(answer)/2])
			fl.Flush()
			io.WriteString(w, answer[len(answer)/2:])
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(answer)))
		w.WriteHeader(status)
		io.WriteString(w, answer)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(status)
	fl.Flush()
	delay, _ := time.ParseDuration(q.Get("delay"))
	_, bytewise := q["bytewise"]
	_, cut := q["cut"]
	for i, ev := range events {
		if cut && i == 2 {
			panic(http.ErrAbortHandler) // the connection is closed, the chunked body unfinished
		}
		if i == 1 && delay > 0 {
			time.Sleep(delay)
		}
		if bytewise {
			for j := range len(ev) {
				io.WriteString(w, ev[j:j+1])
				fl.Flush()
			}
			continue
		}
		io.WriteString(w, ev)
		fl.Flush()
	}
}

// ---------------------------------------------------------------------------------------------

// usageSink keeps the events it is given.
type usageSink struct {
	mu     sync.Mutex
	events []usage.Event
}

func (s *usageSink) Add(e usage.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *usageSink) all() []usage.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]usage.Event(nil), s.events...)
}

// llmEnv is a gateway with telemetry in front of an llmModelServer: service "llm" (api: openai,
// key auth) and "plain" (the same model, api: plain, key auth).
type llmEnv struct {
	addr       string
	model      *llmModelServer
	sink       *usageSink
	key, plain string // llm's primary key, plain's
	keyID      string
	mu         sync.Mutex
	calls      []proxy.LLMCallSeen
	spans      *tracetest.InMemoryExporter
}

func newLLMEnv(t *testing.T) *llmEnv {
	t.Helper()
	ctx := context.Background()
	keys := newTestKeyring(t)
	var err error
	e := &llmEnv{model: newLLMModel(t), sink: &usageSink{}, spans: tracetest.NewInMemoryExporter()}
	if e.key, err = keys.Regenerate(ctx, "llm", authn.SlotPrimary); err != nil {
		t.Fatal(err)
	}
	if e.plain, err = keys.Regenerate(ctx, "plain", authn.SlotPrimary); err != nil {
		t.Fatal(err)
	}
	e.keyID = keys.Keys("llm")[authn.SlotPrimary].ID
	cfg := &config.Config{Services: []config.Service{
		{Name: "llm", Auth: config.AuthKey, API: config.APIOpenAI, Upstreams: []string{e.model.srv.URL}},
		{Name: "plain", Auth: config.AuthKey, Upstreams: []string{e.model.srv.URL}},
	}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	tel, err := telemetry.New(ctx, cfg, telemetry.Options{
		Exporters: []sdktrace.SpanExporter{e.spans},
		AccessLog: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := proxy.New(cfg, authn.NewAuthenticator(keys), nil, proxy.WithTelemetry(tel), proxy.WithUsageSink(e.sink),
		proxy.WithLLMCallObserver(func(c proxy.LLMCallSeen) {
			e.mu.Lock()
			e.calls = append(e.calls, c)
			e.mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tel.Shutdown(ctx)
	})
	e.addr = serveGateway(t, gw, nil)
	return e
}

// post sends body to service's path with key, and returns the answer whole.
func (e *llmEnv) post(t *testing.T, service, key, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+e.addr+"/api/v1/service/"+service+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept-Encoding", "gzip")
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil && !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp, got
}

// call waits for the n-th language-model call (from 1) to end, and returns it.
func (e *llmEnv) call(t *testing.T, n int) proxy.LLMCallSeen {
	t.Helper()
	waitFor(t, fmt.Sprintf("language-model call %d to end", n), func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.calls) >= n
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[n-1]
}

func (e *llmEnv) callCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.calls)
}

// reported is the GenAI of a call whose model reported llmPrompt and llmCompletion tokens.
func reported(op string, out int64) telemetry.GenAI {
	return telemetry.GenAI{Operation: op, RequestModel: llmModel, ResponseModel: llmModelFull,
		InputTokens: llmPrompt, OutputTokens: out, Usage: "reported"}
}

var ignoreTTFT = cmpopts.IgnoreFields(telemetry.GenAI{}, "TimeToFirstToken")

const chatBody = `{"model":"` + llmModel + `","messages":[{"role":"user","content":"Say hello"}],"max_tokens":64`

// A chat completion answered in JSON: the answer passes unchanged, its usage goes to the call's
// record and to the usage sink, with who called (the key's id, never the key).
func TestOpenAIChatJSON(t *testing.T) {
	e := newLLMEnv(t)
	for i, variant := range []string{"", "?chunked"} {
		resp, got := e.post(t, "llm", e.key, "/v1/chat/completions"+variant, chatBody+"}")
		if resp.StatusCode != 200 || !bytes.HasPrefix(got, []byte(`{"id":"chatcmpl-1"`)) || !bytes.HasSuffix(got, []byte(`"total_tokens":14}}`)) {
			t.Fatalf("%q: status %d, answer %s", variant, resp.StatusCode, got)
		}
		c := e.call(t, i+1)
		if diff := cmp.Diff(reported("chat", llmCompletion), c.GenAI); diff != "" {
			t.Errorf("%q: GenAI (-want +got):\n%s", variant, diff)
		}
		if c.Request.MaxTokens != 64 || c.Request.Stream || !c.Request.Read || c.Rewrote {
			t.Errorf("%q: request read as %+v, rewrote %v", variant, c.Request, c.Rewrote)
		}
		if seen := e.model.last(t); string(seen.Body) != chatBody+"}" || seen.Header.Get("Accept-Encoding") != "" {
			t.Errorf("%q: the model got %s, Accept-Encoding %q", variant, seen.Body, seen.Header.Get("Accept-Encoding"))
		}
	}
	events := e.sink.all()
	for _, ev := range events {
		if ev.Time.IsZero() || time.Since(ev.Time) > time.Minute {
			t.Errorf("event time %v", ev.Time)
		}
	}
	want := usage.Event{Service: "llm", Deployment: "default", Caller: "key:" + e.keyID, Model: llmModelFull, InputTokens: llmPrompt, OutputTokens: llmCompletion}
	if diff := cmp.Diff([]usage.Event{want, want}, events, cmpopts.IgnoreFields(usage.Event{}, "Time")); diff != "" {
		t.Errorf("usage events (-want +got):\n%s", diff)
	}
	secret := e.key[len("sgk_")+12+1:]
	for _, ev := range events {
		if strings.Contains(ev.Caller, secret[:8]) || strings.Contains(ev.Caller, e.key) {
			t.Errorf("the caller %q holds the key", ev.Caller)
		}
	}
}

// A client that streams a chat or text completion without asking for usage gets exactly the
// stream the model sends without include_usage, byte for byte, however the model cuts it into
// pieces (one byte at a time) and whatever its line endings; the gateway asked for the usage and
// read it.
func TestOpenAIStreamWithoutUsageAsked(t *testing.T) {
	for _, tc := range []struct {
		name, path, body, query string
		wantOpts                string // the model's stream_options
	}{
		{"chat", "/v1/chat/completions", chatBody + `,"stream":true}`, "", `{"include_usage":true}`},
		{"chat, one byte at a time", "/v1/chat/completions", chatBody + `,"stream":true}`, "?bytewise", `{"include_usage":true}`},
		{"chat, CRLF, one byte at a time", "/v1/chat/completions", chatBody + `,"stream":true}`, "?bytewise&crlf", `{"include_usage":true}`},
		{"chat with empty stream_options", "/v1/chat/completions", chatBody + `,"stream":true,"stream_options":{}}`, "", `{"include_usage":true}`},
		{"chat with include_usage false", "/v1/chat/completions", chatBody + `,"stream":true,"stream_options":{"include_usage":false}}`, "", `{"include_usage":true}`},
		{"chat with other stream_options", "/v1/chat/completions", chatBody + `,"stream":true,"stream_options":{"continuous_usage_stats":false}}`, "", `{"include_usage":true,"continuous_usage_stats":false}`},
		{"chat with null stream_options", "/v1/chat/completions", chatBody + `, "stream": true, "stream_options": null}`, "", `{"include_usage":true}`},
		{"text completion", "/v1/completions", `{"model":"` + llmModel + `","prompt":"Say hello","stream":true,"max_tokens":16}`, "?bytewise", `{"include_usage":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLLMEnv(t)
			resp, got := e.post(t, "llm", e.key, tc.path+tc.query, tc.body)
			text := tc.path == "/v1/completions"
			want := strings.Join(llmStream(text, false, strings.Contains(tc.query, "crlf")), "")
			if resp.StatusCode != 200 || string(got) != want {
				t.Fatalf("status %d; the client got\n%s\nwant\n%s", resp.StatusCode, got, want)
			}
			if bytes.Contains(got, []byte("usage")) {
				t.Errorf("the client got usage it did not ask for")
			}
			seen := e.model.last(t)
			var sent map[string]json.RawMessage
			if err := json.Unmarshal(seen.Body, &sent); err != nil || seen.ContentLength != int64(len(seen.Body)) {
				t.Fatalf("the model got %s (Content-Length %d): %v", seen.Body, seen.ContentLength, err)
			}
			if string(sent["stream_options"]) != tc.wantOpts || string(sent["model"]) != `"`+llmModel+`"` || len(sent["max_tokens"]) == 0 && len(sent["prompt"]) == 0 {
				t.Errorf("the model got %s", seen.Body)
			}
			c := e.call(t, 1)
			op := "chat"
			if text {
				op = "text_completion"
			}
			if diff := cmp.Diff(reported(op, llmCompletion), c.GenAI, ignoreTTFT); diff != "" {
				t.Errorf("GenAI (-want +got):\n%s", diff)
			}
			if c.GenAI.TimeToFirstToken <= 0 || !c.Rewrote || !c.Request.Stream || c.Request.ClientAskedUsage {
				t.Errorf("time to first token %v, rewrote %v, request %+v", c.GenAI.TimeToFirstToken, c.Rewrote, c.Request)
			}
			if n := len(e.sink.all()); n != 1 {
				t.Errorf("%d usage events, want 1", n)
			}
		})
	}
}

// A client that asks for the stream's usage itself gets the model's stream untouched, and the
// model gets the request as the client sent it.
func TestOpenAIStreamWithUsageAsked(t *testing.T) {
	e := newLLMEnv(t)
	body := chatBody + `,"stream":true,"stream_options":{"include_usage":true}}`
	resp, got := e.post(t, "llm", e.key, "/v1/chat/completions", body)
	if want := strings.Join(llmStream(false, true, false), ""); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("status %d; the client got\n%s\nwant\n%s", resp.StatusCode, got, want)
	}
	if seen := e.model.last(t); string(seen.Body) != body {
		t.Errorf("the model got %s, want the client's %s", seen.Body, body)
	}
	c := e.call(t, 1)
	if diff := cmp.Diff(reported("chat", llmCompletion), c.GenAI, ignoreTTFT); diff != "" || c.Rewrote || !c.Request.ClientAskedUsage {
		t.Errorf("GenAI (-want +got):\n%s; rewrote %v, request %+v", diff, c.Rewrote, c.Request)
	}
}

// The time to the first token runs from the call to the model to the first event that carries
// output: a role-only first chunk does not count.
func TestOpenAITimeToFirstToken(t *testing.T) {
	e := newLLMEnv(t)
	e.post(t, "llm", e.key, "/v1/chat/completions?delay=150ms", chatBody+`,"stream":true}`)
	c := e.call(t, 1)
	if ttft := c.GenAI.TimeToFirstToken; ttft < 150*time.Millisecond || ttft > 5*time.Second {
		t.Errorf("time to first token %v; the first token came 150ms after the first chunk", ttft)
	}
	e.post(t, "llm", e.key, "/v1/chat/completions", chatBody+"}")
	if c := e.call(t, 2); c.GenAI.TimeToFirstToken != 0 {
		t.Errorf("an answer that was not streamed has a time to first token %v", c.GenAI.TimeToFirstToken)
	}
}

// Embeddings report prompt tokens only; the Responses API reports input_tokens and
// output_tokens, in its JSON answer or in its stream's response.completed event.
func TestOpenAIEmbeddingsAndResponses(t *testing.T) {
	e := newLLMEnv(t)
	_, got := e.post(t, "llm", e.key, "/v1/embeddings", `{"model":"toy-embed","input":"Say hello"}`)
	if !bytes.Contains(got, []byte(`"embedding":[0.25,-0.5,1e-3]`)) {
		t.Fatalf("embeddings answer %s", got)
	}
	want := telemetry.GenAI{Operation: "embeddings", RequestModel: "toy-embed", ResponseModel: "toy-embed", InputTokens: llmPrompt, Usage: "reported"}
	if diff := cmp.Diff(want, e.call(t, 1).GenAI); diff != "" {
		t.Errorf("embeddings GenAI (-want +got):\n%s", diff)
	}

	_, got = e.post(t, "llm", e.key, "/v1/responses", `{"model":"`+llmModel+`","input":"Say hello","max_output_tokens":32}`)
	if !bytes.Contains(got, []byte(`"input_tokens":11`)) {
		t.Fatalf("responses answer %s", got)
	}
	c := e.call(t, 2)
	if diff := cmp.Diff(reported("chat", llmCompletion), c.GenAI); diff != "" || c.Request.MaxTokens != 32 {
		t.Errorf("responses GenAI (-want +got):\n%s; request %+v", diff, c.Request)
	}

	body := `{"model":"` + llmModel + `","input":"Say hello","stream":true}`
	_, got = e.post(t, "llm", e.key, "/v1/responses", body)
	if want := strings.Join(responsesStream(true), ""); string(got) != want {
		t.Fatalf("the client got\n%s\nwant the model's stream\n%s", got, want)
	}
	if seen := e.model.last(t); string(seen.Body) != body {
		t.Errorf("a Responses stream was rewritten: the model got %s", seen.Body)
	}
	c = e.call(t, 3)
	if diff := cmp.Diff(reported("chat", llmCompletion), c.GenAI, ignoreTTFT); diff != "" || c.GenAI.TimeToFirstToken <= 0 {
		t.Errorf("streamed responses GenAI (-want +got):\n%s; time to first token %v", diff, c.GenAI.TimeToFirstToken)
	}
	if n := len(e.sink.all()); n != 3 {
		t.Errorf("%d usage events, want 3", n)
	}
}

// Where the model gives no usage, the gateway counts nothing and says why: "missing" (no
// usage), "cut" (the stream ended early), "unparsable" (an answer that is not JSON). The sink
// hears of none of them. A body that is not JSON goes to the model unchanged, which answers it.
func TestOpenAIUsageNotReported(t *testing.T) {
	e := newLLMEnv(t)
	cases := []struct {
		name, path, body string
		want             string
		clientGets       string // "" for any
	}{
		{"no usage in JSON", "/v1/chat/completions?nousage", chatBody + "}", "missing", ""},
		{"a stream without usage though asked", "/v1/chat/completions?nousage", chatBody + `,"stream":true}`, "missing",
			strings.Join(llmStream(false, false, false), "")},
		{"embeddings without usage", "/v1/embeddings?nousage", `{"model":"e","input":"x"}`, "missing", ""},
		{"responses stream without usage", "/v1/responses?nousage", `{"model":"m","input":"x","stream":true}`, "missing", ""},
		{"a cut stream", "/v1/chat/completions?cut", chatBody + `,"stream":true}`, "cut", ""},
		{"an answer that is not JSON", "/v1/chat/completions?text", chatBody + "}", "unparsable", "Hello, world"},
		{"a request that is not JSON", "/v1/chat/completions", `{"model": "toy-1", "stream": true,`, "missing", ""},
		{"an error answer", "/v1/chat/completions?status=429&nousage", chatBody + "}", "missing", ""},
	}
	for i, tc := range cases {
		_, got := e.post(t, "llm", e.key, tc.path, tc.body)
		if tc.clientGets != "" && string(got) != tc.clientGets {
			t.Errorf("%s: the client got\n%s\nwant\n%s", tc.name, got, tc.clientGets)
		}
		c := e.call(t, i+1)
		if c.GenAI.Usage != tc.want || c.GenAI.InputTokens != 0 || c.GenAI.OutputTokens != 0 {
			t.Errorf("%s: usage %q (%d, %d), want %q and no counts", tc.name, c.GenAI.Usage, c.GenAI.InputTokens, c.GenAI.OutputTokens, tc.want)
		}
		if tc.name == "a request that is not JSON" {
			if seen := e.model.last(t); string(seen.Body) != tc.body || c.Request.Read || c.Rewrote {
				t.Errorf("the model got %s; request %+v, rewrote %v", seen.Body, c.Request, c.Rewrote)
			}
		}
	}
	if ev := e.sink.all(); len(ev) != 0 {
		t.Errorf("the sink got %v", ev)
	}
}

// A plain service is not read: its stream passes as the model sent it, even one that looks like
// OpenAI's, and its request reaches the model untouched.
func TestOpenAIPlainServiceUntouched(t *testing.T) {
	e := newLLMEnv(t)
	body := chatBody + `,"stream":true}`
	_, got := e.post(t, "plain", e.plain, "/v1/chat/completions", body)
	if want := strings.Join(llmStream(false, false, false), ""); string(got) != want {
		t.Fatalf("the client got\n%s\nwant\n%s", got, want)
	}
	body = chatBody + `,"stream":true,"stream_options":{"include_usage":true}}`
	_, got = e.post(t, "plain", e.plain, "/v1/chat/completions", body)
	if want := strings.Join(llmStream(false, true, false), ""); string(got) != want {
		t.Fatalf("the client got\n%s\nwant\n%s", got, want)
	}
	if seen := e.model.last(t); string(seen.Body) != body || seen.Header.Get("Accept-Encoding") != "gzip" {
		t.Errorf("the model got %s, Accept-Encoding %q", seen.Body, seen.Header.Get("Accept-Encoding"))
	}
	// Another path of an openai service is forwarded as a plain request.
	if _, got := e.post(t, "llm", e.key, "/v1/models", "{}"); !bytes.Contains(got, []byte(`"object":"model"`)) {
		t.Errorf("models answer %s", got)
	}
	time.Sleep(50 * time.Millisecond)
	if n := e.callCount(); n != 0 {
		t.Errorf("%d language-model calls seen; plain requests make none", n)
	}
	if ev := e.sink.all(); len(ev) != 0 {
		t.Errorf("the sink got %v", ev)
	}
}

// A body over 64 KiB is still read (and rewritten) up to 4 MiB, sent with a Content-Length or
// chunked; a larger one streams through unread.
func TestOpenAILargeRequestBody(t *testing.T) {
	e := newLLMEnv(t)
	big := strings.Repeat("word ", 40<<10) // 200 KiB
	body := `{"model":"` + llmModel + `","messages":[{"role":"user","content":"` + big + `"}],"stream":true}`
	for i, chunked := range []bool{false, true} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+e.addr+"/api/v1/service/llm/v1/chat/completions", io.MultiReader(strings.NewReader(body)))
		if !chunked {
			req.ContentLength = int64(len(body))
		}
		req.Header.Set("Authorization", "Bearer "+e.key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := strings.Join(llmStream(false, false, false), ""); string(got) != want {
			t.Fatalf("chunked %v: the client got\n%s", chunked, got)
		}
		c := e.call(t, i+1)
		if c.GenAI.Usage != "reported" || !c.Rewrote || c.Request.BodyBytes != int64(len(body)) {
			t.Errorf("chunked %v: %+v", chunked, c)
		}
	}
	huge := `{"model":"` + llmModel + `","messages":[{"role":"user","content":"` + strings.Repeat("x", 5<<20) + `"}],"stream":true}`
	_, got := e.post(t, "llm", e.key, "/v1/chat/completions", huge)
	if want := strings.Join(llmStream(false, false, false), ""); string(got) != want {
		t.Fatalf("the client got\n%s", got)
	}
	if seen := e.model.last(t); string(seen.Body) != huge {
		t.Errorf("a body over 4 MiB was changed (%d bytes reached the model)", len(seen.Body))
	}
	c := e.call(t, 3)
	if c.Request.Read || c.Rewrote || c.GenAI.RequestModel != "" || c.GenAI.Usage != "missing" || c.Request.BodyBytes != int64(len(huge)) {
		t.Errorf("a body over 4 MiB: %+v", c)
	}
}

// An HTTP/1.0 client gets the answer read whole: the stream it asked for, with its
// Content-Length, and without what the gateway asked for.
func TestOpenAIStreamToAnOldHTTPClient(t *testing.T) {
	e := newLLMEnv(t)
	body := chatBody + `,"stream":true}`
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/service/llm/v1/chat/completions HTTP/1.0\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", e.key, len(body), body)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	want := strings.Join(llmStream(false, false, false), "")
	if err != nil || string(got) != want || resp.ContentLength != int64(len(want)) {
		t.Fatalf("err %v, Content-Length %d; the client got\n%s\nwant\n%s", err, resp.ContentLength, got, want)
	}
	if c := e.call(t, 1); c.GenAI.Usage != "reported" || c.GenAI.InputTokens != llmPrompt || c.GenAI.TimeToFirstToken != 0 {
		t.Errorf("GenAI %+v", c.GenAI)
	}
}

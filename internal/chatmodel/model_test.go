package chatmodel

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The tests talk to the model over loopback HTTP, as the gateway does, and count tokens with a
// tokenizer of their own (a regular expression), so that a usage the model gets wrong cannot
// agree with itself.

// tokenRE is the model's tokenization written independently: runs of letters, decimal digits and
// marks, or any other single character that is not white space (unicode.IsSpace's set).
var tokenRE = regexp.MustCompile(`[\p{L}\p{Nd}\p{M}]+|[^\p{L}\p{Nd}\p{M}\t\n\v\f\r\x{85}\p{Z}]`)

func countTokens(s string) int { return len(tokenRE.FindAllString(s, -1)) }

const name = DefaultModelName

func serve(t *testing.T, opts Options) string {
	t.Helper()
	srv := httptest.NewServer(New(opts))
	t.Cleanup(srv.Close)
	return srv.URL
}

// post sends body and returns the status, the headers and the body of the answer.
func post(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("answer is not the JSON expected: %v\n%s", err, b)
	}
}

type chatAnswer struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usageJSON `json:"usage"`
}

func chat(t *testing.T, url, body string) chatAnswer {
	t.Helper()
	status, h, b := post(t, url+"/v1/chat/completions", body)
	if status != 200 || h.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, %s: %s", status, h.Get("Content-Type"), b)
	}
	var a chatAnswer
	mustJSON(t, b, &a)
	if len(a.Choices) != 1 {
		t.Fatalf("%d choices: %s", len(a.Choices), b)
	}
	return a
}

func chatBody(user string, extra string) string {
	u, _ := json.Marshal(user)
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%s}]%s}`, name, u, extra)
}

func TestCountMatchesIndependentTokenizer(t *testing.T) {
	for _, tc := range []struct {
		why, text string
		want      int
	}{
		{"empty", "", 0},
		{"white space only", " \t\n\u00a0\u2003", 0},
		{"words", "Alice was beginning", 3},
		{"punctuation is a token each", "Oh dear! Oh dear!", 6},
		{"a contraction is three tokens", "don't", 3},
		{"a dash is two tokens", "you--are", 4},
		{"digits are words", "four times 5 is 12", 5},
		{"letters of other scripts", "Алиса и кролик", 3},
		{"a combining mark stays in its word", "cafe\u0301 au lait", 3},
		{"symbols are tokens", "a+b=c €5", 7},
		{"an emoji is one token", "hi 🐇", 2},
		{"invalid UTF-8 is a token a byte", "a\xff\xfeb", 4},
	} {
		t.Run(tc.why, func(t *testing.T) {
			if got := Count(tc.text); got != tc.want {
				t.Errorf("Count(%q) = %d, want %d", tc.text, got, tc.want)
			}
			if got := countTokens(tc.text); got != tc.want {
				t.Errorf("the tests' tokenizer counts %d in %q, want %d", got, tc.text, tc.want)
			}
			if got := len(tokenize(tc.text)); got != tc.want {
				t.Errorf("tokenize(%q) has %d tokens, want %d", tc.text, got, tc.want)
			}
		})
	}
}

func FuzzCount(f *testing.F) {
	for _, s := range []string{"", "Alice's Adventures", "a--b", "x\u2028y\u0085z", "\xffé", "日本語のテキスト"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := Count(s), countTokens(s); got != want {
			t.Fatalf("Count(%q) = %d, the tests' tokenizer %d", s, got, want)
		}
		if got := strings.Join(tokenize(s), ""); got != strings.Join(tokenRE.FindAllString(s, -1), "") {
			t.Fatalf("tokenize(%q) = %q", s, tokenize(s))
		}
	})
}

// Every answer, whatever its length, is as many tokens as its pieces, each piece one token: what
// makes a streamed answer one token a chunk and its usage the count of its text.
func TestAnswersCountAsTheirPieces(t *testing.T) {
	c := trained()
	for i := range 400 {
		s := seedFrom("pieces", fmt.Sprint(i))
		limit := 1 + i%80
		g := c.generate(s.rand, []float64{0, 0.5, 1, 2}[i%4], nil, limit)
		if len(g.pieces) == 0 || len(g.pieces) > limit {
			t.Fatalf("answer %d: %d tokens with max_tokens %d", i, len(g.pieces), limit)
		}
		if n := countTokens(g.text()); n != len(g.pieces) {
			t.Fatalf("answer %d: %q counts %d tokens but has %d pieces %q", i, g.text(), n, len(g.pieces), g.pieces)
		}
		for _, p := range g.pieces {
			if countTokens(p) != 1 {
				t.Fatalf("answer %d: piece %q is not one token", i, p)
			}
		}
		if g.finish == "length" && len(g.pieces) != limit {
			t.Fatalf("answer %d: finish length after %d of %d tokens", i, len(g.pieces), limit)
		}
	}
}

func TestChatIsDeterministic(t *testing.T) {
	url := serve(t, Options{})
	other := serve(t, Options{}) // another model: the same chain, the same answers
	body := chatBody("What did the White Rabbit carry?", "")
	first := chat(t, url, body)
	if got := first.Choices[0].Message.Content; got == "" {
		t.Fatal("empty answer")
	}
	for _, u := range []string{url, other} {
		if again := chat(t, u, body); again.Choices[0].Message.Content != first.Choices[0].Message.Content {
			t.Errorf("the same request got %q, then %q", first.Choices[0].Message.Content, again.Choices[0].Message.Content)
		}
	}
	if first.ID == chat(t, url, body).ID {
		t.Errorf("two answers share the id %s", first.ID)
	}
	// What decides the answer changes it.
	for _, extra := range []string{`,"temperature":0.7`, `,"seed":42`, `,"top_p":0.9`} {
		if got := chat(t, url, chatBody("What did the White Rabbit carry?", extra)); got.Choices[0].Message.Content == first.Choices[0].Message.Content {
			t.Errorf("with %s the answer is the same as without", extra)
		}
	}
	if got := chat(t, url, chatBody("Where did the Mouse swim?", "")); got.Choices[0].Message.Content == first.Choices[0].Message.Content {
		t.Error("two prompts got the same answer")
	}
}

// The answer to a fixed request does not change from one build or run to the next (the corpus,
// the chain and the seed are all fixed): the first words of one.
func TestAnswerIsStable(t *testing.T) {
	url := serve(t, Options{})
	got := chat(t, url, chatBody("Tell me about the pool of tears.", `,"max_tokens":8`)).Choices[0].Message.Content
	if want := stableAnswer; got != want {
		t.Errorf("answer %q, want %q (the corpus, the chain or the seeding changed)", got, want)
	}
}

const stableAnswer = "'I wish I hadn't be"

func TestChatUsageIsExact(t *testing.T) {
	url := serve(t, Options{})
	system, user := "You are a helpful assistant.", "Tell me, who is the Dodo? And what's a Caucus-race?"
	parts := []string{"First part: the Duck.", "Second part, the Lory!"}
	for _, tc := range []struct {
		why, messages string
		wantPrompt    int
	}{
		{"one user message", fmt.Sprintf(`[{"role":"user","content":%q}]`, user), countTokens(user) + 2},
		{"system and user", fmt.Sprintf(`[{"role":"system","content":%q},{"role":"user","content":%q}]`, system, user),
			countTokens(system) + countTokens(user) + 4},
		{"content as text parts", fmt.Sprintf(`[{"role":"user","content":[{"type":"text","text":%q},{"type":"text","text":%q}]}]`, parts[0], parts[1]),
			countTokens(parts[0]) + countTokens(parts[1]) + 2},
		{"an assistant turn without content", fmt.Sprintf(`[{"role":"user","content":%q},{"role":"assistant","content":null},{"role":"user","content":"Go on."}]`, user),
			countTokens(user) + 2 + 2 + 3 + 2},
		{"an empty message still costs its overhead", `[{"role":"user","content":""}]`, 2},
	} {
		t.Run(tc.why, func(t *testing.T) {
			a := chat(t, url, fmt.Sprintf(`{"model":%q,"messages":%s}`, name, tc.messages))
			u := a.Usage
			if u == nil {
				t.Fatal("no usage")
			}
			if u.PromptTokens != tc.wantPrompt {
				t.Errorf("prompt_tokens %d, want %d", u.PromptTokens, tc.wantPrompt)
			}
			if want := countTokens(a.Choices[0].Message.Content); u.CompletionTokens != want {
				t.Errorf("completion_tokens %d, the answer %q has %d", u.CompletionTokens, a.Choices[0].Message.Content, want)
			}
			if u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("total_tokens %d is not %d + %d", u.TotalTokens, u.PromptTokens, u.CompletionTokens)
			}
			if a.Object != "chat.completion" || a.Model != name || a.Choices[0].Message.Role != "assistant" ||
				!strings.HasPrefix(a.ID, "chatcmpl-") || a.Created == 0 {
				t.Errorf("answer %+v", a)
			}
		})
	}
}

func TestMaxTokens(t *testing.T) {
	url := serve(t, Options{})
	const q = "Why did Alice cry?"
	full := chat(t, url, chatBody(q, `,"max_tokens":512`))
	if full.Choices[0].FinishReason != "stop" || full.Usage.CompletionTokens >= 512 {
		t.Fatalf("with room to spare the answer should end by itself: %+v", full)
	}
	n := full.Usage.CompletionTokens
	for _, tc := range []struct {
		why, extra string
		wantTokens int
		wantFinish string
	}{
		{"max_tokens cuts the answer", `,"max_tokens":5`, 5, "length"},
		{"max_completion_tokens cuts it too", `,"max_completion_tokens":3`, 3, "length"},
		{"max_completion_tokens wins over max_tokens", `,"max_tokens":9,"max_completion_tokens":4`, 4, "length"},
		{"a limit of exactly the answer's length is no cut", fmt.Sprintf(`,"max_tokens":%d`, n), n, "stop"},
		{"one token less is", fmt.Sprintf(`,"max_tokens":%d`, n-1), n - 1, "length"},
		{"a limit over the cap is the cap", `,"max_tokens":100000`, n, "stop"},
		{"null is no limit", `,"max_tokens":null`, min(n, DefaultMaxTokens), map[bool]string{true: "stop", false: "length"}[n <= DefaultMaxTokens]},
	} {
		t.Run(tc.why, func(t *testing.T) {
			a := chat(t, url, chatBody(q, tc.extra))
			got := a.Choices[0]
			if a.Usage.CompletionTokens != tc.wantTokens || countTokens(got.Message.Content) != tc.wantTokens || got.FinishReason != tc.wantFinish {
				t.Errorf("%d tokens (usage %d), finish %q; want %d, %q", countTokens(got.Message.Content), a.Usage.CompletionTokens, got.FinishReason, tc.wantTokens, tc.wantFinish)
			}
			if !strings.HasPrefix(full.Choices[0].Message.Content, got.Message.Content) {
				t.Errorf("%q is not a prefix of the whole answer %q", got.Message.Content, full.Choices[0].Message.Content)
			}
		})
	}
	// Without a limit, an answer that does not end by itself stops at DefaultMaxTokens.
	greedy := chat(t, url, chatBody("Hello", `,"temperature":0`))
	if greedy.Usage.CompletionTokens != DefaultMaxTokens || greedy.Choices[0].FinishReason != "length" {
		t.Errorf("greedy answer: %d tokens, finish %q", greedy.Usage.CompletionTokens, greedy.Choices[0].FinishReason)
	}
}

// event is one server-sent event.
type event struct {
	name string
	data string
}

// readSSE reads a text/event-stream answer whole.
func readSSE(t *testing.T, url, body string) []event {
	t.Helper()
	status, h, b := post(t, url, body)
	if status != 200 || h.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, %s: %s", status, h.Get("Content-Type"), b)
	}
	if !bytes.HasSuffix(b, []byte("\n\n")) {
		t.Fatalf("the stream does not end with an empty line: %q", b)
	}
	var events []event
	for _, block := range strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n") {
		var e event
		for _, line := range strings.Split(block, "\n") {
			switch k, v, _ := strings.Cut(line, ": "); k {
			case "event":
				e.name = v
			case "data":
				e.data = v
			default:
				t.Fatalf("line %q in event %q", line, block)
			}
		}
		events = append(events, e)
	}
	return events
}

func TestChatStream(t *testing.T) {
	const q = "Sing me the song of the crocodile"
	for _, tc := range []struct {
		why        string
		opts       Options
		streamOpts string
		wantUsage  bool
	}{
		{"no stream_options: no usage chunk, no usage field", Options{}, ``, false},
		{"include_usage false: the same", Options{}, `,"stream_options":{"include_usage":false}`, false},
		{"include_usage true: a usage chunk, and usage null on the others", Options{}, `,"stream_options":{"include_usage":true}`, true},
		{"a model without usage ignores include_usage", Options{OmitUsage: true}, `,"stream_options":{"include_usage":true}`, false},
	} {
		t.Run(tc.why, func(t *testing.T) {
			url := serve(t, tc.opts)
			whole := chat(t, url, chatBody(q, `,"max_tokens":40`))
			events := readSSE(t, url+"/v1/chat/completions", chatBody(q, `,"max_tokens":40,"stream":true`+tc.streamOpts))
			if last := events[len(events)-1]; last.data != "[DONE]" || last.name != "" {
				t.Fatalf("last event %+v, want data: [DONE]", last)
			}
			events = events[:len(events)-1]
			var text strings.Builder
			var finish string
			var usage *usageJSON
			id := ""
			for i, e := range events {
				var raw map[string]json.RawMessage
				mustJSON(t, []byte(e.data), &raw)
				var c struct {
					ID      string `json:"id"`
					Object  string `json:"object"`
					Created int64  `json:"created"`
					Model   string `json:"model"`
					Choices []struct {
						Index int `json:"index"`
						Delta struct {
							Role    *string `json:"role"`
							Content *string `json:"content"`
						} `json:"delta"`
						FinishReason *string `json:"finish_reason"`
					} `json:"choices"`
					Usage *usageJSON `json:"usage"`
				}
				mustJSON(t, []byte(e.data), &c)
				if id == "" {
					id = c.ID
				}
				if c.ID != id || c.Object != "chat.completion.chunk" || c.Model != name || c.Created == 0 {
					t.Errorf("chunk %d: %s", i, e.data)
				}
				u, hasUsage := raw["usage"]
				if len(c.Choices) == 0 { // the usage chunk
					if !tc.wantUsage || i != len(events)-1 || c.Usage == nil {
						t.Errorf("chunk %d without choices: %s", i, e.data)
					}
					if string(raw["choices"]) != "[]" {
						t.Errorf("the usage chunk's choices are %s, want []", raw["choices"])
					}
					usage = c.Usage
					continue
				}
				if hasUsage != tc.wantUsage || (hasUsage && string(u) != "null") {
					t.Errorf("chunk %d: usage %q present %v; want null present only when usage was asked for", i, u, hasUsage)
				}
				ch := c.Choices[0]
				if finish != "" {
					t.Errorf("chunk %d after the finish_reason: %s", i, e.data)
				}
				switch {
				case i == 0:
					if ch.Delta.Role == nil || *ch.Delta.Role != "assistant" || ch.Delta.Content == nil || *ch.Delta.Content != "" || ch.FinishReason != nil {
						t.Errorf("first chunk %s, want the role and empty content", e.data)
					}
				case ch.FinishReason != nil:
					finish = *ch.FinishReason
					if ch.Delta.Content != nil || ch.Delta.Role != nil {
						t.Errorf("the finishing chunk carries a delta: %s", e.data)
					}
				default:
					if ch.Delta.Content == nil || countTokens(*ch.Delta.Content) != 1 || ch.Delta.Role != nil {
						t.Errorf("chunk %d does not carry one token: %s", i, e.data)
					} else {
						text.WriteString(*ch.Delta.Content)
					}
				}
			}
			if text.String() != whole.Choices[0].Message.Content || finish != whole.Choices[0].FinishReason {
				t.Errorf("streamed %q (%s), not streamed %q (%s)", text.String(), finish, whole.Choices[0].Message.Content, whole.Choices[0].FinishReason)
			}
			if tc.wantUsage {
				want := usageOf(countTokens(q)+MessageOverhead, countTokens(text.String()))
				if usage == nil || *usage != want {
					t.Errorf("usage %+v, want %+v", usage, want)
				}
			} else if usage != nil {
				t.Errorf("a usage chunk nobody asked for: %+v", usage)
			}
		})
	}
}

func TestStreamPacing(t *testing.T) {
	const delay = 20 * time.Millisecond
	url := serve(t, Options{TokenDelay: delay})
	start := time.Now()
	events := readSSE(t, url+"/v1/chat/completions", chatBody("Hi", `,"max_tokens":6,"stream":true`))
	if took := time.Since(start); took < 6*delay {
		t.Errorf("6 tokens at %v each took %v", delay, took)
	}
	if len(events) != 1+6+1+1 {
		t.Errorf("%d events, want role, 6 tokens, finish, [DONE]", len(events))
	}

	// A client that goes away stops the stream: the server's handler returns at once, not after
	// the remaining tokens' delays.
	srv := httptest.NewServer(New(Options{TokenDelay: time.Second}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/chat/completions", strings.NewReader(chatBody("Hi", `,"max_tokens":100,"stream":true`)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 100)) // the role chunk
	cancel()
	resp.Body.Close()
	start = time.Now()
	srv.Close() // waits for the handler
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the stream went on %v after the client left", took)
	}
}

func TestCompletions(t *testing.T) {
	url := serve(t, Options{})
	type answer struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Text         string  `json:"text"`
			Index        int     `json:"index"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usageJSON `json:"usage"`
	}
	prompts := []string{"Once upon a time, the Queen", "Down, down, down."}
	status, _, b := post(t, url+"/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":%q,"max_tokens":30}`, name, prompts[0]))
	var one answer
	mustJSON(t, b, &one)
	if status != 200 || one.Object != "text_completion" || !strings.HasPrefix(one.ID, "cmpl-") || len(one.Choices) != 1 || one.Choices[0].Text == "" {
		t.Fatalf("status %d: %s", status, b)
	}
	if want := usageOf(countTokens(prompts[0]), countTokens(one.Choices[0].Text)); *one.Usage != want {
		t.Errorf("usage %+v, want %+v", *one.Usage, want)
	}

	pj, _ := json.Marshal(prompts)
	body := fmt.Sprintf(`{"model":%q,"prompt":%s,"max_tokens":30}`, name, pj)
	_, _, b = post(t, url+"/v1/completions", body)
	var two answer
	mustJSON(t, b, &two)
	if len(two.Choices) != 2 || two.Choices[0].Text != one.Choices[0].Text || two.Choices[1].Index != 1 {
		t.Fatalf("two prompts: %s", b)
	}
	want := usageOf(countTokens(prompts[0])+countTokens(prompts[1]),
		countTokens(two.Choices[0].Text)+countTokens(two.Choices[1].Text))
	if *two.Usage != want {
		t.Errorf("usage %+v, want %+v", *two.Usage, want)
	}

	// Streamed: one token a chunk, each choice ends with its finish_reason, the usage chunk only
	// when asked for.
	for _, include := range []bool{false, true} {
		events := readSSE(t, url+"/v1/completions", strings.TrimSuffix(body, "}")+
			fmt.Sprintf(`,"stream":true,"stream_options":{"include_usage":%v}}`, include))
		if events[len(events)-1].data != "[DONE]" {
			t.Fatalf("no [DONE]: %+v", events[len(events)-1])
		}
		texts := make([]string, 2)
		var usage *usageJSON
		for _, e := range events[:len(events)-1] {
			var raw map[string]json.RawMessage
			mustJSON(t, []byte(e.data), &raw)
			var c answer
			mustJSON(t, []byte(e.data), &c)
			if _, has := raw["usage"]; has != include {
				t.Errorf("include_usage %v, chunk %s", include, e.data)
			}
			if len(c.Choices) == 0 {
				usage = c.Usage
				continue
			}
			ch := c.Choices[0]
			if ch.FinishReason == nil && countTokens(ch.Text) != 1 {
				t.Errorf("chunk %s is not one token", e.data)
			}
			texts[ch.Index] += ch.Text
		}
		if texts[0] != two.Choices[0].Text || texts[1] != two.Choices[1].Text {
			t.Errorf("streamed %q, not streamed %q %q", texts, two.Choices[0].Text, two.Choices[1].Text)
		}
		if include && (usage == nil || *usage != want) {
			t.Errorf("usage chunk %+v, want %+v", usage, want)
		}
		if !include && usage != nil {
			t.Errorf("usage chunk %+v not asked for", usage)
		}
	}
}

func TestEmbeddings(t *testing.T) {
	url := serve(t, Options{})
	type answer struct {
		Object string `json:"object"`
		Model  string `json:"model"`
		Data   []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Usage map[string]int `json:"usage"`
	}
	inputs := []string{"The White Rabbit ran by.", "the white rabbit", "A caucus-race and a long tale"}
	ij, _ := json.Marshal(inputs)
	get := func(extra string) (answer, [][]float32) {
		t.Helper()
		status, _, b := post(t, url+"/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":%s%s}`, name, ij, extra))
		var a answer
		mustJSON(t, b, &a)
		if status != 200 || a.Object != "list" || a.Model != name || len(a.Data) != len(inputs) {
			t.Fatalf("status %d: %s", status, b)
		}
		vecs := make([][]float32, len(a.Data))
		for i, d := range a.Data {
			if d.Object != "embedding" || d.Index != i {
				t.Errorf("item %d: %+v", i, d)
			}
			var s string
			if json.Unmarshal(d.Embedding, &s) == nil { // base64 of little-endian float32s
				raw, err := base64.StdEncoding.DecodeString(s)
				if err != nil || len(raw)%4 != 0 {
					t.Fatalf("embedding %d: %q (%v)", i, s, err)
				}
				for j := 0; j < len(raw); j += 4 {
					vecs[i] = append(vecs[i], math.Float32frombits(binary.LittleEndian.Uint32(raw[j:])))
				}
			} else {
				mustJSON(t, d.Embedding, &vecs[i])
			}
		}
		return a, vecs
	}
	a, floats := get("")
	wantTokens := 0
	for _, in := range inputs {
		wantTokens += countTokens(in)
	}
	if diff := cmp.Diff(map[string]int{"prompt_tokens": wantTokens, "total_tokens": wantTokens}, a.Usage); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	dot := func(x, y []float32) float64 {
		s := 0.0
		for i := range x {
			s += float64(x[i]) * float64(y[i])
		}
		return s
	}
	for i, v := range floats {
		if len(v) != EmbeddingDimensions || math.Abs(dot(v, v)-1) > 1e-5 {
			t.Errorf("embedding %d: %d dimensions, length² %v", i, len(v), dot(v, v))
		}
	}
	if near, far := dot(floats[0], floats[1]), dot(floats[0], floats[2]); near <= far {
		t.Errorf("texts sharing words are no closer (%v) than texts that do not (%v)", near, far)
	}
	_, again := get(`,"encoding_format":"float"`)
	_, b64 := get(`,"encoding_format":"base64"`)
	if diff := cmp.Diff(floats, again); diff != "" {
		t.Errorf("the same input embeds differently (-first +second):\n%s", diff)
	}
	if diff := cmp.Diff(floats, b64); diff != "" {
		t.Errorf("base64 and float differ (-float +base64):\n%s", diff)
	}
	if _, small := get(`,"dimensions":8`); len(small[0]) != 8 {
		t.Errorf("dimensions 8 gave %d", len(small[0]))
	}
	status, _, b := post(t, url+"/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":"just one"}`, name))
	var single answer
	mustJSON(t, b, &single)
	if status != 200 || len(single.Data) != 1 || single.Usage["prompt_tokens"] != 2 {
		t.Errorf("a string input: %d %s", status, b)
	}
}

type responseAnswer struct {
	ID                string `json:"id"`
	Object            string `json:"object"`
	Status            string `json:"status"`
	Model             string `json:"model"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
	Output []struct {
		Type    string `json:"type"`
		ID      string `json:"id"`
		Role    string `json:"role"`
		Status  string `json:"status"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
	} `json:"output"`
	Usage *struct {
		InputTokens  int `json:"input_tokens"`
		OutputTokens int `json:"output_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func (a responseAnswer) text(t *testing.T) string {
	t.Helper()
	if len(a.Output) != 1 || a.Output[0].Type != "message" || a.Output[0].Role != "assistant" ||
		len(a.Output[0].Content) != 1 || a.Output[0].Content[0].Type != "output_text" {
		t.Fatalf("output %+v", a.Output)
	}
	return a.Output[0].Content[0].Text
}

func TestResponses(t *testing.T) {
	url := serve(t, Options{})
	const q, instr = "What was written on the little bottle?", "Answer briefly."
	for _, tc := range []struct {
		why, input string
		wantInput  int
	}{
		{"input as a string", fmt.Sprintf(`"input":%q`, q), countTokens(q) + MessageOverhead},
		{"input as messages with instructions", fmt.Sprintf(`"instructions":%q,"input":[{"role":"user","content":[{"type":"input_text","text":%q}]}]`, instr, q),
			countTokens(instr) + countTokens(q) + 2*MessageOverhead},
	} {
		t.Run(tc.why, func(t *testing.T) {
			body := fmt.Sprintf(`{"model":%q,%s}`, name, tc.input)
			status, _, b := post(t, url+"/v1/responses", body)
			var a responseAnswer
			mustJSON(t, b, &a)
			if status != 200 || a.Object != "response" || !strings.HasPrefix(a.ID, "resp_") || a.Model != name {
				t.Fatalf("status %d: %s", status, b)
			}
			text := a.text(t)
			if a.Usage == nil || a.Usage.InputTokens != tc.wantInput || a.Usage.OutputTokens != countTokens(text) ||
				a.Usage.TotalTokens != a.Usage.InputTokens+a.Usage.OutputTokens {
				t.Errorf("usage %+v; want input %d, output %d", a.Usage, tc.wantInput, countTokens(text))
			}
			wantStatus := map[bool]string{true: "completed", false: "incomplete"}[a.Usage.OutputTokens < DefaultMaxTokens]
			if a.Status != wantStatus {
				t.Errorf("status %q with %d tokens", a.Status, a.Usage.OutputTokens)
			}

			// Streamed: the same text in deltas, and the whole response with its usage at the end.
			events := readSSE(t, url+"/v1/responses", strings.TrimSuffix(body, "}")+`,"stream":true}`)
			var deltas strings.Builder
			var types []string
			for i, e := range events {
				var ev struct {
					Type     string         `json:"type"`
					Seq      int            `json:"sequence_number"`
					Delta    string         `json:"delta"`
					Response responseAnswer `json:"response"`
				}
				mustJSON(t, []byte(e.data), &ev)
				if ev.Type != e.name || ev.Seq != i {
					t.Errorf("event %d: %q, type %q, sequence_number %d", i, e.name, ev.Type, ev.Seq)
				}
				if ev.Type == "response.output_text.delta" {
					if countTokens(ev.Delta) != 1 {
						t.Errorf("delta %q is not one token", ev.Delta)
					}
					deltas.WriteString(ev.Delta)
					if len(types) > 0 && types[len(types)-1] == "response.output_text.delta" {
						continue
					}
				}
				types = append(types, ev.Type)
				if i == len(events)-1 {
					if got := ev.Response.text(t); got != text || ev.Response.Usage == nil || *ev.Response.Usage != *a.Usage {
						t.Errorf("final response %q %+v, want %q %+v", got, ev.Response.Usage, text, a.Usage)
					}
				}
			}
			wantTypes := []string{"response.created", "response.in_progress", "response.output_item.added",
				"response.content_part.added", "response.output_text.delta", "response.output_text.done",
				"response.content_part.done", "response.output_item.done", "response." + wantStatus}
			if diff := cmp.Diff(wantTypes, types); diff != "" {
				t.Errorf("event types (-want +got):\n%s", diff)
			}
			if deltas.String() != text {
				t.Errorf("deltas %q, text %q", deltas.String(), text)
			}
		})
	}

	status, _, b := post(t, url+"/v1/responses", fmt.Sprintf(`{"model":%q,"input":%q,"max_output_tokens":4}`, name, q))
	var cut responseAnswer
	mustJSON(t, b, &cut)
	if status != 200 || cut.Status != "incomplete" || cut.IncompleteDetails == nil || cut.IncompleteDetails.Reason != "max_output_tokens" ||
		cut.Usage.OutputTokens != 4 || cut.Output[0].Status != "incomplete" {
		t.Errorf("max_output_tokens 4: %s", b)
	}
}

func TestModels(t *testing.T) {
	url := serve(t, Options{ModelName: "alice-1"})
	resp, err := http.Get(url + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string      `json:"object"`
		Data   []modelInfo `json:"data"`
	}
	mustJSON(t, readAll(t, resp), &list)
	if resp.StatusCode != 200 || list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "alice-1" || list.Data[0].Object != "model" {
		t.Errorf("models: %d %+v", resp.StatusCode, list)
	}
	if resp, _ = http.Get(url + "/v1/models/alice-1"); resp.StatusCode != 200 {
		t.Errorf("GET /v1/models/alice-1: %d", resp.StatusCode)
	}
	readAll(t, resp)
	if a := chat(t, url, `{"model":"alice-1","messages":[{"role":"user","content":"hi"}]}`); a.Model != "alice-1" {
		t.Errorf("answered as %q", a.Model)
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestErrors(t *testing.T) {
	url := serve(t, Options{})
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		why, method, path, body string
		status                  int
		param, code             string
	}{
		{"a body that is not JSON", "POST", "/v1/chat/completions", `{"model":`, 400, "", ""},
		{"a body that is no object", "POST", "/v1/chat/completions", `[1,2]`, 400, "", ""},
		{"a field of the wrong type", "POST", "/v1/chat/completions", `{"model":"scoregate-markov","messages":"hi"}`, 400, "messages", ""},
		{"no model", "POST", "/v1/chat/completions", `{` + msgs + `}`, 400, "model", ""},
		{"another model", "POST", "/v1/chat/completions", `{"model":"gpt-4o",` + msgs + `}`, 404, "model", "model_not_found"},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"scoregate-markov"}`, 400, "messages", ""},
		{"an unknown role", "POST", "/v1/chat/completions", `{"model":"scoregate-markov","messages":[{"role":"wizard","content":"hi"}]}`, 400, "messages[0].role", ""},
		{"an image", "POST", "/v1/chat/completions", `{"model":"scoregate-markov","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "messages[0].content[0].type", ""},
		{"max_tokens 0", "POST", "/v1/chat/completions", `{"model":"scoregate-markov",` + msgs + `,"max_tokens":0}`, 400, "max_tokens", ""},
		{"n 2", "POST", "/v1/chat/completions", `{"model":"scoregate-markov",` + msgs + `,"n":2}`, 400, "n", ""},
		{"temperature 3", "POST", "/v1/chat/completions", `{"model":"scoregate-markov",` + msgs + `,"temperature":3}`, 400, "temperature", ""},
		{"stream_options without stream", "POST", "/v1/chat/completions", `{"model":"scoregate-markov",` + msgs + `,"stream_options":{"include_usage":true}}`, 400, "stream_options", ""},
		{"a completion without prompt", "POST", "/v1/completions", `{"model":"scoregate-markov"}`, 400, "prompt", ""},
		{"a completion of token ids", "POST", "/v1/completions", `{"model":"scoregate-markov","prompt":[1,2,3]}`, 400, "prompt", ""},
		{"an empty embedding input", "POST", "/v1/embeddings", `{"model":"scoregate-markov","input":"  "}`, 400, "input[0]", ""},
		{"an unknown encoding_format", "POST", "/v1/embeddings", `{"model":"scoregate-markov","input":"a","encoding_format":"int8"}`, 400, "encoding_format", ""},
		{"a response without input", "POST", "/v1/responses", `{"model":"scoregate-markov"}`, 400, "input", ""},
		{"a response that continues another", "POST", "/v1/responses", `{"model":"scoregate-markov","input":"a","previous_response_id":"resp_1"}`, 400, "previous_response_id", ""},
		{"an unknown path", "POST", "/v1/images/generations", `{}`, 404, "", ""},
		{"GET on a POST path", "GET", "/v1/chat/completions", ``, 405, "", "method_not_allowed"},
		{"POST on a GET path", "POST", "/v1/models", `{}`, 405, "", "method_not_allowed"},
		{"an unknown model's page", "GET", "/v1/models/gpt-4o", ``, 404, "model", "model_not_found"},
		{"a body over 1 MiB", "POST", "/v1/chat/completions", `{"model":"scoregate-markov","messages":[{"role":"user","content":"` + strings.Repeat("a", 1<<20) + `"}]}`, 413, "", ""},
	} {
		t.Run(tc.why, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, url+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp)
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d %s, want %d: %s", resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, b)
			}
			var e struct {
				Error map[string]*string `json:"error"`
			}
			mustJSON(t, b, &e)
			if len(e.Error) != 4 || e.Error["message"] == nil || e.Error["type"] == nil {
				t.Fatalf("error %s: want message, type, param and code", b)
			}
			if got := deref(e.Error["param"]); got != tc.param {
				t.Errorf("param %q, want %q", got, tc.param)
			}
			if got := deref(e.Error["code"]); got != tc.code {
				t.Errorf("code %q, want %q", got, tc.code)
			}
			if tc.status == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestOmitUsage(t *testing.T) {
	url := serve(t, Options{OmitUsage: true})
	for _, tc := range []struct{ path, body string }{
		{"/v1/chat/completions", chatBody("hi", "")},
		{"/v1/completions", fmt.Sprintf(`{"model":%q,"prompt":"hi"}`, name)},
		{"/v1/embeddings", fmt.Sprintf(`{"model":%q,"input":"hi"}`, name)},
		{"/v1/responses", fmt.Sprintf(`{"model":%q,"input":"hi"}`, name)},
	} {
		status, _, b := post(t, url+tc.path, tc.body)
		var raw map[string]json.RawMessage
		mustJSON(t, b, &raw)
		if u, has := raw["usage"]; status != 200 || (has && string(u) != "null") {
			t.Errorf("%s: %d, usage %s", tc.path, status, u)
		}
	}
	// Streamed Responses: the final response's usage is null too.
	events := readSSE(t, url+"/v1/responses", fmt.Sprintf(`{"model":%q,"input":"hi","stream":true}`, name))
	if last := events[len(events)-1].data; !strings.Contains(last, `"usage":null`) {
		t.Errorf("final event %s", last)
	}
}

// FuzzRequest sends any body to each endpoint: the model answers 200 or a 4xx error in OpenAI's
// shape, never panics or fails.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		chatBody("hi", ""), chatBody("hi", `,"stream":true,"stream_options":{"include_usage":true}`),
		`{"model":"scoregate-markov","prompt":["a",""],"max_tokens":3}`,
		`{"model":"scoregate-markov","input":["a b","c"],"encoding_format":"base64","dimensions":3}`,
		`{"model":"scoregate-markov","input":[{"role":"user","content":"x"}],"max_output_tokens":2}`,
		`{"model":"scoregate-markov","messages":[{"role":"user","content":[{"type":"text"}]}]}`,
		`{"model":"scoregate-markov","messages":[{"role":"user","content":{}}],"temperature":1e400}`,
		`null`, ``, `{}`,
	} {
		for i := range 4 {
			f.Add(uint8(i), s)
		}
	}
	m := New(Options{})
	paths := []string{"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"}
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		req := httptest.NewRequest("POST", paths[int(which)%len(paths)], strings.NewReader(body))
		w := httptest.NewRecorder()
		m.ServeHTTP(w, req)
		switch {
		case w.Code == 200:
			if ct := w.Header().Get("Content-Type"); ct != "application/json" && ct != "text/event-stream" {
				t.Fatalf("200 with %s", ct)
			}
		case w.Code >= 400 && w.Code < 500:
			var e struct {
				Error struct{ Message, Type string }
			}
			if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Fatalf("%d: %s", w.Code, w.Body)
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	})
}

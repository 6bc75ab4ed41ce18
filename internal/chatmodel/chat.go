package chatmodel

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// POST /v1/chat/completions and POST /v1/completions.

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	N                   *int           `json:"n"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	sampling
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// chatRoles are the roles a message may have.
var chatRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

// prompt is a request's messages as the model reads them.
type prompt struct {
	roles, texts []string
}

// tokens is the prompt's size in tokens: each message's content and MessageOverhead.
func (p prompt) tokens() int {
	n := 0
	for _, t := range p.texts {
		n += Count(t) + MessageOverhead
	}
	return n
}

// topic is the words of the last user message (of the last message, if none is the user's).
func (p prompt) topic() []string {
	last := len(p.texts) - 1
	for i := last; i >= 0; i-- {
		if p.roles[i] == "user" {
			last = i
			break
		}
	}
	if last < 0 {
		return nil
	}
	return tokenize(p.texts[last])
}

// seedParts is what of the prompt decides the answer.
func (p prompt) seedParts() []string {
	parts := make([]string, 0, 2*len(p.texts))
	for i := range p.texts {
		parts = append(parts, p.roles[i], p.texts[i])
	}
	return parts
}

// contentText reads a message's content: a string, null, or an array of parts
// {"type": one of partTypes, "text": "..."}, whose texts are joined by line breaks.
func contentText(raw json.RawMessage, param string, partTypes ...string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", badRequest(param, "%s must be a string or an array of content parts.", param)
	}
	texts := make([]string, len(parts))
	for i, p := range parts {
		ok := false
		for _, t := range partTypes {
			ok = ok || p.Type == t
		}
		if !ok {
			return "", badRequest(fmt.Sprintf("%s[%d].type", param, i),
				"This model reads only text: a content part's type must be %s, got %q.", strings.Join(partTypes, " or "), p.Type)
		}
		if p.Text == nil {
			return "", badRequest(fmt.Sprintf("%s[%d].text", param, i), "Missing required parameter: '%s[%d].text'.", param, i)
		}
		texts[i] = *p.Text
	}
	return strings.Join(texts, "\n"), nil
}

func (req *chatRequest) check() (prompt, int, error) {
	var p prompt
	if len(req.Messages) == 0 {
		return p, 0, badRequest("messages", "Missing required parameter: 'messages' (a non-empty array).")
	}
	for i, msg := range req.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		if !chatRoles[msg.Role] {
			return p, 0, badRequest(param+".role", "Invalid value for '%s.role': %q (system, developer, user, assistant or tool).", param, msg.Role)
		}
		text, err := contentText(msg.Content, param+".content", "text")
		if err != nil {
			return p, 0, err
		}
		p.roles, p.texts = append(p.roles, msg.Role), append(p.texts, text)
	}
	if req.N != nil && *req.N != 1 {
		return p, 0, badRequest("n", "This model writes one choice per request: n must be 1, got %d.", *req.N)
	}
	if err := req.validate(); err != nil {
		return p, 0, err
	}
	if err := checkStream(req.Stream, req.StreamOptions); err != nil {
		return p, 0, err
	}
	limit, err := maxTokens(namedLimit{"max_completion_tokens", req.MaxCompletionTokens}, namedLimit{"max_tokens", req.MaxTokens})
	return p, limit, err
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usageJSON   `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int              `json:"index"`
	Message      assistantMessage `json:"message"`
	Logprobs     *struct{}        `json:"logprobs"`
	FinishReason string           `json:"finish_reason"`
}

type assistantMessage struct {
	Role    string  `json:"role"`
	Content string  `json:"content"`
	Refusal *string `json:"refusal"`
}

type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   json.RawMessage   `json:"usage,omitempty"`
}

type chatChunkChoice struct {
	Index        int       `json:"index"`
	Delta        chatDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

func (m *Model) chatCompletions(w http.ResponseWriter, r *http.Request) error {
	var req chatRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := m.checkModel(req.Model); err != nil {
		return err
	}
	p, limit, err := req.check()
	if err != nil {
		return err
	}
	seed := seedFrom(append([]string{"chat", req.key()}, p.seedParts()...)...)
	g := m.chain.generate(seed.rand, req.temperature(), p.topic(), limit)
	id, created := m.newID("chatcmpl-", seed.tag), time.Now().Unix()
	usage := usageOf(p.tokens(), len(g.pieces))
	if !req.Stream {
		out := chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: m.opts.ModelName,
			Choices: []chatChoice{{Message: assistantMessage{Role: "assistant", Content: g.text()}, FinishReason: g.finish}}}
		if !m.opts.OmitUsage {
			out.Usage = &usage
		}
		writeJSON(w, out)
		return nil
	}

	// One chunk names the role, one carries each token, one says why the answer ended; then, if
	// the request asked for it, one with the usage and no choices.
	withUsage := m.includeUsage(req.StreamOptions)
	chunk := func(delta chatDelta, finish *string) chatChunk {
		c := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: m.opts.ModelName,
			Choices: []chatChunkChoice{{Delta: delta, FinishReason: finish}}}
		if withUsage {
			c.Usage = nullUsage
		}
		return c
	}
	s := m.startSSE(w, r)
	empty := ""
	if s.send("", chunk(chatDelta{Role: "assistant", Content: &empty}, nil)) != nil {
		return nil
	}
	for _, piece := range g.pieces {
		if s.pause() != nil || s.send("", chunk(chatDelta{Content: &piece}, nil)) != nil {
			return nil
		}
	}
	if s.send("", chunk(chatDelta{}, &g.finish)) != nil {
		return nil
	}
	if withUsage {
		last := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: m.opts.ModelName,
			Choices: []chatChunkChoice{}, Usage: rawUsage(usage)}
		if s.send("", last) != nil {
			return nil
		}
	}
	s.raw("", []byte("[DONE]"))
	return nil
}

type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     *int            `json:"max_tokens"`
	N             *int            `json:"n"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	sampling
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   json.RawMessage    `json:"usage,omitempty"`
}

type completionChoice struct {
	Text         string    `json:"text"`
	Index        int       `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

// completions answers the legacy API: a prompt (a string, or an array of strings that gets one
// choice each) continued as text.
func (m *Model) completions(w http.ResponseWriter, r *http.Request) error {
	var req completionRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := m.checkModel(req.Model); err != nil {
		return err
	}
	prompts, err := stringOrStrings(req.Prompt, "prompt")
	if err != nil {
		return err
	}
	if req.N != nil && *req.N != 1 {
		return badRequest("n", "This model writes one choice per prompt: n must be 1, got %d.", *req.N)
	}
	if err := req.validate(); err != nil {
		return err
	}
	if err := checkStream(req.Stream, req.StreamOptions); err != nil {
		return err
	}
	limit, err := maxTokens(namedLimit{"max_tokens", req.MaxTokens})
	if err != nil {
		return err
	}
	gens := make([]generation, len(prompts))
	promptTokens, completionTokens := 0, 0
	var tag uint64
	for i, text := range prompts {
		seed := seedFrom("completion", req.key(), text)
		if i == 0 {
			tag = seed.tag
		}
		gens[i] = m.chain.generate(seed.rand, req.temperature(), tokenize(text), limit)
		promptTokens += Count(text)
		completionTokens += len(gens[i].pieces)
	}
	id, created := m.newID("cmpl-", tag), time.Now().Unix()
	usage := rawUsage(usageOf(promptTokens, completionTokens))
	if !req.Stream {
		out := completion{ID: id, Object: "text_completion", Created: created, Model: m.opts.ModelName}
		for i, g := range gens {
			out.Choices = append(out.Choices, completionChoice{Text: g.text(), Index: i, FinishReason: &g.finish})
		}
		if !m.opts.OmitUsage {
			out.Usage = usage
		}
		writeJSON(w, out)
		return nil
	}

	// Each prompt's tokens in turn, one per chunk, then a chunk with its finish_reason; then, if
	// the request asked for it, the usage chunk.
	withUsage := m.includeUsage(req.StreamOptions)
	chunk := func(c completionChoice) completion {
		out := completion{ID: id, Object: "text_completion", Created: created, Model: m.opts.ModelName,
			Choices: []completionChoice{c}}
		if withUsage {
			out.Usage = nullUsage
		}
		return out
	}
	s := m.startSSE(w, r)
	for i, g := range gens {
		for _, piece := range g.pieces {
			if s.pause() != nil || s.send("", chunk(completionChoice{Text: piece, Index: i})) != nil {
				return nil
			}
		}
		if s.send("", chunk(completionChoice{Index: i, FinishReason: &g.finish})) != nil {
			return nil
		}
	}
	if withUsage {
		last := completion{ID: id, Object: "text_completion", Created: created, Model: m.opts.ModelName,
			Choices: []completionChoice{}, Usage: usage}
		if s.send("", last) != nil {
			return nil
		}
	}
	s.raw("", []byte("[DONE]"))
	return nil
}

// stringOrStrings reads a field that holds a string or a non-empty array of strings.
func stringOrStrings(raw json.RawMessage, param string) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest(param, "Missing required parameter: '%s'.", param)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, nil
	}
	var ss []string
	if err := json.Unmarshal(raw, &ss); err != nil {
		return nil, badRequest(param, "'%s' must be a string or an array of strings (this model reads no token ids).", param)
	}
	if len(ss) == 0 {
		return nil, badRequest(param, "'%s' must not be an empty array.", param)
	}
	return ss, nil
}

package chatmodel

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// POST /v1/responses: the Responses API, text in and out, nothing stored.

type responseRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       *string         `json:"instructions"`
	MaxOutputTokens    *int            `json:"max_output_tokens"`
	Stream             bool            `json:"stream"`
	PreviousResponseID *string         `json:"previous_response_id"`
	sampling
}

type response struct {
	ID                string             `json:"id"`
	Object            string             `json:"object"`
	CreatedAt         int64              `json:"created_at"`
	Status            string             `json:"status"`
	Error             *struct{}          `json:"error"`
	IncompleteDetails *incompleteDetails `json:"incomplete_details"`
	Instructions      *string            `json:"instructions"`
	MaxOutputTokens   *int               `json:"max_output_tokens"`
	Model             string             `json:"model"`
	Output            []outputMessage    `json:"output"`
	Usage             *responseUsage     `json:"usage"`
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

type outputMessage struct {
	Type    string       `json:"type"`
	ID      string       `json:"id"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

type outputText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

type responseUsage struct {
	InputTokens         int            `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int            `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int            `json:"total_tokens"`
}

// responseInput reads input: a string (one user message) or an array of messages
// {"role", "content"} whose content is a string or parts of type input_text or output_text.
func (req *responseRequest) prompt() (prompt, error) {
	var p prompt
	if req.Instructions != nil && *req.Instructions != "" {
		p.roles, p.texts = append(p.roles, "system"), append(p.texts, *req.Instructions)
	}
	if len(req.Input) == 0 || string(req.Input) == "null" {
		return p, badRequest("input", "Missing required parameter: 'input'.")
	}
	var s string
	if json.Unmarshal(req.Input, &s) == nil {
		p.roles, p.texts = append(p.roles, "user"), append(p.texts, s)
		return p, nil
	}
	var items []struct {
		Type    string          `json:"type"`
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(req.Input, &items); err != nil || len(items) == 0 {
		return p, badRequest("input", "'input' must be a string or a non-empty array of messages.")
	}
	for i, it := range items {
		param := fmt.Sprintf("input[%d]", i)
		if it.Type != "" && it.Type != "message" {
			return p, badRequest(param+".type", "This model reads only messages: an input item's type must be message, got %q.", it.Type)
		}
		if !chatRoles[it.Role] || it.Role == "tool" {
			return p, badRequest(param+".role", "Invalid value for '%s.role': %q (system, developer, user or assistant).", param, it.Role)
		}
		text, err := contentText(it.Content, param+".content", "input_text", "output_text")
		if err != nil {
			return p, err
		}
		p.roles, p.texts = append(p.roles, it.Role), append(p.texts, text)
	}
	return p, nil
}

func (m *Model) responses(w http.ResponseWriter, r *http.Request) error {
	var req responseRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := m.checkModel(req.Model); err != nil {
		return err
	}
	p, err := req.prompt()
	if err != nil {
		return err
	}
	if req.PreviousResponseID != nil {
		return badRequest("previous_response_id", "This model stores no responses: previous_response_id is not supported.")
	}
	if err := req.validate(); err != nil {
		return err
	}
	limit, err := maxTokens(namedLimit{"max_output_tokens", req.MaxOutputTokens})
	if err != nil {
		return err
	}
	seed := seedFrom(append([]string{"response", req.key()}, p.seedParts()...)...)
	g := m.chain.generate(seed.rand, req.temperature(), p.topic(), limit)

	id := m.newID("resp_", seed.tag)
	msgID := "msg_" + id[len("resp_"):]
	resp := response{ID: id, Object: "response", CreatedAt: time.Now().Unix(), Status: "completed",
		Instructions: req.Instructions, MaxOutputTokens: req.MaxOutputTokens, Model: m.opts.ModelName,
		Output: []outputMessage{}}
	text := outputText{Type: "output_text", Text: g.text(), Annotations: []any{}}
	msg := outputMessage{Type: "message", ID: msgID, Status: "completed", Role: "assistant", Content: []outputText{text}}
	done := resp
	done.Output = []outputMessage{msg}
	if g.finish == "length" {
		done.Status, done.IncompleteDetails = "incomplete", &incompleteDetails{Reason: "max_output_tokens"}
		done.Output[0].Status = "incomplete"
	}
	if !m.opts.OmitUsage {
		in := p.tokens()
		done.Usage = &responseUsage{InputTokens: in, InputTokensDetails: map[string]int{"cached_tokens": 0},
			OutputTokens: len(g.pieces), OutputTokensDetails: map[string]int{"reasoning_tokens": 0},
			TotalTokens: in + len(g.pieces)}
	}
	if !req.Stream {
		writeJSON(w, done)
		return nil
	}

	// The events of a streamed response, each with its sequence_number; the last,
	// response.completed (response.incomplete when max_output_tokens cut the answer), carries
	// the whole response and its usage. No [DONE].
	s := m.startSSE(w, r)
	seq := 0
	send := func(typ string, fields map[string]any) error {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		return s.send(typ, fields)
	}
	started := resp
	started.Status = "in_progress"
	inProgress := msg
	inProgress.Status, inProgress.Content = "in_progress", []outputText{}
	where := func(fields map[string]any) map[string]any {
		fields["item_id"], fields["output_index"], fields["content_index"] = msgID, 0, 0
		return fields
	}
	steps := []func() error{
		func() error { return send("response.created", map[string]any{"response": started}) },
		func() error { return send("response.in_progress", map[string]any{"response": started}) },
		func() error {
			return send("response.output_item.added", map[string]any{"output_index": 0, "item": inProgress})
		},
		func() error {
			empty := text
			empty.Text = ""
			return send("response.content_part.added", where(map[string]any{"part": empty}))
		},
	}
	for _, step := range steps {
		if step() != nil {
			return nil
		}
	}
	for _, piece := range g.pieces {
		if s.pause() != nil || send("response.output_text.delta", where(map[string]any{"delta": piece, "logprobs": []any{}})) != nil {
			return nil
		}
	}
	final := "response.completed"
	if done.Status == "incomplete" {
		final = "response.incomplete"
	}
	steps = []func() error{
		func() error {
			return send("response.output_text.done", where(map[string]any{"text": text.Text, "logprobs": []any{}}))
		},
		func() error { return send("response.content_part.done", where(map[string]any{"part": text})) },
		func() error {
			return send("response.output_item.done", map[string]any{"output_index": 0, "item": done.Output[0]})
		},
		func() error { return send(final, map[string]any{"response": done}) },
	}
	for _, step := range steps {
		if step() != nil {
			return nil
		}
	}
	return nil
}

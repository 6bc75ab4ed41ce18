// Package chatmodel is a small language model that answers like an OpenAI-compatible server
// (POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, GET /v1/models),
// streamed or not, and reports exactly the tokens it counted. It is what
// `gateway quickstart -model chat` serves and what tests of the gateway's OpenAI-compatible
// services talk to: it needs no weights, only a text it ships with (chapters of Lewis Carroll's
// "Alice's Adventures in Wonderland", public domain), from which it learns a trigram Markov chain
// when it starts.
//
// It is deterministic: the same request (messages or prompt, temperature, top_p, seed) gets the
// same text, streamed or not, and a lower max_tokens gets a prefix of it. Its tokens are words and
// single punctuation characters (see Count and MessageOverhead). It does not do tools, images,
// audio, logprobs, stop sequences (accepted and ignored), more than one choice per prompt, or
// stored responses.
package chatmodel

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// DefaultModelName is the model's name when Options.ModelName is empty.
	DefaultModelName = "scoregate-markov"
	// DefaultMaxTokens is the most tokens an answer has when the request sets no limit.
	DefaultMaxTokens = 64
	// MaxTokensCap bounds an answer whatever the request asks: a larger max_tokens is taken as
	// this.
	MaxTokensCap = 512
	// DefaultTokenDelay is a pace at which streamed tokens can be watched arriving; New does not
	// apply it (a zero TokenDelay streams without pauses), gateway quickstart does.
	DefaultTokenDelay = 10 * time.Millisecond
	// EmbeddingDimensions is the length of an embedding when the request does not choose one.
	EmbeddingDimensions = 64

	maxEmbeddingDimensions = 1024
	maxBodyBytes           = 1 << 20
)

// Options configure a Model.
type Options struct {
	// ModelName is the only name the model answers to (requests naming another get 404
	// model_not_found), and the "model" of its answers. Default DefaultModelName.
	ModelName string
	// TokenDelay is the pause before each token of a streamed answer. 0: none.
	TokenDelay time.Duration
	// OmitUsage makes the model answer like a server that reports no usage: no "usage" in its
	// answers, and stream_options.include_usage ignored (no usage chunk, no "usage": null).
	OmitUsage bool
}

// Model is the language model and its HTTP API; it is an http.Handler.
type Model struct {
	opts  Options
	chain *chain
	ids   atomic.Uint64
}

// trained is the chain, learnt once per process however many Models there are.
var trained = sync.OnceValue(func() *chain { return train(corpus) })

// New returns the model with opts; it learns its chain (a few milliseconds) on the first call.
func New(opts Options) *Model {
	if opts.ModelName == "" {
		opts.ModelName = DefaultModelName
	}
	return &Model{opts: opts, chain: trained()}
}

// Name is the model's name.
func (m *Model) Name() string { return m.opts.ModelName }

// ServeHTTP answers the OpenAI-compatible API. Errors are in OpenAI's shape,
// {"error": {"message", "type", "param", "code"}}: 400 for a body that is not JSON or lacks a
// field, 404 for an unknown path or model, 405 for a wrong method, 413 for a body over 1 MiB.
func (m *Model) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var err error
	switch path, method := r.URL.Path, r.Method; {
	case path == "/" || path == "/health":
		if err = allow(method, http.MethodGet, http.MethodHead); err == nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "Healthy\n")
		}
	case path == "/v1/models":
		if err = allow(method, http.MethodGet); err == nil {
			writeJSON(w, modelList{Object: "list", Data: []modelInfo{m.info()}})
		}
	case strings.HasPrefix(path, "/v1/models/"):
		if err = allow(method, http.MethodGet); err == nil {
			err = m.checkModel(strings.TrimPrefix(path, "/v1/models/"))
			if err == nil {
				writeJSON(w, m.info())
			}
		}
	case path == "/v1/chat/completions":
		if err = allow(method, http.MethodPost); err == nil {
			err = m.chatCompletions(w, r)
		}
	case path == "/v1/completions":
		if err = allow(method, http.MethodPost); err == nil {
			err = m.completions(w, r)
		}
	case path == "/v1/embeddings":
		if err = allow(method, http.MethodPost); err == nil {
			err = m.embeddings(w, r)
		}
	case path == "/v1/responses":
		if err = allow(method, http.MethodPost); err == nil {
			err = m.responses(w, r)
		}
	default:
		err = &apiError{status: http.StatusNotFound, typ: "invalid_request_error",
			message: fmt.Sprintf("Invalid URL (%s %s)", method, path)}
	}
	if err != nil {
		writeError(w, err)
	}
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// modelCreated is when the corpus was first published (26 November 1865), as a Unix time.
const modelCreated = -3287260800

func (m *Model) info() modelInfo {
	return modelInfo{ID: m.opts.ModelName, Object: "model", Created: modelCreated, OwnedBy: "scoregate"}
}

// apiError is an error answer.
type apiError struct {
	status        int
	message, typ  string
	param, code   string // "" is null
	allowedMethod string // for 405
}

func (e *apiError) Error() string { return e.message }

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param,
		message: fmt.Sprintf(format, args...)}
}

func allow(method string, allowed ...string) error {
	for _, a := range allowed {
		if method == a {
			return nil
		}
	}
	return &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error", code: "method_not_allowed",
		allowedMethod: strings.Join(allowed, ", "),
		message:       fmt.Sprintf("Method %s is not allowed here; use %s", method, strings.Join(allowed, " or "))}
}

func writeError(w http.ResponseWriter, err error) {
	var e *apiError
	if !errors.As(err, &e) {
		e = &apiError{status: http.StatusInternalServerError, typ: "server_error", message: err.Error()}
	}
	if e.allowedMethod != "" {
		w.Header().Set("Allow", e.allowedMethod)
	}
	nullable := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	var body struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	body.Error.Message, body.Error.Type = e.message, e.typ
	body.Error.Param, body.Error.Code = nullable(e.param), nullable(e.code)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(body)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// decode reads the request's JSON body into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return &apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error",
				message: fmt.Sprintf("The request body is larger than %d bytes.", maxBodyBytes)}
		}
		return badRequest("", "Reading the request body: %v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) && te.Field != "" {
			return badRequest(te.Field, "Invalid type for '%s': expected %s, got %s.", te.Field, te.Type, te.Value)
		}
		return badRequest("", "We could not parse the JSON body of your request: %v. The body must be a JSON object.", err)
	}
	return nil
}

func (m *Model) checkModel(name string) error {
	switch name {
	case "":
		return badRequest("model", "You must provide a model parameter.")
	case m.opts.ModelName:
		return nil
	}
	return &apiError{status: http.StatusNotFound, typ: "invalid_request_error", param: "model", code: "model_not_found",
		message: fmt.Sprintf("The model `%s` does not exist; this server has `%s`.", name, m.opts.ModelName)}
}

// sampling are the request's parameters that choose among answers.
type sampling struct {
	Temperature *float64 `json:"temperature"`
	TopP        *float64 `json:"top_p"`
	Seed        *int64   `json:"seed"`
}

func (s sampling) validate() error {
	if t := s.Temperature; t != nil && (*t < 0 || *t > 2) {
		return badRequest("temperature", "temperature must be between 0 and 2, got %g.", *t)
	}
	if p := s.TopP; p != nil && (*p <= 0 || *p > 1) {
		return badRequest("top_p", "top_p must be greater than 0 and at most 1, got %g.", *p)
	}
	return nil
}

// temperature is the request's, 1 by default.
func (s sampling) temperature() float64 {
	if s.Temperature == nil {
		return 1
	}
	return *s.Temperature
}

// key is what of s goes into the answer's seed: top_p and seed change the answer only through it.
func (s sampling) key() string {
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatFloat(*p, 'g', -1, 64)
	}
	seed := "-"
	if s.Seed != nil {
		seed = strconv.FormatInt(*s.Seed, 10)
	}
	return f(s.Temperature) + "/" + f(s.TopP) + "/" + seed
}

// seeded is the random source for an answer, from a hash of what decides it.
type seeded struct {
	rand *rand.Rand
	tag  uint64 // for ids
}

func seedFrom(parts ...string) seeded {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	a, b := binary.LittleEndian.Uint64(sum), binary.LittleEndian.Uint64(sum[8:])
	return seeded{rand: rand.New(rand.NewPCG(a, b)), tag: binary.LittleEndian.Uint64(sum[16:])}
}

// newID names one answer: unique within the process, the same prefix for the same request.
func (m *Model) newID(prefix string, tag uint64) string {
	return fmt.Sprintf("%s%016x%06x", prefix, tag, m.ids.Add(1)&0xffffff)
}

// maxTokens is the first limit the request sets (the names are tried in order), else
// DefaultMaxTokens; at most MaxTokensCap.
func maxTokens(limits ...namedLimit) (int, error) {
	for _, l := range limits {
		if l.value == nil {
			continue
		}
		if *l.value < 1 {
			return 0, badRequest(l.name, "%s must be at least 1, got %d.", l.name, *l.value)
		}
		return min(*l.value, MaxTokensCap), nil
	}
	return DefaultMaxTokens, nil
}

type namedLimit struct {
	name  string
	value *int
}

// streamOptions is the request's stream_options.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// checkStream refuses stream_options without stream, as OpenAI does.
func checkStream(stream bool, opts *streamOptions) error {
	if opts != nil && !stream {
		return badRequest("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}
	return nil
}

// includeUsage says whether a stream ends with a usage chunk (and its other chunks carry
// "usage": null).
func (m *Model) includeUsage(opts *streamOptions) bool {
	return opts != nil && opts.IncludeUsage && !m.opts.OmitUsage
}

// sse writes a text/event-stream answer.
type sse struct {
	w     http.ResponseWriter
	r     *http.Request
	delay time.Duration
}

func (m *Model) startSSE(w http.ResponseWriter, r *http.Request) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, r: r, delay: m.opts.TokenDelay}
}

// send writes one event: "event: name" (when name is not empty) and "data: " v as JSON.
func (s *sse) send(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.raw(name, b)
}

func (s *sse) raw(name string, data []byte) error {
	var buf []byte
	if name != "" {
		buf = append(append(append(buf, "event: "...), name...), '\n')
	}
	buf = append(append(append(buf, "data: "...), data...), "\n\n"...)
	if _, err := s.w.Write(buf); err != nil {
		return err
	}
	return http.NewResponseController(s.w).Flush()
}

// pause waits the token delay, or returns the request's error when the client goes away.
func (s *sse) pause() error {
	if s.delay <= 0 {
		return s.r.Context().Err()
	}
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.r.Context().Done():
		return s.r.Context().Err()
	}
}

// nullUsage is the "usage" of a chunk that carries none, in a stream that asked for usage.
var nullUsage = json.RawMessage("null")

type usageJSON struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func usageOf(prompt, completion int) usageJSON {
	return usageJSON{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

func rawUsage(u any) json.RawMessage {
	b, _ := json.Marshal(u)
	return b
}

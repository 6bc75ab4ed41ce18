package chatmodel

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"net/http"
	"strings"
)

// POST /v1/embeddings.

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
}

type embeddingList struct {
	Object string          `json:"object"`
	Data   []embeddingData `json:"data"`
	Model  string          `json:"model"`
	Usage  *embeddingUsage `json:"usage,omitempty"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string of little-endian float32s
}

type embeddingUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// embeddings answers with one vector per input: the input's tokens, lowercased, hashed into
// the vector's dimensions with a sign each, and the vector scaled to length 1. Texts that share
// words point the same way.
func (m *Model) embeddings(w http.ResponseWriter, r *http.Request) error {
	var req embeddingRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := m.checkModel(req.Model); err != nil {
		return err
	}
	inputs, err := stringOrStrings(req.Input, "input")
	if err != nil {
		return err
	}
	dims := EmbeddingDimensions
	if req.Dimensions != nil {
		dims = *req.Dimensions
		if dims < 1 || dims > maxEmbeddingDimensions {
			return badRequest("dimensions", "dimensions must be between 1 and %d, got %d.", maxEmbeddingDimensions, dims)
		}
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		return badRequest("encoding_format", "encoding_format must be float or base64, got %q.", req.EncodingFormat)
	}
	out := embeddingList{Object: "list", Model: m.opts.ModelName}
	tokens := 0
	for i, in := range inputs {
		toks := tokenize(in)
		if len(toks) == 0 {
			return badRequest(fmt.Sprintf("input[%d]", i), "Input %d holds no token: an input must not be empty.", i)
		}
		tokens += len(toks)
		vec := embed(toks, dims)
		d := embeddingData{Object: "embedding", Index: i, Embedding: vec}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 0, 4*len(vec))
			for _, f := range vec {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			}
			d.Embedding = base64.StdEncoding.EncodeToString(b)
		}
		out.Data = append(out.Data, d)
	}
	if !m.opts.OmitUsage {
		out.Usage = &embeddingUsage{PromptTokens: tokens, TotalTokens: tokens}
	}
	writeJSON(w, out)
	return nil
}

func embed(toks []string, dims int) []float32 {
	acc := make([]float64, dims)
	for _, t := range toks {
		h := fnv.New64a()
		h.Write([]byte(strings.ToLower(t)))
		x := h.Sum64()
		sign := 1.0
		if x>>63 == 1 {
			sign = -1
		}
		acc[x%uint64(dims)] += sign
	}
	norm := 0.0
	for _, v := range acc {
		norm += v * v
	}
	if norm == 0 { // the tokens cancelled out: the first one's dimension stands for them
		h := fnv.New64a()
		h.Write([]byte(strings.ToLower(toks[0])))
		acc[h.Sum64()%uint64(dims)], norm = 1, 1
	}
	norm = math.Sqrt(norm)
	vec := make([]float32, dims)
	for i, v := range acc {
		vec[i] = float32(v / norm)
	}
	return vec
}

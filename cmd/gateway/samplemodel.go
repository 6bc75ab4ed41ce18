package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// sampleModel is the model quickstart serves: a logistic regression over four features, fitted
// when it starts by gradient descent on a seeded synthetic data set of two overlapping classes.
// It answers like an Azure ML scoring container: POST /score with {"data": [[f1, f2, f3, f4], ...]}
// and GET /swagger.json.
type sampleModel struct {
	weights  [sampleFeatures]float64
	bias     float64
	accuracy float64 // on the training set
}

const (
	sampleFeatures = 4
	sampleMaxRows  = 1000
)

// sampleExample is the request body quickstart's curl line sends.
const sampleExample = `{"data": [[1.2, 0.4, -0.3, 2.0], [-1.5, -0.2, 0.8, -1.1]]}`

// trainSampleModel fits the model. The data: class 1 is drawn around (1, 0.5, -0.5, 1),
// class 0 around (-1, -0.5, 0.5, -1), each feature with standard deviation 1.2.
func trainSampleModel() *sampleModel {
	r := rand.New(rand.NewPCG(7, 42))
	const n = 1000
	centre := [2][sampleFeatures]float64{{-1, -0.5, 0.5, -1}, {1, 0.5, -0.5, 1}}
	xs := make([][sampleFeatures]float64, n)
	ys := make([]float64, n)
	for i := range xs {
		class := i % 2
		ys[i] = float64(class)
		for j := range xs[i] {
			xs[i][j] = centre[class][j] + 1.2*r.NormFloat64()
		}
	}
	m := &sampleModel{}
	const rate, epochs = 0.5, 300
	for range epochs {
		var gw [sampleFeatures]float64
		var gb float64
		for i, x := range xs {
			d := m.predict(x) - ys[i]
			for j := range gw {
				gw[j] += d * x[j]
			}
			gb += d
		}
		for j := range m.weights {
			m.weights[j] -= rate * gw[j] / n
		}
		m.bias -= rate * gb / n
	}
	correct := 0
	for i, x := range xs {
		if (m.predict(x) >= 0.5) == (ys[i] == 1) {
			correct++
		}
	}
	m.accuracy = float64(correct) / n
	return m
}

func (m *sampleModel) predict(x [sampleFeatures]float64) float64 {
	z := m.bias
	for j, w := range m.weights {
		z += w * x[j]
	}
	return 1 / (1 + math.Exp(-z))
}

// scoreResponse is the model's answer: for each row, the probability of class 1 and the label.
type scoreResponse struct {
	Probabilities []float64 `json:"probabilities"`
	Labels        []int     `json:"labels"`
}

func (m *sampleModel) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /score", m.score)
	mux.HandleFunc("GET /swagger.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(sampleSwagger))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("Healthy\n"))
	})
	return mux
}

func (m *sampleModel) score(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Data [][]float64 `json:"data"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&in); err != nil {
		modelError(w, "the body must be JSON like "+sampleExample)
		return
	}
	if len(in.Data) == 0 || len(in.Data) > sampleMaxRows {
		modelError(w, fmt.Sprintf("data must hold 1 to %d rows", sampleMaxRows))
		return
	}
	out := scoreResponse{Probabilities: make([]float64, len(in.Data)), Labels: make([]int, len(in.Data))}
	for i, row := range in.Data {
		if len(row) != sampleFeatures {
			modelError(w, fmt.Sprintf("row %d has %d features, want %d", i, len(row), sampleFeatures))
			return
		}
		p := m.predict([sampleFeatures]float64(row))
		out.Probabilities[i] = math.Round(p*1e4) / 1e4
		if p >= 0.5 {
			out.Labels[i] = 1
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func modelError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// newSampleServer serves a sample model (the scoring model's handler, or the chat model) in an
// http.Server with sane timeouts.
func newSampleServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
}

const sampleSwagger = `{
  "swagger": "2.0",
  "info": {"title": "demo", "description": "Logistic regression over four features (scoregate quickstart sample model)", "version": "1.0"},
  "schemes": ["http"],
  "consumes": ["application/json"],
  "produces": ["application/json"],
  "paths": {
    "/score": {
      "post": {
        "summary": "Score rows",
        "operationId": "RunMLService",
        "parameters": [{"name": "input", "in": "body", "required": true, "schema": {"$ref": "#/definitions/ServiceInput"}}],
        "responses": {
          "200": {"description": "Probability of class 1 and label for each row", "schema": {"$ref": "#/definitions/ServiceOutput"}},
          "400": {"description": "The input is not valid"}
        }
      }
    }
  },
  "definitions": {
    "ServiceInput": {
      "type": "object",
      "properties": {"data": {"type": "array", "items": {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "number"}}}},
      "example": {"data": [[1.2, 0.4, -0.3, 2.0]]}
    },
    "ServiceOutput": {
      "type": "object",
      "properties": {
        "probabilities": {"type": "array", "items": {"type": "number"}},
        "labels": {"type": "array", "items": {"type": "integer"}}
      }
    }
  }
}
`

// Command model is the sample scoring model of the compose example: the logistic regression over
// four features that `gateway quickstart` fits at start, with its fitted weights written in, served
// like an Azure ML scoring container (POST /score with {"data": [[f1, f2, f3, f4], ...]}, GET / for
// health). It stands for your own model container and knows nothing of the gateway.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// The weights and bias quickstart's sample model fits (cmd/gateway/samplemodel.go, seed 7, 42).
var (
	weights = [features]float64{1.3034182916252544, 0.57723838748151, -0.7920006776282237, 1.3721365176127056}
	bias    = -0.20659949667165925
)

const (
	features = 4
	maxRows  = 1000
)

func main() {
	listen := flag.String("listen", ":5001", "`address` to serve on")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, log); err != nil {
		fmt.Fprintf(os.Stderr, "model: %v\n", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then lets requests in flight finish for up to 10 seconds.
func run(ctx context.Context, addr string, log *slog.Logger) error {
	srv := &http.Server{
		Addr:              addr,
		Handler:           handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("model serving", "listen", addr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("model stopped")
	return nil
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /score", score)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("Healthy\n"))
	})
	return mux
}

// score answers, for each row, the probability of class 1 (rounded to four places) and the label.
func score(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Data [][]float64 `json:"data"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil {
		fail(w, `the body must be JSON like {"data": [[1.2, 0.4, -0.3, 2.0]]}`)
		return
	}
	if len(in.Data) == 0 || len(in.Data) > maxRows {
		fail(w, fmt.Sprintf("data must hold 1 to %d rows", maxRows))
		return
	}
	out := struct {
		Probabilities []float64 `json:"probabilities"`
		Labels        []int     `json:"labels"`
	}{make([]float64, len(in.Data)), make([]int, len(in.Data))}
	for i, row := range in.Data {
		if len(row) != features {
			fail(w, fmt.Sprintf("row %d has %d features, want %d", i, len(row), features))
			return
		}
		z := bias
		for j, x := range row {
			z += weights[j] * x
		}
		p := 1 / (1 + math.Exp(-z))
		out.Probabilities[i] = math.Round(p*1e4) / 1e4
		if p >= 0.5 {
			out.Labels[i] = 1
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func fail(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

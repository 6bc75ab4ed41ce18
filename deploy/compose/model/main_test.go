package main

import (
	"context"
	"github.com/scoregate/scoregate/internal/testing/freeport"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestScore(t *testing.T) {
	srv := httptest.NewServer(handler())
	defer srv.Close()
	tests := []struct {
		name       string
		method     string
		path, body string
		wantStatus int
		wantBody   string
	}{
		{"the README's two rows get quickstart's answer", "POST", "/score",
			`{"data": [[1.2, 0.4, -0.3, 2.0], [-1.5, -0.2, 0.8, -1.1]]}`,
			200, `{"probabilities":[0.9898,0.0119],"labels":[1,0]}` + "\n"},
		{"health check", "GET", "/", "", 200, "Healthy\n"},
		{"a row of three features", "POST", "/score", `{"data": [[1, 2, 3]]}`,
			400, `{"error":"row 0 has 3 features, want 4"}` + "\n"},
		{"no rows", "POST", "/score", `{"data": []}`, 400, `{"error":"data must hold 1 to 1000 rows"}` + "\n"},
		{"not JSON", "POST", "/score", `data`, 400, ""},
		{"no other path", "GET", "/metrics", "", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
		})
	}
}

// The container stops cleanly on SIGTERM: run returns nil once its context ends.
func TestRunStopsWhenAsked(t *testing.T) {
	addr := freeport.MustAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, addr, slog.New(slog.DiscardHandler)) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("model never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

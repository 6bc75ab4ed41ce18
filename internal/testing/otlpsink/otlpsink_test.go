package otlpsink_test

import (
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/scoregate/scoregate/internal/testing/otlpsink"
)

func TestMain(m *testing.M) {
	otlpsink.ServeIfAsked()
	goleak.VerifyTestMain(m)
}

// The receiver runs in another process and counts the bytes of every request body it read.
func TestSinkCountsWhatItReads(t *testing.T) {
	sink := otlpsink.Start(t)
	if n := sink.Received(t); n != 0 {
		t.Fatalf("a fresh receiver counts %d bytes", n)
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, body := range []string{"0123456789", strings.Repeat("x", 100_000)} {
		resp, err := c.Post(sink.URL+"/v1/traces", "application/x-protobuf", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST: %s", resp.Status)
		}
	}
	if n := sink.Received(t); n != 100_010 {
		t.Errorf("received %d bytes, want 100010", n)
	}
}

package proxy

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// A model outage fails every request; the log gets one line a second per status, and the next
// line says how many were held back.
func TestFailureLogBudget(t *testing.T) {
	var out strings.Builder
	g := &Gateway{log: slog.New(slog.NewTextHandler(&out, nil))}
	e := errBadGateway.withCause(errors.New("model unreachable"))
	for range 100 {
		g.logFailure("request failed", e)
	}
	g.logFailure("request failed", errGatewayTimeout.withCause(errors.New("slow")))
	if n := strings.Count(out.String(), "request failed"); n != 2 {
		t.Fatalf("%d lines for 100 failures with one status and one with another, want 2:\n%s", n, out.String())
	}
	g.failures.next[e.Status-500].Store(0) // a second has passed
	out.Reset()
	g.logFailure("request failed", e)
	if !strings.Contains(out.String(), "suppressed_since_last=99") {
		t.Fatalf("the line after the budget's second: %s", out.String())
	}
}

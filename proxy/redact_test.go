package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// LOG-02: fasthttp's parse errors quote request bytes; what reaches the log leaves them out.
func TestRedactQuoted(t *testing.T) {
	const canary = "sgk_CANARY"
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{`malformed mime header: missing colon: "Authorization Bearer ` + canary + `"`, `malformed mime header: missing colon: "[redacted]"`},
		{`invalid header value "a\"b ` + canary + `" and "x"`, `invalid header value "[redacted]" and "[redacted]"`},
		{`cannot find http request method in "GET /x\r\nAuthorization: Bearer ` + canary, `cannot find http request method in "[redacted]"`},
	} {
		if got := redactQuoted(tc.in); got != tc.want {
			t.Errorf("redactQuoted(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}

	var out strings.Builder
	l := fasthttpLogger{slog.New(slog.NewJSONHandler(&out, nil))}
	err := fmt.Errorf("error when reading request headers: %w", errors.New(`invalid header value "Bearer `+canary+`"`))
	l.Printf("error when serving connection %q<->%q: %v", "127.0.0.1:1", "127.0.0.1:2", err)
	if strings.Contains(out.String(), canary) || !strings.Contains(out.String(), "127.0.0.1:2") {
		t.Errorf("fasthttp's log line: %s", out.String())
	}
}

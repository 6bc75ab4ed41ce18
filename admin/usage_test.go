package admin

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scoregate/scoregate/authn"
)

// GET /v1/usage answers the stored hourly totals that its parameters select, with their totals
// (issue 22: usage you can read).
func TestUsageEndpoint(t *testing.T) {
	_, hs, env := newTestEnv(t)
	reader := createPrincipal(t, hs, "rita", "reader")
	hour := time.Now().UTC().Truncate(time.Hour)
	rows := []authn.UsageRow{
		{Hour: hour.Add(-30 * time.Hour), Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 1000, OutputTokens: 1000, Calls: 10},
		{Hour: hour.Add(-2 * time.Hour), Service: "chat", Caller: "principal:ann", Model: "m", InputTokens: 30, OutputTokens: 3, Calls: 1},
		{Hour: hour, Service: "chat", Caller: "key:k1", Model: "m", InputTokens: 10, OutputTokens: 20, Calls: 2},
		{Hour: hour, Service: "embed", Caller: "key:k2", Model: "e", InputTokens: 5, Calls: 1},
	}
	if err := env.usage.AddUsage(context.Background(), authn.UsageBatch{ID: "b", Rows: rows}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, query string
		want        []authn.UsageRow
	}{
		{"the last 24 hours by default", "", rows[1:]},
		{"one service", "service=chat", rows[1:3]},
		{"a principal's calls", "principal=ann", rows[1:2]},
		{"a key's calls", "key=k1", rows[2:3]},
		{"a caller as stored", "caller=key:k2", rows[3:]},
		{"since a duration ago", "since=2d", rows},
		{"since a time", "since=" + url.QueryEscape(hour.Add(-time.Hour).Format(time.RFC3339)), rows[2:]},
		{"until a time", "since=3d&until=" + url.QueryEscape(hour.Add(-time.Hour).Format(time.RFC3339)), rows[:2]},
		{"older than the retention: what is kept", "since=90d", rows},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := callJSON(t, hs, "GET", "/v1/usage?"+c.query, reader, "")
			if status != 200 {
				t.Fatalf("%d %s", status, body)
			}
			var got UsageAnswer
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(c.want, got.Rows); d != "" {
				t.Errorf("rows (-want +got):\n%s", d)
			}
			var want UsageTotals
			for _, r := range c.want {
				want.InputTokens += r.InputTokens
				want.OutputTokens += r.OutputTokens
				want.Calls += r.Calls
			}
			if got.Totals != want || got.Truncated {
				t.Errorf("totals %+v truncated %v, want %+v", got.Totals, got.Truncated, want)
			}
			if !strings.Contains(body, `"input_tokens": `) || !strings.Contains(body, `"hour": "`) {
				t.Errorf("field names: %s", body)
			}
		})
	}
	t.Run("since is bounded by the retention", func(t *testing.T) {
		_, body := callJSON(t, hs, "GET", "/v1/usage?since=90d", reader, "")
		var got UsageAnswer
		json.Unmarshal([]byte(body), &got)
		if earliest := time.Now().Add(-authn.UsageRetention); got.Since.Before(earliest.Add(-time.Minute)) || got.Since.After(earliest.Add(time.Minute)) {
			t.Errorf("since %s, want about %s", got.Since, earliest)
		}
	})
	t.Run("no usage is an empty list", func(t *testing.T) {
		_, body := callJSON(t, hs, "GET", "/v1/usage?service=none", reader, "")
		if !strings.Contains(body, `"rows": []`) {
			t.Errorf("%s", body)
		}
	})
}

// A query the endpoint cannot answer as asked is a 400 that says why.
func TestUsageEndpointRefusesBadQueries(t *testing.T) {
	_, hs, _ := newTestEnv(t)
	for _, c := range []struct{ query, says string }{
		{"since=yesterday", "since"},
		{"since=-2h", "since"},
		{"until=soon", "until"},
		{"since=1h&until=2h", "before until"},
		{"principal=ann&key=k1", "name the caller once"},
		{"caller=ann", "caller must be"},
		{"prinicpal=ann", "unknown parameter"},
		{"service=a&service=b", "more than once"},
	} {
		t.Run(c.query, func(t *testing.T) {
			status, body := callJSON(t, hs, "GET", "/v1/usage?"+c.query, ownerKey, "")
			if status != 400 || !strings.Contains(body, c.says) {
				t.Errorf("%d %s, want 400 saying %q", status, body, c.says)
			}
		})
	}
}

// An answer holds at most MaxUsageRows rows, and says when more matched.
func TestUsageEndpointTruncates(t *testing.T) {
	_, hs, env := newTestEnv(t)
	hour := time.Now().UTC().Truncate(time.Hour)
	var rows []authn.UsageRow
	for i := range MaxUsageRows + 5 {
		rows = append(rows, authn.UsageRow{Hour: hour, Service: "chat", Caller: "key:k" + strconv.Itoa(i), Model: "m", InputTokens: 1, Calls: 1})
	}
	if err := env.usage.AddUsage(context.Background(), authn.UsageBatch{ID: "b", Rows: rows}); err != nil {
		t.Fatal(err)
	}
	_, body := callJSON(t, hs, "GET", "/v1/usage", ownerKey, "")
	var got UsageAnswer
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Rows) != MaxUsageRows || !got.Truncated || got.Totals.Calls != MaxUsageRows {
		t.Errorf("%d rows, truncated %v, totals %+v", len(got.Rows), got.Truncated, got.Totals)
	}
}

package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scoregate/scoregate/authn"
)

// UsageReader reads the stored token usage of language-model services: usage.Keeper (which
// saves this instance's recent calls first) or a store.
type UsageReader interface {
	Usage(ctx context.Context, q authn.UsageQuery) ([]authn.UsageRow, error)
}

// UsageAnswer is the answer of GET /v1/usage: the hours from Since's hour to Until, a row per
// hour, service, caller and model, and the totals of the rows.
type UsageAnswer struct {
	Since  time.Time        `json:"since"`
	Until  time.Time        `json:"until"`
	Rows   []authn.UsageRow `json:"rows"`
	Totals UsageTotals      `json:"totals"`
	// Truncated: more rows matched than MaxUsageRows; the rows and totals are of the earliest
	// ones. Narrow the query (service, caller, since, until) for complete totals.
	Truncated bool `json:"truncated"`
}

// UsageTotals sums usage rows.
type UsageTotals struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	Calls        int64 `json:"calls"`
}

// MaxUsageRows bounds the rows of one GET /v1/usage answer.
const MaxUsageRows = 10000

// DefaultUsageSince is how far back GET /v1/usage looks without since.
const DefaultUsageSince = 24 * time.Hour

// usageParams are the query parameters GET /v1/usage takes.
var usageParams = []string{"service", "principal", "key", "caller", "since", "until"}

// parseUsageQuery turns GET /v1/usage's parameters into a store query, as of now: since and until
// (an RFC 3339 time, or a duration back from now such as 90m, 24h or 7d; since defaults to 24h,
// until to now; since no earlier than the retention), the service, and the caller named by
// principal=NAME, key=KEY_ID or caller=key:ID|principal:NAME (at most one of them). An error
// says what is wrong, for a 400.
func parseUsageQuery(v url.Values, now time.Time) (authn.UsageQuery, error) {
	var q authn.UsageQuery
	for name := range v {
		if !slices.Contains(usageParams, name) {
			return q, fmt.Errorf("unknown parameter %q; the parameters are %s", name, strings.Join(usageParams, ", "))
		}
		if len(v[name]) > 1 {
			return q, fmt.Errorf("%s is given more than once", name)
		}
	}
	q.Service = v.Get("service")
	named := 0
	for _, p := range []struct{ param, prefix string }{{"principal", "principal:"}, {"key", "key:"}, {"caller", ""}} {
		if val := v.Get(p.param); val != "" {
			named++
			q.Caller = p.prefix + val
		}
	}
	switch {
	case named > 1:
		return q, fmt.Errorf("name the caller once: principal=NAME, key=KEY_ID or caller=key:ID|principal:NAME")
	case v.Get("caller") != "" && !strings.HasPrefix(q.Caller, "key:") && !strings.HasPrefix(q.Caller, "principal:"):
		return q, fmt.Errorf("caller must be key:<key id> or principal:<name>")
	}
	var err error
	if q.Until, err = usageTime(v.Get("until"), now, now); err != nil {
		return q, fmt.Errorf("until: %w", err)
	}
	if q.Since, err = usageTime(v.Get("since"), now, now.Add(-DefaultUsageSince)); err != nil {
		return q, fmt.Errorf("since: %w", err)
	}
	if earliest := now.Add(-authn.UsageRetention); q.Since.Before(earliest) {
		q.Since = earliest // nothing older is kept
	}
	if !q.Since.Before(q.Until) {
		return q, fmt.Errorf("since must be before until")
	}
	return q, nil
}

// usageTime reads an RFC 3339 time or a duration back from now ("90m", "24h", "7d"); "" is def.
func usageTime(s string, now, def time.Time) (time.Time, error) {
	if s == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 90m, 24h or 7d", s)
	}
	return now.Add(-d), nil
}

func (s *Server) readUsage(w http.ResponseWriter, r *http.Request, _ authn.Principal) {
	now := time.Now().UTC()
	q, err := parseUsageQuery(r.URL.Query(), now)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	q.Limit = MaxUsageRows + 1
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	rows, err := s.usage.Usage(ctx, q)
	if err != nil {
		s.log.Error("reading token usage", "err", err)
		writeStoreError(w, err, "the usage could not be read")
		return
	}
	out := UsageAnswer{Since: q.Since, Until: q.Until, Rows: rows}
	if len(out.Rows) > MaxUsageRows {
		out.Rows, out.Truncated = out.Rows[:MaxUsageRows], true
	}
	if out.Rows == nil {
		out.Rows = []authn.UsageRow{}
	}
	for _, row := range out.Rows {
		out.Totals.InputTokens += row.InputTokens
		out.Totals.OutputTokens += row.OutputTokens
		out.Totals.Calls += row.Calls
	}
	writeJSON(w, http.StatusOK, out)
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scoregate/scoregate/authn"
)

// `gateway usage` reads the stored token usage through the admin API, as a reader may, and
// prints it as a table with its totals, or as JSON (issue 22: usage you can read).
func TestUsageCommand(t *testing.T) {
	dir := t.TempDir()
	_, upstream := newRecorder(t)
	cfgPath := writeConfig(t, dir, upstream.URL, "")
	h2, h1 := time.Now().UTC().Truncate(time.Hour).Add(-2*time.Hour), time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	store, err := authn.OpenBolt(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	err = store.AddUsage(context.Background(), authn.UsageBatch{ID: "seed", Rows: []authn.UsageRow{
		{Hour: h2, Service: "chat", Caller: "key:k1", Model: "markov", InputTokens: 1200, OutputTokens: 340, Calls: 12},
		{Hour: h2, Service: "chat", Caller: "principal:ann", Model: "markov", InputTokens: 30, OutputTokens: 3, Calls: 1},
		{Hour: h1, Service: "embed", Caller: "key:k2", Model: "minilm", InputTokens: 5, Calls: 1},
		{Hour: h1.Add(-48 * time.Hour), Service: "chat", Caller: "key:k1", Model: "markov", InputTokens: 9, Calls: 1},
	}})
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	const ownerKey = "owner-key-of-the-usage-command-test-0123"
	p := start(t, []string{"GATEWAY_ADMIN_KEY=" + ownerKey}, "serve", "-config", cfgPath)
	defer p.stop(t, syscall.SIGTERM)

	out, errOut, code := runCLI(t, []string{"GATEWAY_ADMIN_KEY=" + ownerKey}, "principals", "-admin", p.adminURL, "create", "rita", "reader")
	var rita struct{ Key string }
	if code != 0 || json.Unmarshal([]byte(out), &rita) != nil {
		t.Fatalf("principals create: exit %d: %s %s", code, out, errOut)
	}
	usage := func(args ...string) (string, string, int) {
		t.Helper()
		return runCLI(t, []string{"GATEWAY_ADMIN_KEY=" + rita.Key}, append([]string{"usage", "-admin", p.adminURL}, args...)...)
	}
	line := func(cells ...string) string {
		return strings.TrimRight(fmt.Sprintf("%-16s  %-7s  %-13s  %-6s  %5s  %6s  %5s", cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]), " ")
	}
	stamp := func(t time.Time) string { return t.Format("2006-01-02 15:04") }

	out, errOut, code = usage()
	if code != 0 {
		t.Fatalf("gateway usage: exit %d: %s", code, errOut)
	}
	want := strings.Join([]string{
		line("HOUR (UTC)", "SERVICE", "CALLER", "MODEL", "INPUT", "OUTPUT", "CALLS"),
		line(stamp(h2), "chat", "key:k1", "markov", "1200", "340", "12"),
		line(stamp(h2), "chat", "principal:ann", "markov", "30", "3", "1"),
		line(stamp(h1), "embed", "key:k2", "minilm", "5", "0", "1"),
		line("TOTAL", "", "", "", "1235", "343", "14"),
	}, "\n") + "\n"
	header, table, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(header, "Token usage from ") || !strings.HasSuffix(header, " UTC") || table != want {
		t.Errorf("gateway usage printed:\n%s\nwant a period, then:\n%s", out, want)
	}

	out, _, code = usage("-principal", "ann", "-since", "3d")
	if code != 0 || !strings.Contains(out, "principal:ann") || strings.Contains(out, "key:") || !strings.Contains(out, line("TOTAL", "", "", "", "30", "3", "1")) {
		t.Errorf("-principal ann: exit %d:\n%s", code, out)
	}
	out, _, code = usage("-service", "chat", "-since", "3d", "-json")
	var answer struct {
		Rows   []authn.UsageRow
		Totals struct{ Calls int64 }
	}
	if code != 0 || json.Unmarshal([]byte(out), &answer) != nil || len(answer.Rows) != 3 || answer.Totals.Calls != 14 {
		t.Errorf("-service chat -since 3d -json: exit %d:\n%s", code, out)
	}
	out, _, code = usage("-service", "none")
	if code != 0 || !strings.Contains(out, "none recorded") {
		t.Errorf("no usage: exit %d:\n%s", code, out)
	}

	if _, errOut, code = usage("-principal", "ann", "-key", "k1"); code != 2 {
		t.Errorf("-principal and -key: exit %d, want 2: %s", code, errOut)
	}
	if _, errOut, code = usage("-since", "last week"); code != 1 || !strings.Contains(errOut, "since") {
		t.Errorf("-since 'last week': exit %d, want 1 naming since: %s", code, errOut)
	}
}

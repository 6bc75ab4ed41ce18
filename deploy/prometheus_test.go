package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var prometheusDir = repoPath("deploy", "prometheus")

// metricName finds the gateway's metric names in text.
var metricName = regexp.MustCompile(`\b(?:scoregate|http_server)_[a-z_]+[a-z]\b`)

// documentedMetrics are the metric names the telemetry document (docs/telemetry.md) lists.
func documentedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	doc, err := os.ReadFile(repoPath("docs", "telemetry.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("`((?:scoregate|http_server)_[a-z_]+)`").FindAllSubmatch(doc, -1) {
		out[string(m[1])] = true
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metric names in docs/telemetry.md", len(out))
	}
	return out
}

// checkMetricNames fails for each metric name in the file that docs/telemetry.md does not list (a
// histogram's _bucket, _count and _sum series count as its name).
func checkMetricNames(t *testing.T, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	known := documentedMetrics(t)
	found := 0
	for _, name := range metricName.FindAllString(string(data), -1) {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			t.Errorf("%s names the metric %s, which docs/telemetry.md does not list", file, name)
		}
		found++
	}
	if found == 0 {
		t.Errorf("%s names no metric", file)
	}
}

// The alerts and the operations guide name only metrics the gateway has.
func TestMetricNamesExist(t *testing.T) {
	checkMetricNames(t, filepath.Join(prometheusDir, "scoregate-alerts.yaml"))
	checkMetricNames(t, repoPath("docs", "operations.md"))
}

func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		skipLoudly(t, "promtool is not installed (apt-get install prometheus), so the alert rules are not checked")
	}
	for _, args := range [][]string{
		{"check", "rules", "scoregate-alerts.yaml"},
		{"test", "rules", "scoregate-alerts.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = prometheusDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

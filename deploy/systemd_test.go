package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var systemdDir = repoPath("deploy", "systemd")

// unitFile is a systemd unit: each section's directives in order, a directive given twice kept
// twice.
type unitFile map[string][][2]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read %q", path, line)
			}
			u[section] = append(u[section], [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return u
}

// get is the last value of a directive (the one systemd uses for single-valued ones).
func (u unitFile) get(section, key string) string {
	v := ""
	for _, kv := range u[section] {
		if kv[0] == key {
			v = kv[1]
		}
	}
	return v
}

func (u unitFile) all(section, key string) []string {
	var out []string
	for _, kv := range u[section] {
		if kv[0] == key {
			out = append(out, kv[1])
		}
	}
	return out
}

// envFile reads the settings of an EnvironmentFile (commented lines are not settings).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not NAME=value", path, line)
		}
		env[k] = v
	}
	return env
}

func TestSystemdUnit(t *testing.T) {
	u := readUnit(t, filepath.Join(systemdDir, "scoregate.service"))

	// The configuration it runs, with the environment it gets: the example environment file,
	// then the unit's own Environment= lines (which systemd applies first, the file overriding;
	// none of them overlap here), with %S as /var/lib.
	env := envFile(t, filepath.Join(systemdDir, "gateway.env.example"))
	for _, e := range u.all("Service", "Environment") {
		k, v, _ := strings.Cut(e, "=")
		if _, ok := env[k]; ok {
			t.Errorf("Environment=%s is overridden by gateway.env.example", k)
		}
		env[k] = strings.ReplaceAll(v, "%S", "/var/lib")
	}
	data, err := os.ReadFile(filepath.Join(systemdDir, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := gatewayConfig(t, "deploy/systemd/gateway.yaml", data, env)

	tests := []struct {
		key, want string
	}{
		{"Type", "notify"},
		{"NotifyAccess", "main"},
		{"ExecStart", "/usr/local/bin/gateway serve -config /etc/scoregate/gateway.yaml"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"EnvironmentFile", "-/etc/scoregate/gateway.env"},
		{"StateDirectory", "scoregate"},
		{"DynamicUser", "yes"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"PrivateDevices", "yes"},
		{"PrivateMounts", "yes"},
		{"CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"},
		{"AmbientCapabilities", "CAP_NET_BIND_SERVICE"},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"RestrictNamespaces", "yes"},
		{"MemoryDenyWriteExecute", "yes"},
		{"LockPersonality", "yes"},
		{"SystemCallArchitectures", "native"},
		{"Restart", "on-failure"},
	}
	for _, tt := range tests {
		if got := u.get("Service", tt.key); got != tt.want {
			t.Errorf("%s=%q, want %q", tt.key, got, tt.want)
		}
	}
	if !slices.Contains(u.all("Service", "SystemCallFilter"), "@system-service") {
		t.Errorf("SystemCallFilter=%q lacks @system-service", u.all("Service", "SystemCallFilter"))
	}
	if u.get("Service", "ProcSubset") == "pid" {
		t.Error("ProcSubset=pid hides /proc/sys/net/core/somaxconn: Go's listeners would get a backlog of 128")
	}
	if cfg.Store.Dir != "/var/lib/"+u.get("Service", "StateDirectory") {
		t.Errorf("store.dir %s is not the StateDirectory, the one folder the service may write", cfg.Store.Dir)
	}
	// Under ProtectSystem=strict the service writes only where the unit says: the state folder
	// (the store) and the logs folder (telemetry.traces_file), both made writable by their
	// *Directory= lines, and nowhere else.
	if rw := u.all("Service", "ReadWritePaths"); len(rw) > 0 {
		t.Errorf("ReadWritePaths=%q: the store is the StateDirectory, writable without it", rw)
	}
	if got := u.get("Service", "LogsDirectory"); got != "scoregate" {
		t.Errorf("LogsDirectory=%q, want scoregate (for telemetry.traces_file)", got)
	}
	stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%q: %v", u.get("Service", "TimeoutStopSec"), err)
	}
	if stop <= drainBudget(cfg) {
		t.Errorf("TimeoutStopSec=%s is not over drain_delay %s + shutdown_timeout %s", stop, cfg.Server.DrainDelay, cfg.Server.ShutdownTimeout)
	}
}

// analyzableUnit writes a copy of the unit whose ExecStart runs a stand-in at another path
// (systemd-analyze checks that the binary exists), and returns systemd-analyze and the copy.
func analyzableUnit(t *testing.T) (systemdAnalyze, unitPath string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skipLoudly(t, "systemd-analyze is not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "gateway")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(systemdDir, "scoregate.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/usr/local/bin/gateway ")) {
		t.Fatal("ExecStart does not run /usr/local/bin/gateway")
	}
	unit = bytes.ReplaceAll(unit, []byte("ExecStart=/usr/local/bin/gateway "), []byte("ExecStart="+stub+" "))
	path := filepath.Join(dir, "scoregate.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	return sa, path
}

// systemd-analyze verify accepts the unit, without a warning.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, path := analyzableUnit(t)
	out, err := exec.Command(sa, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// maxExposure is the highest overall exposure level systemd-analyze security may give the unit
// (0 to 10; systemd calls up to 2.0 "OK"). What remains exposed is what a network service
// needs: the host's network, AF_INET and AF_UNIX sockets, CAP_NET_BIND_SERVICE for ports 80
// and 443 (PrivateUsers= would take it away), the host's root directory, /proc/sys for the
// listen backlog (ProcSubset=pid would hide it), no IP address allow list.
const maxExposure = 2.0

var exposureLine = regexp.MustCompile(`Overall exposure level for scoregate\.service: (\d+\.\d+) (\S+)`)

// systemd-analyze security rates the unit's sandbox OK.
func TestSystemdAnalyzeSecurity(t *testing.T) {
	sa, path := analyzableUnit(t)
	// --threshold is in tenths: the command fails above it.
	cmd := exec.Command(sa, "security", "--no-pager", "--offline=true", fmt.Sprintf("--threshold=%d", int(maxExposure*10)), path)
	out, err := cmd.CombinedOutput()
	m := exposureLine.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v; no overall exposure level in:\n%s", err, out)
	}
	level, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: overall exposure level %.1f %s", level, m[2])
	if err != nil || level > maxExposure {
		var exposed []string
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "✗") {
				exposed = append(exposed, strings.Join(strings.Fields(line), " "))
			}
		}
		t.Errorf("exposure level %.1f %s (%v), want at most %.1f; exposed:\n%s", level, m[2], err, maxExposure, strings.Join(exposed, "\n"))
	}
}

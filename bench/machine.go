package main

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine describes where the run happened and with which versions, so that figures are read
// with their context (a shared two-core machine is noisy).
type machine struct {
	CPU          string `json:"cpu"`
	Cores        int    `json:"cores"`
	Kernel       string `json:"kernel"`
	MemoryKB     int64  `json:"memoryKb"`
	Go           string `json:"go"`
	Gateway      string `json:"gateway"`
	HAProxy      string `json:"haproxy"`
	Nginx        string `json:"nginx"`
	Wrk          string `json:"wrk"`
	Redis        string `json:"redis"`
	LoadAvgStart string `json:"loadAvgStart"`
	LoadAvgEnd   string `json:"loadAvgEnd"`
}

// describeMachine reads the CPU, kernel, memory and the versions of every program in the run.
func describeMachine(wrk string) machine {
	m := machine{Cores: runtime.NumCPU(), Go: runtime.Version(), LoadAvgStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if name, val, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPU = strings.TrimSpace(val)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.MemoryKB, _ = readMeminfo()
	if bin, ok := lookBinary("haproxy"); ok {
		m.HAProxy = commandVersion(bin, "-v")
	}
	if bin, ok := lookBinary("nginx"); ok {
		m.Nginx = commandVersion(bin, "-v")
	}
	if wrk != "" {
		m.Wrk = commandVersion(wrk, "-v")
	}
	if bin, ok := lookBinary("redis-server"); ok {
		m.Redis = commandVersion(bin, "--version")
	}
	return m
}

func readMeminfo() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		}
	}
	return 0, nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// sinkStats asks the telemetry sink what it received.
func (h *harness) sinkStats() sinkStats {
	var s sinkStats
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + h.sinkAddr + "/stats")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&s)
	return s
}

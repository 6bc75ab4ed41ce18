package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// wrkRequestFromFiles is the start of the harness's wrk scripts: a POST whose body is read from
// a file (the first %q) with a Content-Type (the second).
const wrkRequestFromFiles = `
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*all")
  f:close()
  return s
end
wrk.method = "POST"
wrk.body = slurp(%q)
wrk.headers["Content-Type"] = %q
`

// wrkScript sets wrk's request from files (the body may be megabytes, the credentials a
// thousand tokens), sends the credentials in turn (each wrk thread its own share, so that no two
// threads send the same token at once) and prints the summary as one line the harness parses.
const wrkScript = wrkRequestFromFiles + `
local creds = {}
for line in io.lines(%q) do
  if line ~= "" then creds[#creds + 1] = line end
end
local threads = %d
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

if #creds == 1 then
  wrk.headers["Authorization"] = creds[1]
elseif #creds > 1 then
  local i
  function request()
    if i == nil then i = tid end
    wrk.headers["Authorization"] = creds[(i %% #creds) + 1]
    i = i + threads
    return wrk.format()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-RESULT %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f %%.0f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
`

// runWrk runs wrk for d (rounded up to whole seconds, wrk's unit) with conns connections.
func runWrk(ctx context.Context, bin, dir string, t target, conns int, d time.Duration) (loadResult, error) {
	threads := min(conns, runtime.NumCPU())
	script, err := writeWrkScript(dir, t, threads)
	if err != nil {
		return loadResult{}, err
	}
	secs := int((d + time.Second - 1) / time.Second)
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "10s", "-s", script, t.url)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return loadResult{}, fmt.Errorf("wrk: %w: %s", err, clip(errOut.Bytes()))
	}
	r, err := parseWrk(out.String())
	r.genCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, err
}

// writeWrkScript writes the body, the credentials and the script for t, named after their content
// so that repeated measurements reuse them.
func writeWrkScript(dir string, t target, threads int) (string, error) {
	dir = filepath.Join(dir, "wrk")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	h := fnv.New64a()
	h.Write(t.body)
	h.Write([]byte(strings.Join(t.creds, "\n")))
	h.Write([]byte(t.contentType))
	name := fmt.Sprintf("%x-%d", h.Sum64(), threads)
	body, creds, script := filepath.Join(dir, name+".body"), filepath.Join(dir, name+".creds"), filepath.Join(dir, name+".lua")
	if _, err := os.Stat(script); err == nil {
		return script, nil
	}
	err := errors.Join(
		os.WriteFile(body, t.body, 0o600),
		os.WriteFile(creds, []byte(strings.Join(t.creds, "\n")+"\n"), 0o600),
		os.WriteFile(script, fmt.Appendf(nil, wrkScript, body, t.contentType, creds, threads), 0o600),
	)
	return script, err
}

// parseWrk reads the line the script's done() printed.
func parseWrk(out string) (loadResult, error) {
	var r loadResult
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "BENCH-RESULT ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 11 {
			break
		}
		var v [11]int64
		for i, s := range f {
			n, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return r, fmt.Errorf("wrk result %q: %w", rest, err)
			}
			v[i] = int64(n)
		}
		r.requests, r.elapsed = v[0], time.Duration(v[1])*time.Microsecond
		r.errors = v[2] + v[3] + v[4] + v[5] + v[6]
		if r.errors > 0 {
			r.firstErr = fmt.Sprintf("wrk: connect %d, read %d, write %d, non-2xx/3xx status %d, timeout %d", v[2], v[3], v[4], v[5], v[6])
		}
		for i := range 4 {
			r.lat[i] = time.Duration(v[7+i]) * time.Microsecond
		}
		return r, nil
	}
	return r, fmt.Errorf("wrk printed no result: %s", clip([]byte(out)))
}

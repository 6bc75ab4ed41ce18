package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/scoregate/scoregate/internal/testing/freeport"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is a child the harness started: a peer, the model, Redis, the sink. It is stopped by
// its own pid (SIGTERM, then SIGKILL), never by name, and dies with the harness (Pdeathsig).
type process struct {
	name string
	cmd  *exec.Cmd
	log  string // file holding its stdout and stderr
	done chan struct{}
	err  error // why it exited, once done is closed
}

// startProcess runs bin with args and env (added to a cleaned copy of the harness's own), its
// output going to a log file in dir.
func startProcess(dir, name string, env []string, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnv(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// childEnv is the harness's environment without the variables that would change what a child
// does behind the harness's back (telemetry, gateway overrides, Go's scheduler, the helper role).
func childEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OTEL_") || strings.HasPrefix(name, "GATEWAY_") || strings.HasPrefix(name, "SCOREGATE_BENCH_") ||
			name == "GOMAXPROCS" || name == "GOGC" || name == "GOMEMLIMIT" || name == "GODEBUG" {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGTERM, and SIGKILL if it has not exited within five seconds.
func (p *process) stop() {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, for an error message.
func (p *process) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// waitListening waits until addr accepts a TCP connection, the process exits, or timeout passes.
func waitListening(ctx context.Context, p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before listening on %s (%v): %s", p.name, addr, p.err, p.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s after %s: %s", p.name, addr, timeout, p.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startOnFreePorts finds n free loopback addresses, has start launch a child on them and waits
// until it listens on all of them. Another program may take a port between the moment it was
// found free and the moment the child binds it, so a child that exits before listening is tried
// again, on fresh ports, up to three times.
func startOnFreePorts(ctx context.Context, n int, timeout time.Duration, start func(addrs []string) (*process, error)) (*process, []string, error) {
	var err error
	for range 3 {
		addrs := make([]string, n)
		for i := range addrs {
			if addrs[i], err = freeAddr(); err != nil {
				return nil, nil, err
			}
		}
		p, err := start(addrs)
		if err != nil {
			return nil, nil, err
		}
		if err = waitAll(ctx, p, addrs, timeout); err == nil {
			return p, addrs, nil
		}
		exited := p.exited()
		p.stop()
		if !exited || ctx.Err() != nil {
			return nil, nil, err
		}
	}
	return nil, nil, err
}

// waitAll waits until p listens on every address.
func waitAll(ctx context.Context, p *process, addrs []string, timeout time.Duration) error {
	for _, a := range addrs {
		if err := waitListening(ctx, p, a, timeout); err != nil {
			return err
		}
	}
	return nil
}

// freeAddr returns a loopback address with a free port below the kernel's ephemeral range
// (see package freeport).
func freeAddr() (string, error) { return freeport.Addr() }

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, 100 on Linux.
const clockTick = 10 * time.Millisecond

// usage is what /proc says of a process and its descendants at one moment.
type usage struct {
	cpu   time.Duration // user plus system time, since each started
	rssKB int64         // resident set now
	hwmKB int64         // resident set high-water mark (summed over the processes)
}

// readUsage sums CPU time and memory over pid and its descendants (nginx's workers are children
// of its master).
func readUsage(pid int) (usage, error) {
	var u usage
	pids := append([]int{pid}, descendants(pid)...)
	for i, p := range pids {
		cpu, err := readCPU(p)
		if err != nil {
			if i == 0 {
				return u, err
			}
			continue // a child that just exited
		}
		u.cpu += cpu
		rss, hwm := readMemory(p)
		u.rssKB += rss
		u.hwmKB += hwm
	}
	return u, nil
}

// readCPU reads utime+stime of one process from /proc/<pid>/stat.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f, err := statFields(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// statFields returns the fields of a /proc/<pid>/stat line after the command name, which may
// itself hold spaces and parentheses.
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("no command field")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, errors.New("too few fields")
	}
	return f, nil
}

// readMemory reads VmRSS and VmHWM (kB) from /proc/<pid>/status; zero when unreadable.
func readMemory(pid int) (rssKB, hwmKB int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(b)) {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			rssKB = n
		case "VmHWM":
			hwmKB = n
		}
	}
	return rssKB, hwmKB
}

// descendants lists the processes below pid, found through the parent field of every
// /proc/<pid>/stat.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f, err := statFields(b)
		if err != nil {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

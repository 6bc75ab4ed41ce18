package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// notifyListener stands in for systemd: a real unixgram socket at name (a path, or @abstract),
// with NOTIFY_SOCKET pointing at it for the rest of the test.
func notifyListener(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return ln
}

// receive reads one datagram, or fails the test after a second.
func receive(t *testing.T, ln *net.UnixConn) string {
	t.Helper()
	ln.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 4096)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatalf("no notification arrived: %v", err)
	}
	return string(buf[:n])
}

func TestNotifySendsEachStateAsOneDatagram(t *testing.T) {
	tests := []struct {
		name   string
		notify func() error
		want   string
	}{
		{"ready once both listeners serve", notifyReady, "READY=1\nSTATUS=serving"},
		{"stopping at SIGTERM", notifyStopping, "STOPPING=1"},
		{"ready again after a reload", notifyReloaded, "READY=1"},
		{"any state verbatim", func() error { return sdNotify("STATUS=waiting for the Redis store") }, "STATUS=waiting for the Redis store"},
	}
	ln := notifyListener(t, filepath.Join(t.TempDir(), "notify.sock"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.notify(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, receive(t, ln)); diff != "" {
				t.Errorf("datagram (-want +got):\n%s", diff)
			}
		})
	}
}

// systemd (and Type=notify-reload in particular) needs RELOADING=1 with the CLOCK_MONOTONIC time
// of the reload, in microseconds, to tell it from an earlier one.
func TestNotifyReloadingCarriesTheMonotonicTime(t *testing.T) {
	ln := notifyListener(t, filepath.Join(t.TempDir(), "notify.sock"))
	before, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	if err := notifyReloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonicUsec()
	got := receive(t, ln)
	first, rest, _ := strings.Cut(got, "\n")
	value, ok := strings.CutPrefix(rest, "MONOTONIC_USEC=")
	if first != "RELOADING=1" || !ok {
		t.Fatalf("datagram %q, want RELOADING=1 then MONOTONIC_USEC=…", got)
	}
	usec, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC=%q is not an integer", value)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, not between %d and %d", usec, before, after)
	}
	// CLOCK_MONOTONIC never runs ahead of CLOCK_BOOTTIME, which /proc/uptime shows: this tells it
	// from the wall clock or a clock that starts with the process.
	if runtime.GOOS == "linux" {
		b, err := os.ReadFile("/proc/uptime")
		if err != nil {
			t.Fatal(err)
		}
		var uptime float64
		fmt.Sscan(string(b), &uptime)
		if float64(usec) > (uptime+1)*1e6 {
			t.Errorf("MONOTONIC_USEC=%d is past the uptime (%.0f s): not CLOCK_MONOTONIC", usec, uptime)
		}
		if float64(usec) < (uptime-60)*1e6 && uptime > 120 {
			t.Logf("MONOTONIC_USEC=%d is well under the uptime (%.0f s): the machine has slept", usec, uptime)
		}
	}
}

// systemd may hand a socket in the abstract namespace, named with a leading '@'.
func TestNotifyReachesAnAbstractSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract unix sockets are Linux only")
	}
	ln := notifyListener(t, fmt.Sprintf("@scoregate-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := notifyReady(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, ln); got != "READY=1\nSTATUS=serving" {
		t.Errorf("datagram %q", got)
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	tests := []struct {
		name    string
		socket  string
		wantErr error // nil: no error; errAny: some error
	}{
		{"unset: not run by systemd, nothing to do", "", nil},
		{"relative name: refused, never resolved against the working folder", "notify.sock", errNotifySocket},
		{"vsock address (systemd 254 in a VM): refused", "vsock:2:1234", errNotifySocket},
		{"socket gone: the error says so", filepath.Join(t.TempDir(), "missing.sock"), errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.socket)
			err := notifyReady()
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.wantErr == errAny && err == nil:
				t.Error("got no error")
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

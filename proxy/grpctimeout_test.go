package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A grpc-timeout is at most 8 digits and a unit, rounded up so that the model never gets less
// time than the gateway gives the call.
func TestFormatGRPCTimeout(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Nanosecond:                 "1m",
		30 * time.Second:                "30000m",
		99999999 * time.Millisecond:     "99999999m",
		99999999*time.Millisecond + 1:   "100000S",
		100000000 * time.Second:         "1666667M",
		100_000_000 * time.Minute:       "1666667H",
		time.Duration(1<<63 - 1):        "2562048H",
		-time.Second + time.Millisecond: "0m",
		0:                               "0m",
	} {
		if got := formatGRPCTimeout(d); got != want {
			t.Errorf("formatGRPCTimeout(%v) = %q, want %q", d, got, want)
		}
	}
}

// An error that comes once the call's deadline has passed counts as the deadline; one before it,
// or with no deadline, is left as it is.
func TestPastDeadline(t *testing.T) {
	reset := errors.New("stream error: stream ID 1; CANCEL")
	past, future := time.Now().Add(-time.Millisecond), time.Now().Add(time.Hour)
	if err := pastDeadline(reset, past); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, reset) {
		t.Errorf("after the deadline: %v, want the deadline wrapping the reset", err)
	}
	for _, deadline := range []time.Time{future, {}} {
		if err := pastDeadline(reset, deadline); err != reset {
			t.Errorf("deadline %v: %v, want the reset as it is", deadline, err)
		}
	}
	if err := pastDeadline(nil, past); err != nil {
		t.Errorf("no error: %v", err)
	}
}

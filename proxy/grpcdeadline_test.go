package proxy

import (
	"context"
	"errors"
	"testing"
	"time"
)

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

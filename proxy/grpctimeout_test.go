package proxy

import (
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

package proxy

import (
	"net"
	"testing"
	"time"
)

// TestUsableJudgesAtTheCallStart checks which instant a pooled connection's idle time is measured
// to: the call's start when the connection was already in the pool then, else a new reading.
func TestUsableJudgesAtTheCallStart(t *testing.T) {
	c, peer := net.Pipe() // not a modelConn: the look finds connUnknown, so only idleness decides
	defer c.Close()
	defer peer.Close()
	tr := modelTransport{poolIdle: time.Minute}
	now := time.Now()
	for _, tc := range []struct {
		name         string
		lastUse, now time.Time
		want         bool
	}{
		{"just dialled", time.Time{}, now, true},
		{"idle a second, at the start", now.Add(-time.Second), now, true},
		{"idle a second, no start given", now.Add(-time.Second), time.Time{}, true},
		{"idle an hour, at the start", now.Add(-time.Hour), now, false},
		{"idle an hour, no start given", now.Add(-time.Hour), time.Time{}, false},
		// a start read an hour ago, and a connection given back after it: it has been idle for
		// most of an hour by now, which only a new reading shows
		{"given back after a stale start", now.Add(-time.Hour + time.Second), now.Add(-time.Hour), false},
	} {
		if got := tr.usable(c, tc.lastUse, tc.now); got != tc.want {
			t.Errorf("%s: usable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

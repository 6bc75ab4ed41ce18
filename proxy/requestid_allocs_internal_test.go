//go:build !race

package proxy

import "testing"

// TestRequestIDAllocs checks that making a request id allocates nothing (its batch of random
// bytes is pooled). Built without the race detector, under which sync.Pool drops items.
func TestRequestIDAllocs(t *testing.T) {
	var buf [requestIDMaxLen]byte
	newRequestID(buf[:0])
	if n := testing.AllocsPerRun(1000, func() { newRequestID(buf[:0]) }); n != 0 {
		t.Errorf("newRequestID allocates %v times", n)
	}
}

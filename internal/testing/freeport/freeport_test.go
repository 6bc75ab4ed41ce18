package freeport

import (
	"net"
	"testing"
)

// Ports handed out are below the ephemeral range, never twice, and can be listened on.
func TestPickBelowEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	hi := ephemeralLow()
	for range 50 {
		p := Port(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if hi-lowest >= 1000 && (p < lowest || p >= hi) {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, hi)
		}
	}
	ln, err := net.Listen("tcp", MustAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

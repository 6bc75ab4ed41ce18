package freeport

import (
	"net"
	"strconv"
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

// PickPair hands out a port and the port offset above it, both free and below the ephemeral
// range, and neither again.
func TestPickPair(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p, err := PickPair(10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []int{p, p + 10000} {
			if seen[q] || q < lowest || q >= ephemeralLow() {
				t.Fatalf("port %d: seen before %v, or outside [%d, %d)", q, seen[q], lowest, ephemeralLow())
			}
			seen[q] = true
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(q)))
			if err != nil {
				t.Fatalf("port %d is not free: %v", q, err)
			}
			l.Close()
		}
	}
}

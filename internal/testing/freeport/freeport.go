// Package freeport hands tests and the bench loopback ports to listen on later.
//
// A port picked by listening on 127.0.0.1:0 and closing lies in the kernel's
// ephemeral range, so an outgoing connection made by any process (a test's
// Redis client, a health check) can take it as its local port before the
// caller's server binds it: "address already in use". Ports from here lie
// below that range, where the kernel never picks a local port on its own; they
// are checked free when handed out, and never handed out twice by one process.
// Another process picking the same port between the check and the caller's
// bind is still possible, but it needs the same random pick in that window.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const lowest = 10000 // below are ports that well-known services on the machine may use

var given struct {
	sync.Mutex
	ports map[int]bool
}

// Pick returns a loopback port that is free for both TCP and UDP now.
func Pick() (int, error) {
	hi := ephemeralLow()
	given.Lock()
	defer given.Unlock()
	if given.ports == nil {
		given.ports = map[int]bool{}
	}
	if hi-lowest < 1000 {
		// No room below the ephemeral range: fall back to a port from it.
		for range 100 {
			p, err := listenAny()
			if err != nil {
				return 0, err
			}
			if !given.ports[p] {
				given.ports[p] = true
				return p, nil
			}
		}
		return 0, fmt.Errorf("freeport: no free port found")
	}
	for range 1000 {
		p := lowest + rand.IntN(hi-lowest)
		if given.ports[p] || !free(p) {
			continue
		}
		given.ports[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no free port found in [%d, %d)", lowest, hi)
}

// PickPair returns a loopback port p such that p+offset is free too (a Redis Cluster node listens
// on its port and on its port + 10000, the cluster bus), both below the ephemeral range and both
// handed out.
func PickPair(offset int) (int, error) {
	hi := ephemeralLow() - offset
	given.Lock()
	defer given.Unlock()
	if given.ports == nil {
		given.ports = map[int]bool{}
	}
	if hi-lowest < 1000 {
		return 0, fmt.Errorf("freeport: no room for two ports %d apart below the ephemeral range", offset)
	}
	for range 1000 {
		p := lowest + rand.IntN(hi-lowest)
		if given.ports[p] || given.ports[p+offset] || !free(p) || !free(p+offset) {
			continue
		}
		given.ports[p], given.ports[p+offset] = true, true
		return p, nil
	}
	return 0, fmt.Errorf("freeport: no free pair of ports %d apart found in [%d, %d)", offset, lowest, hi)
}

// Addr returns "127.0.0.1:port" for a port from Pick.
func Addr() (string, error) {
	p, err := Pick()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// TB is the part of testing.TB that Port and MustAddr use.
type TB interface {
	Helper()
	Fatal(args ...any)
}

// Port is Pick for tests: a failure ends the test.
func Port(t TB) int {
	t.Helper()
	p, err := Pick()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// MustAddr is Addr for tests: a failure ends the test.
func MustAddr(t TB) string {
	t.Helper()
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func free(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func listenAny() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("freeport: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the lowest port the kernel picks for outgoing connections
// (Linux's default is 32768).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

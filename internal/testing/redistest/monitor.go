//go:build unix

package redistest

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Monitor records every command a Redis server runs, as MONITOR prints them, over a connection
// of its own: for tests that check what a client sends (that no secret reaches Redis, say).
type Monitor struct {
	conn net.Conn
	mu   sync.Mutex
	buf  strings.Builder
	done chan struct{}
}

// StartMonitor starts recording the commands of the server at addr; the test's cleanup stops it.
func StartMonitor(tb testing.TB, addr string) *Monitor {
	tb.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	m := &Monitor{conn: conn, done: make(chan struct{})}
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		tb.Fatal(err)
	}
	r := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		tb.Fatalf("MONITOR: %q %v", line, err)
	}
	conn.SetReadDeadline(time.Time{})
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			m.mu.Lock()
			m.buf.WriteString(line)
			m.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	tb.Cleanup(func() { m.Stop() })
	return m
}

// Stop ends the recording and returns every command seen, one a line. It waits a moment first,
// for the lines of the last commands to arrive. Stopping twice returns the same.
func (m *Monitor) Stop() string {
	time.Sleep(100 * time.Millisecond)
	m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.buf.String()
}

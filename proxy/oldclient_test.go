package proxy_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// An HTTP/1.0 client cannot read a chunked answer: when the model answers in chunks, the client
// gets the body read whole, with its Content-Length and no Transfer-Encoding; the model's trailer
// fields are dropped, not turned into header fields.
func TestOldClientGetsAChunkedAnswerUnchunked(t *testing.T) {
	model := rawModel(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil || line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"7\r\n{\"a\": 1\r\n1\r\n}\r\n0\r\nX-Checksum: abc\r\n\r\n")
		time.Sleep(100 * time.Millisecond)
	})
	e := newFaultEnv(t, nil, model)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	io.WriteString(c, "GET /api/v1/service/model/score HTTP/1.0\r\nHost: gw.test\r\n\r\n")
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %q)", err, got)
	}
	head, body, ok := strings.Cut(string(got), "\r\n\r\n")
	if !ok {
		t.Fatalf("no complete answer: %q", got)
	}
	if !strings.HasPrefix(head, "HTTP/1.") || !strings.Contains(head, " 200 ") {
		t.Fatalf("answer head %q, want 200; log %q", head, e.log.warnings())
	}
	if !strings.Contains(head, "\r\nContent-Length: 8\r\n") || strings.Contains(head, "X-Checksum") {
		t.Errorf("answer head %q, want Content-Length: 8 and no trailer field", head)
	}
	if strings.Contains(strings.ToLower(head), "transfer-encoding") {
		t.Errorf("an HTTP/1.0 client got Transfer-Encoding: %q", head)
	}
	if body != `{"a": 1}` {
		t.Errorf("body %q, want the model's body unchunked", body)
	}
}

// A model that answers its health checks chunked (with a trailer section) is healthy: the check
// reads the answer whole, trailer section included, and does not take it for bytes past its end.
func TestChunkedHealthAnswerIsHealthy(t *testing.T) {
	model := rawModel(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: abc\r\n\r\n")
		}
	})
	e := newFaultEnvWith(t, nil, model, func(s *config.Service) {
		s.HealthCheck = config.HealthCheck{Path: "/healthz", Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond,
			UnhealthyThreshold: 2, HealthyThreshold: 1}
	})
	deadline := time.Now().Add(700 * time.Millisecond) // about 7 checks; 2 failures in a row would show
	for time.Now().Before(deadline) {
		for _, r := range e.gw.Replicas() {
			if r.Service == "model" && r.State != "healthy" {
				t.Fatalf("the replica is %s, want healthy", r.State)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

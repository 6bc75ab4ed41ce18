//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// A request's only write returns when the answer has begun to arrive, and what the model sent is
// then read at once.
func TestWriteAwaitReturnsWhenTheAnswerArrives(t *testing.T) {
	c, model := modelConnPair(t)
	req := []byte("POST /score HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\n\r\n{}")
	const delay = 50 * time.Millisecond
	go func() {
		buf := make([]byte, len(req))
		if _, err := io.ReadFull(model, buf); err != nil {
			return
		}
		time.Sleep(delay)
		model.Write([]byte("answer"))
	}()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.awaitAnswer = true
	n, err := c.Write(req)
	if err != nil || n != len(req) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(req))
	}
	if waited := time.Since(start); waited < delay {
		t.Fatalf("the write returned after %v, before the answer (sent after %v)", waited, delay)
	}
	if c.awaitAnswer {
		t.Fatal("awaitAnswer is still set after the write")
	}
	buf := make([]byte, 16)
	n, err = c.Read(buf)
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
}

// An answer that comes at once is never missed: each of many exchanges on one connection returns,
// however the answer's arrival falls against the wait.
func TestWriteAwaitNeverMissesAnAnswer(t *testing.T) {
	c, model := modelConnPair(t)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := model.Read(buf)
			if err != nil {
				return
			}
			if _, err := model.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64)
	for i := range 2000 {
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		c.awaitAnswer = true
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatalf("exchange %d: write: %v", i, err)
		}
		n, err := io.ReadFull(c, buf[:4])
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("exchange %d: read %q, %v (a missed readiness waits for the deadline)", i, buf[:n], err)
		}
		c.state.answered.Store(true) // as a read does: the next write is a new request
	}
}

// A model that does not answer leaves the write waiting until the read deadline; the write itself
// succeeded, and the read that follows reports the timeout.
func TestWriteAwaitEndsAtTheReadDeadline(t *testing.T) {
	c, model := modelConnPair(t)
	defer model.Close()
	if err := c.SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	c.awaitAnswer = true
	n, err := c.Write([]byte("hello"))
	if err != nil || n != 5 {
		t.Fatalf("Write = %d, %v; want 5, nil", n, err)
	}
	_, err = c.Read(make([]byte, 8))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after a silent model: %v, want a deadline error", err)
	}
}

// A model that closes the connection ends the wait, and the read that follows sees the end.
func TestWriteAwaitEndsWhenTheModelCloses(t *testing.T) {
	c, model := modelConnPair(t)
	go func() {
		buf := make([]byte, 5)
		io.ReadFull(model, buf)
		model.Close()
	}()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c.awaitAnswer = true
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("Read after the model closed: %v, want EOF", err)
	}
}

// What does not fit the socket's buffer is written as any write is, within the write deadline,
// and all of it arrives in order.
func TestWriteAwaitLargerThanTheSocketBuffer(t *testing.T) {
	c, model := modelConnPair(t)
	req := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MB
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, len(req))
		time.Sleep(50 * time.Millisecond) // the gateway's write fills the socket first
		n, _ := io.ReadFull(model, buf)
		model.Write([]byte("ok"))
		got <- buf[:n]
	}()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c.awaitAnswer = true
	n, err := c.Write(req)
	if err != nil || n != len(req) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(req))
	}
	if b := <-got; !bytes.Equal(b, req) {
		t.Fatalf("the model got %d bytes, not the %d written in order", len(b), len(req))
	}
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
}

// Only a request's first write waits: one that follows bytes of the same request already written
// goes as any write does, since the model may have answered them.
func TestWriteAwaitOnlyForARequestsOnlyWrite(t *testing.T) {
	c, model := modelConnPair(t)
	defer model.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("head")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.awaitAnswer = true
	if _, err := c.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Fatalf("a second write of the same request waited %v for an answer", waited)
	}
}

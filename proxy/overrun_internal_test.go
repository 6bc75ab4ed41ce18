package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// modelConnPair dials a loopback listener with dialModel and returns the gateway's side (a
// modelConn) and the model's side.
func modelConnPair(t *testing.T) (*modelConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := dialModel(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	model := <-accepted
	if model == nil {
		t.Fatal("accepting the gateway's connection failed")
	}
	t.Cleanup(func() { c.Close(); model.Close() })
	return c.(*modelConn), model
}

// The check for bytes past the end of a model's answer (overrun) makes no system call when the
// read that brought the answer's last bytes came back short, since that read took everything the
// socket held; when that read filled what it asked for, the socket is looked at. Bytes read
// already behind the answer count either way.
func TestOverrunLooksOnlyAfterAFullRead(t *testing.T) {
	answer := bytes.Repeat([]byte("a"), 100)
	read := func(t *testing.T, br *bufio.Reader, n int) {
		t.Helper()
		if _, err := io.ReadFull(br, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("short read, nothing after", func(t *testing.T) {
		mc, model := modelConnPair(t)
		model.Write(answer)
		br := bufio.NewReaderSize(mc, 4096)
		read(t, br, len(answer))
		if overrun(br, mc) {
			t.Error("overrun after an answer with nothing behind it")
		}
		if mc.peek.raw != nil {
			t.Error("the socket was looked at after a read that came back short")
		}
		if mc.quietAt.IsZero() {
			t.Error("the short read does not stand as a look (quietAt unset)")
		}
	})

	t.Run("bytes behind the answer in the same read", func(t *testing.T) {
		mc, model := modelConnPair(t)
		model.Write(append(answer, "HTTP/1.1 200 OK\r\n"...))
		br := bufio.NewReaderSize(mc, 4096)
		read(t, br, len(answer))
		if !overrun(br, mc) {
			t.Error("bytes buffered behind the answer were not seen")
		}
	})

	t.Run("full read, bytes still on the socket", func(t *testing.T) {
		mc, model := modelConnPair(t)
		if _, err := model.Write(bytes.Repeat([]byte("b"), 8192)); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReaderSize(mc, 4096)
		// A read of 4096 bytes straight into the caller's buffer (as fasthttp reads a large body)
		// fills it: the bytes behind it are found only by looking.
		read(t, br, 4096)
		if !overrun(br, mc) {
			t.Error("the bytes left on the socket after a full read were not seen")
		}
		if mc.peek.raw == nil {
			t.Error("the socket was not looked at after a full read")
		}
	})
}

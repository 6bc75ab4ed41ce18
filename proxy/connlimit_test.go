package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// HTTP-44 on the HTTP/2 listener: server.max_conns and server.max_conns_per_ip hold there too.
// A connection over a cap is closed before a byte is read; a closed connection frees its place.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 3, 2)
	defer ln.Close()
	go func() { // the server: keeps every admitted connection open until the client closes it
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	dial := func(from string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// refused reports whether the server closed c (read ends with EOF) rather than keeping it.
	refused := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}

	a1, a2 := dial("127.0.0.1"), dial("127.0.0.1")
	if refused(a1) || refused(a2) {
		t.Fatal("the first two connections from one address were refused")
	}
	if !refused(dial("127.0.0.1")) {
		t.Error("HTTP-44 a third connection from the same address was kept (max_conns_per_ip 2)")
	}
	b1 := dial("127.0.0.2")
	if refused(b1) {
		t.Fatal("a connection from another address was refused under the total cap")
	}
	if !refused(dial("127.0.0.3")) {
		t.Error("HTTP-44 a fourth connection in all was kept (max_conns 3)")
	}
	a1.Close()
	var again net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; {
		// The server notices the close when its read ends; until then the place is taken.
		again = dial("127.0.0.1")
		if !refused(again) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection never gave its place back")
		}
	}
}

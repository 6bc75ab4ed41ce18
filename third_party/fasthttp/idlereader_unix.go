//go:build unix

package fasthttp

import (
	"bufio"
	"io"
	"net"
	"syscall"
)

// idleReader waits for a keep-alive connection's next request (acquireIdleReader)
// and is then the source of the reader that request is read with: its first Read
// is one non-blocking read(2) of the connection's descriptor, made while the
// runtime poller reports the connection readable; later ones read the
// connection as usual (with its deadlines). There is one per connection.
type idleReader struct {
	s     *Server
	c     net.Conn
	fd    uintptr
	raw   bool
	br    *bufio.Reader
	err   error
	poll  func(fd uintptr) bool // ir.tryRead, made once, so that no wait allocates
	first [1]byte               // acquireByteReader's first byte, for connections without a descriptor
}

func (r *idleReader) Read(b []byte) (int, error) {
	if !r.raw {
		return r.c.Read(b)
	}
	r.raw = false
	for {
		n, err := syscall.Read(int(r.fd), b)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// tryRead is the function given to syscall.RawConn.Read: it takes a pooled
// reader and reads the next request's first bytes into it, or gives the reader
// back and asks to wait when there is nothing to read yet.
func (r *idleReader) tryRead(fd uintptr) bool {
	r.fd, r.raw = fd, true
	r.br = r.s.acquireReaderFor(r)
	_, r.err = r.br.Peek(1)
	if r.err == syscall.EAGAIN {
		releaseReader(r.s, r.br)
		r.br, r.err = nil, nil
		return false
	}
	return true
}

// acquireIdleReader is acquireByteReader without its extra system call, for
// connections that expose their file descriptor (a plain TCP connection): it
// waits for the connection to become readable holding neither a RequestCtx
// nor a read buffer, and then reads the next request's first bytes straight
// into a pooled reader's buffer with one read(2). A connection that does not
// expose its descriptor (TLS) is served by acquireByteReader.
func acquireIdleReader(ctxP **RequestCtx, irp **idleReader) (*bufio.Reader, error) {
	ctx := *ctxP
	s := ctx.s
	c := ctx.c
	ir := *irp
	if ir == nil {
		ir = &idleReader{s: s, c: c}
		ir.poll = ir.tryRead
		*irp = ir
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return acquireByteReaderInto(ctxP, ir.first[:])
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return acquireByteReaderInto(ctxP, ir.first[:])
	}
	s.releaseCtx(ctx)
	ctx = nil
	*ctxP = nil

	err = rc.Read(ir.poll)
	br := ir.br
	if err == nil {
		err = ir.err
	}
	ir.br, ir.err = nil, nil

	ctx = s.acquireCtx(c)
	*ctxP = ctx
	if err != nil {
		if br != nil {
			releaseReader(s, br)
		}
		// Treat all errors as EOF on unsuccessful read
		// of the first request byte.
		return nil, io.EOF
	}
	return br, nil
}

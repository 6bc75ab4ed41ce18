//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"net"
	"os"
	"syscall"
)

// awaiter writes a request that leaves in one write and then waits, inside the same hold of the
// socket's read side, until the poller says the answer's first bytes have come.
//
// Go's runtime forgets a readiness it saw before each read of a connection, so every read begins
// with an attempt: the read that follows a request to the model finds nothing (EAGAIN) before
// it waits, nearly every time, since the model has not answered yet. Written and waited for in
// one RawConn.Read, the runtime's readiness is cleared before the request leaves, so the answer
// arriving after it is always seen, and the next read is made only when there is something to
// read: one system call a request fewer.
//
// Only a request's only write goes this way: bytes the model could answer before the last write
// are in flight before the readiness is cleared.
type awaiter struct {
	raw   syscall.RawConn
	wait  func(fd uintptr) bool // a.writeThenWait, bound once
	p     []byte
	n     int
	err   error
	wrote bool
}

// writeAwait writes p to c's socket and waits for readiness to read, or for c's read deadline.
// What it could not write without blocking it leaves to c.Conn.Write.
func (c *modelConn) writeAwait(p []byte) (int, error) {
	a := &c.await
	if a.raw == nil {
		sc, ok := c.Conn.(syscall.Conn)
		if !ok {
			return c.Conn.Write(p)
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return c.Conn.Write(p)
		}
		a.raw, a.wait = raw, a.writeThenWait
	}
	a.p, a.n, a.err, a.wrote = p, 0, nil, false
	_ = a.raw.Read(a.wait) // a failed wait (deadline, close) is the next read's to report
	n, err, wrote := a.n, a.err, a.wrote
	a.p = nil
	switch {
	case !wrote: // the connection was closed or past its deadline before anything was written
		return c.Conn.Write(p)
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK: // the socket's buffer is full
		m, err := c.Conn.Write(p[n:])
		return n + m, err
	case err != nil:
		return n, &net.OpError{Op: "write", Net: "tcp", Source: c.Conn.LocalAddr(), Addr: c.Conn.RemoteAddr(), Err: os.NewSyscallError("write", err)}
	}
	return n, nil
}

// writeThenWait is the RawConn.Read callback: on its first call it writes, and returns false
// (wait for readiness) when everything was written; on the next it returns true.
func (a *awaiter) writeThenWait(fd uintptr) bool {
	if a.wrote {
		return true
	}
	a.wrote = true
	for a.n < len(a.p) {
		n, err := syscall.Write(int(fd), a.p[a.n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			a.err = err
			if err == nil {
				a.err = syscall.EAGAIN
			}
			return true
		}
		a.n += n
	}
	return false
}

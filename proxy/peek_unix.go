//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package proxy

import (
	"errors"
	"net"
	"syscall"
)

// peeker looks at a model connection's socket without reading from it. It keeps the socket's
// RawConn and its read callback, bound once, so that a look allocates nothing. A connection is
// looked at by one request at a time (before its reuse, after an answer), never concurrently.
type peeker struct {
	raw  syscall.RawConn
	recv func(fd uintptr) bool // p.recvfrom
	buf  [1]byte
	n    int
	err  error
}

// look peeks at one byte of c's socket without waiting and without taking it off the socket.
func (p *peeker) look(c net.Conn) int {
	if p.raw == nil {
		sc, ok := c.(syscall.Conn)
		if !ok {
			return connUnknown
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return connClosed
		}
		p.raw, p.recv = raw, p.recvfrom
	}
	if err := p.raw.Read(p.recv); err != nil {
		return connClosed
	}
	switch {
	case errors.Is(p.err, syscall.EAGAIN), errors.Is(p.err, syscall.EWOULDBLOCK):
		return connQuiet
	case p.err != nil, p.n == 0:
		return connClosed
	}
	return connPending
}

func (p *peeker) recvfrom(fd uintptr) bool {
	for {
		p.n, _, p.err = syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if p.err != syscall.EINTR {
			return true
		}
	}
}

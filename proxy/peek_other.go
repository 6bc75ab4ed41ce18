//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package proxy

import "syscall"

// peekRaw cannot look at a socket on this platform: a pooled connection is then trusted until
// upstream_idle_timeout.
func peekRaw(syscall.RawConn) int { return connUnknown }

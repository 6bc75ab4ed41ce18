//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package proxy

// awaiter has nothing to keep on this platform: a request is written as any other.
type awaiter struct{}

func (c *modelConn) writeAwait(p []byte) (int, error) { return c.Conn.Write(p) }

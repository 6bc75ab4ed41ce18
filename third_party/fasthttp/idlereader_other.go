//go:build !unix

package fasthttp

import "bufio"

// idleReader keeps acquireByteReader's first byte, one per connection.
type idleReader struct{ first [1]byte }

// acquireIdleReader is acquireByteReader where a connection's descriptor
// cannot be read directly.
func acquireIdleReader(ctxP **RequestCtx, irp **idleReader) (*bufio.Reader, error) {
	if *irp == nil {
		*irp = &idleReader{}
	}
	return acquireByteReaderInto(ctxP, (*irp).first[:])
}

package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// limitListener caps the connections a listener keeps open: max in all and perIP from one client
// address (0: no cap). A connection over either cap is closed as soon as it is accepted, before a
// byte is read: the HTTP/2 listener's counterpart of fasthttp's Concurrency and MaxConnsPerIP on
// the HTTP/1.1 one (server.max_conns and server.max_conns_per_ip).
type limitListener struct {
	net.Listener
	max, perIP int

	mu    sync.Mutex
	total int
	byIP  map[netip.Addr]int
}

func newLimitListener(ln net.Listener, max, perIP int) *limitListener {
	return &limitListener{Listener: ln, max: max, perIP: perIP, byIP: map[netip.Addr]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if l.admit(ip) != nil {
			c.Close()
			continue
		}
		return limited(c, l, ip), nil
	}
}

// remoteIP is the address c comes from (the zero Addr when it has no IP address, as an
// in-memory connection in tests; those are all counted as one client).
func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// admit counts a new connection from ip, or says which cap it is over.
func (l *limitListener) admit(ip netip.Addr) *Error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.max > 0 && l.total >= l.max:
		return errTooManyConns
	case l.perIP > 0 && l.byIP[ip] >= l.perIP:
		return errTooManyConnsFromIP
	}
	l.total++
	l.byIP[ip]++
	return nil
}

// refusingListener is the HTTP/1.1 listener's limitListener: a connection over a cap gets the
// contract's error (503 over server.max_conns, 429 over server.max_conns_per_ip, JSON, with
// Retry-After and a request id) before it is closed, as a client over any other limit does.
type refusingListener struct{ *limitListener }

func newRefusingListener(ln net.Listener, max, perIP int) refusingListener {
	return refusingListener{newLimitListener(ln, max, perIP)}
}

// refusalTimeout bounds the write of a refusal (and, on the HTTPS listener, the TLS handshake
// that comes first), so that a client that does not read cannot keep a refused connection open.
const refusalTimeout = time.Second

func (l refusingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if e := l.admit(ip); e != nil {
			go refuse(c, e) // not on the accepting goroutine: a TLS handshake reads from the client
			continue
		}
		return limited(c, l.limitListener, ip), nil
	}
}

// refuse answers a connection over a cap with e, without reading its request, and closes it.
func refuse(c net.Conn, e *Error) {
	defer c.Close()
	var id [36]byte
	resp := fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"+
		"Retry-After: %d\r\n%s: %s\r\n%s: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		e.Status, fasthttp.StatusMessage(e.Status), e.RetryAfter,
		HeaderRequestID, newRequestID(id[:0]), HeaderMSRequestID, id[:], len(e.body), e.body)
	_ = c.SetDeadline(time.Now().Add(refusalTimeout))
	_, _ = c.Write(resp)
}

func (l *limitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
}

// slot is a connection's place in its listener's counts, given back once.
type slot struct {
	l    *limitListener
	ip   netip.Addr
	once sync.Once
}

func (s *slot) free() { s.once.Do(func() { s.l.release(s.ip) }) }

// limitedConn gives its place back to its listener when it is closed (once).
type limitedConn struct {
	net.Conn
	slot *slot
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.slot.free()
	return err
}

// SetKeepAlive and SetKeepAlivePeriod pass fasthttp's TCP keep-alive settings (server's
// TCPKeepalive) to the connection, which the wrapping would hide from it.
func (c *limitedConn) SetKeepAlive(on bool) error {
	if k, ok := c.Conn.(interface{ SetKeepAlive(bool) error }); ok {
		return k.SetKeepAlive(on)
	}
	return nil
}

func (c *limitedConn) SetKeepAlivePeriod(d time.Duration) error {
	if k, ok := c.Conn.(interface{ SetKeepAlivePeriod(time.Duration) error }); ok {
		return k.SetKeepAlivePeriod(d)
	}
	return nil
}

// SyscallConn passes the connection's descriptor on: fasthttp waits for an idle keep-alive
// connection's next request through it, holding no read buffer meanwhile (third_party/fasthttp).
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// WritevConn names the connection c writes straight through to, so that fasthttp sends an
// answer too large for its 4 KB write buffer, header and body, with one writev (one segment to
// the client) rather than the buffer's first 4 KB and then the rest (third_party/fasthttp).
func (c *limitedConn) WritevConn() net.Conn { return c.Conn }

// limitedTLSConn is limitedConn for a TLS connection: it keeps *tls.Conn's methods, by which
// fasthttp knows a request came over HTTPS (RequestCtx.IsTLS).
type limitedTLSConn struct {
	*tls.Conn
	slot *slot
}

func (c *limitedTLSConn) Close() error {
	err := c.Conn.Close()
	c.slot.free()
	return err
}

// limited wraps c, counted in l for ip.
func limited(c net.Conn, l *limitListener, ip netip.Addr) net.Conn {
	s := &slot{l: l, ip: ip}
	if tc, ok := c.(*tls.Conn); ok {
		return &limitedTLSConn{Conn: tc, slot: s}
	}
	return &limitedConn{Conn: c, slot: s}
}

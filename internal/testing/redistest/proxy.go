//go:build unix

package redistest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP relay on 127.0.0.1 in front of a Redis address, for the faults that happen
// between a client and Redis rather than in Redis: SetDelay makes Redis slow to answer (every
// byte it sends reaches the client that much later, in order), Cut drops every connection and
// refuses new ones until Restore. Point the client at Addr instead of the server's. The proxy
// and its goroutines are gone when the test's cleanups have run.
type Proxy struct {
	Addr   string // "127.0.0.1:PORT"; read-only, the same across Cut and Restore
	target string

	mu    sync.Mutex
	ln    net.Listener // nil while cut
	delay time.Duration
	conns map[net.Conn]struct{}
	quit  chan struct{} // closed by the cleanup: delayed bytes are dropped
	wg    sync.WaitGroup
}

// NewProxy starts a Proxy to target (a "host:port", such as Server.Addr). It is closed by
// t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}, quit: make(chan struct{})}
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

// URL returns "redis://ADDR/0" for the proxy's address.
func (p *Proxy) URL() string { return "redis://" + p.Addr + "/0" }

// SetDelay makes every byte from Redis reach the client d after Redis sent it (0: at once).
// Bytes already on their way keep the delay they were given; their order never changes.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *Proxy) currentDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// Cut closes every connection through the proxy and stops accepting new ones (clients get
// "connection refused") until Restore.
func (p *Proxy) Cut(t testing.TB) {
	t.Helper()
	p.closeAll()
}

// closeAll closes the listener and every connection.
func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Restore accepts connections again on the same address after Cut.
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	cut := p.ln == nil
	p.mu.Unlock()
	if !cut {
		return
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		t.Fatalf("redistest: proxy: listening again on %s: %v", p.Addr, err)
	}
	p.serve(ln)
}

func (p *Proxy) close() {
	close(p.quit)
	p.closeAll()
	p.wg.Wait()
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, u) {
				return
			}
			p.wg.Go(func() { p.pipe(u, c, false) }) // client → Redis, at once
			p.wg.Go(func() { p.pipe(c, u, true) })  // Redis → client, delayed
		}
	})
}

// track registers a relayed pair of connections; false (and both closed) once the listener
// it came from has been closed.
func (p *Proxy) track(c, u net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		c.Close()
		u.Close()
		return false
	}
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// chunk is bytes read from one side, due on the other at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst. Toward the client (delayed), every chunk waits until it is due, so
// that latency, not bandwidth, is what the delay adds.
func (p *Proxy) pipe(dst, src net.Conn, delayed bool) {
	defer p.untrack(src)
	defer p.untrack(dst)
	if !delayed {
		io.Copy(dst, src)
		return
	}
	queue := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ch := range queue {
			if !p.wait(ch.due) {
				for range queue {
				}
				return
			}
			if _, err := dst.Write(ch.b); err != nil {
				for range queue { // drop the rest; the reader ends when src is closed
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			queue <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(p.currentDelay())}
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-done
}

// wait sleeps until due; false when the proxy is closed first.
func (p *Proxy) wait(due time.Time) bool {
	d := time.Until(due)
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.quit:
		return false
	}
}

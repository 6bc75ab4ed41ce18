//go:build linux

package proxy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The shape of the gateway's traffic on the wire. Every segment the gateway sends costs the
// other end (the client, or the model) a wake-up and a read, so what fits in one segment leaves
// as one: an answer whose header and body are over fasthttp's 4 KB write buffer, a request with
// such a body, and a chunked answer whose pieces came together from the model. Counted by the
// receiving kernel (TCP_INFO's data segments received) on loopback, where a segment carries up to
// the loopback MTU (64 KB), so that the count is exact, not timed.

// tcpInfo is the kernel's TCP_INFO of c.
func tcpInfo(t *testing.T, c net.Conn) *unix.TCPInfo {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("%T is not a TCP connection", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return info
}

// segmentsFor is how many segments n bytes take, written at once, on a connection whose segments
// carry up to mss bytes.
func segmentsFor(n int, mss uint32) uint32 { return uint32((n + int(mss) - 1) / int(mss)) }

// countingConn counts the bytes read from a connection.
type countingConn struct {
	net.Conn
	n int
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += n
	return n, err
}

// wireExchange sends raw on a fresh connection to the gateway, reads one answer, and returns it
// with the bytes the answer took and the data segments they came in.
func wireExchange(t *testing.T, e *env, raw string) (*response, int, uint32, uint32) {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: c}
	r, err := readResponse(bufio.NewReader(cc))
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	info := tcpInfo(t, c)
	return r, cc.n, info.Data_segs_in, info.Snd_mss
}

func TestWireOneSegmentEachWay(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KB: over the 4 KB write buffers
	chunked := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n", len(okBody), okBody) + "0\r\n\r\n"
	var modelSegs atomic.Uint32 // data segments the model's connection had received when it answered
	var modelMSS atomic.Uint32
	respond := func(r *recorder, w io.Writer, req *seenRequest) bool {
		if c, ok := w.(net.Conn); ok {
			info := tcpInfo(t, c)
			modelSegs.Store(info.Data_segs_in)
			modelMSS.Store(info.Snd_mss)
		}
		var answer string
		switch req.Target {
		case "/big":
			answer = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
				strconv.Itoa(len(big)) + "\r\n\r\n" + string(big)
		case "/chunked":
			answer = chunked // in one write: one segment to the gateway
		default:
			return respondOK(r, w, req)
		}
		_, err := io.WriteString(w, answer)
		return err == nil
	}

	t.Run("an answer over the write buffer reaches the client in one segment", func(t *testing.T) {
		e := newEnv(t, envOptions{respond: respond})
		r, n, segs, mss := wireExchange(t, e, request("GET", "/api/v1/service/open/big"))
		if r.Status != 200 || !bytes.Equal(r.Body, big) {
			t.Fatalf("status %d, %d bytes of body", r.Status, len(r.Body))
		}
		if want := segmentsFor(n, mss); segs != want {
			t.Errorf("the answer (%d bytes) came in %d data segments, want %d (header and body apart?)", n, segs, want)
		}
	})

	t.Run("a request body over the write buffer reaches the model in one segment", func(t *testing.T) {
		e := newEnv(t, envOptions{respond: respond})
		raw := request("POST", "/api/v1/service/open/score", "Content-Type: application/octet-stream",
			"Content-Length: "+strconv.Itoa(len(big))) + string(big)
		r, _, _, _ := wireExchange(t, e, raw)
		seen := e.up.requireOne(t)
		if r.Status != 200 || !bytes.Equal(seen.Body, big) {
			t.Fatalf("status %d, the model got %d bytes of body", r.Status, len(seen.Body))
		}
		e.up.mu.Lock()
		n := int(e.up.bytes) // the first request on the model's only connection
		e.up.mu.Unlock()
		if segs, want := modelSegs.Load(), segmentsFor(n, modelMSS.Load()); segs != want {
			t.Errorf("the request (%d bytes) came to the model in %d data segments, want %d (header and body apart?)", n, segs, want)
		}
	})

	t.Run("a chunked answer that came whole reaches the client in one segment", func(t *testing.T) {
		e := newEnv(t, envOptions{respond: respond})
		r, n, segs, mss := wireExchange(t, e, request("GET", "/api/v1/service/open/chunked"))
		if r.Status != 200 || string(r.Body) != okBody {
			t.Fatalf("status %d, body %q", r.Status, r.Body)
		}
		if want := segmentsFor(n, mss); segs != want {
			t.Errorf("the chunked answer (%d bytes) came in %d data segments, want %d (headers, piece and last chunk apart?)", n, segs, want)
		}
	})
}

// A request body too large to be read whole streams through to the model as it arrives, each
// read from the client written at once: not in fasthttp's 4 KB pieces (a segment, a wake-up and a
// read for the model each), and in no more segments than HAProxy's 16 KB buffers make.
func TestWireStreamedBodyInLargeWrites(t *testing.T) {
	var modelSegs atomic.Uint32
	respond := func(r *recorder, w io.Writer, req *seenRequest) bool {
		if c, ok := w.(net.Conn); ok {
			modelSegs.Store(tcpInfo(t, c).Data_segs_in)
		}
		return respondOK(r, w, req)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MB: over the 64 KB read whole
	for _, framing := range []string{"content-length", "chunked"} {
		t.Run(framing, func(t *testing.T) {
			e := newEnv(t, envOptions{respond: respond}) // a fresh connection to the model
			raw := request("POST", "/api/v1/service/open/score", "Content-Type: application/octet-stream",
				"Content-Length: "+strconv.Itoa(len(body))) + string(body)
			if framing == "chunked" {
				raw = request("POST", "/api/v1/service/open/score", "Content-Type: application/octet-stream",
					"Transfer-Encoding: chunked") + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
			}
			r, _, _, _ := wireExchange(t, e, raw)
			seen := e.up.requireOne(t)
			if r.Status != 200 || !bytes.Equal(seen.Body, body) {
				t.Fatalf("status %d, the model got %d bytes of body", r.Status, len(seen.Body))
			}
			segs, most := modelSegs.Load(), uint32(len(body)/(16<<10))
			if segs > most {
				t.Errorf("the body (%d bytes) came to the model in %d data segments, want at most %d", len(body), segs, most)
			}
			t.Logf("%d bytes of body in %d data segments", len(body), segs)
		})
	}
}

package proxy_test

import (
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoregate/scoregate/config"
)

// What the gateway records of a failure says whose failure it was: the client's, or the replica
// that failed it.

// Finding 14: a client that cuts its connection in the middle of a streamed upload is
// the client's failure: recorded as 400, never logged as the model's 502.
func TestStreamedUploadAbortIsAClientError(t *testing.T) {
	noLeaks(t, "upload cut", func(t *testing.T) {
		// The model takes all it is sent and never answers.
		e := newFaultEnv(t, nil, rawModel(t, func(c net.Conn) { untilClosed(c) }))
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(ioDeadline))
		io.WriteString(c, "POST /api/v1/service/model/score HTTP/1.1\r\nHost: gw.test\r\nContent-Length: "+strconv.Itoa(8<<20)+"\r\n\r\n")
		c.Write([]byte(strings.Repeat("y", 256<<10)))
		time.Sleep(100 * time.Millisecond) // the upload is under way
		c.Close()
		var got []string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if got = e.log.lines("request"); len(got) > 0 {
				break
			}
		}
		if len(got) != 1 || !strings.Contains(got[0], `status="400"`) {
			t.Errorf("log for a cut upload:\n%s\nwant one line with status 400", strings.Join(got, "\n"))
		}
		if w := e.log.warnings(); len(w) != 0 {
			t.Errorf("warnings for a cut upload:\n%s", strings.Join(w, "\n"))
		}
	})
}

// lines returns the records whose message starts with prefix, rendered as warnings renders them.
func (h *logRecorder) lines(prefix string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range *h.recs {
		if !strings.HasPrefix(r.Message, prefix) {
			continue
		}
		var b strings.Builder
		b.WriteString(r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool {
			renderAttr(&b, "", a)
			return true
		})
		out = append(out, b.String())
	}
	return out
}

// Finding 14: a request retried on a second replica after the first refused the connection, and
// failed there, is logged against the second replica, the one that failed it.
func TestRetryBlamesTheReplicaTriedLast(t *testing.T) {
	noLeaks(t, "http", func(t *testing.T) {
		dropping := newRecorder(t, faultyModel)
		refusing := closedPortURL(t)
		// round_robin starts at the second replica: the refusing one, then the dropping one.
		e := newFaultEnvWith(t, faultyModel, "", func(s *config.Service) {
			s.Upstreams = []string{dropping.url, refusing}
			s.Balance = config.BalanceRoundRobin
		})
		r := e.do(t, request("POST", "/api/v1/service/model/close-before", "Content-Length: 2")+"{}")
		checkError(t, r, 502, "BadGateway", "")
		if n := len(dropping.requests()); n != 1 {
			t.Fatalf("the dropping replica got %d requests, want 1", n)
		}
		warns := e.log.warnings()
		if len(warns) != 1 || !strings.Contains(warns[0], `err.upstream="`+dropping.url+`"`) {
			t.Errorf("log:\n%s\nwant one warning naming %s", strings.Join(warns, "\n"), dropping.url)
		}
	})
	noLeaks(t, "grpc", func(t *testing.T) {
		m := startDroppingGRPCModel(t)
		refusing := closedPortURL(t)
		e := newGRPCFaultEnv(t, []string{m.url, refusing})
		err := e.call(t, "Close")
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call: %v, want UNAVAILABLE", err)
		}
		if n := m.calls["Close"].Load(); n != 1 {
			t.Fatalf("the dropping replica got %d calls, want 1", n)
		}
		warns := e.log.warnings()
		if len(warns) != 1 || !strings.Contains(warns[0], `err.upstream="`+m.url+`"`) {
			t.Errorf("log:\n%s\nwant one warning naming %s", strings.Join(warns, "\n"), m.url)
		}
	})
}

package proxy_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// Over the HTTPS listener the model learns that the client came over TLS (X-Forwarded-Proto
// https), and a connection over server.max_conns is refused with the contract's error, over TLS,
// as on the plain listener.
func TestHTTPSListener(t *testing.T) {
	ca := testpki.NewCA(t, "https listener test CA")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "127.0.0.1")}})
	const held = 2
	e := newEnv(t, envOptions{listener: ln, config: func(c *config.Config) { c.Server.MaxConns = held }})
	dial := func() *keptConn {
		c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &keptConn{Conn: c, br: bufio.NewReader(c)}
	}
	score := request("GET", "/api/v1/service/iris/score", bearer(e.primary))

	var conns []*keptConn
	for i := range held {
		c := dial()
		if r := c.roundTrip(t, score); r.Status != 200 {
			t.Fatalf("connection %d: status %d %s", i, r.Status, r.Body)
		}
		conns = append(conns, c)
	}
	for _, r := range e.up.requests() {
		if got := r.get("X-Forwarded-Proto"); got != "https" {
			t.Errorf("the model saw X-Forwarded-Proto %q, want https", got)
		}
	}

	extra := dial()
	extra.SetDeadline(time.Now().Add(ioDeadline))
	resps, err := readResponses(extra.br)
	if err != nil && err != io.EOF {
		t.Fatalf("reading the refusal: %v", err)
	}
	if len(resps) != 1 {
		t.Fatalf("the extra connection got %s, want one refusal", describe(resps))
	}
	checkError(t, resps[0], 503, "ServiceUnavailable", "")
	if conns[0].roundTrip(t, score).Status != 200 {
		t.Error("a held connection is no longer served after the refusal")
	}
}

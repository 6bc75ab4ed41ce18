package proxy

import (
	"bufio"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// Every header cleanRequest removes by name is removed whatever its case, alone or among others,
// though it only deletes the ones its visit of the headers saw.
func TestCleanRequestRemovesEveryListedHeader(t *testing.T) {
	g := &Gateway{}
	peer := netip.MustParseAddr("192.0.2.1")
	for _, name := range removedRequestHeaders {
		for _, spelled := range []string{name, strings.ToLower(name), strings.ToUpper(name)} {
			framing, value := "Content-Length: 0\r\n", "v"
			if name == "Transfer-Encoding" {
				framing, value = "", "chunked"
			}
			raw := "POST /score HTTP/1.1\r\nHost: model.test\r\n" + framing + "X-Kept: yes\r\n" +
				spelled + ": " + value + "\r\nAuthorization: Bearer x\r\n\r\n"
			var h fasthttp.RequestHeader
			if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
				t.Fatalf("%s: %v", spelled, err)
			}
			if !g.cleanRequest(&h, peer, false, nil) {
				t.Fatalf("%s: cleanRequest refused the request", spelled)
			}
			if v := h.Peek(name); len(v) > 0 && !isForwarded(name) {
				t.Errorf("%s: still there as %q", spelled, v)
			}
			if isForwarded(name) && string(h.Peek(name)) == "v" {
				t.Errorf("%s: the client's value reached the model from an untrusted peer", spelled)
			}
			if len(h.Peek("Authorization")) > 0 || string(h.Peek("X-Kept")) != "yes" {
				t.Errorf("%s: Authorization %q, X-Kept %q", spelled, h.Peek("Authorization"), h.Peek("X-Kept"))
			}
		}
	}
}

func isForwarded(name string) bool { return strings.HasPrefix(name, "X-Forwarded-") }

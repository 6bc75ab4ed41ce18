package proxy_test

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// A keep-alive connection gives its read buffer back between requests and waits for the next one
// without it (third_party/fasthttp). Every way a next request can arrive after that still reads
// whole: after a streamed body (the buffer is released only once the body is read), after an idle
// pause, split across writes with a pause inside its header, and pipelined behind another.
func TestKeepAliveConnectionAfterIdleWaits(t *testing.T) {
	e := newEnv(t, envOptions{})
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	br := bufio.NewReader(c)
	big := strings.Repeat("0123456789abcdef", (config.StreamedBodyThresholdBytes+4096)/16)
	post := func(body string) string {
		return request("POST", "/api/v1/service/other/score", bearer(e.otherKey), "Content-Type: application/json",
			"Content-Length: "+strconv.Itoa(len(body))) + body
	}
	chunkedPost := request("POST", "/api/v1/service/other/score", bearer(e.otherKey), "Content-Type: application/json",
		"Transfer-Encoding: chunked") + chunked(big, 4096)
	small := post(`{"a":1}`)
	steps := []struct {
		name   string
		writes []string // written with a pause between them
		bodies []int    // the body length the model sees, for each request
	}{
		{"streamed body", []string{post(big)}, []int{len(big)}},
		{"after an idle pause", []string{small}, []int{7}},
		{"chunked streamed body", []string{chunkedPost}, []int{len(big)}},
		{"header split by a pause", []string{small[:10], small[10:]}, []int{7}},
		{"two pipelined", []string{small + post(big)}, []int{7, len(big)}},
		{"after the pipelined pair", []string{small}, []int{7}},
	}
	for _, s := range steps {
		e.up.reset()
		time.Sleep(20 * time.Millisecond) // the connection waits idle, its buffer given back
		for i, w := range s.writes {
			if i > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := io.WriteString(c, w); err != nil {
				t.Fatalf("%s: writing: %v", s.name, err)
			}
		}
		for i := range s.bodies {
			r, err := readResponse(br)
			if err != nil {
				t.Fatalf("%s: reading answer %d: %v", s.name, i+1, err)
			}
			if r.Status != 200 {
				t.Fatalf("%s: answer %d is %d %s, want 200", s.name, i+1, r.Status, r.Body)
			}
		}
		reqs := e.up.requests()
		if len(reqs) != len(s.bodies) {
			t.Fatalf("%s: the model saw %d requests, want %d", s.name, len(reqs), len(s.bodies))
		}
		for i, want := range s.bodies {
			if got := len(reqs[i].Body); got != want {
				t.Errorf("%s: request %d reached the model with a %d-byte body, want %d", s.name, i+1, got, want)
			}
		}
	}
}

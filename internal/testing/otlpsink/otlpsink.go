// Package otlpsink runs an OTLP/HTTP receiver that reads every batch and throws it away, in a
// process of its own, for benchmarks: the CPU time it spends receiving spans is then not charged
// to the process that measures what sending them costs, as a collector on another host or in
// another container would not be.
//
// The receiver is the test binary itself, started again: a package's TestMain calls
// ServeIfAsked first, and a benchmark calls Start.
package otlpsink

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// envVar, set in the environment of the started test binary, makes ServeIfAsked serve.
const envVar = "SCOREGATE_OTLPSINK"

// ServeIfAsked serves the receiver and exits when this process was started by Start; otherwise
// it returns at once. TestMain calls it before anything else.
func ServeIfAsked() {
	if os.Getenv(envVar) != "1" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "otlpsink:", err)
		os.Exit(1)
	}
	var received atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		received.Add(n)
	})
	mux.HandleFunc("GET /received", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strconv.FormatInt(received.Load(), 10))
	})
	fmt.Println(ln.Addr().String())
	go func() { // the benchmark closes its end of stdin when it is done, or dies
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	http.Serve(ln, mux)
	os.Exit(1)
}

// Sink is a running receiver.
type Sink struct {
	// URL is the receiver's base URL, for OTEL_EXPORTER_OTLP_ENDPOINT.
	URL string
}

// Start starts the receiver in a process of its own, stopped when the test ends.
func Start(tb testing.TB) *Sink {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envVar+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting the OTLP receiver: %v", err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("the OTLP receiver did not start (is ServeIfAsked in TestMain?): %v", err)
	}
	return &Sink{URL: "http://" + strings.TrimSpace(line)}
}

// Received is how many request-body bytes the receiver has read so far.
func (s *Sink) Received(tb testing.TB) int64 {
	tb.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} // leaves no connection behind
	resp, err := c.Get(s.URL + "/received")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		tb.Fatalf("the OTLP receiver's count %q: %v", b, err)
	}
	return n
}

package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/proxy"
)

// redirectEnv serves e's gateway as the plain listener of a TLS gateway: ServeRedirect on a
// second loopback listener, pointing at HTTPS port 8443, redirecting the hosts hosts admits (nil:
// any).
func redirectEnv(t *testing.T, challenge http.Handler, hosts func(string) bool) (*env, string) {
	t.Helper()
	var opts []proxy.Option
	if challenge != nil {
		opts = append(opts, proxy.WithACMEChallenge(challenge))
	}
	e := newEnv(t, envOptions{options: opts})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.gw.ServeRedirect(ln, "8443", hosts) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.gw.Shutdown(ctx)
		select {
		case <-served:
		case <-ctx.Done():
			t.Error("the redirect server did not stop")
		}
	})
	return e, ln.Addr().String()
}

func rawTo(t *testing.T, addr, raw string) *response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioDeadline))
	io.WriteString(c, raw)
	c.(*net.TCPConn).CloseWrite()
	resps, err := readResponses(bufio.NewReader(c))
	if err != nil || len(resps) != 1 {
		t.Fatalf("%d responses, %v", len(resps), err)
	}
	return resps[0]
}

func TestRedirectToHTTPS(t *testing.T) {
	challenge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/acme-challenge/tok123" {
			io.WriteString(w, "tok123.thumbprint")
			return
		}
		http.NotFound(w, r)
	})
	e, addr := redirectEnv(t, challenge, nil)
	for _, tc := range []struct {
		name, raw  string
		status     int
		location   string
		bodyPrefix string
	}{
		{"scoring request", "POST /api/v1/service/iris/score?x=1 HTTP/1.1\r\nHost: scoring.example.com\r\nAuthorization: Bearer " + e.primary + "\r\nContent-Length: 2\r\n\r\n{}",
			308, "https://scoring.example.com:8443/api/v1/service/iris/score?x=1", ""},
		{"host with a port", "GET /x HTTP/1.1\r\nHost: scoring.example.com:80\r\n\r\n", 308, "https://scoring.example.com:8443/x", ""},
		{"IPv6 host", "GET /x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 308, "https://[::1]:8443/x", ""},
		{"absolute-form target", "GET http://evil.example.net/x HTTP/1.1\r\nHost: scoring.example.com\r\n\r\n", 308, "https://scoring.example.com:8443/", ""},
		{"host with a slash", "GET /x HTTP/1.1\r\nHost: evil.example.net/a\r\n\r\n", 400, "", ""},
		{"host with a user", "GET /x HTTP/1.1\r\nHost: a@evil.example.net\r\n\r\n", 400, "", ""},
		{"ACME challenge", "GET /.well-known/acme-challenge/tok123 HTTP/1.1\r\nHost: scoring.example.com\r\n\r\n", 200, "", "tok123.thumbprint"},
		{"unknown challenge", "GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: scoring.example.com\r\n\r\n", 404, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rawTo(t, addr, tc.raw)
			if r.Status != tc.status || r.get("Location") != tc.location || !strings.HasPrefix(string(r.Body), tc.bodyPrefix) {
				t.Fatalf("%d Location %q body %q, want %d %q %q", r.Status, r.get("Location"), r.Body, tc.status, tc.location, tc.bodyPrefix)
			}
		})
	}
	e.up.requireNone(t)

	// The data-plane listener answers challenges too (tls.redirect_http: false), and still serves.
	if r := e.do(t, "GET /.well-known/acme-challenge/tok123 HTTP/1.1\r\nHost: scoring.example.com\r\n\r\n"); r.Status != 200 || string(r.Body) != "tok123.thumbprint" {
		t.Fatalf("challenge on the data plane: %d %q", r.Status, r.Body)
	}
	if r := e.do(t, "GET /api/v1/service/iris/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+e.primary+"\r\n\r\n"); r.Status != 200 {
		t.Fatalf("data plane: %d %s", r.Status, r.Body)
	}
}

func TestNoChallengeHandlerWithoutACME(t *testing.T) {
	e := newEnv(t, envOptions{})
	if r := e.do(t, "GET /.well-known/acme-challenge/tok123 HTTP/1.1\r\nHost: x\r\n\r\n"); r.Status != 404 {
		t.Fatalf("%d %s, want the data plane's 404", r.Status, r.Body)
	}
	e.up.requireNone(t)
}

// Finding 12c: with configured names, the plain listener redirects only to them; a Host it does
// not serve gets 421 Misdirected Request and no Location, so a client's Host is never copied
// into a redirect to a host the gateway does not serve. ACME challenges are answered whatever
// the Host.
func TestFinding12cRedirectOnlyToServedNames(t *testing.T) {
	challenge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tok123.thumbprint") })
	served := func(host string) bool { return host == "scoring.example.com" }
	_, addr := redirectEnv(t, challenge, served)
	for _, tc := range []struct {
		name, host string
		status     int
		location   string
	}{
		{"a served name", "scoring.example.com", 308, "https://scoring.example.com:8443/x"},
		{"a served name in capitals, with a port", "SCORING.example.com:80", 308, "https://scoring.example.com:8443/x"},
		{"a served name with a final dot", "scoring.example.com.", 308, "https://scoring.example.com:8443/x"},
		{"another name", "evil.example.net", 421, ""},
		{"a name under a served one", "a.scoring.example.com", 421, ""},
		{"an address", "127.0.0.1", 421, ""},
		{"an IPv6 address", "[::1]:80", 421, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rawTo(t, addr, "GET /x HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
			if tc.status == 421 {
				checkError(t, r, 421, "MisdirectedRequest", "")
			}
			if r.Status != tc.status || r.get("Location") != tc.location {
				t.Fatalf("%d Location %q, want %d %q", r.Status, r.get("Location"), tc.status, tc.location)
			}
		})
	}
	r := rawTo(t, addr, "GET /.well-known/acme-challenge/tok123 HTTP/1.1\r\nHost: new.example.net\r\n\r\n")
	if r.Status != 200 || string(r.Body) != "tok123.thumbprint" {
		t.Fatalf("challenge for another host: %d %q", r.Status, r.Body)
	}
}

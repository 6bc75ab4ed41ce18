package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/scoregate/scoregate/internal/testing/testpki"
)

// Finding 12a: over TLS, a request whose Host names another host than the server name (SNI)
// its connection was opened for is answered 421 Misdirected Request (RFC 9110 15.5.20) and never
// reaches the model, even when the gateway's certificate covers both names; the comparison
// ignores case, the port and a final dot. Without SNI (a client that dialled an address) there is
// nothing to compare, and the plain listener is not concerned.
func TestFinding12aMisdirectedRequestOverTLS(t *testing.T) {
	ca := testpki.NewCA(t, "misdirected request test CA")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.Issue(t, "scoring.example.test", "other.example.test", "127.0.0.1")
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}})
	e := newEnv(t, envOptions{listener: ln})
	plain := newEnv(t, envOptions{})
	score := func(host string) string {
		return request("GET", "/api/v1/service/iris/score", "Host: "+host, bearer(e.primary))
	}
	for _, tc := range []struct {
		name, sni, host string
		status          int
	}{
		{"Host equals SNI", "scoring.example.test", "scoring.example.test", 200},
		{"Host with a port", "scoring.example.test", "scoring.example.test:8443", 200},
		{"Host in capitals", "scoring.example.test", "SCORING.Example.TEST", 200},
		{"Host with a final dot", "scoring.example.test", "scoring.example.test.", 200},
		{"Host names a name the certificate does not cover", "scoring.example.test", "evil.example.net", 421},
		{"Host names another name of the same certificate", "scoring.example.test", "other.example.test", 421},
		{"Host names another name, with a port", "scoring.example.test", "other.example.test:443", 421},
		{"Host is an address", "scoring.example.test", "127.0.0.1", 421},
		{"Host is a longer name", "scoring.example.test", "scoring.example.test.evil.example.net", 421},
		{"no SNI: any Host", "", "evil.example.net", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.up.reset()
			serverName := tc.sni
			if serverName == "" {
				serverName = "127.0.0.1" // an address: Go sends no SNI
			}
			c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: serverName})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			k := &keptConn{Conn: c, br: bufio.NewReader(c)}
			r := k.roundTrip(t, score(tc.host))
			if tc.status != 200 {
				checkError(t, r, tc.status, "MisdirectedRequest", "")
				e.up.requireNone(t)
				// The connection stays usable for the name it was opened for.
				if r := k.roundTrip(t, score(tc.sni)); r.Status != 200 {
					t.Fatalf("the next request, for the SNI name: %d %s", r.Status, r.Body)
				}
				return
			}
			if r.Status != 200 {
				t.Fatalf("status %d %s, want 200", r.Status, r.Body)
			}
		})
	}
	t.Run("the plain listener", func(t *testing.T) {
		if r := plain.do(t, request("GET", "/api/v1/service/iris/score", "Host: evil.example.net", bearer(plain.primary))); r.Status != 200 {
			t.Fatalf("status %d %s, want 200", r.Status, r.Body)
		}
	})
}

// Finding 12a on the HTTP/2 listener: a call whose :authority names another host than the SNI
// of its TLS connection gets UNKNOWN (what a gRPC client makes of the HTTP 421 the HTTP/1.1
// listener answers), with the request id, and never reaches the model. grpc-go itself refuses
// to send such a call, so the client here is net/http's HTTP/2.
func TestFinding12aMisdirectedGRPCCall(t *testing.T) {
	e := newGRPCEnv(t, grpcEnvOptions{tls: true})
	msg, err := proto.Marshal(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	frame = append(frame, msg...)
	for _, tc := range []struct {
		name, sni, authority string
		code                 int // grpc-status
	}{
		{":authority equals SNI", "grpc.example.test", "grpc.example.test", 0},
		{":authority with a port, in capitals", "grpc.example.test", "GRPC.example.test:443", 0},
		{":authority names another name of the certificate", "grpc.example.test", "other.example.test", 2},
		{":authority names a name it does not cover", "grpc.example.test", "evil.example.net", 2},
		{"no SNI", "127.0.0.1", "evil.example.net", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.model.calls.Load()
			conf := e.clientTLS.Clone()
			conf.ServerName = tc.sni
			var protos http.Protocols
			protos.SetHTTP2(true)
			tr := &http.Transport{TLSClientConfig: conf, Protocols: &protos, ForceAttemptHTTP2: true}
			defer tr.CloseIdleConnections()
			req, err := http.NewRequestWithContext(testContext(t), "POST", "https://"+e.addr+methodModelInfer, bytes.NewReader(frame))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.authority
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("Te", "trailers")
			req.Header.Set("Authorization", "Bearer "+e.key)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("HTTP status %d, want 200", resp.StatusCode)
			}
			if got := resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status"); got != strconv.Itoa(tc.code) {
				t.Fatalf("grpc-status %q, want %d", got, tc.code)
			}
			if tc.code == 0 {
				return
			}
			checkEqual(t, "calls the model saw", before, e.model.calls.Load())
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no x-request-id on the refusal")
			}
		})
	}
}

package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/config"
)

// upstream is one model address with its pool of keep-alive connections, created once at start.
type upstream struct {
	url     string
	service string // the service it belongs to, for the log
	host    string // Host header sent to the model
	scheme  string
	client  *fasthttp.HostClient
}

func newUpstream(raw string, svc config.Service) (*upstream, error) {
	u, err := config.ParseUpstream(raw)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	var tlsConf *tls.Config
	if u.TLS {
		scheme = "https"
		if tlsConf, err = upstreamTLS(u.Addr, svc.TLS); err != nil {
			return nil, err
		}
	}
	return &upstream{
		url:     raw,
		service: svc.Name,
		host:    u.Addr,
		scheme:  scheme,
		client: &fasthttp.HostClient{
			Addr:                     u.Addr,
			IsTLS:                    u.TLS,
			TLSConfig:                tlsConf,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true, // the target was checked raw; forward it as it came
			MaxConns:                 svc.MaxConnsPerUpstream,
			MaxConnWaitTimeout:       time.Second,
			MaxIdleConnDuration:      svc.UpstreamIdleTimeout,
			// The connection given back last is taken first: under a steady load the same few
			// connections carry the requests, each taken again within recentLook of the look
			// after its last answer, so it is not looked at again (one system call per request
			// fewer); the ones left idle are closed after upstream_idle_timeout. (FIFO, fasthttp's
			// default, takes the one idle longest, past recentLook at moderate rates.)
			ConnPoolStrategy:      fasthttp.LIFO,
			ReadTimeout:           svc.ScoringTimeout,
			WriteTimeout:          svc.ScoringTimeout,
			MaxResponseBodySize:   int(svc.MaxResponseBytes),
			SecureErrorLogMessage: true,
			RetryIfErr:            retryIdleClose,
			DialTimeout:           dialModel,
			Transport: modelTransport{headerTimeout: svc.ScoringTimeout, idleTimeout: svc.StreamIdleTimeout,
				poolIdle: svc.UpstreamIdleTimeout},
		},
	}, nil
}

// upstreamTLS is the client side of TLS to an https:// model: TLS 1.2 or newer, the configured
// roots (or the system's), the gateway's client certificate for mutual TLS, and the name to check.
func upstreamTLS(addr string, c config.UpstreamTLS) (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(addr)
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		NextProtos: []string{"http/1.1"},
	}
	if c.ServerName != "" {
		conf.ServerName = c.ServerName
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificate in it", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file and tls.key_file: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// A request reaches a model at most once unless it is idempotent. It is sent again (by fasthttp,
// on another connection, once) only when:
//   - nothing of it was written: the connection could not be made, or the first write failed
//     (gateway.forward also tries another replica when the connection could not be made); or
//   - it is replayable (a GET, HEAD or OPTIONS without a body, or a request with an
//     Idempotency-Key and a body held in memory) and it failed on a reused connection before
//     the model sent a byte of its answer: the model closed an idle connection as the request
//     was written to it.
//
// Everything else (a POST the model read and then dropped the connection on, a timeout, a
// partial answer) fails with the model's error: the model may have acted on the request. What
// keeps a request from ever meeting a connection the model is closing is upstream_idle_timeout,
// below the model's own keep-alive timeout, and the check before each reuse that the pooled
// connection is still open and quiet (modelTransport.usable).

// retryIdleClose lets fasthttp send a request once more, when modelTransport has allowed it
// (see above) and the error is one a connection closed under the request gives: the write
// failed, or the model closed the connection without answering a byte (fasthttp reports every
// error on the first byte of an answer, but a timeout, as io.EOF).
func retryIdleClose(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	var op *net.OpError
	writeFailed := errors.As(err, &op) && op.Op == "write"
	return false, attempts < 2 && (errors.Is(err, io.EOF) || writeFailed)
}

// replayable reports whether req may be sent to a model a second time: a GET, HEAD or OPTIONS
// without a body, or a request that carries an Idempotency-Key (or X-Idempotency-Key, as Go's
// net/http reads it) with a body held in memory. A streamed body was read once and cannot be.
func replayable(req *fasthttp.Request) bool {
	if req.IsBodyStream() {
		return false
	}
	h := &req.Header
	if len(h.Peek(headerIdempotencyKey)) > 0 || len(h.Peek("X-Idempotency-Key")) > 0 {
		return true
	}
	return len(req.Body()) == 0 && (h.IsGet() || h.IsHead() || h.IsOptions())
}

const headerIdempotencyKey = "Idempotency-Key"

// modelConn is a connection to a model that knows whether it is a reused one. Its local address
// (what fasthttp keeps in the response as LocalAddr) carries that state, so that modelTransport
// can read it after a failed call.
type modelConn struct {
	net.Conn
	state   connState
	peek    peeker
	quietAt time.Time // when a look last found the connection open and quiet
	// drained: the last read returned fewer bytes than it asked for, so it took all the socket
	// held then (a TCP read returns what is queued, up to the size asked). Set by each read.
	drained bool
	// awaitAnswer: the next write is a request's only one; it is written with writeAwait, which
	// returns when the answer has begun to arrive. Set by exchange, cleared by the write.
	awaitAnswer bool
	await       awaiter
}

// connState is a model connection's local address and what has happened on it.
type connState struct {
	net.Addr
	// served: a whole exchange has completed on the connection (set after each success).
	served atomic.Bool
	// answered: the model has sent bytes since the request was last written.
	answered atomic.Bool
	// sent: the bytes written since the current request began (TLS records included).
	sent atomic.Int64
}

func (c *modelConn) LocalAddr() net.Addr { return &c.state }

func (c *modelConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.drained = err == nil && n > 0 && n < len(p)
	if n > 0 && !c.state.answered.Load() {
		c.state.answered.Store(true)
	}
	return n, err
}

func (c *modelConn) Write(p []byte) (int, error) {
	if c.state.answered.Load() {
		// A new request: nothing of its answer has arrived, nothing of it has been written.
		c.state.answered.Store(false)
		c.state.sent.Store(0)
	}
	c.drained = false
	var n int
	var err error
	if c.awaitAnswer && c.state.sent.Load() == 0 {
		n, err = c.writeAwait(p)
	} else {
		n, err = c.Conn.Write(p)
	}
	c.awaitAnswer = false
	c.state.sent.Add(int64(n))
	return n, err
}

// dialModel dials a model the way fasthttp does by default, and wraps the connection in a
// modelConn.
func dialModel(addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	if timeout > 0 {
		c, err = fasthttp.DialTimeout(addr, timeout)
	} else {
		c, err = fasthttp.Dial(addr)
	}
	if err != nil {
		return nil, err
	}
	mc := &modelConn{Conn: c}
	mc.state.Addr = c.LocalAddr()
	return mc, nil
}

// modelTransport is the transport of every call to a model (scoring calls, mirror copies,
// health checks). It writes a request only to a connection that is open and quiet (usable), and
// allows a failed call to be sent again only under the rule above.
//
// A call whose response has StreamBody set (a scoring call) has its answer read whole, as
// fasthttp does, unless the model streams it: then the answer's body is left on the connection
// as a modelStream (see stream.go). Other calls have their answer read whole.
type modelTransport struct {
	headerTimeout time.Duration // scoring_timeout: request written and response headers read
	idleTimeout   time.Duration // stream_idle_timeout: between two reads of a streamed body
	poolIdle      time.Duration // upstream_idle_timeout: the longest a pooled connection is reused after
}

func (t modelTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	retry, err := t.exchange(hc, req, resp)
	st, _ := resp.LocalAddr().(*connState)
	switch {
	case st == nil: // no connection was made
	case err == nil:
		if !st.served.Load() {
			st.served.Store(true)
		}
	case retry:
		retry = st.sent.Load() == 0 || st.served.Load() && !st.answered.Load() && replayable(req)
	}
	return retry, err
}

// usable reports whether a connection taken from the pool may carry a request: a new one, or a
// pooled one that has been idle for less than upstream_idle_timeout and on which the model has
// neither closed, reset nor sent anything since its last answer. fasthttp closes idle
// connections too, but only when its cleaner next runs.
//
// now is the clock read just before the connection was taken (the call's start), or zero. It
// stands for the present only for a connection that was already in the pool then (last used
// before now): one handed over after a wait for a free connection is judged at a new reading.
func (t modelTransport) usable(c net.Conn, lastUse, now time.Time) bool {
	if lastUse.IsZero() {
		return true // just dialled
	}
	if now.IsZero() || lastUse.After(now) {
		now = time.Now()
	}
	if t.poolIdle > 0 && now.Sub(lastUse) >= t.poolIdle {
		return false
	}
	switch peekConn(c, now) {
	case connQuiet, connUnknown:
		return true
	}
	return false
}

// What a non-blocking look at a connection finds.
const (
	connQuiet   = iota // open, nothing to read
	connClosed         // closed or reset by the model
	connPending        // bytes are waiting to be read
	connUnknown        // the platform cannot tell
)

// recentLook is how long a look that found a connection quiet stands for another: a connection
// the gateway looked at after its last answer (overrun) and takes again from the pool within
// this time is not looked at again. Under load, when the pool's connections are reused every few
// milliseconds, that saves a system call per request. A model server closes an idle connection
// after seconds, not milliseconds; one that dies in that window costs a request on the
// connection a 502, as one that dies just after a look does.
const recentLook = 10 * time.Millisecond

// peekConn looks at a model connection without reading from it (or blocking): for TLS, at the
// TCP connection under it, where a pending TLS record counts as bytes. With a non-zero now, a look
// that found the connection quiet less than recentLook before stands.
func peekConn(c net.Conn, now time.Time) int {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	mc, ok := c.(*modelConn)
	if !ok {
		return connUnknown
	}
	if !now.IsZero() && !mc.quietAt.IsZero() && now.Sub(mc.quietAt) < recentLook {
		return connQuiet
	}
	found := mc.peek.look(mc.Conn)
	if found == connQuiet {
		mc.quietAt = time.Now()
	}
	return found
}

// upstreamError maps a failed call to the model onto the client's status: a timeout (also one in
// the middle of the answer) is 504, a full connection pool 503, anything else (refused, reset, a
// failed TLS handshake, a malformed, truncated or oversized answer) 502. The logged cause names
// the service, the upstream and a low-cardinality reason; the client sees none of it.
func upstreamError(up *upstream, err error) *Error {
	f := &upstreamFailure{service: up.service, upstream: up.url, reason: failureReason(err), err: err}
	switch f.reason {
	case reasonTimeout:
		return errGatewayTimeout.withCause(f)
	case reasonBusy:
		return errUpstreamBusy.withCause(f)
	default:
		return errBadGateway.withCause(f)
	}
}

// timedOut reports whether a call to a model ran out of its scoring_timeout: before the answer
// began (fasthttp's ErrTimeout) or in the middle of it (the connection's read deadline).
func timedOut(err error) bool {
	return errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, os.ErrDeadlineExceeded)
}

// upstreamFailure is why a call to a model failed, as it is logged: a group of the service, the
// upstream, a low-cardinality reason and the error's detail.
type upstreamFailure struct {
	service, upstream, reason string
	err                       error
}

func (f *upstreamFailure) Error() string {
	return fmt.Sprintf("service %s, upstream %s: %s: %v", f.service, f.upstream, f.reason, f.err)
}

func (f *upstreamFailure) Unwrap() error { return f.err }

func (f *upstreamFailure) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("service", f.service),
		slog.String("upstream", f.upstream),
		slog.String("reason", f.reason),
		slog.String("detail", f.err.Error()),
	)
}

// The reasons a call to a model fails, as logged.
const (
	reasonTimeout     = "upstream_timeout"     // no (whole) answer within scoring_timeout
	reasonBusy        = "upstream_busy"        // max_conns_per_upstream connections in use
	reasonUnreachable = "upstream_unreachable" // the connection could not be made
	reasonTLS         = "upstream_tls"         // the TLS handshake failed
	reasonClosed      = "upstream_closed"      // the model closed the connection without answering
	reasonReset       = "upstream_reset"       // the connection was reset, or broke otherwise
	reasonTruncated   = "upstream_truncated"   // the answer ended early
	reasonTooLarge    = "upstream_too_large"   // the answer is over max_response_bytes
	reasonMalformed   = "upstream_malformed"   // the answer is not valid HTTP/1.1
)

// failureReason classifies err, a failed call to a model.
func failureReason(err error) string {
	var op *net.OpError
	var tlsRecord tls.RecordHeaderError
	var tlsAlert tls.AlertError
	var tlsVerify *tls.CertificateVerificationError
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return reasonBusy
	case neverSent(err):
		return reasonUnreachable
	case timedOut(err):
		return reasonTimeout
	case errors.As(err, &tlsRecord), errors.As(err, &tlsAlert), errors.As(err, &tlsVerify),
		errors.As(err, &op) && op.Op == "remote error": // an alert from the model's TLS stack
		return reasonTLS
	case errors.Is(err, syscall.ECONNRESET):
		return reasonReset
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, syscall.EPIPE):
		return reasonClosed
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return reasonTooLarge
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return reasonTruncated // the answer began, then the connection ended
	case errors.As(err, &op):
		return reasonReset
	}
	return reasonMalformed
}

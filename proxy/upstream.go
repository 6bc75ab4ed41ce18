package proxy

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/config"
)

// upstream is one model address with its pool of keep-alive connections, created once at start.
type upstream struct {
	url    string
	host   string // Host header sent to the model
	scheme string
	client *fasthttp.HostClient
}

// upstreamIdleTimeout closes pooled model connections idle this long, before most model servers
// close them on their side.
const upstreamIdleTimeout = 10 * time.Second

func newUpstream(raw string, svc config.Service, maxResponse int64) (*upstream, error) {
	u, err := config.ParseUpstream(raw)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if u.TLS {
		scheme = "https"
	}
	return &upstream{
		url:    raw,
		host:   u.Addr,
		scheme: scheme,
		client: &fasthttp.HostClient{
			Addr:                     u.Addr,
			IsTLS:                    u.TLS,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true, // the target was checked raw; forward it as it came
			MaxConns:                 svc.MaxConnsPerUpstream,
			MaxConnWaitTimeout:       time.Second,
			MaxIdleConnDuration:      upstreamIdleTimeout,
			ReadTimeout:              svc.Timeout,
			WriteTimeout:             svc.Timeout,
			MaxResponseBodySize:      int(maxResponse),
			SecureErrorLogMessage:    true,
			RetryIfErr:               retryIdleClose,
		},
	}, nil
}

// retryIdleClose sends a request once more, on a fresh connection, when the model closed the
// connection without answering a single byte. That is almost always a pooled keep-alive connection
// the model had already closed as idle, which the request never reached. Other errors (timeouts,
// partial answers) are never retried, whatever the method.
func retryIdleClose(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts < 2 && (errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed))
}

// pick returns the next upstream in turn.
func (s *service) pick() *upstream {
	if len(s.upstreams) == 1 {
		return s.upstreams[0]
	}
	n := s.next.Add(1)
	return s.upstreams[int(n%uint32(len(s.upstreams)))]
}

// service is one configured model and its upstreams.
type service struct {
	name      string
	auth      string
	maxBody   int64
	timeout   time.Duration
	upstreams []*upstream
	next      atomic.Uint32
}

// upstreamError maps a failed call to the model onto the client's status: a timeout is 504, a
// full connection pool 503, anything else (refused, reset, malformed or oversized answer) 502.
func upstreamError(err error) *Error {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return errGatewayTimeout.withCause(err)
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return errUpstreamBusy.withCause(err)
	default:
		return errBadGateway.withCause(err)
	}
}

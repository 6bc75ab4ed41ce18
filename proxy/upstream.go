package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
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
		url:    raw,
		host:   u.Addr,
		scheme: scheme,
		client: &fasthttp.HostClient{
			Addr:                     u.Addr,
			IsTLS:                    u.TLS,
			TLSConfig:                tlsConf,
			NoDefaultUserAgentHeader: true,
			DisablePathNormalizing:   true, // the target was checked raw; forward it as it came
			MaxConns:                 svc.MaxConnsPerUpstream,
			MaxConnWaitTimeout:       time.Second,
			MaxIdleConnDuration:      upstreamIdleTimeout,
			ReadTimeout:              svc.ScoringTimeout,
			WriteTimeout:             svc.ScoringTimeout,
			MaxResponseBodySize:      int(svc.MaxResponseBytes),
			SecureErrorLogMessage:    true,
			RetryIfErr:               retryIdleClose,
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

// retryIdleClose sends a request once more, on a fresh connection, when the model closed the
// connection without answering a single byte. That is almost always a pooled keep-alive connection
// the model had already closed as idle, which the request never reached. Other errors (timeouts,
// partial answers) are never retried, whatever the method.
func retryIdleClose(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts < 2 && (errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed))
}

// upstreamError maps a failed call to the model onto the client's status: a timeout is 504, a
// full connection pool 503, anything else (refused, reset, a failed TLS handshake, a malformed or
// oversized answer) 502. The logged cause names the upstream.
func upstreamError(up *upstream, err error) *Error {
	err = fmt.Errorf("upstream %s: %w", up.url, err)
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return errGatewayTimeout.withCause(err)
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return errUpstreamBusy.withCause(err)
	default:
		return errBadGateway.withCause(err)
	}
}

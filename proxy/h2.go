package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoregate/scoregate/config"
)

// h2Plane is the HTTP/2 data plane: a net/http server for gRPC calls to services with protocol
// grpc, and the HTTP/2 transports to their models. It shares the gateway's routing table,
// authenticator, admission, rate limits and telemetry with the HTTP/1.1 plane.
type h2Plane struct {
	server *http.Server
	served atomic.Bool // ServeH2 has been called

	mu         sync.Mutex
	transports map[h2TransportKey]*http.Transport

	// maxConns and maxConnsPerIP are server.max_conns and server.max_conns_per_ip.
	maxConns, maxConnsPerIP int

	// only caches the one grpc service of a routing table, for calls that name none.
	only atomic.Pointer[onlyGRPC]

	// stopping ends when Shutdown's time is up: the calls still open then end UNAVAILABLE
	// (errShuttingDown). calls counts the calls being handled.
	stopping context.Context
	stop     context.CancelFunc
	calls    atomic.Int64
}

type onlyGRPC struct {
	rt  *routes
	svc *service // nil when the table has no grpc service or several
}

// h2DialTimeout bounds connecting to a gRPC model.
const h2DialTimeout = 3 * time.Second

// h2EndGrace bounds how long Shutdown, once its time is up, waits for the calls it ends to send
// their status before it closes the connections.
const h2EndGrace = time.Second

func newH2Plane(g *Gateway, s config.Server) *h2Plane {
	p := &h2Plane{
		transports: map[h2TransportKey]*http.Transport{},
		maxConns:   s.MaxConns, maxConnsPerIP: s.MaxConnsPerIP,
	}
	p.stopping, p.stop = context.WithCancel(context.Background())
	p.server = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.calls.Add(1)
			defer p.calls.Add(-1)
			g.serveGRPC(w, r)
		}),
		ReadHeaderTimeout: s.ReadTimeout,
		IdleTimeout:       s.IdleTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.With("component", "h2").Handler(), slog.LevelDebug),
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 250, PingTimeout: 15 * time.Second},
		Protocols:         new(http.Protocols),
	}
	// HTTP/2 only: over TLS when ServeH2 is given a TLS configuration, else with prior knowledge.
	p.server.Protocols.SetHTTP2(true)
	p.server.Protocols.SetUnencryptedHTTP2(true)
	return p
}

// ServeH2 accepts HTTP/2 connections on ln until Shutdown and serves gRPC calls to the services
// with protocol grpc. With tlsConf it serves TLS offering only ALPN h2 (the configuration is
// copied, its certificates kept); without it, cleartext HTTP/2 with prior knowledge (h2c). It
// returns nil once Shutdown has stopped it.
func (g *Gateway) ServeH2(ln net.Listener, tlsConf *tls.Config) error {
	p := g.h2
	p.served.Store(true)
	ln = newLimitListener(ln, p.maxConns, p.maxConnsPerIP)
	if tlsConf != nil {
		c := tlsConf.Clone()
		c.NextProtos = []string{"h2"}
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		ln = tls.NewListener(ln, c)
	}
	err := p.server.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdown stops the HTTP/2 server: no new calls, calls in flight finish until ctx ends, then
// the rest are ended (their model calls cancelled, the clients told UNAVAILABLE, for at most
// h2EndGrace) and the connections closed; idle model connections are closed.
func (p *h2Plane) shutdown(ctx context.Context) error {
	var err error
	if p.served.Load() {
		if err = p.server.Shutdown(ctx); err != nil {
			p.endCalls()
			p.server.Close()
		}
	} else {
		p.stop()
		p.server.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.transports {
		t.CloseIdleConnections()
	}
	return err
}

// endCalls ends the calls still open: each one's call to its model is cancelled and the client
// gets UNAVAILABLE, in the trailers or as a trailers-only answer. It returns once they have
// answered and their connections are closed, or after h2EndGrace.
func (p *h2Plane) endCalls() {
	p.stop()
	ctx, cancel := context.WithTimeout(context.Background(), h2EndGrace)
	defer cancel()
	for p.calls.Load() > 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	// The last frames of the ended calls are written once their handlers return: Shutdown
	// waits for the connections to end cleanly (GOAWAY was sent, no call is left on them).
	p.server.Shutdown(ctx)
}

// h2TransportKey tells apart the HTTP/2 transports to models: cleartext or TLS (with the
// service's CA, client certificate and server name), and the services' upstream_idle_timeout.
type h2TransportKey struct {
	tls  bool
	conf config.UpstreamTLS
	idle time.Duration
}

// transport returns the HTTP/2 transport to a replica of svc: h2c with prior knowledge for an
// http:// model, TLS with ALPN h2 for an https:// one (with the service's CA, client certificate
// and server name, read once per distinct tls section), idle connections closed after the
// service's upstream_idle_timeout.
func (p *h2Plane) transport(svc *service, r *replica) (*http.Transport, error) {
	key := h2TransportKey{tls: r.scheme == "https", idle: svc.cfg.UpstreamIdleTimeout}
	if key.tls {
		key.conf = svc.cfg.TLS
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.transports[key]; t != nil {
		return t, nil
	}
	var protos http.Protocols
	var conf *tls.Config
	if key.tls {
		var err error
		if conf, err = upstreamTLS("", key.conf); err != nil { // the server name is each model's host unless set
			return nil, err
		}
		conf.NextProtos = []string{"h2"}
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	t := newH2Transport(&protos, conf, key.idle)
	p.transports[key] = t
	return t, nil
}

func newH2Transport(protos *http.Protocols, conf *tls.Config, idle time.Duration) *http.Transport {
	return &http.Transport{
		Protocols:          protos,
		TLSClientConfig:    conf,
		DialContext:        (&net.Dialer{Timeout: h2DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		IdleConnTimeout:    idle,
		DisableCompression: true,
		HTTP2:              &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
}

// grpcServiceOf finds the service of a gRPC call in rt: the one named in the scoregate-service
// metadata, or else the only service with protocol grpc. nil when there is none (or the name is
// of an http service, which is never reached through the HTTP/2 listener).
func (p *h2Plane) grpcServiceOf(rt *routes, name string) *service {
	if name != "" {
		svc := rt.services[name]
		if svc == nil || svc.cfg.Protocol != config.ProtocolGRPC {
			return nil
		}
		return svc
	}
	if o := p.only.Load(); o != nil && o.rt == rt {
		return o.svc
	}
	o := &onlyGRPC{rt: rt}
	for _, svc := range rt.order {
		if svc.cfg.Protocol != config.ProtocolGRPC {
			continue
		}
		if o.svc != nil {
			o.svc = nil
			break
		}
		o.svc = svc
	}
	p.only.Store(o)
	return o.svc
}

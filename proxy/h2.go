package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // a client that compresses its calls with gzip is served
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"

	"github.com/scoregate/scoregate/config"
)

// h2Plane is the HTTP/2 data plane: a gRPC server (grpc-go's own transport) whose one handler
// takes every method of every service, and a gRPC client connection to each model replica it
// forwards to. Messages pass through as bytes, never decoded. It shares the gateway's routing
// table, authenticator, admission, rate limits and telemetry with the HTTP/1.1 plane.
//
// grpc-go's transport is used on both sides rather than net/http's HTTP/2 because it writes a
// call's headers, messages and trailers in as few writes as it can and hands each call across
// fewer goroutines: a unary call through net/http's server and transport cost four times the
// gateway CPU of an HTTP/1.1 request.
type h2Plane struct {
	g *Gateway
	s config.Server

	mu     sync.Mutex
	server *grpc.Server // made by ServeH2, with the listener's credentials
	closed bool         // shutdown has begun: ServeH2 serves nothing
	conns  map[h2ConnKey]*grpc.ClientConn

	// maxConns and maxConnsPerIP are server.max_conns and server.max_conns_per_ip.
	maxConns, maxConnsPerIP int

	// maxMessage is the listener's cap on a request message (messageCap), set by ServeH2.
	maxMessage atomic.Int64

	// only caches the one grpc service of a routing table, for calls that name none.
	only atomic.Pointer[onlyGRPC]

	// stopping ends when Shutdown's time is up: the calls still open then end UNAVAILABLE
	// (errShuttingDown).
	stopping context.Context
	stop     context.CancelFunc
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

// h2MaxConcurrentStreams is how many calls one client connection may have open at once.
const h2MaxConcurrentStreams = 250

// h2StreamWorkers is how many goroutines wait to run calls.
const h2StreamWorkers = 128

// messageCap is the listener's own cap on a request message, fixed when ServeH2 starts: the
// largest max_body_bytes of the gRPC services then (and server.max_body_bytes, the default of
// services added later). The gRPC server reads a message whole before it hands it on, so the
// cap is what keeps a message far over its service's limit from being read at all; each
// service's own max_body_bytes is checked as its messages are forwarded.
func (p *h2Plane) messageCap() int {
	c := p.s.MaxBodyBytes
	for _, svc := range p.g.routes.Load().order {
		if svc.cfg.Protocol == config.ProtocolGRPC {
			c = max(c, svc.maxBody)
		}
	}
	return int(min(max(c, 0), maxInt32))
}

func newH2Plane(g *Gateway, s config.Server) *h2Plane {
	p := &h2Plane{
		g: g, s: s,
		conns:    map[h2ConnKey]*grpc.ClientConn{},
		maxConns: s.MaxConns, maxConnsPerIP: s.MaxConnsPerIP,
	}
	p.stopping, p.stop = context.WithCancel(context.Background())
	return p
}

// ServeH2 accepts HTTP/2 connections on ln until Shutdown and serves gRPC calls to the services
// with protocol grpc. With tlsConf it serves TLS offering only ALPN h2 (the configuration is
// copied, its certificates kept); without it, cleartext HTTP/2 with prior knowledge (h2c). It
// returns nil once Shutdown has stopped it.
func (g *Gateway) ServeH2(ln net.Listener, tlsConf *tls.Config) error {
	p := g.h2
	p.maxMessage.Store(int64(p.messageCap()))
	opts := []grpc.ServerOption{
		grpc.UnknownServiceHandler(g.serveGRPC),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(int(p.maxMessage.Load())),
		grpc.MaxSendMsgSize(maxInt32),
		grpc.MaxConcurrentStreams(h2MaxConcurrentStreams),
		// Calls run on long-lived goroutines whose stacks have grown to what a call needs, instead
		// of a new goroutine per call that grows its stack each time (a tenth of the gateway's
		// CPU per call when it did). Past h2StreamWorkers calls at once, calls get goroutines of
		// their own.
		grpc.NumStreamWorkers(h2StreamWorkers),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: p.s.IdleTimeout,
			Time:              15 * time.Second,
			Timeout:           15 * time.Second,
		}),
		// Clients may ping as often as every 5 s, between calls too: a stricter policy would
		// answer a client's keepalive with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if p.s.ReadTimeout > 0 { // the TLS handshake and the client's HTTP/2 preface
		opts = append(opts, grpc.ConnectionTimeout(p.s.ReadTimeout))
	}
	if p.s.MaxHeaderBytes > 0 {
		opts = append(opts, grpc.MaxHeaderListSize(uint32(p.s.MaxHeaderBytes)))
	}
	if tlsConf != nil {
		c := tlsConf.Clone()
		c.NextProtos = []string{"h2"}
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(c)))
	}
	srv := grpc.NewServer(opts...)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil
	}
	p.server = srv
	p.mu.Unlock()
	err := srv.Serve(newLimitListener(ln, p.maxConns, p.maxConnsPerIP))
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// shutdown stops the HTTP/2 server: no new calls, calls in flight finish until ctx ends, then
// the rest are ended (their model calls cancelled, the clients told UNAVAILABLE, for at most
// h2EndGrace) and the connections closed. The connections to models are closed last.
func (p *h2Plane) shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	srv := p.server
	p.mu.Unlock()
	var err error
	if srv != nil {
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			err = ctx.Err()
			p.endCalls(srv, stopped)
		}
	}
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, cc := range p.conns {
		cc.Close()
		delete(p.conns, k)
	}
	return err
}

// endCalls ends the calls still open: each one's call to its model is cancelled and the client
// gets UNAVAILABLE, in the trailers or as a trailers-only answer. It returns once they have
// answered and their connections are closed, or after h2EndGrace, closing what is left.
func (p *h2Plane) endCalls(srv *grpc.Server, stopped <-chan struct{}) {
	p.stop()
	grace := time.NewTimer(h2EndGrace)
	defer grace.Stop()
	select {
	case <-stopped: // every call has answered and every connection has closed
	case <-grace.C:
		srv.Stop()
	}
}

// h2ConnKey tells apart the client connections to models: the replica's address, cleartext or
// TLS (with the service's CA, client certificate and server name), and the services'
// upstream_idle_timeout.
type h2ConnKey struct {
	addr string
	tls  bool
	conf config.UpstreamTLS
	idle time.Duration
}

// conn returns the gRPC client connection to replica r of svc: h2c with prior knowledge for an
// http:// model, TLS with ALPN h2 for an https:// one (with the service's CA, client certificate
// and server name), made once and kept; it goes idle, its connection closed, after the
// service's upstream_idle_timeout without calls.
func (p *h2Plane) conn(svc *service, r *replica) (*grpc.ClientConn, error) {
	key := h2ConnKey{addr: r.host, tls: r.scheme == "https", idle: svc.cfg.UpstreamIdleTimeout}
	if key.tls {
		key.conf = svc.cfg.TLS
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cc := p.conns[key]; cc != nil {
		return cc, nil
	}
	if p.closed {
		return nil, errShuttingDown
	}
	creds := insecure.NewCredentials()
	if key.tls {
		conf, err := upstreamTLS(r.host, key.conf)
		if err != nil {
			return nil, err
		}
		conf.NextProtos = []string{"h2"}
		creds = credentials.NewTLS(conf)
	}
	cc, err := grpc.NewClient("passthrough:///"+r.host,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallSendMsgSize(maxInt32)),
		grpc.WithConnectParams(grpc.ConnectParams{
			// A model that comes back is reached again within a second or two; passive
			// ejection, not the connection's backoff, keeps calls away from a failing one.
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: h2DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 15 * time.Second}),
		grpc.WithIdleTimeout(max(key.idle, time.Second)),
		grpc.WithStatsHandler(trailerSeen{}),
		grpc.WithDisableServiceConfig(),
	)
	if err != nil {
		return nil, err
	}
	p.conns[key] = cc
	return cc, nil
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

// rawCodec passes messages through as the bytes they are, on both sides of the gateway: what
// it unmarshals is a reference to the received buffers, and marshalling hands that reference
// on to be written and freed.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) { return *v.(*mem.BufferSlice), nil }

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	data.Ref()
	*v.(*mem.BufferSlice) = data
	return nil
}

// Name is the codec's content subtype: a model gets application/grpc+proto, the same as
// application/grpc.
func (rawCodec) Name() string { return "proto" }

// grpcCallKey is the context key of the grpcCall a model call belongs to.
type grpcCallKey struct{}

// trailerSeen notes on a call when the model's trailers arrive, so that the status the stream
// ends with is known to be the model's rather than one the transport made up (a reset, a
// connection gone).
type trailerSeen struct{}

func (trailerSeen) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (trailerSeen) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.InTrailer); ok {
		if c, ok := ctx.Value(grpcCallKey{}).(*grpcCall); ok {
			c.trailers.Store(true)
		}
	}
}

func (trailerSeen) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (trailerSeen) HandleConn(context.Context, stats.ConnStats) {}

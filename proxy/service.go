package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scoregate/scoregate/authn"
	"github.com/scoregate/scoregate/config"
	"github.com/scoregate/scoregate/internal/ratelimit"
)

// service is one configured model: its deployments of replicas, limits and rules. A service is
// never changed once built: a reload builds a new one (sharing the backend when the replicas'
// settings are the same) and swaps the routing table.
type service struct {
	name    string
	auth    string
	openai  bool // api: openai: its language-model calls are read (openai.go)
	maxBody int64
	timeout time.Duration
	log     *slog.Logger
	cfg     config.Service // what it was built from, to tell an unchanged service on reload

	*backend
	totalWeight int
	cumulative  []int

	blockedPaths []string    // in normalizePath's canonical form
	cors         *corsPolicy // nil without services[].cors

	perKey, perPrincipal ratelimit.Limit
	keyLimitKeys         map[string]string // key slot → rate-limit key, built once
	principalLimitPrefix string            // "principal:<service>:", the start of a principal's rate-limit key
	tokens               tokenLimits       // token_limit (openai_tokens.go)

	mirror        *deployment
	mirrorPercent float64
	mirrors       atomic.Int32 // mirrored requests in flight
	mirrorTimeout time.Duration

	passiveFailures int32
	ejectionTime    time.Duration
}

// backend is a service's replicas: their connection pools, admission queues, state and health
// checks. It lives on across a reload that changes only the service's rules (auth, weights,
// limits, blocked paths, mirror, passive ejection), so that requests in flight and in the queues
// keep their places and the replicas their state.
type backend struct {
	settings    config.Service // the settings it was built from, as backendSettings gives them
	deployments []*deployment
	byName      map[string]*deployment
	health      *healthChecker
}

// backendSettings is the part of a service's configuration that its backend is built from: all
// of it but the rules applied per request, and the deployments' weights.
func backendSettings(sc config.Service) config.Service {
	deps := slices.Clone(sc.DeploymentList())
	for i := range deps {
		deps[i].Weight = 0
	}
	sc.Upstreams, sc.Deployments = nil, deps
	sc.Auth, sc.MaxBodyBytes, sc.BlockedPaths = "", 0, nil
	sc.RateLimit, sc.Mirror, sc.TokenLimit = config.RateLimit{}, config.Mirror{}, config.TokenLimit{}
	sc.PassiveFailures, sc.EjectionTime = 0, 0
	sc.TokenLifetime, sc.TokenRefreshAfter, sc.Issuers = 0, 0, nil
	sc.CORS = config.CORS{}
	sc.API = ""
	return sc
}

// newService builds the service of sc. With prev, the service of the same name being replaced,
// it takes over prev's backend when the replicas' settings are unchanged; otherwise it builds
// its own and carries over what is known of each replica it shares an address with.
func newService(sc config.Service, prev *service, log *slog.Logger) (*service, error) {
	svc := &service{
		name:            sc.Name,
		auth:            sc.Auth,
		openai:          sc.API == config.APIOpenAI,
		maxBody:         sc.MaxBodyBytes,
		timeout:         sc.ScoringTimeout,
		log:             log.With("service", sc.Name),
		cfg:             sc,
		perKey:          ratelimit.Limit{Rate: sc.RateLimit.PerKey.RequestsPerSecond, Burst: sc.RateLimit.PerKey.Burst},
		perPrincipal:    ratelimit.Limit{Rate: sc.RateLimit.PerPrincipal.RequestsPerSecond, Burst: sc.RateLimit.PerPrincipal.Burst},
		passiveFailures: int32(sc.PassiveFailures),
		ejectionTime:    sc.EjectionTime,
		mirrorTimeout:   sc.ScoringTimeout,
		cors:            newCORSPolicy(sc.CORS),
		tokens:          newTokenLimits(sc),
	}
	settings := backendSettings(sc)
	if prev != nil && reflect.DeepEqual(prev.settings, settings) {
		svc.backend = prev.backend
	} else {
		b, err := newBackend(sc, settings)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			b.inherit(prev.backend)
		}
		svc.backend = b
		if sc.HealthCheck.Path != "" {
			b.health = startHealthChecks(b, sc.HealthCheck, svc.log)
		}
	}
	for _, dc := range sc.DeploymentList() {
		svc.totalWeight += max(dc.Weight, 0)
		svc.cumulative = append(svc.cumulative, svc.totalWeight)
	}
	if sc.Mirror.Deployment != "" && sc.Mirror.Percent > 0 {
		svc.mirror = svc.byName[sc.Mirror.Deployment]
		svc.mirrorPercent = sc.Mirror.Percent / 100
	}
	for _, p := range sc.BlockedPaths {
		svc.blockedPaths = append(svc.blockedPaths, normalizePath([]byte(p)))
	}
	svc.keyLimitKeys = map[string]string{
		authn.SlotPrimary:   "key:" + sc.Name + ":" + authn.SlotPrimary,
		authn.SlotSecondary: "key:" + sc.Name + ":" + authn.SlotSecondary,
	}
	svc.principalLimitPrefix = "principal:" + sc.Name + ":"
	return svc, nil
}

// newBackend builds the replicas of sc's deployments, one connection pool each. Health checks are
// started by the caller.
func newBackend(sc config.Service, settings config.Service) (*backend, error) {
	b := &backend{settings: settings, byName: map[string]*deployment{}}
	for _, dc := range sc.DeploymentList() {
		d := &deployment{
			name:        dc.Name,
			balance:     sc.Balance,
			maxInflight: int32(sc.MaxConcurrentRequests),
			maxWait:     sc.MaxRequestWait,
			maxQueue:    sc.MaxQueueLength,
		}
		for _, raw := range dc.Upstreams {
			up, err := newUpstream(raw, sc)
			if err != nil {
				return nil, err
			}
			r := &replica{upstream: up, deployment: dc.Name}
			r.healthy.Store(true)
			d.replicas = append(d.replicas, r)
		}
		b.deployments = append(b.deployments, d)
		b.byName[d.name] = d
	}
	return b, nil
}

// inherit carries over, from the backend being replaced, the state of each replica of the same
// deployment and address: a passive ejection, and the health checks' verdict when this backend
// checks health too (without checks nothing would ever bring an unhealthy replica back).
func (b *backend) inherit(prev *backend) {
	checked := b.settings.HealthCheck.Path != ""
	for _, d := range b.deployments {
		old := prev.byName[d.name]
		if old == nil {
			continue
		}
		for _, r := range d.replicas {
			for _, o := range old.replicas {
				if o.url != r.url {
					continue
				}
				r.ejectedUntil.Store(o.ejectedUntil.Load())
				if checked {
					r.healthy.Store(o.healthy.Load())
				}
			}
		}
	}
}

// idle reports whether no request holds one of the backend's replicas or waits in its queues.
func (b *backend) idle() bool {
	for _, d := range b.deployments {
		if d.queued.Load() != 0 {
			return false
		}
		for _, r := range d.replicas {
			if r.inflight.Load() != 0 {
				return false
			}
		}
	}
	return true
}

// stop ends health checks and closes idle model connections. A request that still takes one of
// its replicas afterwards is served on a fresh connection, closed once idle.
func (b *backend) stop() {
	if b.health != nil {
		b.health.stop()
	}
	for _, d := range b.deployments {
		for _, r := range d.replicas {
			r.client.CloseIdleConnections()
		}
	}
}

// observe notes the outcome of a call for passive ejection: connection failures in a row take a
// replica out for ejectionTime; any answer resets the count.
func (s *service) observe(r *replica, err error) {
	if err == nil || !connectionFailure(err) {
		if r.failures.Load() != 0 {
			r.failures.Store(0)
		}
		return
	}
	n := r.failures.Add(1)
	if s.passiveFailures > 0 && n >= s.passiveFailures {
		until := time.Now().Add(s.ejectionTime)
		if r.ejectedUntil.Swap(until.UnixNano()) <= time.Now().UnixNano() {
			s.log.Warn("replica ejected after connection failures", "deployment", r.deployment, "upstream", r.url,
				"failures", n, "for", s.ejectionTime.String(), "err", err)
		}
		r.failures.Store(0)
	}
}

// connectionFailure reports whether err means the replica could not be talked to at all (as
// opposed to a slow or malformed answer): a slow answer, even one that stalls half way, is not.
func connectionFailure(err error) bool {
	var op *net.OpError
	switch {
	case neverSent(err):
		return true
	case timedOut(err):
		return false
	}
	return errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed)
}

// neverSent reports whether the request cannot have reached the model: the connection was never
// made (for a gRPC call, its stream could not be started). Only such requests are retried on
// another replica.
func neverSent(err error) bool {
	var op *net.OpError
	return (errors.As(err, &op) && op.Op == "dial") || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.Is(err, errModelNotReached)
}

// tryAcquire takes a free replica other than skip without waiting, or returns nil.
func (d *deployment) tryAcquire(skip *replica) *replica {
	now := time.Now().UnixNano()
	if d.maxInflight > 0 {
		d.mu.Lock()
		defer d.mu.Unlock()
	}
	r := d.pick(now, skip)
	if r != nil {
		r.inflight.Add(1)
	}
	return r
}

// blocked reports whether the forwarded target falls under one of the service's blocked paths,
// compared in the canonical form of normalizePath, segment by segment: /admin blocks /admin and
// /admin/x, not /administrator.
func (s *service) blocked(target []byte) bool {
	if len(s.blockedPaths) == 0 {
		return false
	}
	if q := bytes.IndexByte(target, '?'); q >= 0 {
		target = target[:q]
	}
	p := normalizePath(target)
	for _, b := range s.blockedPaths {
		if b == "" || strings.HasPrefix(p, b) && (len(p) == len(b) || p[len(b)] == '/') {
			return true
		}
	}
	return false
}

// normalizePath gives a path (without its query) the one canonical form that blocked paths are
// compared in, chosen so that every spelling some model server reads as a path maps onto it:
//
//   - each segment's name ends at its first ';', before and after decoding (path parameters, as
//     Tomcat and Spring strip them; an encoded %3B too, for servers that decode first);
//   - percent-escapes are decoded once (the router has refused encoded '/', backslash, '.', '%'
//     and control bytes, so decoding cannot make a new segment);
//   - leading spaces, and trailing dots and spaces, are dropped from a name (as Windows and IIS
//     do), so "admin.", "admin%20" and "admin..;" are "admin";
//   - a segment of dots alone (and spaces) is "." when it has one dot, ".." when it has more;
//   - "." and empty segments are dropped, ".." removes the segment before it;
//   - letters are lowered.
//
// The result is "/" and the segments joined by "/", or "" for the root.
func normalizePath(p []byte) string {
	var segs []string
	for seg := range strings.SplitSeq(string(p), "/") {
		seg, _, _ = strings.Cut(seg, ";")
		if u, err := url.PathUnescape(seg); err == nil {
			seg = u
		}
		seg, _, _ = strings.Cut(seg, ";")
		seg = strings.TrimLeft(seg, " ")
		if name := strings.TrimRight(seg, ". "); name != "" {
			seg = name
		} else if dots := strings.Count(seg, "."); dots > 1 {
			seg = ".."
		} else if dots == 1 {
			seg = "."
		}
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, strings.ToLower(seg))
		}
	}
	if len(segs) == 0 {
		return ""
	}
	return "/" + strings.Join(segs, "/")
}

// maybeMirror sends a copy of a share of requests to the mirror deployment in the background and
// discards its answer. Streamed bodies are not mirrored (they are read once), nor are requests
// while 64 copies are already in flight or no mirror replica is free.
func (s *service) maybeMirror(req *fasthttp.Request) {
	if req.IsBodyStream() || rand.Float64() >= s.mirrorPercent || !s.reserveMirror() {
		return
	}
	r := s.mirror.tryAcquire(nil)
	if r == nil {
		s.mirrors.Add(-1)
		return
	}
	copyReq := fasthttp.AcquireRequest()
	req.CopyTo(copyReq)
	copyReq.Header.SetHost(r.host)
	copyReq.URI().SetScheme(r.scheme)
	go func() {
		defer s.mirrors.Add(-1)
		defer s.mirror.release(r)
		defer fasthttp.ReleaseRequest(copyReq)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		err := r.client.DoTimeout(copyReq, resp, s.mirrorTimeout)
		s.observe(r, err)
	}()
}

const maxMirrorsInFlight = 64

// reserveMirror takes one of the maxMirrorsInFlight places for a mirrored copy, or reports false
// when all are taken. Checking and taking are one step, so requests arriving together never take
// more places than there are.
func (s *service) reserveMirror() bool {
	for {
		n := s.mirrors.Load()
		if n >= maxMirrorsInFlight {
			return false
		}
		if s.mirrors.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// streamedBody is a request body on its way from the client to the model: it ends the body at
// the service's limit and remembers why reading the client's side failed, so that a broken or
// oversized body is the client's error (400, 413), not the model's (502).
type streamedBody struct {
	r       io.Reader
	left    int64
	exact   bool // left is what the Content-Length still promises, not the service's limit
	over    bool
	readErr error
	head    *[]byte // pooled, for a chunked body's first part
}

var errBodyLimit = errors.New("request body over the service's max_body_bytes")

// errClientAborted is a streamed request body that ended before its declared length, or in the
// middle of a chunk: the client went away (or cut its upload short). It is the client's failure,
// whatever the model then did with the part it got.
var errClientAborted = withClose(newError(400, "BadRequest", "client_aborted", "the request body ended before it was complete"))

func (b *streamedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body at the limit from one over it.
		var one [1]byte
		if n, _ := b.r.Read(one[:]); n > 0 {
			b.over = true
			return 0, errBodyLimit
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err == io.EOF && b.exact && b.left > 0 {
		err = io.ErrUnexpectedEOF // fasthttp ends a body cut short with a plain EOF
	}
	if err != nil && err != io.EOF {
		b.readErr = err
	}
	return n, err
}

// clientError is what a failed call means when the client's body was at fault.
func (b *streamedBody) clientError() error {
	switch {
	case b == nil:
		return nil
	case b.over:
		return errBodyTooLarge
	case errors.Is(b.readErr, io.ErrUnexpectedEOF):
		return errClientAborted.withCause(b.readErr)
	case b.readErr != nil:
		return errBadFraming.withCause(b.readErr)
	}
	return nil
}

// WriteTo sends the body on as it arrives: each read (of up to bufferedBodyBytes, what has come
// from the client) is written to the model at once. fasthttp's own copy goes through its 4 KB
// write buffer, a write (and a segment for the model to read) for every 4 KB.
func (b *streamedBody) WriteTo(w io.Writer) (int64, error) { return copyBody(w, b, b) }

// SupportsBodyWriteTo tells fasthttp to send the body with WriteTo.
func (*streamedBody) SupportsBodyWriteTo() bool { return true }

// copyBody copies r, the body b (maybe wrapped), to w, each read written at once, through a buffer
// of bufferedBodyBytes: what a request whose body is read whole holds too. A chunked body's first
// part is in b.head already: the first read takes all of it, in place, and the same buffer then
// carries the rest, so that the body holds one buffer, not two. Any other takes a pooled one.
func copyBody(w io.Writer, r io.Reader, b *streamedBody) (int64, error) {
	var p []byte
	if b.head != nil {
		p = *b.head // len(p) is at least the first part's, which the first read returns whole
	} else {
		buf := headPool.Get().(*[]byte)
		defer headPool.Put(buf)
		p = *buf
	}
	var written int64
	for {
		n, err := r.Read(p)
		if n > 0 {
			m, werr := w.Write(p[:n])
			written += int64(m)
			switch {
			case werr != nil:
				return written, werr
			case m != n:
				return written, io.ErrShortWrite
			}
		}
		switch {
		case err == io.EOF:
			return written, nil
		case err != nil:
			return written, err
		}
	}
}

func (b *streamedBody) release() {
	if b != nil && b.head != nil {
		headPool.Put(b.head)
		b.head = nil
	}
}

// headPool holds buffers for the first bufferedBodyBytes of chunked bodies.
var headPool = sync.Pool{New: func() any { b := make([]byte, bufferedBodyBytes+1); return &b }}

// prepareBody readies a body that fasthttp left as a stream. A body of up to bufferedBodyBytes
// is read whole and sent with its Content-Length (a chunked one de-chunked, its framing fully
// checked before the model sees a byte). A longer one streams through as it arrives (a chunked
// one stays chunked, with the part already read in front), and the service's limit holds.
func prepareBody(req *fasthttp.Request, maxBody int64) (*streamedBody, error) {
	stream := req.BodyStream()
	cl := req.Header.ContentLength()
	if cl > bufferedBodyBytes {
		b := &streamedBody{r: stream, left: int64(cl), exact: true}
		req.SetBodyStream(b, cl)
		return b, nil
	}
	head := headPool.Get().(*[]byte)
	buf := *head
	if cl >= 0 {
		buf = buf[:cl]
	}
	n, err := readFull(stream, buf)
	switch {
	case err == io.EOF || (err == nil && cl >= 0): // the whole body
		if int64(n) > maxBody {
			headPool.Put(head)
			return nil, errBodyTooLarge
		}
		req.SetBody(buf[:n])
		headPool.Put(head)
		return nil, nil
	case err != nil:
		headPool.Put(head)
		return nil, errBadFraming.withCause(err)
	case int64(n) > maxBody:
		headPool.Put(head)
		return nil, errBodyTooLarge
	}
	b := &streamedBody{r: io.MultiReader(bytes.NewReader(buf[:n]), stream), left: maxBody, head: head}
	req.SetBodyStream(b, -1)
	return b, nil
}

// readFull reads until buf is full (err nil) or the stream ends (io.EOF) or fails. Unlike
// io.ReadFull it passes the stream's own errors on unchanged, so a truncated body is never
// taken for a whole one.
func readFull(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rateLimit applies the service's per-key or per-principal rate to the caller. Its keys name the
// service with the caller, never a credential: "key:<service>:<slot>" and
// "principal:<service>:<issuer>|<subject>" (principalKey), so that each service's rate is a
// budget of its own: a caller's requests to one service take nothing from its rate on another.
func (g *Gateway) rateLimit(svc *service, c authn.Caller) error {
	if g.limiter == nil {
		return nil
	}
	var key string
	var lim ratelimit.Limit
	switch {
	case svc.perKey.Rate > 0 && c.KeySlot != "":
		key, lim = svc.keyLimitKeys[c.KeySlot], svc.perKey
	case svc.perPrincipal.Rate > 0 && c.Token.Subject != "":
		key, lim = principalKey(svc.principalLimitPrefix, c.Token.Issuer, c.Token.Subject), svc.perPrincipal
	default:
		return nil
	}
	d := g.limiter.Allow(context.Background(), key, lim)
	if d.Allowed {
		return nil
	}
	e := *errRateLimited // a copy: the shared error must not change
	e.RetryAfter = max(1, int((d.RetryAfter+time.Second-1)/time.Second))
	return &e
}

// admissionError maps a failure to get a replica onto 503 with Retry-After.
func admissionError(err error) error {
	if errors.Is(err, errNoAvailable) {
		return errNoReplica.withCause(err)
	}
	return errShed.withCause(err)
}

package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/sdk/resource"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpHTTP exports spans over OTLP/HTTP with protobuf bodies (http/protobuf), in place of the
// library's otlptracehttp client: each sampled Record is encoded straight into the next request's
// body (spanEncoder) and goes back to the pool at once, and upload POSTs the body, reused from
// batch to batch, retrying as the library does. Only the recorder goroutine uses it.
type otlpHTTP struct {
	cfg    otlpHTTPConfig
	client *http.Client
	enc    spanEncoder
	gz     *gzip.Writer // made at the first compressed batch
	gzBody bytes.Buffer // the compressed body
	resp   bytes.Buffer // the response body being read
	log    *slog.Logger
	// retryFrom is the first wait before a retry (retryInitial; shorter in tests).
	retryFrom time.Duration
}

// otlpHTTPConfig is what the OTEL_EXPORTER_OTLP_* variables say of the OTLP/HTTP exporter.
type otlpHTTPConfig struct {
	url     string        // where batches are POSTed
	header  http.Header   // every request's header: User-Agent, the configured headers, Content-Type
	timeout time.Duration // for one batch, retries included
	gzip    bool
	tls     *tls.Config // nil: the system's roots, no client certificate
}

const (
	// otlpDefaultEndpoint is where spans go when OTEL_TRACES_EXPORTER=otlp names no endpoint (the
	// specification's default; the library's client would use https).
	otlpDefaultEndpoint = "http://localhost:4318"
	// otlpDefaultTimeout is the specification's default OTEL_EXPORTER_OTLP_TIMEOUT.
	otlpDefaultTimeout = 10 * time.Second
	// otlpMaxResponse bounds how much of a response body is read (the library's limit).
	otlpMaxResponse = 4 << 20
	// otlpMaxBuffer bounds the body buffer kept between batches; a batch of unusually large spans
	// that grew it past this gets a new one afterwards.
	otlpMaxBuffer = 8 << 20
)

// newOTLPHTTP reads the exporter's configuration from the environment (getenv, files through
// readFile), as the specification and the library's client read it, OTEL_EXPORTER_OTLP_TRACES_*
// before OTEL_EXPORTER_OTLP_*. An invalid value is an error naming its variable, where the
// library would log it and carry on without it.
func newOTLPHTTP(getenv func(string) string, readFile func(string) ([]byte, error), res *resource.Resource, log *slog.Logger) (*otlpHTTP, error) {
	cfg, err := otlpHTTPConfigFromEnv(getenv, readFile)
	if err != nil {
		return nil, err
	}
	// The library's transport: http.DefaultTransport's settings, in a transport of its own.
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       cfg.tls,
	}
	enc, err := newSpanEncoder(res)
	if err != nil {
		return nil, err
	}
	return &otlpHTTP{cfg: cfg, client: &http.Client{Transport: transport}, enc: enc, log: log, retryFrom: retryInitial}, nil
}

// otlpEnv returns the trimmed value of OTEL_EXPORTER_OTLP_TRACES_<name> or, when that is unset or
// blank, of OTEL_EXPORTER_OTLP_<name>, with the name of the variable it came from.
func otlpEnv(getenv func(string) string, name string) (value, variable string) {
	for _, variable := range []string{"OTEL_EXPORTER_OTLP_TRACES_" + name, "OTEL_EXPORTER_OTLP_" + name} {
		if v := strings.TrimSpace(getenv(variable)); v != "" {
			return v, variable
		}
	}
	return "", ""
}

// otlpHTTPConfigFromEnv reads ENDPOINT, HEADERS, TIMEOUT, COMPRESSION, CERTIFICATE and
// CLIENT_CERTIFICATE with CLIENT_KEY. INSECURE is not read: for OTLP/HTTP the endpoint's scheme
// decides, as the specification says (the library's client would let it override the scheme).
func otlpHTTPConfigFromEnv(getenv func(string) string, readFile func(string) ([]byte, error)) (otlpHTTPConfig, error) {
	cfg := otlpHTTPConfig{timeout: otlpDefaultTimeout}

	// The traces endpoint is used as it is (its root when it has no path); the general one is a
	// base to which /v1/traces is added.
	endpoint, variable := otlpEnv(getenv, "ENDPOINT")
	tracesEndpoint := variable == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	if endpoint == "" {
		endpoint = otlpDefaultEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, fmt.Errorf("%s %q: want an http:// or https:// URL with a host", variable, endpoint)
	}
	target := url.URL{Scheme: u.Scheme, Host: u.Host, Path: path.Join(u.Path, "/v1/traces")}
	if tracesEndpoint {
		target.Path = u.Path
		if target.Path == "" {
			target.Path = "/"
		}
	}
	cfg.url = target.String()

	cfg.header = http.Header{}
	cfg.header.Set("User-Agent", "scoregate")
	if v, variable := otlpEnv(getenv, "HEADERS"); v != "" {
		if err := parseOTLPHeaders(cfg.header, v); err != nil {
			return cfg, fmt.Errorf("%s: %w", variable, err)
		}
	}
	cfg.header.Set("Content-Type", "application/x-protobuf")

	if v, variable := otlpEnv(getenv, "TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return cfg, fmt.Errorf("%s %q: want a whole number of milliseconds", variable, v)
		}
		// 0, which the specification leaves open, gets the library's limit on retrying.
		cfg.timeout = time.Duration(ms) * time.Millisecond
		if ms == 0 {
			cfg.timeout = time.Minute
		}
	}

	switch v, variable := otlpEnv(getenv, "COMPRESSION"); v {
	case "", "none":
	case "gzip":
		cfg.gzip = true
		cfg.header.Set("Content-Encoding", "gzip")
	default:
		return cfg, fmt.Errorf("%s %q: use gzip or none", variable, v)
	}

	tlsCfg := &tls.Config{}
	if file, variable := otlpEnv(getenv, "CERTIFICATE"); file != "" {
		pem, err := readFile(file)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", variable, err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("%s %s: no PEM certificate in it", variable, file)
		}
	}
	for _, prefix := range []string{"OTEL_EXPORTER_OTLP_TRACES_", "OTEL_EXPORTER_OTLP_"} {
		certVar, keyVar := prefix+"CLIENT_CERTIFICATE", prefix+"CLIENT_KEY"
		certFile, keyFile := strings.TrimSpace(getenv(certVar)), strings.TrimSpace(getenv(keyVar))
		switch {
		case certFile == "" && keyFile == "":
			continue
		case certFile == "":
			return cfg, fmt.Errorf("%s is set without %s", keyVar, certVar)
		case keyFile == "":
			return cfg, fmt.Errorf("%s is set without %s", certVar, keyVar)
		}
		certPEM, err := readFile(certFile)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", certVar, err)
		}
		keyPEM, err := readFile(keyFile)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", keyVar, err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return cfg, fmt.Errorf("%s and %s: %w", certVar, keyVar, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
		break // the traces pair, when set, wins
	}
	if tlsCfg.RootCAs != nil || tlsCfg.Certificates != nil {
		if u.Scheme != "https" {
			// The library's client refuses this too: the settings would be silently unused.
			return cfg, fmt.Errorf("TLS settings (OTEL_EXPORTER_OTLP_*CERTIFICATE, *CLIENT_KEY) for the plain http endpoint %s", cfg.url)
		}
		cfg.tls = tlsCfg
	}
	return cfg, nil
}

// parseOTLPHeaders adds to h the headers of an OTEL_EXPORTER_OTLP_HEADERS value: comma-separated
// key=value pairs in the W3C baggage form, each value URL-decoded, spaces around keys and values
// trimmed, empty members skipped.
func parseOTLPHeaders(h http.Header, v string) error {
	for member := range strings.SplitSeq(v, ",") {
		if strings.TrimSpace(member) == "" {
			continue
		}
		name, value, ok := strings.Cut(member, "=")
		name = strings.TrimSpace(name)
		if !ok {
			return fmt.Errorf("header %q: want key=value", name)
		}
		if !validHeaderName(name) {
			return fmt.Errorf("header name %q: not an HTTP token", name)
		}
		decoded, err := url.PathUnescape(value)
		if err != nil {
			return fmt.Errorf("header %s: URL-decoding its value: %w", name, err)
		}
		h.Set(name, strings.TrimSpace(decoded))
	}
	return nil
}

// validHeaderName says whether name is an HTTP token (RFC 9110), as the library checks it.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// add encodes r's span into the next batch. r is not kept.
func (x *otlpHTTP) add(t *Telemetry, r *Record) { x.enc.add(t, r) }

// upload sends the spans added since the last upload as one request, within the configured
// timeout and ctx, retrying as the library does; then the batch starts anew, sent or not.
func (x *otlpHTTP) upload(ctx context.Context) error {
	if x.enc.spans == 0 {
		return nil
	}
	defer x.enc.reset()
	body := x.enc.request()
	if x.cfg.gzip {
		x.gzBody.Reset()
		if x.gz == nil {
			x.gz = gzip.NewWriter(&x.gzBody)
		} else {
			x.gz.Reset(&x.gzBody)
		}
		if _, err := x.gz.Write(body); err != nil {
			return err
		}
		if err := x.gz.Close(); err != nil {
			return err
		}
		body = x.gzBody.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, x.cfg.timeout)
	defer cancel()
	err := x.send(ctx, body)
	if x.gzBody.Cap() > otlpMaxBuffer {
		x.gzBody = bytes.Buffer{}
	}
	return err
}

// The library's retry policy: exponential backoff from 5 seconds, by 1.5 up to 30 seconds, each
// wait randomized by ±50%, and never shorter than the collector's Retry-After.
const (
	retryInitial    = 5 * time.Second
	retryMax        = 30 * time.Second
	retryMultiplier = 1.5
	retryJitter     = 0.5
)

// retryableError is a failure worth trying again: 429, 502, 503, 504 or no response at all.
type retryableError struct {
	after time.Duration // the collector's Retry-After, or 0
	err   error
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// send POSTs body until the collector takes it, it refuses it for good, or the time left in ctx
// is shorter than the next wait.
func (x *otlpHTTP) send(ctx context.Context, body []byte) error {
	interval := x.retryFrom
	for attempt := 1; ; attempt++ {
		err := x.post(ctx, body)
		var retry *retryableError
		if err == nil || !errors.As(err, &retry) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		}
		wait := time.Duration(float64(interval) * (1 - retryJitter + 2*retryJitter*rand.Float64()))
		wait = max(wait, retry.after)
		interval = min(time.Duration(float64(interval)*retryMultiplier), retryMax)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return fmt.Errorf("giving up after %d attempts, the next being due after the export timeout: %w", attempt, err)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("giving up after %d attempts: %w", attempt, err)
		case <-timer.C:
		}
	}
}

// post makes one attempt at sending body.
func (x *otlpHTTP) post(ctx context.Context, body []byte) error {
	gate := &bodyGate{buf: body}
	defer gate.close() // the next batch writes the buffer again
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, x.cfg.url, gate.reader())
	if err != nil {
		return err
	}
	req.Header = x.cfg.header // read only, by this request alone at a time
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return gate.reader(), nil }
	resp, err := x.client.Do(req)
	if err != nil {
		return &retryableError{err: fmt.Errorf("sending spans: %w", err)}
	}
	defer resp.Body.Close()
	x.resp.Reset()
	_, readErr := x.resp.ReadFrom(io.LimitReader(resp.Body, otlpMaxResponse))
	switch code := resp.StatusCode; {
	case code >= 200 && code <= 299:
		if readErr == nil {
			x.partialSuccess(resp.Header.Get("Content-Type"))
		}
		return nil
	case code == http.StatusTooManyRequests, code == http.StatusBadGateway, code == http.StatusServiceUnavailable,
		code == http.StatusGatewayTimeout:
		return &retryableError{after: retryAfter(resp.Header.Get("Retry-After")), err: x.statusError(resp)}
	}
	return x.statusError(resp)
}

// statusError describes a refusal, with the start of the response body.
func (x *otlpHTTP) statusError(resp *http.Response) error {
	msg := strings.TrimSpace(string(x.resp.Bytes()[:min(x.resp.Len(), 512)]))
	if msg == "" {
		msg = "(empty)"
	}
	return fmt.Errorf("OTLP collector %s answered %s: %s", x.cfg.url, resp.Status, msg)
}

// partialSuccess logs, at debug level, the spans a collector says it rejected from a batch it
// accepted (the library returns them as an error).
func (x *otlpHTTP) partialSuccess(contentType string) {
	if x.resp.Len() == 0 || contentType != "application/x-protobuf" {
		return
	}
	var msg collectortrace.ExportTraceServiceResponse
	if err := proto.Unmarshal(x.resp.Bytes(), &msg); err != nil {
		x.log.Debug("reading the OTLP collector's response", "err", err)
		return
	}
	if p := msg.GetPartialSuccess(); p.GetRejectedSpans() != 0 || p.GetErrorMessage() != "" {
		x.log.Debug("the OTLP collector rejected spans", "spans", p.GetRejectedSpans(), "message", p.GetErrorMessage())
	}
}

// retryAfter is how long a Retry-After header asks to wait: seconds, or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		return time.Duration(min(s, int64(1<<63-1)/int64(time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// close drops the idle connections to the collector.
func (x *otlpHTTP) close() { x.client.CloseIdleConnections() }

// bodyGate hands out readers of the batch's body until it is closed; a reader used after that
// fails. net/http may read a request's body after Do has returned (RoundTrip's contract), and the
// body's buffer is written again for the next batch.
type bodyGate struct {
	mu  sync.Mutex
	buf []byte // nil once closed
}

func (g *bodyGate) reader() io.ReadCloser { return &gateReader{gate: g} }

func (g *bodyGate) close() {
	g.mu.Lock()
	g.buf = nil
	g.mu.Unlock()
}

var errBodyGone = errors.New("the request body was reused for the next batch")

type gateReader struct {
	gate *bodyGate
	off  int
}

func (r *gateReader) Read(p []byte) (int, error) {
	g := r.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.buf == nil {
		return 0, errBodyGone
	}
	if r.off >= len(g.buf) {
		return 0, io.EOF
	}
	n := copy(p, g.buf[r.off:])
	r.off += n
	return n, nil
}

func (r *gateReader) Close() error { return nil }

// Package config defines scoregate's YAML configuration: the types with their defaults, loading with
// unknown keys rejected and GATEWAY_* environment overrides, and a Validate that reports every
// problem at once as "path.to.field: what is wrong". It opens no sockets and talks to no store.
package config

// docs/configuration.md, the reference of every key, is generated from this package's types.
//go:generate go run ../internal/configdoc -src . -o ../docs/configuration.md

import (
	"fmt"
	"time"
)

// Config is the whole gateway configuration, as read from the YAML file.
type Config struct {
	// Listen is the data-plane address (host:port), plain HTTP. Default "127.0.0.1:8080".
	Listen string `yaml:"listen"`
	// AdminListen is the address of the admin API, /livez and /readyz (host:port). It must differ
	// from listen. Default "127.0.0.1:9901".
	AdminListen string `yaml:"admin_listen"`
	// AdminAuthFailureLimit brakes the guessing of principal keys, on the admin API and on both
	// token endpoints (admin POST /v1/services/{name}/token, data plane POST
	// /api/v1/service/{name}/token), counted together per client address. Default 20 failures
	// per 1m.
	AdminAuthFailureLimit AuthFailureLimit `yaml:"admin_auth_failure_limit"`
	// ComputeType names where the gateway runs (for example "sidecar" or "edge"); it is recorded
	// on every request span as ComputeType. Default "sidecar".
	ComputeType string `yaml:"compute_type"`
	// Store says where keys and their metadata live.
	Store Store `yaml:"store"`
	// TLS configures the HTTPS data-plane listener and its certificates.
	TLS TLS `yaml:"tls"`
	// Server holds the data-plane listener's timeouts and limits.
	Server Server `yaml:"server"`
	// H2 configures the HTTP/2 listener for gRPC services. Default: off.
	H2 H2 `yaml:"h2"`
	// Log configures the gateway's own log on stderr.
	Log Log `yaml:"log"`
	// Telemetry configures request spans, metrics and the access log.
	Telemetry Telemetry `yaml:"telemetry"`
	// Tokens configures the tokens the gateway mints and checks for token-mode services.
	Tokens Tokens `yaml:"tokens"`
	// Roles are custom roles, each a named list of permissions, beside the built-in owner,
	// contributor and reader. Default: none.
	Roles []Role `yaml:"roles"`
	// Services are the models the gateway fronts. At least one is required.
	Services []Service `yaml:"services"`

	// present holds the paths the file or the environment set, for the few defaults whose zero
	// value is meaningful. nil for a configuration built in code.
	present map[string]bool
}

// Telemetry configures what the gateway records of each request. Spans go to OTLP when the
// standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, unless
// OTEL_TRACES_EXPORTER is "none"; the OTEL_* variables also set protocol, headers, sampler and
// service name.
type Telemetry struct {
	// TracesFile, when set, also writes every sampled span as one JSON object a line to this
	// file, for local inspection. Default "" (none).
	TracesFile string `yaml:"traces_file"`
	// QueueSize bounds the requests waiting to be recorded; past it a request's span is dropped
	// (and counted), never waited for. Default 16384.
	QueueSize int `yaml:"queue_size"`
	// AccessLog writes one JSON line per request to stderr. Default false.
	AccessLog bool `yaml:"access_log"`
	// AccessLogSample is the fraction of requests the access log keeps, from 0 to 1; every
	// request answered 5xx is kept (so 0 keeps only those). Default 1.
	AccessLogSample float64 `yaml:"access_log_sample"`
	// HighBusinessImpact (after Azure ML's hbi_workspace) also keeps the user agent, the client
	// address and query strings out of spans and logs. Default false.
	HighBusinessImpact bool `yaml:"high_business_impact"`
	// RedactQueryParams are query parameters whose values are recorded as REDACTED (names are
	// matched without regard to case). Default: DefaultRedactQueryParams.
	RedactQueryParams []string `yaml:"redact_query_params"`
	// PublicEndpoint (after OpenTelemetry's otelhttp WithPublicEndpoint) is for a gateway at the
	// edge, whose clients' trace context is not to be trusted: each request starts a new trace
	// whose span carries a link to the client's traceparent instead of having it as parent, and
	// the client's traceparent, tracestate and baggage never reach the model (it gets the
	// gateway's traceparent only). Default false: a valid incoming traceparent is the span's
	// parent and its tracestate and baggage pass on, within W3C's limits.
	PublicEndpoint bool `yaml:"public_endpoint"`
}

// CredentialHeaders are the headers (gRPC metadata) that carry an API key in common clients and
// API gateways; the gateway removes them before a request reaches a model unless the service
// names them in forward_credentials.
var CredentialHeaders = []string{"X-Api-Key", "Api-Key", "Ocp-Apim-Subscription-Key"}

// CredentialParams are the query parameter and cookie names that carry a credential in common
// clients (OAuth's access_token, Azure Functions' code, SAS's sig, API keys); the gateway removes
// them before a request reaches a model unless the service names them in forward_credentials.
var CredentialParams = []string{"access_token", "api_key", "api-key", "apikey", "key", "code", "sig", "subscription-key"}

// DefaultRedactQueryParams are the query parameters redacted when none are configured.
var DefaultRedactQueryParams = []string{"key", "api-key", "api_key", "apikey", "subscription-key", "code", "token",
	"access_token", "id_token", "refresh_token", "sig", "signature", "password", "secret"}

// Tokens configures token issuance and validation.
type Tokens struct {
	// Issuer is the iss claim of the tokens the gateway mints, matched exactly when they come
	// back. Default "scoregate".
	Issuer string `yaml:"issuer"`
	// Lifetime is how long a minted token is valid, for services that set no token_lifetime.
	// Default 1h.
	Lifetime time.Duration `yaml:"lifetime"`
	// RefreshAfter is how long after minting a client should fetch a fresh token
	// (refreshAfterTimeUtc), for services that set no token_refresh_after. Default 30m.
	RefreshAfter time.Duration `yaml:"refresh_after"`
	// Leeway is the clock skew allowed when checking exp, nbf and iat. At most 60s. Default 30s.
	Leeway time.Duration `yaml:"leeway"`
	// MaxLifetime refuses any token, minted here or by an external issuer, whose exp is further
	// than this after its iat. Default 24h.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
	// MaxBytes refuses a longer token before parsing it, in bytes. Between 512 and 65536.
	// Default 8192.
	MaxBytes int `yaml:"max_bytes"`
	// KeyRotation is how often the gateway makes a new signing key. Older keys keep verifying
	// the tokens they signed until those expire. Default 168h (7 days).
	KeyRotation time.Duration `yaml:"key_rotation"`
	// CacheEntries bounds the verified-token cache. Default 100000.
	CacheEntries int `yaml:"cache_entries"`
}

// Issuer is an external OpenID Connect issuer whose tokens a token-mode service also accepts.
type Issuer struct {
	// Issuer is the exact iss claim of its tokens. Required.
	Issuer string `yaml:"issuer"`
	// JWKSURL is where its signing keys are published (http or https). Required.
	JWKSURL string `yaml:"jwks_url"`
	// Audience is the aud claim its tokens must carry for this service. Required.
	Audience string `yaml:"audience"`
	// Algorithms are the signature algorithms accepted from it, from ExternalAlgorithms. HMAC
	// algorithms are never accepted. Default [RS256].
	Algorithms []string `yaml:"algorithms"`
	// RefreshInterval is how often its keys are fetched again in the background. Default 15m.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
}

// Role is a custom role: a name and the permissions it grants.
type Role struct {
	// Name of the role, used in POST /v1/principals. Lowercase letters, digits and dashes; not
	// owner, contributor or reader. Required.
	Name string `yaml:"name"`
	// Permissions granted, each one of AllPermissions. At least one.
	Permissions []string `yaml:"permissions"`
}

// Permissions, as written in custom roles.
const (
	PermServicesRead     = "services:read"
	PermServicesCall     = "services:call"
	PermTokensMint       = "tokens:mint"
	PermKeysRegenerate   = "keys:regenerate"
	PermTokensRevoke     = "tokens:revoke"
	PermPrincipalsManage = "principals:manage"
	PermActivityRead     = "activity:read"
	PermConfigReload     = "config:reload"
	// PermUsageRead reads the token usage of language-model services (GET /v1/usage).
	PermUsageRead = "usage:read"
)

// AllPermissions lists every permission.
var AllPermissions = []string{PermServicesRead, PermServicesCall, PermTokensMint, PermKeysRegenerate,
	PermTokensRevoke, PermPrincipalsManage, PermActivityRead, PermConfigReload, PermUsageRead}

// BuiltinRoles are the roles every installation has, after Azure ML's role table: all three may
// call services, mint tokens and read services, the activity log and token usage; contributor
// and owner may also regenerate keys and revoke tokens; only owner manages principals and reloads
// the configuration.
var BuiltinRoles = map[string][]string{
	"reader":      {PermServicesRead, PermServicesCall, PermTokensMint, PermActivityRead, PermUsageRead},
	"contributor": {PermServicesRead, PermServicesCall, PermTokensMint, PermActivityRead, PermUsageRead, PermKeysRegenerate, PermTokensRevoke},
	"owner":       AllPermissions,
}

// Store selects the state backend.
type Store struct {
	// Dir is the folder of the embedded store (a single bbolt file, store.db) and of the generated
	// admin.key. Created with mode 0700 if missing. Default "./data".
	Dir string `yaml:"dir"`
	// RedisURL selects the shared Redis store for several instances: redis:// or rediss:// (TLS),
	// with user, password and database, e.g. "redis://gateway:secret@10.0.0.5:6379/0". An option
	// that would weaken TLS (skip_verify) is refused. Default "" (the embedded store in dir).
	RedisURL string `yaml:"redis_url"`
	// RedisAddrs selects Redis Cluster (several host:port seeds) or, with redis_master_name, the
	// Sentinel addresses. Use either this or redis_url. Default: none.
	RedisAddrs []string `yaml:"redis_addrs"`
	// RedisMasterName is the Sentinel master name; with redis_addrs it selects Sentinel.
	// Default "" (no Sentinel).
	RedisMasterName string `yaml:"redis_master_name"`
	// RedisUsername is the user the gateway authenticates as with redis_addrs (with redis_url,
	// put it in the URL). Default "" (the default user).
	RedisUsername string `yaml:"redis_username"`
	// RedisPassword is the password that goes with redis_username, with redis_addrs (with
	// redis_url, put it in the URL). Prefer GATEWAY_STORE_REDIS_PASSWORD to writing it in the
	// file. Default "" (none).
	RedisPassword string `yaml:"redis_password"`
	// RedisTLS uses TLS with redis_addrs (with redis_url, use rediss://). Default false.
	RedisTLS bool `yaml:"redis_tls"`
	// RedisCAFile is a PEM file of the roots that sign Redis's certificate, for a Redis behind a
	// private CA; with TLS only (rediss:// or redis_tls). Redis's certificate is always verified:
	// no setting, and no URL option, turns that off. Default: the system roots.
	RedisCAFile string `yaml:"redis_ca_file"`
	// RedisCertFile is the gateway's client certificate (PEM), for a Redis that asks for one
	// (tls-auth-clients); with TLS only, and with redis_key_file. Default: none.
	RedisCertFile string `yaml:"redis_cert_file"`
	// RedisKeyFile is the private key (PEM) of redis_cert_file. Default: none.
	RedisKeyFile string `yaml:"redis_key_file"`
	// RedisPrefix starts every key and channel of the shared state, in braces so that in a
	// cluster they share one hash slot. The rate-limit, token-limit and failure counters start
	// with it without its braces, then "rl:" ("scoregate:rl:"), each in the slot of its own id,
	// so that they spread over a cluster's masters. Default "{scoregate}:".
	RedisPrefix string `yaml:"redis_prefix"`
	// RedisTimeout bounds every single Redis call. Default 250ms.
	RedisTimeout time.Duration `yaml:"redis_timeout"`
	// StalenessBound is how old an instance's copy of the shared state may grow while Redis is
	// unreachable before it stops deciding (503 with Retry-After, never 401). Default 5s.
	StalenessBound time.Duration `yaml:"staleness_bound"`
	// ResyncInterval is how often an instance checks that its copy is current (and reloads it
	// when a change notice was missed). Under staleness_bound. Default 1s.
	ResyncInterval time.Duration `yaml:"resync_interval"`
}

// Shared reports whether the store is Redis (shared by several instances).
func (s Store) Shared() bool { return s.RedisURL != "" || len(s.RedisAddrs) > 0 }

// Server holds the data-plane listener's timeouts and limits. fasthttp leaves most of these
// unlimited by default; scoregate always sets them.
type Server struct {
	// ReadTimeout bounds reading one whole request, headers and body. Default 10s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing one response to the client (it starts when the model has
	// answered; for a streamed answer it bounds each piece). Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a keep-alive connection that carries no request for this long.
	// Default 60s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps the request line plus headers, in bytes; a larger header block gets 431.
	// Between 1024 and 1048576. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes is the default cap on a request body, in bytes, for services that set none;
	// a larger body gets 413. Default 104857600 (100 MiB, as Azure ML's).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxResponseBytes caps a model's response body, in bytes; a larger one gets 502.
	// Default 67108864 (64 MiB).
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// MaxConns caps concurrent client connections on each data-plane listener, idle keep-alive
	// ones included (an idle one holds its goroutine, about 10 KB in all; one carrying a request
	// also a read buffer of max_header_bytes and a 4 KB write buffer). A connection
	// over the cap is answered the JSON error 503 with Retry-After: 1 and Connection: close before
	// any request is read (over TLS, after the handshake), and closed; on the HTTP/2 listener it
	// is closed at once. At least 1. Default 10000.
	MaxConns int `yaml:"max_conns"`
	// GCHeadroomBytes lets the heap grow by at least this many bytes between garbage
	// collections (Go's default collects whenever the heap doubles, with a 4 MB floor: every few
	// milliseconds under load for a gateway whose live heap is a few MB). A live heap larger than
	// this is collected as with GOGC=100. -1 leaves Go's default; the setting is ignored when the
	// GOGC environment variable is set, and GOMEMLIMIT still caps the heap. Default 33554432
	// (32 MiB).
	GCHeadroomBytes int64 `yaml:"gc_headroom_bytes"`
	// MaxConnsPerIP caps concurrent client connections from one address, on each data-plane
	// listener; a connection over it is answered the JSON error 429 the same way, and closed. 0
	// means no cap (the default: a sidecar or a gateway behind a load balancer sees few client
	// addresses).
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	// MaxRequestsPerConn closes a client connection after this many requests. 0 means no cap.
	// Default 0.
	MaxRequestsPerConn int `yaml:"max_requests_per_conn"`
	// ShutdownTimeout bounds how long in-flight requests may run after SIGTERM or SIGINT before
	// the gateway closes their connections. Default 15s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// DrainDelay is how long /readyz reports 503 before the listeners stop accepting, so that
	// load balancers take the instance out of rotation first. Default 0s.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// TrustedProxies lists the addresses or CIDR ranges of proxies in front of the gateway whose
	// X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host are kept (the client address is
	// appended). From any other peer those headers are replaced. Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AuthFailureLimit brakes the guessing of credentials on the data plane, per service and
	// client address, for services that set none. Set trusted_proxies first when clients arrive
	// through a proxy, or they all share its address. Default off (failures 0; window 1m).
	AuthFailureLimit AuthFailureLimit `yaml:"auth_failure_limit"`
}

// Log configures the gateway's own log, written to stderr.
type Log struct {
	// Level is the least severe level written: debug, info, warn or error. Default "info".
	Level string `yaml:"level"`
	// Format is "json" (one object a line) or "text". Default "json".
	Format string `yaml:"format"`
}

// Auth modes of a service.
const (
	AuthKey   = "key"
	AuthToken = "token"
	AuthNone  = "none"
)

// Service is one model behind the gateway, reached at /api/v1/service/{name}/.
type Service struct {
	// Name is the service's name in the scoring URL: lowercase letters, digits and dashes,
	// 1 to 63 characters, starting and ending with a letter or digit. Required.
	Name string `yaml:"name"`
	// Auth is how callers authenticate: "key" (a static primary or secondary key), "token"
	// (an expiring token) or "none". Exactly one per service. Required.
	Auth string `yaml:"auth"`
	// Upstreams are the model's replicas: base URLs (http://host:port or https://host:port, no
	// path). They form one deployment, "default". Use either this or deployments.
	Upstreams []string `yaml:"upstreams"`
	// Deployments are named groups of replicas sharing the traffic by weight (blue/green,
	// canary). A request's azureml-model-deployment header pins one. Use either this or
	// upstreams.
	Deployments []Deployment `yaml:"deployments"`
	// Balance chooses a replica within a deployment: "least_outstanding" (the replica with the
	// fewest requests in flight; ties in turn) or "round_robin". Default "least_outstanding".
	Balance string `yaml:"balance"`
	// ScoringTimeout bounds one scoring call to the model, from sending the request to the end of
	// its response; past it the call is cancelled and the caller gets 504. Default 60s.
	ScoringTimeout time.Duration `yaml:"scoring_timeout"`
	// StreamIdleTimeout bounds the wait between two pieces of a streamed answer (one the model
	// sends as text/event-stream, or chunked, or without a length): past it the stream is cut
	// and the client's connection closed. For such answers scoring_timeout bounds only the wait
	// for the response headers. Default: scoring_timeout.
	StreamIdleTimeout time.Duration `yaml:"stream_idle_timeout"`
	// MaxConcurrentRequests caps the requests in flight to each replica; beyond it requests wait
	// in the service's FIFO queue. 0 means no cap (the default: model servers differ too much for
	// one number; Azure ML's own default is 1).
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
	// MaxRequestWait is how long a request may wait in the queue for a replica before it gets 503
	// with Retry-After. Default 500ms.
	MaxRequestWait time.Duration `yaml:"max_request_wait"`
	// MaxQueueLength caps the requests waiting in the queue; past it a request gets 503 at once.
	// Default 1000.
	MaxQueueLength int `yaml:"max_queue_length"`
	// MaxBodyBytes caps a request body for this service, in bytes; a larger one gets 413 (as
	// soon as its first byte arrives, when its length is declared). Bodies over 64 KiB are
	// streamed to the model, not buffered. Default: server.max_body_bytes.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxResponseBytes caps the model's answer, in bytes; a larger one gets 502 (a streamed
	// answer is cut). Default: server.max_response_bytes.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// ContentTypes, when set, are the only media types a request to the service may declare in
	// its Content-Type: "type/subtype", matched without regard to case, with parameters such as
	// charset ignored. A request with another type, or with a body but no Content-Type, gets 415
	// and never reaches the model; one with neither a body nor a Content-Type (GET
	// /swagger.json) passes. Default: none, any type is accepted (as Azure ML's scoring front
	// end does).
	ContentTypes []string `yaml:"content_types"`
	// ForwardCredentials names the credential carriers this service's model may still receive
	// beside the gateway's credential: header names among CredentialHeaders, and query parameter
	// or cookie names among CredentialParams, matched without regard to case. Any other carrier
	// is removed from every request before it reaches the model (a header, a query parameter,
	// metadata or a cookie of that name). Authorization is never forwarded. Default: none.
	ForwardCredentials []string `yaml:"forward_credentials"`
	// HealthCheck probes each replica actively. Default: off (passive ejection only).
	HealthCheck HealthCheck `yaml:"health_check"`
	// PassiveFailures is how many consecutive connection failures take a replica out of rotation
	// for ejection_time. 0 turns passive ejection off. Default 3.
	PassiveFailures int `yaml:"passive_failures"`
	// EjectionTime is how long a passively ejected replica stays out before it is tried again.
	// Default 10s.
	EjectionTime time.Duration `yaml:"ejection_time"`
	// BlockedPaths are model paths never forwarded (for example a model server's management
	// API): a forwarded path equal to one, or under it, gets 404. Both are compared segment by
	// segment in one canonical form: percent-escapes decoded once, each segment cut at its
	// first ";" (raw or encoded), leading spaces and trailing dots and spaces dropped, dot
	// segments resolved (a segment of two or more dots is ".."), empty segments dropped, letters
	// lowered. Default: none.
	BlockedPaths []string `yaml:"blocked_paths"`
	// RateLimit limits requests per key and per principal.
	RateLimit RateLimit `yaml:"rate_limit"`
	// TokenLimit limits the tokens per key and per principal: per minute, and a quota per
	// period.
	TokenLimit TokenLimit `yaml:"token_limit"`
	// AuthFailureLimit brakes the guessing of this service's credentials per client address
	// (failures: 0 turns it off). A configuration reload changes it. Default:
	// server.auth_failure_limit.
	AuthFailureLimit AuthFailureLimit `yaml:"auth_failure_limit"`
	// Mirror copies a share of requests to a deployment and discards its answers.
	Mirror Mirror `yaml:"mirror"`
	// MaxConnsPerUpstream caps the pooled keep-alive connections to each upstream. Default 512.
	MaxConnsPerUpstream int `yaml:"max_conns_per_upstream"`
	// UpstreamIdleTimeout is how long a pooled keep-alive connection to a model may sit idle
	// before the gateway closes it. Keep it below the model server's own keep-alive timeout
	// (uvicorn's is 5s), so that the gateway never writes a request to a connection the model is
	// closing. Default 4s.
	UpstreamIdleTimeout time.Duration `yaml:"upstream_idle_timeout"`
	// TokenLifetime is how long tokens minted for this service are valid (token mode only).
	// Default tokens.lifetime.
	TokenLifetime time.Duration `yaml:"token_lifetime"`
	// TokenRefreshAfter is when, after minting, a client should fetch a fresh token (token mode
	// only). Less than token_lifetime. Default tokens.refresh_after, or half of token_lifetime
	// when that is shorter.
	TokenRefreshAfter time.Duration `yaml:"token_refresh_after"`
	// Issuers are external OpenID Connect issuers whose tokens this service also accepts
	// (token mode only). Default: none, only the gateway's own tokens.
	Issuers []Issuer `yaml:"issuers"`
	// TLS configures TLS to https:// upstreams: a private CA and a client certificate.
	TLS UpstreamTLS `yaml:"tls"`
	// Protocol is how the model is called: "http" (HTTP/1.1, through listen and tls.listen) or
	// "grpc" (any gRPC method, through the h2 listener only). Default "http".
	Protocol string `yaml:"protocol"`
	// API is what the model speaks: "plain" (any HTTP API; the gateway forwards requests and
	// answers without reading them) or "openai" (an OpenAI-compatible language model: the
	// gateway reads the model, stream and max_tokens of POST requests to /chat/completions,
	// /completions, /embeddings and /responses, and the token usage of their answers, for
	// telemetry and usage; see docs/language-models.md). Not with protocol grpc. Default "plain".
	API string `yaml:"api"`
	// CORS lets web pages of the listed origins call the service from a browser: the gateway
	// answers their preflights itself, without a credential, and never forwards them. Default:
	// off. Not with protocol grpc.
	CORS CORS `yaml:"cors"`
}

// Defaults.
const (
	DefaultListen              = "127.0.0.1:8080"
	DefaultAdminListen         = "127.0.0.1:9901"
	DefaultComputeType         = "sidecar"
	DefaultStoreDir            = "./data"
	DefaultReadTimeout         = 10 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultIdleTimeout         = 60 * time.Second
	DefaultMaxHeaderBytes      = 16 << 10
	DefaultMaxBodyBytes        = 100 << 20
	DefaultGCHeadroomBytes     = 32 << 20
	DefaultMaxResponseBytes    = 64 << 20
	DefaultShutdownTimeout     = 15 * time.Second
	DefaultMaxConns            = 10000
	DefaultServiceTimeout      = 60 * time.Second
	DefaultMaxConnsPerUpstream = 512
	DefaultUpstreamIdleTimeout = 4 * time.Second
	DefaultTokenIssuer         = "scoregate"
	DefaultTokenLifetime       = time.Hour
	DefaultTokenRefreshAfter   = 30 * time.Minute
	DefaultTokenLeeway         = 30 * time.Second
	MaxTokenLeeway             = 60 * time.Second
	DefaultTokenMaxLifetime    = 24 * time.Hour
	DefaultTokenMaxBytes       = 8192
	DefaultKeyRotation         = 7 * 24 * time.Hour
	DefaultTokenCacheEntries   = 100000
	DefaultIssuerRefresh       = 15 * time.Minute
	DefaultRedisPrefix         = "{scoregate}:"
	DefaultRedisTimeout        = 250 * time.Millisecond
	DefaultStalenessBound      = 5 * time.Second
	DefaultResyncInterval      = time.Second
	DefaultTelemetryQueue      = 16384
	DefaultLogLevel            = "info"
	DefaultLogFormat           = "json"
)

// ApplyDefaults fills every unset field with its documented default.
func (c *Config) ApplyDefaults() {
	setDefault(&c.Listen, DefaultListen)
	setDefault(&c.AdminListen, DefaultAdminListen)
	setDefault(&c.ComputeType, DefaultComputeType)
	setDefault(&c.Store.Dir, DefaultStoreDir)
	setDefault(&c.Store.RedisPrefix, DefaultRedisPrefix)
	setDefault(&c.Store.RedisTimeout, DefaultRedisTimeout)
	setDefault(&c.Store.StalenessBound, DefaultStalenessBound)
	setDefault(&c.Store.ResyncInterval, DefaultResyncInterval)
	c.applyTLSDefaults()
	s := &c.Server
	setDefault(&s.ReadTimeout, DefaultReadTimeout)
	setDefault(&s.WriteTimeout, DefaultWriteTimeout)
	setDefault(&s.IdleTimeout, DefaultIdleTimeout)
	setDefault(&s.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&s.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&s.MaxResponseBytes, DefaultMaxResponseBytes)
	setDefault(&s.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&s.MaxConns, DefaultMaxConns)
	setDefault(&s.GCHeadroomBytes, DefaultGCHeadroomBytes)
	setDefault(&c.Log.Level, DefaultLogLevel)
	setDefault(&c.Log.Format, DefaultLogFormat)
	setDefault(&c.Telemetry.QueueSize, DefaultTelemetryQueue)
	if c.Telemetry.AccessLogSample == 0 && !c.present["telemetry.access_log_sample"] {
		c.Telemetry.AccessLogSample = 1 // 0, when written, keeps only 5xx
	}
	if c.Telemetry.RedactQueryParams == nil {
		c.Telemetry.RedactQueryParams = DefaultRedactQueryParams
	}
	t := &c.Tokens
	setDefault(&t.Issuer, DefaultTokenIssuer)
	setDefault(&t.Lifetime, DefaultTokenLifetime)
	setDefault(&t.RefreshAfter, DefaultTokenRefreshAfter)
	setDefault(&t.Leeway, DefaultTokenLeeway)
	setDefault(&t.MaxLifetime, DefaultTokenMaxLifetime)
	setDefault(&t.MaxBytes, DefaultTokenMaxBytes)
	setDefault(&t.KeyRotation, DefaultKeyRotation)
	setDefault(&t.CacheEntries, DefaultTokenCacheEntries)
	for i := range c.Services {
		svc := &c.Services[i]
		setDefault(&svc.ScoringTimeout, DefaultServiceTimeout)
		setDefault(&svc.MaxBodyBytes, s.MaxBodyBytes)
		setDefault(&svc.MaxResponseBytes, s.MaxResponseBytes)
		svc.applyTrafficDefaults(c.present, fmt.Sprintf("services[%d]", i))
		setDefault(&svc.MaxConnsPerUpstream, DefaultMaxConnsPerUpstream)
		setDefault(&svc.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
		svc.applyProtocolDefaults()
		svc.applyAPIDefaults()
		svc.CORS.applyDefaults()
		if svc.Auth == AuthToken {
			setDefault(&svc.TokenLifetime, t.Lifetime)
			setDefault(&svc.TokenRefreshAfter, min(t.RefreshAfter, svc.TokenLifetime/2))
		}
		for j := range svc.Issuers {
			is := &svc.Issuers[j]
			if len(is.Algorithms) == 0 {
				is.Algorithms = []string{"RS256"}
			}
			setDefault(&is.RefreshInterval, DefaultIssuerRefresh)
		}
	}
	c.applyAuthFailureDefaults()
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// RolePermissions returns the permissions of a built-in or custom role, and whether it exists.
func (c *Config) RolePermissions(name string) ([]string, bool) {
	if p, ok := BuiltinRoles[name]; ok {
		return p, true
	}
	for _, r := range c.Roles {
		if r.Name == name {
			return r.Permissions, true
		}
	}
	return nil, false
}

// Service returns the service called name, or nil.
func (c *Config) Service(name string) *Service {
	for i := range c.Services {
		if c.Services[i].Name == name {
			return &c.Services[i]
		}
	}
	return nil
}

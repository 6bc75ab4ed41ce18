package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// tier is one way of running scoregate in the comparison.
type tier struct {
	name     string
	auth     string // none, key or token
	redis    bool   // the Redis-backed store instead of the embedded one
	sampling string // OTLP trace sampling ratio ("1", "0.01"); "" turns tracing off
	uncached bool   // send many tokens in turn past a one-entry cache, so each is checked in full
	note     string
}

var tiers = []tier{
	{name: "scoregate none", auth: "none", note: "auth: none"},
	{name: "scoregate key", auth: "key", note: "auth: key, embedded store"},
	{name: "scoregate token cached", auth: "token", note: "auth: token, one token sent again and again (verified-token cache hits)"},
	{name: "scoregate token uncached", auth: "token", uncached: true,
		note: "auth: token, tokens.cache_entries 1 and a pool of distinct tokens sent in turn, so each is verified in full"},
	{name: "scoregate key otel100", auth: "key", sampling: "1", note: "auth: key, every request traced and exported over OTLP/HTTP"},
	{name: "scoregate key otel1", auth: "key", sampling: "0.01", note: "auth: key, 1% of requests traced and exported over OTLP/HTTP"},
	{name: "scoregate key redis", auth: "key", redis: true, note: "auth: key, the Redis-backed store"},
	{name: "scoregate key redis otel100", auth: "key", redis: true, sampling: "1",
		note: "auth: key, the Redis-backed store, every request traced: the tier the performance targets name"},
}

// targetTier is the tier the performance targets are stated for.
const targetTier = "scoregate key redis otel100"

// gatewayConfig is what a gateway instance is started with.
type gatewayConfig struct {
	name         string
	auth         string
	redisURL     string
	cacheEntries int
	services     int // services in the file; the measured one, "bench", is the first
	env          []string
	bin          string // the gateway binary; "" for the run's (h.gatewayBin)
}

// gatewayInstance is a running scoregate.
type gatewayInstance struct {
	proc     *process
	data     string // data-plane address
	admin    string // admin API address
	adminKey string // the Owner's key
	dir      string // its store folder
}

// maxBody is the request body cap of the bench service: over the body sweep's largest step.
const maxBody = 16 << 20

// buildGateway builds cmd/gateway once, unless -gateway named a binary.
func (h *harness) buildGateway(ctx context.Context) error {
	if h.opts.gateway != "" {
		h.gatewayBin = h.opts.gateway
		return nil
	}
	h.gatewayBin = filepath.Join(h.tmp, "gateway")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", h.gatewayBin, "github.com/scoregate/scoregate/cmd/gateway")
	cmd.Dir = h.moduleDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the gateway: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// writeGatewayConfig writes c as a YAML file in dir.
func writeGatewayConfig(path string, c gatewayConfig, data, admin, dir, upstream string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\nadmin_listen: %q\ncompute_type: \"bench\"\n", data, admin)
	fmt.Fprintf(&b, "store:\n  dir: %q\n", filepath.Join(dir, "data"))
	if c.redisURL != "" {
		fmt.Fprintf(&b, "  redis_url: %q\n  redis_prefix: %q\n", c.redisURL, "{"+strings.ReplaceAll(c.name, " ", "-")+"}:")
	}
	// max_conns above the connections sweep's largest step (10,000, plus the checks' own), as the
	// peers' connection limits are.
	fmt.Fprintf(&b, "log:\n  level: warn\nserver:\n  shutdown_timeout: 2s\n  max_body_bytes: %d\n  max_conns: 100000\n", maxBody)
	if c.cacheEntries > 0 {
		fmt.Fprintf(&b, "tokens:\n  cache_entries: %d\n", c.cacheEntries)
	}
	b.WriteString("services:\n")
	for i := range max(c.services, 1) {
		name := "bench"
		if i > 0 {
			name = fmt.Sprintf("svc-%05d", i)
		}
		fmt.Fprintf(&b, "  - name: %s\n    auth: %s\n    upstreams: [\"http://%s\"]\n", name, c.auth, upstream)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// startGateway starts "gateway serve" for c with one scheduler thread (GOMAXPROCS=1, the "one
// worker" of the comparison) and waits until both listeners answer. The store folder is kept
// across restarts of the same name.
func (h *harness) startGateway(ctx context.Context, c gatewayConfig) (*gatewayInstance, error) {
	dir := filepath.Join(h.tmp, strings.ReplaceAll(c.name, " ", "-"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "gateway.yaml")
	env := append([]string{"GOMAXPROCS=1", "GATEWAY_ADMIN_KEY=" + h.adminKey}, c.env...)
	// Admin first: the data plane listens last, once everything is loaded.
	proc, addrs, err := startOnFreePorts(ctx, 2, 2*time.Minute, func(a []string) (*process, error) {
		if err := writeGatewayConfig(cfgPath, c, a[1], a[0], dir, h.upstreamAddr); err != nil {
			return nil, err
		}
		name := strings.ReplaceAll(c.name, " ", "-")
		bin := h.gatewayBin
		if c.bin != "" {
			bin = c.bin
		}
		return h.start(name, append(env, h.profileEnv(name)...), bin, "serve", "-config", cfgPath)
	})
	if err != nil {
		return nil, err
	}
	return &gatewayInstance{proc: proc, data: addrs[1], admin: addrs[0], adminKey: h.adminKey, dir: dir}, nil
}

// profileEnv is what the flags add to a gateway process's environment: -gateway-env's
// variables, and a CPU profile of its life, written to -gateway-cpuprofile's folder as
// name.prof, when that flag is given.
func (h *harness) profileEnv(name string) []string {
	env := h.opts.gatewayEnv
	if h.opts.cpuProfiles != "" {
		env = append(env[:len(env):len(env)], "GATEWAY_CPUPROFILE="+filepath.Join(h.opts.cpuProfiles, name+".prof"))
	}
	return env
}

// telemetryEnv is the environment of a tier: OTLP/HTTP to the sink at the tier's sampling ratio,
// or tracing off.
func (h *harness) telemetryEnv(sampling string) []string {
	if sampling == "" {
		return []string{"OTEL_TRACES_EXPORTER=none", "OTEL_TRACES_SAMPLER=always_off"}
	}
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + h.sinkAddr,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_TRACES_SAMPLER=traceidratio",
		"OTEL_TRACES_SAMPLER_ARG=" + sampling,
	}
}

// gatewayPeer starts one tier and gives it its credentials.
func (h *harness) gatewayPeer(ctx context.Context, t tier) *peer {
	return h.gatewayPeerWith(ctx, t, "")
}

// gatewayPeerWith is gatewayPeer with the gateway binary bin ("" for the run's).
func (h *harness) gatewayPeerWith(ctx context.Context, t tier, bin string) *peer {
	p := &peer{name: t.name, kind: "scoregate", auth: t.auth != "none", note: t.note + ", GOMAXPROCS=1"}
	c := gatewayConfig{name: t.name, auth: t.auth, env: h.telemetryEnv(t.sampling), bin: bin}
	if t.uncached {
		c.cacheEntries = 1
	}
	if t.redis {
		redis, err := h.startRedis(ctx, strings.ReplaceAll(t.name, " ", "-")+"-redis")
		if err != nil {
			p.status, p.detail = statusAbsent, err.Error()
			if !errors.Is(err, errNoRedis) {
				p.status = statusFailed
			}
			return p
		}
		p.aux = append(p.aux, redis.proc)
		c.redisURL = "redis://" + redis.addr + "/0"
	}
	g, err := h.startGateway(ctx, c)
	if err != nil {
		return failed(p, err)
	}
	p.proc, p.base = g.proc, "http://"+g.data+servicePrefix
	switch {
	case t.auth == "key":
		key, err := g.regenerateKey(ctx, "bench")
		if err != nil {
			return failed(p, err)
		}
		p.creds, p.wrong = []string{"Bearer " + key}, wrongKey()
	case t.auth == "token":
		n := 1
		if t.uncached {
			n = h.opts.tokenPool
		}
		toks, err := g.mintTokens(ctx, "bench", n)
		if err != nil {
			return failed(p, err)
		}
		for _, tok := range toks {
			p.creds = append(p.creds, "Bearer "+tok)
		}
		p.wrong = "Bearer " + forgedToken(toks[0])
	}
	p.status = statusOK
	return p
}

// forgedToken is tok with its signature's first character changed: well-formed, wrongly signed.
func forgedToken(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 1
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// newAdminKey returns an Owner key for GATEWAY_ADMIN_KEY (at least 32 characters).
func newAdminKey() string {
	b := make([]byte, 24)
	rand.Read(b)
	return fmt.Sprintf("bench-owner-%x", b)
}

var adminClient = &http.Client{Timeout: 30 * time.Second}

// adminPost calls the admin API and decodes its JSON answer into out.
func (g *gatewayInstance) adminPost(ctx context.Context, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+g.admin+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+g.adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin API %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API %s: %w", path, err)
	}
	return nil
}

// regenerateKey makes a primary key for service and returns it.
func (g *gatewayInstance) regenerateKey(ctx context.Context, service string) (string, error) {
	var out struct {
		Key string `json:"key"`
	}
	if err := g.adminPost(ctx, "/v1/services/"+service+"/keys/primary/regenerate", nil, &out); err != nil {
		return "", err
	}
	if out.Key == "" {
		return "", errors.New("admin API answered no key")
	}
	return out.Key, nil
}

// mintTokens mints n tokens for service as the Owner, a few at a time.
func (g *gatewayInstance) mintTokens(ctx context.Context, service string, n int) ([]string, error) {
	toks := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var out struct {
				AccessToken string `json:"accessToken"`
			}
			errs[i] = g.adminPost(ctx, "/v1/services/"+service+"/token", nil, &out)
			toks[i] = out.AccessToken
			if errs[i] == nil && out.AccessToken == "" {
				errs[i] = errors.New("admin API answered no accessToken")
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("minting tokens: %w", err)
		}
	}
	return toks, nil
}

// revokeToken revokes tok through the admin API.
func (g *gatewayInstance) revokeToken(ctx context.Context, tok string) error {
	return g.adminPost(ctx, "/v1/tokens/revoke", map[string]string{"token": tok}, nil)
}

package config

import (
	"fmt"
	"strings"
	"time"
)

// Deployment is a named group of a service's replicas.
type Deployment struct {
	// Name identifies the deployment in the azureml-model-deployment header, on spans and in
	// metrics: lowercase letters, digits and dashes. Required.
	Name string `yaml:"name"`
	// Weight is the deployment's share of the traffic, relative to the others' (0 takes only
	// pinned and mirrored requests). Default 100 when it is the only deployment; 0 when several
	// are listed.
	Weight int `yaml:"weight"`
	// Upstreams are its replicas' base URLs. At least one.
	Upstreams []string `yaml:"upstreams"`
}

// HealthCheck probes replicas: GET path every interval; a replica failing unhealthy_threshold
// probes in a row leaves the rotation, and one passing healthy_threshold in a row returns.
type HealthCheck struct {
	// Path is the probed path, for example "/" or "/v2/health/ready"; it turns active health
	// checks on. A 2xx answer within timeout passes. Default "" (off).
	Path string `yaml:"path"`
	// Interval between probes of one replica. Default 10s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// UnhealthyThreshold is the failed probes in a row that take a replica out. Default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold"`
	// HealthyThreshold is the passed probes in a row that bring it back. Default 1.
	HealthyThreshold int `yaml:"healthy_threshold"`
}

// RateLimit limits requests per second, with a burst, per calling key and per principal; a
// request over the limit gets 429 with Retry-After. Each caller's rate is the service's own: a
// principal's requests to another service do not count against it. Shared through Redis by every
// instance when the store is Redis; per instance otherwise.
type RateLimit struct {
	// PerKey limits each key (primary and secondary separately; key mode).
	PerKey Rate `yaml:"per_key"`
	// PerPrincipal limits each principal (the caller a token was minted for; token mode).
	PerPrincipal Rate `yaml:"per_principal"`
}

// Rate is a request rate with a burst. A zero rate means no limit.
type Rate struct {
	// RequestsPerSecond is the sustained rate. Default 0 (no limit).
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// Burst is how many requests may come at once above the rate. Default 1.
	Burst int `yaml:"burst"`
}

// Mirror copies a share of a service's requests to one deployment, in the background; its
// answers are discarded and never delay or change the caller's.
type Mirror struct {
	// Deployment receives the copies. Default "" (no mirror).
	Deployment string `yaml:"deployment"`
	// Percent of requests copied, from 0 to 100. Default 0.
	Percent float64 `yaml:"percent"`
}

// Defaults of model traffic.
const (
	DefaultDeployment          = "default"
	DefaultBalance             = BalanceLeastOutstanding
	DefaultMaxRequestWait      = 500 * time.Millisecond
	DefaultMaxQueueLength      = 1000
	DefaultHealthInterval      = 10 * time.Second
	DefaultHealthTimeout       = 2 * time.Second
	DefaultUnhealthyThreshold  = 3
	DefaultHealthyThreshold    = 1
	DefaultPassiveFailures     = 3
	DefaultEjectionTime        = 10 * time.Second
	BalanceLeastOutstanding    = "least_outstanding"
	BalanceRoundRobin          = "round_robin"
	DeploymentHeader           = "azureml-model-deployment"
	defaultRateBurst           = 1
	maxDeploymentsPerService   = 64
	maxBlockedPathsPerService  = 256
	minStreamedBodyThreshold   = 64 << 10
	StreamedBodyThresholdBytes = minStreamedBodyThreshold
)

// DeploymentList is the service's deployments, with upstreams as the one deployment "default".
func (s Service) DeploymentList() []Deployment {
	if len(s.Deployments) > 0 {
		return s.Deployments
	}
	return []Deployment{{Name: DefaultDeployment, Weight: 100, Upstreams: s.Upstreams}}
}

// AllUpstreams lists every replica URL of the service, across deployments.
func (s Service) AllUpstreams() []string {
	var out []string
	for _, d := range s.DeploymentList() {
		out = append(out, d.Upstreams...)
	}
	return out
}

func (s *Service) applyTrafficDefaults(present map[string]bool, path string) {
	setDefault(&s.Balance, DefaultBalance)
	setDefault(&s.StreamIdleTimeout, s.ScoringTimeout)
	setDefault(&s.MaxRequestWait, DefaultMaxRequestWait)
	setDefault(&s.MaxQueueLength, DefaultMaxQueueLength)
	setDefault(&s.EjectionTime, DefaultEjectionTime)
	if !present[path+".passive_failures"] {
		setDefault(&s.PassiveFailures, DefaultPassiveFailures)
	}
	h := &s.HealthCheck
	setDefault(&h.Interval, DefaultHealthInterval)
	setDefault(&h.Timeout, DefaultHealthTimeout)
	setDefault(&h.UnhealthyThreshold, DefaultUnhealthyThreshold)
	setDefault(&h.HealthyThreshold, DefaultHealthyThreshold)
	if len(s.Deployments) == 1 {
		setDefault(&s.Deployments[0].Weight, 100)
	}
	for _, r := range []*Rate{&s.RateLimit.PerKey, &s.RateLimit.PerPrincipal} {
		if r.RequestsPerSecond > 0 {
			setDefault(&r.Burst, defaultRateBurst)
		}
	}
}

func validateTraffic(p string, svc Service, add func(path, format string, args ...any)) {
	if len(svc.Upstreams) > 0 && len(svc.Deployments) > 0 {
		add(p+".deployments", "use either upstreams (one deployment) or deployments, not both")
	}
	if len(svc.Upstreams) == 0 && len(svc.Deployments) == 0 {
		add(p+".upstreams", "at least one upstream URL is required (or deployments)")
	}
	if len(svc.Deployments) > maxDeploymentsPerService {
		add(p+".deployments", "at most %d deployments", maxDeploymentsPerService)
	}
	seen := map[string]bool{}
	names := map[string]bool{}
	total := 0
	for i, d := range svc.Deployments {
		dp := fmt.Sprintf("%s.deployments[%d]", p, i)
		switch {
		case d.Name == "":
			add(dp+".name", "required")
		case !serviceName.MatchString(d.Name):
			add(dp+".name", "%q must be lowercase letters, digits or dashes", d.Name)
		case names[d.Name]:
			add(dp+".name", "%q is defined twice", d.Name)
		}
		names[d.Name] = true
		if d.Weight < 0 {
			add(dp+".weight", "must not be negative")
		}
		total += d.Weight
		if len(d.Upstreams) == 0 {
			add(dp+".upstreams", "at least one upstream URL is required")
		}
		checkUpstreams(dp+".upstreams", d.Upstreams, seen, add)
	}
	checkUpstreams(p+".upstreams", svc.Upstreams, seen, add)
	if len(svc.Deployments) > 0 && total == 0 {
		add(p+".deployments", "at least one deployment needs a weight above 0")
	}
	switch svc.Balance {
	case BalanceLeastOutstanding, BalanceRoundRobin:
	default:
		add(p+".balance", "%q is not one of %s, %s", svc.Balance, BalanceLeastOutstanding, BalanceRoundRobin)
	}
	positive := func(path string, ok bool) {
		if !ok {
			add(path, "must be greater than zero")
		}
	}
	if svc.MaxConcurrentRequests < 0 {
		add(p+".max_concurrent_requests", "must not be negative (0 means no cap)")
	}
	positive(p+".max_request_wait", svc.MaxRequestWait > 0)
	positive(p+".stream_idle_timeout", svc.StreamIdleTimeout > 0)
	positive(p+".max_queue_length", svc.MaxQueueLength > 0)
	positive(p+".ejection_time", svc.EjectionTime > 0)
	if svc.PassiveFailures < 0 {
		add(p+".passive_failures", "must not be negative (0 turns passive ejection off)")
	}
	h := svc.HealthCheck
	if h.Path != "" && (!strings.HasPrefix(h.Path, "/") || !printable(h.Path) || strings.ContainsAny(h.Path, " #")) {
		add(p+".health_check.path", "%q must be a path starting with /", h.Path)
	}
	positive(p+".health_check.interval", h.Interval > 0)
	positive(p+".health_check.timeout", h.Timeout > 0)
	positive(p+".health_check.unhealthy_threshold", h.UnhealthyThreshold > 0)
	positive(p+".health_check.healthy_threshold", h.HealthyThreshold > 0)
	if h.Timeout > h.Interval {
		add(p+".health_check.timeout", "must not be longer than health_check.interval (%s)", h.Interval)
	}
	if len(svc.BlockedPaths) > maxBlockedPathsPerService {
		add(p+".blocked_paths", "at most %d paths", maxBlockedPathsPerService)
	}
	for i, bp := range svc.BlockedPaths {
		if !strings.HasPrefix(bp, "/") || !printable(bp) {
			add(fmt.Sprintf("%s.blocked_paths[%d]", p, i), "%q must be a path starting with /", bp)
		}
	}
	for name, r := range map[string]Rate{"per_key": svc.RateLimit.PerKey, "per_principal": svc.RateLimit.PerPrincipal} {
		rp := p + ".rate_limit." + name
		if r.RequestsPerSecond < 0 {
			add(rp+".requests_per_second", "must not be negative (0 means no limit)")
		}
		if r.Burst < 0 {
			add(rp+".burst", "must not be negative")
		}
	}
	if svc.RateLimit.PerKey.RequestsPerSecond > 0 && svc.Auth != AuthKey {
		add(p+".rate_limit.per_key", "only a service with auth: key has keys")
	}
	if svc.RateLimit.PerPrincipal.RequestsPerSecond > 0 && svc.Auth != AuthToken {
		add(p+".rate_limit.per_principal", "only a service with auth: token has principals calling it")
	}
	m := svc.Mirror
	if m.Percent < 0 || m.Percent > 100 {
		add(p+".mirror.percent", "must be between 0 and 100, not %g", m.Percent)
	}
	if m.Deployment != "" && !names[m.Deployment] {
		add(p+".mirror.deployment", "%q is not one of this service's deployments", m.Deployment)
	}
	if m.Deployment == "" && m.Percent > 0 {
		add(p+".mirror.deployment", "required with mirror.percent")
	}
}

func checkUpstreams(path string, ups []string, seen map[string]bool, add func(path, format string, args ...any)) {
	for j, u := range ups {
		up := fmt.Sprintf("%s[%d]", path, j)
		if _, err := ParseUpstream(u); err != nil {
			add(up, "%v", err)
		} else if seen[u] {
			add(up, "%q is listed twice", u)
		}
		seen[u] = true
	}
}

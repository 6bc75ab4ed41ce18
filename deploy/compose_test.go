package deploy_test

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command         []string          `yaml:"command"`
	Environment     map[string]string `yaml:"environment"`
	Ports           []string          `yaml:"ports"`
	Expose          []string          `yaml:"expose"`
	Volumes         []string          `yaml:"volumes"`
	ReadOnly        bool              `yaml:"read_only"`
	CapDrop         []string          `yaml:"cap_drop"`
	SecurityOpt     []string          `yaml:"security_opt"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

var composeDir = repoPath("deploy", "compose")

// composeVar is a variable reference as Compose interpolates it: ${NAME}, ${NAME:-default},
// ${NAME-default}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}`)

// readCompose reads docker-compose.yaml with every variable at its default (none is set here).
func readCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(composeDir, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data = composeVar.ReplaceAll(data, []byte("$2"))
	docs, err := decodeAll[composeFile](data)
	if err != nil || len(docs) != 1 {
		t.Fatalf("docker-compose.yaml: %v (%d documents)", err, len(docs))
	}
	for _, name := range []string{"gateway", "model", "redis", "otel-collector"} {
		if _, ok := docs[0].Services[name]; !ok {
			t.Fatalf("docker-compose.yaml has no service %s", name)
		}
	}
	return docs[0]
}

// publicImage matches an image reference on Docker Hub or a well-known public registry, with a
// tag other than latest (pinned, so the example does not change under its readers).
var publicImage = regexp.MustCompile(`^(?:(?:docker\.io|gcr\.io|ghcr\.io|quay\.io|mcr\.microsoft\.com|registry\.k8s\.io)/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

func checkPublicImage(t *testing.T, where, ref string) {
	t.Helper()
	if !publicImage.MatchString(ref) || strings.HasSuffix(ref, ":latest") {
		t.Errorf("%s: image %q is not a pinned public image", where, ref)
	}
}

// Compose pulls only public images and builds only from files in the repository.
func TestComposeReferencesOnlyPublicImagesAndRepositoryFiles(t *testing.T) {
	cf := readCompose(t)
	for name, svc := range cf.Services {
		switch {
		case svc.Build != nil:
			ctx := filepath.Join(composeDir, svc.Build.Context)
			dockerfile := filepath.Join(ctx, svc.Build.Dockerfile)
			if _, err := os.Stat(dockerfile); err != nil {
				t.Errorf("service %s builds from %s: %v", name, dockerfile, err)
				continue
			}
			if abs, _ := filepath.Abs(ctx); abs != mustAbs(t, root) {
				t.Errorf("service %s: build context %s is not the repository root", name, ctx)
			}
			globals, stages := parseDockerfile(t, dockerfile)
			for _, s := range stages {
				from := strings.Fields(s.from)
				ref := from[0]
				if strings.HasPrefix(ref, "--platform=") {
					ref = from[1]
				}
				checkPublicImage(t, dockerfile, expand(ref, globals))
			}
		default:
			checkPublicImage(t, "service "+name, svc.Image)
		}
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				p := filepath.Join(composeDir, src)
				if _, err := os.Stat(p); err != nil {
					t.Errorf("service %s mounts %s: %v", name, src, err)
				}
				if !strings.HasPrefix(mustAbs(t, p), mustAbs(t, root)+string(filepath.Separator)) {
					t.Errorf("service %s mounts %s, outside the repository", name, src)
				}
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("service %s mounts the undeclared volume %s", name, src)
			}
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// mountSource is the host side of the service's mount at target.
func mountSource(svc composeService, target string) (string, bool) {
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == target {
			return parts[0], true
		}
	}
	return "", false
}

func TestComposeGateway(t *testing.T) {
	cf := readCompose(t)
	gw := cf.Services["gateway"]
	src, ok := mountSource(gw, "/etc/scoregate/gateway.yaml")
	if !ok {
		t.Fatal("the gateway's configuration is not mounted at /etc/scoregate/gateway.yaml")
	}
	data, err := os.ReadFile(filepath.Join(composeDir, src))
	if err != nil {
		t.Fatal(err)
	}
	cfg := gatewayConfig(t, src, data, gw.Environment)

	if want := []string{"serve", "-config", "/etc/scoregate/gateway.yaml"}; !slices.Equal(gw.Command, want) {
		t.Errorf("command %q, want %q", gw.Command, want)
	}
	if vol, ok := mountSource(gw, cfg.Store.Dir); !ok || strings.HasPrefix(vol, ".") {
		t.Errorf("store.dir %s is not on a named volume", cfg.Store.Dir)
	}
	if !gw.ReadOnly || !slices.Equal(gw.CapDrop, []string{"ALL"}) || !slices.Contains(gw.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("gateway: read_only %v, cap_drop %q, security_opt %q; want a read-only, unprivileged container", gw.ReadOnly, gw.CapDrop, gw.SecurityOpt)
	}
	grace, err := time.ParseDuration(gw.StopGracePeriod)
	if err != nil || grace <= drainBudget(cfg) {
		t.Errorf("stop_grace_period %q is not over drain_delay + shutdown_timeout (%s)", gw.StopGracePeriod, drainBudget(cfg))
	}
	// Published on loopback: the listen and admin ports, nothing else.
	var published []int
	for _, p := range gw.Ports {
		parts := strings.Split(p, ":")
		if len(parts) != 3 || parts[0] != "127.0.0.1" {
			t.Errorf("port %q is not published on 127.0.0.1 only", p)
			continue
		}
		published = append(published, port(t, ":"+parts[2]))
	}
	slices.Sort(published)
	if want := []int{port(t, cfg.Listen), port(t, cfg.AdminListen)}; !slices.Equal(published, want) {
		t.Errorf("published ports %v, want listen and admin_listen's %v", published, want)
	}

	// Every address the gateway uses is a service of this file, on a port it offers.
	offers := func(service, portNum string) bool {
		svc, ok := cf.Services[service]
		return ok && slices.Contains(svc.Expose, portNum)
	}
	for _, up := range cfg.Services[0].AllUpstreams() {
		u, _ := url.Parse(up)
		if !offers(u.Hostname(), u.Port()) {
			t.Errorf("upstream %s is no port a compose service exposes", up)
		}
	}
	otlp, _ := url.Parse(gw.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
	if otlp == nil || !offers(otlp.Hostname(), otlp.Port()) || otlp.Port() != "4318" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q is not the collector's OTLP/HTTP port", gw.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
	}
	redisURL, err := url.Parse(cfg.Store.RedisURL)
	if err != nil || redisURL.Hostname() != "redis" {
		t.Fatalf("store.redis_url %q does not name the redis service", cfg.Store.RedisURL)
	}

	// Redis runs as docs/shared-state.md asks, with its ACL user, whose password is the URL's.
	redis := cf.Services["redis"]
	cmd := strings.Join(redis.Command, " ")
	for _, want := range []string{"--appendonly yes", "--maxmemory-policy noeviction", "--user default off"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("redis command %q lacks %q", cmd, want)
		}
	}
	doc, err := os.ReadFile(repoPath("docs", "shared-state.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("`(user gateway on >PASSWORD [^`]*)`").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/shared-state.md: no ACL line `user gateway on >PASSWORD …`")
	}
	password, _ := redisURL.User.Password()
	acl := strings.Replace(string(m[1]), ">PASSWORD", ">"+password, 1)
	acl = "--user " + strings.Replace(acl, "user ", "", 1) + " +client|setinfo" // Redis 7.2 and later
	if redisURL.User.Username() != "gateway" || !strings.Contains(cmd, acl) {
		t.Errorf("redis command %q\nlacks the ACL user of docs/shared-state.md as the URL logs in (%s):\n%q", cmd, redisURL.Redacted(), acl)
	}
}

func TestComposeCollector(t *testing.T) {
	cf := readCompose(t)
	col := cf.Services["otel-collector"]
	path := strings.TrimPrefix(strings.Join(col.Command, " "), "--config=")
	src, ok := mountSource(col, path)
	if !ok {
		t.Fatalf("the collector's configuration %s is not mounted", path)
	}
	type pipeline struct {
		Receivers  []string `yaml:"receivers"`
		Processors []string `yaml:"processors"`
		Exporters  []string `yaml:"exporters"`
	}
	docs := readDocs[struct {
		Receivers  map[string]any `yaml:"receivers"`
		Processors map[string]any `yaml:"processors"`
		Exporters  map[string]any `yaml:"exporters"`
		Service    struct {
			Pipelines map[string]pipeline `yaml:"pipelines"`
		} `yaml:"service"`
	}](t, filepath.Join(composeDir, src))
	c := docs[0]
	traces, ok := c.Service.Pipelines["traces"]
	if !ok {
		t.Fatal("the collector has no traces pipeline")
	}
	for kind, names := range map[string][]string{"receivers": traces.Receivers, "processors": traces.Processors, "exporters": traces.Exporters} {
		defined := map[string]map[string]any{"receivers": c.Receivers, "processors": c.Processors, "exporters": c.Exporters}[kind]
		for _, n := range names {
			if _, ok := defined[n]; !ok {
				t.Errorf("the traces pipeline uses the undefined %s %s", kind, n)
			}
		}
	}
	if !slices.Contains(traces.Receivers, "otlp") || !slices.Contains(traces.Exporters, "debug") {
		t.Errorf("traces pipeline %+v: want otlp in and debug out", traces)
	}
}

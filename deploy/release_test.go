package deploy_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// goBuild is a `go build` command line: its environment, flags, output and package.
type goBuild struct {
	env   map[string]string
	flags []string
	out   string
	pkg   string
}

func parseGoBuild(t *testing.T, c shellCommand) goBuild {
	t.Helper()
	b := goBuild{env: map[string]string{}}
	for _, e := range c.env {
		k, v, _ := strings.Cut(e, "=")
		b.env[k] = v
	}
	args := c.args[2:]
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o":
			i++
			b.out = args[i]
		case strings.HasPrefix(a, "-"):
			b.flags = append(b.flags, a)
		default:
			if b.pkg != "" {
				t.Fatalf("go build with two packages: %q", c.args)
			}
			b.pkg = a
		}
	}
	return b
}

// findGoBuild returns the one `go build` command among lines (continuations joined).
func findGoBuild(t *testing.T, name string, lines []string) goBuild {
	t.Helper()
	var found []goBuild
	for _, line := range lines {
		for _, c := range shellCommands(line) {
			if len(c.args) >= 2 && c.args[0] == "go" && c.args[1] == "build" {
				found = append(found, parseGoBuild(t, c))
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d go build commands, want 1", name, len(found))
	}
	return found[0]
}

// buildScript is deploy/release/build.sh: its go build command and its default targets.
func buildScript(t *testing.T) (goBuild, []string) {
	t.Helper()
	data, err := os.ReadFile(repoPath("deploy", "release", "build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	b := findGoBuild(t, "build.sh", joinContinuations(string(data)))
	m := regexp.MustCompile(`(?m)^targets=\$\{\*:-([^}]*)\}`).FindSubmatch(data)
	if m == nil {
		t.Fatal("build.sh: no default targets line (targets=${*:-…})")
	}
	return b, strings.Fields(string(m[1]))
}

// dockerInstruction is one Dockerfile instruction, continuations joined.
type dockerInstruction struct {
	cmd  string // upper case
	args string
}

// dockerStage is one FROM and what follows it.
type dockerStage struct {
	from   string
	instrs []dockerInstruction
}

// parseDockerfile returns the default values of the ARGs before the first FROM and the stages.
func parseDockerfile(t *testing.T, file string) (map[string]string, []dockerStage) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	globals := map[string]string{}
	var stages []dockerStage
	for _, line := range joinContinuations(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, dockerStage{from: in.args})
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			globals[k] = v
		case len(stages) == 0:
			t.Fatalf("%s: %s before the first FROM", file, in.cmd)
		default:
			s := &stages[len(stages)-1]
			s.instrs = append(s.instrs, in)
		}
	}
	return globals, stages
}

// find returns the arguments of each instruction cmd in the stage.
func (s dockerStage) find(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// dockerGoBuild is the go build command of the Dockerfile's build stage.
func dockerGoBuild(t *testing.T, s dockerStage) goBuild {
	t.Helper()
	var runs []string
	for _, r := range s.find("RUN") {
		// RUN --mount=… options come before the command.
		for strings.HasPrefix(r, "--") {
			_, r, _ = strings.Cut(r, " ")
			r = strings.TrimSpace(r)
		}
		runs = append(runs, r)
	}
	return findGoBuild(t, "Dockerfile", runs)
}

// goMinor is the Go version of go.mod's go line, as major.minor.
func goMinor(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(repoPath("go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

func TestDockerfileBuildsTheReleaseBinary(t *testing.T) {
	file := repoPath("deploy", "docker", "Dockerfile")
	globals, stages := parseDockerfile(t, file)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	build, run := stages[0], stages[1]

	if want := "--platform=$BUILDPLATFORM golang:${GO_VERSION} AS build"; build.from != want {
		t.Errorf("build stage FROM %q, want %q", build.from, want)
	}
	if globals["GO_VERSION"] != goMinor(t) {
		t.Errorf("ARG GO_VERSION=%s, want go.mod's %s", globals["GO_VERSION"], goMinor(t))
	}

	docker := dockerGoBuild(t, build)
	script, _ := buildScript(t)
	if diff := cmp.Diff(script.flags, docker.flags); diff != "" {
		t.Errorf("go build flags differ between build.sh and the Dockerfile (-build.sh +Dockerfile):\n%s", diff)
	}
	if docker.pkg != "./cmd/gateway" || script.pkg != "./cmd/gateway" {
		t.Errorf("packages built: Dockerfile %q, build.sh %q; want ./cmd/gateway", docker.pkg, script.pkg)
	}
	for _, b := range []goBuild{docker, script} {
		if b.env["CGO_ENABLED"] != "0" || b.env["GOOS"] == "" || b.env["GOARCH"] == "" {
			t.Errorf("go build environment %v: want CGO_ENABLED=0 and GOOS, GOARCH set", b.env)
		}
	}
	for _, f := range []string{"-trimpath", "-buildvcs=auto"} {
		if !slices.Contains(docker.flags, f) {
			t.Errorf("go build lacks %s", f)
		}
	}
	if !slices.ContainsFunc(docker.flags, func(f string) bool { return strings.Contains(f, "-X main.version=${VERSION}") }) {
		t.Errorf("go build flags %q do not stamp main.version", docker.flags)
	}

	if want := "gcr.io/distroless/static-debian12:nonroot"; run.from != want {
		t.Errorf("runtime stage FROM %q, want %q", run.from, want)
	}
	if copies := run.find("COPY"); !slices.Contains(copies, "--from=build "+docker.out+" /gateway") {
		t.Errorf("runtime stage COPY %q: the binary built at %s is not copied to /gateway", copies, docker.out)
	}
	users := run.find("USER")
	if len(users) != 1 || !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(users[0]) {
		t.Errorf("runtime USER %q: want one numeric non-root user (Kubernetes checks runAsNonRoot against it)", users)
	}
	// Read-only root: the one folder the gateway writes, the store, is an empty folder owned by
	// the runtime user, so that a volume mounted there (Docker copies the ownership into a fresh
	// named volume) is writable while everything else stays read-only.
	if len(users) == 1 && !slices.ContainsFunc(run.find("COPY"), func(c string) bool {
		return strings.Contains(c, "--chown="+users[0]+" ") && strings.HasSuffix(c, " /var/lib/scoregate")
	}) {
		t.Errorf("runtime COPY %q: no /var/lib/scoregate owned by the user %s for the store", run.find("COPY"), users[0])
	}
	if len(run.find("RUN")) > 0 {
		t.Errorf("runtime stage RUN %q: distroless has no shell to run it", run.find("RUN"))
	}
	for _, s := range stages {
		if hc := s.find("HEALTHCHECK"); len(hc) > 0 {
			t.Errorf("HEALTHCHECK %q: orchestrators probe /livez and /readyz instead", hc)
		}
	}
	if got := run.find("ENTRYPOINT"); !slices.Equal(got, []string{`["/gateway"]`}) {
		t.Errorf("ENTRYPOINT %q", got)
	}
	if got := run.find("CMD"); !slices.Equal(got, []string{`["serve", "-config", "/etc/scoregate/gateway.yaml"]`}) {
		t.Errorf("CMD %q", got)
	}
	exposed := strings.Fields(strings.Join(run.find("EXPOSE"), " "))
	for _, p := range []string{"8080", "8443", "9901"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %q lacks %s", exposed, p)
		}
	}
}

// The sample model's image is built like the gateway's: static, on distroless, non-root.
func TestModelDockerfile(t *testing.T) {
	_, stages := parseDockerfile(t, repoPath("deploy", "compose", "model", "Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2", len(stages))
	}
	b := dockerGoBuild(t, stages[0])
	if b.pkg != "./deploy/compose/model" || b.env["CGO_ENABLED"] != "0" {
		t.Errorf("model build: package %q, environment %v", b.pkg, b.env)
	}
	if stages[1].from != "gcr.io/distroless/static-debian12:nonroot" || len(stages[1].find("USER")) != 1 {
		t.Errorf("model runtime stage: FROM %q, USER %q", stages[1].from, stages[1].find("USER"))
	}
}

// .dockerignore must leave .git and every tracked file in the context: Go stamps the commit from
// .git, and a tracked file left out would mark the build as modified (vcs.modified=true).
func TestDockerignoreKeepsTrackedFiles(t *testing.T) {
	data, err := os.ReadFile(repoPath(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		skipLoudly(t, "git ls-files: %v", err)
	}
	tracked := strings.Fields(string(out))
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		pat := strings.TrimSpace(sc.Text())
		if pat == "" || strings.HasPrefix(pat, "#") {
			continue
		}
		if strings.Contains(pat, ".git") && !strings.Contains(pat, ".gitignore") {
			t.Errorf(".dockerignore leaves out .git (%q)", pat)
		}
		for _, f := range tracked {
			if dockerignoreMatch(pat, f) {
				t.Errorf(".dockerignore pattern %q leaves out the tracked file %s", pat, f)
			}
		}
	}
}

// dockerignoreMatch reports whether pattern (as .dockerignore writes them: rooted, "**/" for
// any depth, a trailing "/" for a folder) leaves out file or a folder above it.
func dockerignoreMatch(pattern, file string) bool {
	pattern = strings.TrimSuffix(strings.TrimPrefix(pattern, "/"), "/")
	candidates := []string{}
	for p := file; p != "."; p = path.Dir(p) {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if ok, _ := path.Match(pattern, c); ok {
			return true
		}
		if rest, found := strings.CutPrefix(pattern, "**/"); found {
			if ok, _ := path.Match(rest, path.Base(c)); ok {
				return true
			}
		}
	}
	return false
}

func TestGoReleaserMatchesBuildScript(t *testing.T) {
	type build struct {
		ID      string   `yaml:"id"`
		Main    string   `yaml:"main"`
		Binary  string   `yaml:"binary"`
		Env     []string `yaml:"env"`
		Goos    []string `yaml:"goos"`
		Goarch  []string `yaml:"goarch"`
		Flags   []string `yaml:"flags"`
		Ldflags []string `yaml:"ldflags"`
	}
	docs := readDocs[struct {
		Version int     `yaml:"version"`
		Builds  []build `yaml:"builds"`
	}](t, repoPath(".goreleaser.yaml"))
	if len(docs) != 1 || docs[0].Version != 2 || len(docs[0].Builds) != 1 {
		t.Fatalf("want one GoReleaser v2 document with one build, got %+v", docs)
	}
	gr := docs[0].Builds[0]
	script, targets := buildScript(t)

	if gr.Main != script.pkg || gr.Binary != "gateway" || !slices.Contains(gr.Env, "CGO_ENABLED=0") {
		t.Errorf("GoReleaser builds %q as %q with %q; build.sh builds %q with CGO_ENABLED=0", gr.Main, gr.Binary, gr.Env, script.pkg)
	}
	ldflags := strings.ReplaceAll(strings.Join(gr.Ldflags, " "), "{{ .Version }}", "${VERSION}")
	if diff := cmp.Diff(script.flags, append(slices.Clone(gr.Flags), "-ldflags="+ldflags)); diff != "" {
		t.Errorf("flags differ (-build.sh +GoReleaser):\n%s", diff)
	}
	var grTargets []string
	for _, os := range gr.Goos {
		for _, arch := range gr.Goarch {
			grTargets = append(grTargets, os+"/"+arch)
		}
	}
	slices.Sort(grTargets)
	targets = slices.Sorted(slices.Values(targets))
	if diff := cmp.Diff(targets, grTargets); diff != "" {
		t.Errorf("targets differ (-build.sh +GoReleaser):\n%s", diff)
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"} {
		if !slices.Contains(targets, want) {
			t.Errorf("no release binary for %s", want)
		}
	}
}

// Every -X of the release builds names a string variable of the gateway's main package that -X
// can set: declared at package level, uninitialized or set to a constant string (-X cannot
// override a value computed at run time). TestReleaseBuild then sees it printed.
func TestLdflagsSetVariablesOfTheCode(t *testing.T) {
	fset := token.NewFileSet()
	stringVars := map[string]bool{}
	files, err := filepath.Glob(repoPath("cmd", "gateway", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					typed := vs.Type != nil && fmt.Sprint(vs.Type) == "string"
					lit := false
					if i < len(vs.Values) {
						bl, ok := vs.Values[i].(*ast.BasicLit)
						lit = ok && bl.Kind == token.STRING
					}
					if (typed && len(vs.Values) == 0) || lit {
						stringVars[name.Name] = true
					}
				}
			}
		}
	}
	script, _ := buildScript(t)
	docs := readDocs[struct {
		Builds []struct {
			Ldflags []string `yaml:"ldflags"`
		} `yaml:"builds"`
	}](t, repoPath(".goreleaser.yaml"))
	sources := map[string]string{"build.sh": strings.Join(script.flags, " ")}
	for _, b := range docs[0].Builds {
		sources[".goreleaser.yaml"] += strings.Join(b.Ldflags, " ")
	}
	for where, flags := range sources {
		xs := regexp.MustCompile(`-X ([\w./-]+)\.(\w+)=`).FindAllStringSubmatch(flags, -1)
		if len(xs) == 0 {
			t.Errorf("%s stamps nothing with -X: %q", where, flags)
		}
		for _, x := range xs {
			if x[1] != "main" || !stringVars[x[2]] {
				t.Errorf("%s: -X %s.%s: cmd/gateway has no package-level string variable %s that -X can set", where, x[1], x[2], x[2])
			}
		}
	}
}

// build.sh run for real: a cross-built darwin/arm64 binary carries the stamped version and the
// commit, the host's binary prints them with `gateway version`, and the Dockerfile's build
// command makes the very same bytes as the script.
func TestReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway three times")
	}
	const version = "v0.0.0-deploytest"
	host := runtime.GOOS + "/" + runtime.GOARCH
	dist := t.TempDir()
	cmd := exec.Command("sh", repoPath("deploy", "release", "build.sh"), "darwin/arm64", host)
	cmd.Env = append(os.Environ(), "VERSION="+version, "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	commit := "unknown"
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}

	darwin := filepath.Join(dist, "gateway_darwin_arm64", "gateway")
	info, err := exec.Command("go", "version", "-m", darwin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "build" {
			k, v, _ := strings.Cut(f[1], "=")
			settings[k] = v
		}
	}
	for k, want := range map[string]string{"GOOS": "darwin", "GOARCH": "arm64", "CGO_ENABLED": "0", "-trimpath": "true"} {
		if settings[k] != want {
			t.Errorf("darwin binary: build setting %s=%q, want %q", k, settings[k], want)
		}
	}
	if settings["vcs.revision"] == "" {
		// Go stamps VCS information only when it can read the repository (not, for example, in
		// some git worktrees or a source tarball); the binary then says "commit unknown".
		t.Logf("SKIPPING the revision check: go stamped no vcs.revision in this checkout")
		commit = "unknown"
	}
	if commit != "unknown" && settings["vcs.revision"] != commit {
		t.Errorf("darwin binary: vcs.revision=%q, want %s", settings["vcs.revision"], commit)
	}
	// -trimpath keeps -ldflags out of the build settings, so look for the value itself.
	bin, err := os.ReadFile(darwin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bin, []byte(version)) {
		t.Errorf("darwin binary does not contain the stamped version %s", version)
	}

	native := filepath.Join(dist, "gateway_"+strings.ReplaceAll(host, "/", "_"), "gateway")
	out, err := exec.Command(native, "version").Output()
	if err != nil {
		t.Fatalf("gateway version: %v", err)
	}
	if want := "scoregate " + version + " (commit " + commit + ", " + runtime.Version() + ")\n"; string(out) != want {
		t.Errorf("gateway version printed %q, want %q", out, want)
	}

	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{darwin, native} {
		line := sha256File(t, f) + "  " + strings.TrimPrefix(f, dist+"/")
		if !strings.Contains(string(sums), line+"\n") {
			t.Errorf("SHA256SUMS lacks %q:\n%s", line, sums)
		}
	}

	// The Dockerfile's command, as the build stage runs it for the host's platform.
	_, stages := parseDockerfile(t, repoPath("deploy", "docker", "Dockerfile"))
	b := dockerGoBuild(t, stages[0])
	vars := map[string]string{"VERSION": version, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	out2 := filepath.Join(t.TempDir(), "gateway")
	args := []string{"build"}
	for _, f := range b.flags {
		args = append(args, expand(f, vars))
	}
	args = append(args, "-o", out2, b.pkg)
	dockerCmd := exec.Command("go", args...)
	dockerCmd.Dir = root
	dockerCmd.Env = os.Environ()
	for k, v := range b.env {
		dockerCmd.Env = append(dockerCmd.Env, k+"="+expand(v, vars))
	}
	if out, err := dockerCmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's go build: %v\n%s", err, out)
	}
	if a, b := sha256File(t, native), sha256File(t, out2); a != b {
		t.Errorf("the Dockerfile's go build made %s, build.sh %s: not the same binary", b, a)
	}
}

func sha256File(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

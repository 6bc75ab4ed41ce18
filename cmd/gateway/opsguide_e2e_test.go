package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The operations guide (docs/operations.md) is run, not just read: TestOperationsGuide runs every
// command of its console blocks, in order, in one bash session, against the set-up the guide
// itself starts (Redis, the sample model, gateways), and compares what each prints with the
// output the guide shows. The README and the other documents under docs/ follow the same
// conventions and are run the same way (doccommands_e2e_test.go). What the conventions are, for
// the documents' authors:
//
//   - ```console blocks hold "$ command" lines, each followed by its output. A command line
//     ending in a backslash, or with a quote still open, continues on the next line. The
//     output is compared after the values that differ at every run (keys, ids, times,
//     durations, commit hashes, Go versions; see guideNormalizers) are reduced to their kind.
//     "…" in the shown output stands for text left out: within a line any run of characters,
//     alone on a line any number of lines.
//   - ```console skip="why" blocks are not run (they need systemd as init, a cluster, a Docker
//     engine); the test logs each with its reason and keeps their number small. A ```sh (bash,
//     shell) block is never run, so it must carry skip="why" too; without it the test fails
//     and asks for a console block.
//   - ```console vary=numbers blocks compare every number by its shape only.
//   - A block with file=NAME in its info string (```yaml file=gateway.yaml) is written to NAME
//     before the commands after it run.
//   - A ```text log=NAME block is an excerpt of the log file NAME: its lines must appear there in
//     that order (each log line read without its leading time=… field); with vary=numbers too,
//     its numbers are compared by their shape.
//   - An HTML comment starting "<!-- test" holds shell lines the test runs where the comment
//     stands (waiting for a gateway to listen, keeping a printed key in a variable); each must
//     succeed. $DOC_OUTPUT (or $OPSGUIDE_OUTPUT) names a file holding the output of the last
//     command shown.
//
// The guide's fixed loopback ports are mapped to free ones in commands, files and outputs, so
// that the test runs beside anything else on the machine (and never touches a Redis on 6379).

// guidePath is the operations guide, from this package's folder.
var guidePath = filepath.Join("..", "..", "docs", "operations.md")

// guidePorts are the loopback ports the guide uses; each is replaced by a free port.
var guidePorts = []int{4318, 5001, 6380, 8080, 8081, 8082, 8090, 8443, 9901, 9902, 9903, 9911}

// guideMaxSkipped bounds the console blocks the test may skip: the guide keeps that list short.
const guideMaxSkipped = 4

// guideStep is one thing the guide asks to run or check, in the guide's order.
type guideStep struct {
	line int    // where it is in the guide, for messages
	kind string // "command", "hidden", "file", "log" or "skip"
	text string // the command, the hidden shell lines, the file's content, or the log excerpt
	name string // file: its name; log: the log file; skip: the reason
	want string // command: the output shown
	vary bool   // command, log: numbers compared by shape
}

// fence matches a fenced code block's opening or closing line, with its indentation.
var fence = regexp.MustCompile("^( *)```(.*)$")

// infoAttrs parses the attributes after a fence's language: key=value or key="value".
var infoAttr = regexp.MustCompile(`([a-z]+)=(?:"([^"]*)"|(\S+))`)

// parseGuide reads the steps of a document (the guide, the README, a page under docs/), named by
// name in messages. It fails on what the test could not honour: a shell block neither written as
// a console block nor marked skip="why", a console line that is neither a command nor after one,
// a block without a language.
func parseGuide(t *testing.T, name, text string) []guideStep {
	t.Helper()
	var steps []guideStep
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.TrimSpace(line) == "<!-- test" {
			start := i + 1
			var body []string
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "-->"; i++ {
				body = append(body, strings.TrimSpace(lines[i]))
			}
			if i == len(lines) {
				t.Fatalf("%s line %d: <!-- test is not closed by -->", name, start)
			}
			steps = append(steps, guideStep{line: start, kind: "hidden", text: strings.Join(body, "\n")})
			continue
		}
		m := fence.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		indent, info := m[1], strings.TrimSpace(m[2])
		start := i + 1
		var body []string
		for i++; i < len(lines) && !(strings.HasPrefix(lines[i], indent+"```") && strings.TrimSpace(lines[i]) == "```"); i++ {
			body = append(body, strings.TrimPrefix(lines[i], indent))
		}
		if i == len(lines) {
			t.Fatalf("%s line %d: code block not closed", name, start)
		}
		lang, rest, _ := strings.Cut(info, " ")
		attrs := map[string]string{}
		for _, a := range infoAttr.FindAllStringSubmatch(rest, -1) {
			attrs[a[1]] = a[2] + a[3]
		}
		content := strings.Join(body, "\n") + "\n"
		switch {
		case lang == "":
			t.Errorf("%s line %d: a code block without a language (console, yaml, text, …)", name, start)
		case (lang == "console" || lang == "sh" || lang == "bash" || lang == "shell") && attrs["skip"] != "":
			steps = append(steps, guideStep{line: start, kind: "skip", name: attrs["skip"], text: content})
		case lang == "sh" || lang == "bash" || lang == "shell":
			t.Errorf("%s line %d: a %s block, which no test runs: write its commands as a console block (\"$ command\", then its output) so that they are run, or mark it %s skip=\"why it cannot run here\"", name, start, lang, lang)
		case attrs["file"] != "":
			steps = append(steps, guideStep{line: start, kind: "file", name: attrs["file"], text: content})
		case attrs["log"] != "":
			steps = append(steps, guideStep{line: start, kind: "log", name: attrs["log"], text: content, vary: attrs["vary"] == "numbers"})
		case lang == "console":
			steps = append(steps, parseConsole(t, name, start, body, attrs["vary"] == "numbers")...)
		}
	}
	return steps
}

// parseConsole splits a console block into its commands and their outputs.
func parseConsole(t *testing.T, name string, start int, body []string, vary bool) []guideStep {
	t.Helper()
	var steps []guideStep
	for j := 0; j < len(body); j++ {
		cmd, ok := strings.CutPrefix(body[j], "$ ")
		if !ok {
			t.Errorf("%s line %d: %q in a console block is not after a \"$ \" command", name, start+1+j, body[j])
			continue
		}
		s := guideStep{line: start + 1 + j, kind: "command", vary: vary}
		for shellIncomplete(cmd) && j+1 < len(body) {
			j++
			cmd += "\n" + body[j]
		}
		s.text = cmd
		var out []string
		for j+1 < len(body) && !strings.HasPrefix(body[j+1], "$ ") {
			j++
			out = append(out, body[j])
		}
		s.want = strings.Join(out, "\n")
		steps = append(steps, s)
	}
	return steps
}

// shellIncomplete reports whether a command line continues on the next line: it ends in a
// backslash, or a quote is still open.
func shellIncomplete(cmd string) bool {
	var quote byte
	for i := 0; i < len(cmd); i++ {
		switch c := cmd[i]; {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case c == '\\':
			if i == len(cmd)-1 {
				return true
			}
			i++
		case quote == '"':
			if c == '"' {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		}
	}
	return quote != 0
}

// guideNormalizer reduces a value that differs at every run to its kind.
type guideNormalizer struct {
	re   *regexp.Regexp
	repl string
}

// guideNormalizers apply, in order, to the shown output and the real one alike.
var guideNormalizers = []guideNormalizer{
	{regexp.MustCompile(`\b[0-9a-f]{40}\b`), "<commit>"},
	// A document may show a token or a key cut short, "eyJ…" or "sgk_…", for any one.
	{regexp.MustCompile(`\beyJ(?:[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+|…)`), "<jwt>"},
	{regexp.MustCompile(`\bsg([kp])_(?:[0-9A-Za-z]{12}_[0-9A-Za-z]{49}\b|…)`), "<sg${1}-key>"},
	{regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`), "<uuid>"},
	{regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<time>"},
	{regexp.MustCompile(`\b[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} GMT\b`), "<time>"},
	{regexp.MustCompile(`\bgo1\.\d+(\.\d+)?\b`), "<go-version>"},
	{regexp.MustCompile(`"(id|revoked|span)": "[^"]+"`), `"$1": "<id>"`},
	{regexp.MustCompile(`\bjti:[A-Za-z0-9_-]+`), "jti:<id>"},
	{regexp.MustCompile(`\b1[6-9]\d{8}\b`), "<unix-time>"},
}

// guideFloat is a decimal number; normalizeGuide leaves alone the parts of addresses and
// versions (a digit or dot on either side).
var guideFloat = regexp.MustCompile(`\d+\.\d+(?:e[+-]?\d+)?`)

var guideInt = regexp.MustCompile(`\d+`)

// normalizeGuide reduces the run-dependent values in s to their kinds, trims trailing spaces on
// every line and trailing empty lines, and drops carriage returns.
func normalizeGuide(s string, vary bool) string {
	s = strings.ReplaceAll(s, "\r", "")
	for _, n := range guideNormalizers {
		s = n.re.ReplaceAllString(s, n.repl)
	}
	var b strings.Builder
	last := 0
	for _, m := range guideFloat.FindAllStringIndex(s, -1) {
		if (m[0] > 0 && strings.ContainsRune("0123456789.", rune(s[m[0]-1]))) || (m[1] < len(s) && s[m[1]] == '.') {
			continue
		}
		b.WriteString(s[last:m[0]])
		b.WriteString("<number>")
		last = m[1]
	}
	b.WriteString(s[last:])
	s = b.String()
	if vary {
		s = guideInt.ReplaceAllString(s, "<number>")
	}
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " \t")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// guidePattern turns normalized shown output into a regular expression for the whole real
// output: "…" alone on a line matches any lines, "…" within a line any characters.
func guidePattern(want string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`\A`)
	for line := range strings.SplitSeq(want, "\n") {
		if strings.TrimSpace(line) == "…" {
			b.WriteString(`(?:[^\n]*\n)*?`)
			continue
		}
		parts := strings.Split(line, "…")
		for i, p := range parts {
			if i > 0 {
				b.WriteString(`[^\n]*?`)
			}
			b.WriteString(regexp.QuoteMeta(p))
		}
		b.WriteString(`\n`)
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

// guideMatch reports whether got (real output) is what want (shown output) shows.
func guideMatch(want, got string, vary bool) bool {
	w, g := normalizeGuide(want, vary), normalizeGuide(got, vary)
	// The pattern ends every line with a newline.
	return guidePattern(w).MatchString(g + "\n")
}

// logExcerptMatch reports whether every line of excerpt (a log excerpt shown without times)
// matches a line of log, in order; vary compares numbers by their shape.
func logExcerptMatch(excerpt, log string, vary bool) bool {
	var logLines []string
	for l := range strings.SplitSeq(log, "\n") {
		if rest, ok := strings.CutPrefix(l, "time="); ok {
			_, l, _ = strings.Cut(rest, " ")
		}
		logLines = append(logLines, l)
	}
	next := 0
	for want := range strings.SplitSeq(strings.TrimRight(excerpt, "\n"), "\n") {
		found := false
		for ; next < len(logLines); next++ {
			if guideMatch(want, logLines[next], vary) {
				found = true
				next++
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// guidePortMap maps each of the guide's ports to a free loopback port.
func guidePortMap(t *testing.T) map[int]int {
	t.Helper()
	m := map[int]int{}
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, p := range guidePorts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		m[p] = ln.Addr().(*net.TCPAddr).Port
	}
	return m
}

var portNumber = regexp.MustCompile(`\b\d{4,5}\b`)

// remapPorts replaces every port number of m found in s (as a whole number) with its image.
func remapPorts(s string, m map[int]int) string {
	return portNumber.ReplaceAllStringFunc(s, func(num string) string {
		n, _ := strconv.Atoi(num)
		if p, ok := m[n]; ok {
			return strconv.Itoa(p)
		}
		return num
	})
}

// guideShell is one bash session: commands run in it one after the other, sharing variables,
// background jobs and the working folder.
type guideShell struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	marker string
	n      int
}

// startGuideShell starts bash in dir, in a process group of its own so that everything the
// guide starts in the background is ended with it.
func startGuideShell(t *testing.T, dir string, env []string) *guideShell {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	s := &guideShell{
		cmd:    exec.Command("bash", "--noprofile", "--norc"),
		lines:  make(chan string, 1000),
		marker: "__opsguide_" + hex.EncodeToString(nonce[:]),
	}
	s.cmd.Dir = dir
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = w, w
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // the shell and its children hold the write end
	go func() {
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				s.lines <- line
			}
			if err != nil {
				close(s.lines)
				return
			}
		}
	}()
	t.Cleanup(func() {
		// The shell's process group: the gateways, Redis and the model it started in the
		// background. SIGTERM first, so that they stop as they would be stopped.
		pgid := s.cmd.Process.Pid
		s.stdin.Close()
		syscall.Kill(-pgid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() {
			s.cmd.Wait()
			close(done)
		}()
		deadline := time.After(20 * time.Second)
		for syscall.Kill(-pgid, 0) == nil {
			select {
			case <-deadline:
				syscall.Kill(-pgid, syscall.SIGKILL)
			case <-time.After(100 * time.Millisecond):
			}
		}
		<-done
		r.Close()
	})
	return s
}

// run runs one command (or several lines) and returns what it printed, stdout and stderr
// together, and its exit status.
func (s *guideShell) run(t *testing.T, command string, timeout time.Duration) (string, int) {
	t.Helper()
	s.n++
	mark := fmt.Sprintf("%s_%d", s.marker, s.n)
	if _, err := fmt.Fprintf(s.stdin, "%s\nprintf '\\n%s %%d\\n' \"$?\"\n", command, mark); err != nil {
		t.Fatalf("the shell is gone: %v", err)
	}
	var out strings.Builder
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("the shell exited while running %q; it printed:\n%s", command, out.String())
			}
			if rest, found := strings.CutPrefix(line, mark+" "); found {
				status, _ := strconv.Atoi(strings.TrimSpace(rest))
				return strings.TrimSuffix(out.String(), "\n"), status
			}
			out.WriteString(line)
		case <-deadline:
			t.Fatalf("%q did not finish within %s; it printed:\n%s", command, timeout, out.String())
		}
	}
}

// guidePrelude is run before the guide: helpers for its hidden steps.
const guidePrelude = `
# wait_http URL: until URL answers 200, for 2 minutes at most.
wait_http() {
	for _ in $(seq 1200); do
		curl -sf -o /dev/null "$1" && return 0
		sleep 0.1
	done
	echo "wait_http: $1 did not answer 200" >&2
	return 1
}
# wait_grep PATTERN FILE [SECONDS]: until FILE has a line matching PATTERN, for SECONDS (60) at most.
wait_grep() {
	for _ in $(seq $((${3:-60} * 10))); do
		grep -q -- "$1" "$2" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "wait_grep: no $1 in $2" >&2
	return 1
}
`

// requireGuideTools returns after checking that every tool the guide runs is installed; a
// missing one fails the test under CI=true and skips it, loudly, elsewhere.
func requireGuideTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("the operations guide needs %s, not installed here", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, "SKIPPING: "+msg)
	t.Skip("SKIPPING: " + msg)
}

// guideWorkdir is a scratch folder that stands for a checkout: it links to every top-level entry
// of the repository (so that deploy/release/build.sh and go run ./deploy/compose/model work, and
// write dist/ here), and the guide's files are written beside the links.
func guideWorkdir(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	entries, err := os.ReadDir(repo)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if slices.Contains([]string{"dist", "data", "quickstart-data", "gateway"}, e.Name()) {
			continue
		}
		if err := os.Symlink(filepath.Join(repo, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// guideEnv is the shell's environment: this one without the gateway's and OpenTelemetry's
// variables, with the test's gateway binary first on the PATH.
func guideEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "GATEWAY_") || strings.HasPrefix(k, "OTEL_") || k == "NOTIFY_SOCKET" || k == "PATH" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"PATH="+filepath.Dir(gatewayBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		// This machine may be busy with other tests: Redis calls get more time than the default
		// 250ms, so that a slow answer is not taken for an outage. The outage the guide shows is
		// Redis stopped outright, which no timeout hides.
		"GATEWAY_STORE_REDIS_TIMEOUT=2s",
	)
	return env
}

// The operations guide's static shape: it parses, and skips little. Runs without any tool.
func TestOperationsGuideShape(t *testing.T) {
	text, err := os.ReadFile(guidePath)
	if err != nil {
		t.Fatal(err)
	}
	steps := parseGuide(t, "docs/operations.md", string(text))
	counts := map[string]int{}
	for _, s := range steps {
		counts[s.kind]++
		if s.kind == "command" && strings.TrimSpace(s.text) == "" {
			t.Errorf("guide line %d: an empty command", s.line)
		}
	}
	if counts["command"] < 40 {
		t.Errorf("only %d commands in the guide", counts["command"])
	}
	if counts["skip"] > guideMaxSkipped {
		t.Errorf("%d console blocks are not run; keep it to %d (the rest runs here)", counts["skip"], guideMaxSkipped)
	}
	for _, s := range steps {
		if s.kind == "skip" && len(s.name) < 15 {
			t.Errorf("guide line %d: skip=%q does not say why the commands cannot run here", s.line, s.name)
		}
	}
}

func TestGuideMatch(t *testing.T) {
	tests := []struct {
		name      string
		want, got string
		vary      bool
		match     bool
	}{
		{"same text", "configuration is valid", "configuration is valid\n", false, true},
		{"different text", "configuration is valid", "1 problem(s)", false, false},
		{"keys, times and ids by their kind",
			`{"id": "l143ZBXH8V5f", "key": "sgk_l143ZBXH8V5f_` + strings.Repeat("a", 49) + `", "createdAt": "2026-11-27T06:18:39.976Z"}`,
			`{"id": "Qz0BjA6bPMEA", "key": "sgk_Qz0BjA6bPMEA_` + strings.Repeat("B", 49) + `", "createdAt": "2027-01-02T03:04:05Z"}`, false, true},
		{"a key shown cut short stands for any key of its kind",
			`"key": "sgk_…"`, `"key": "sgk_Qz0BjA6bPMEA_` + strings.Repeat("B", 49) + `"`, false, true},
		{"a key cut short is still of its kind", `"key": "sgk_…"`, `"key": "sgp_Qz0BjA6bPMEA_` + strings.Repeat("B", 49) + `"`, false, false},
		{"a key cut short stands for a key, not for anything", `"key": "sgk_…"`, `"key": "none"`, false, false},
		{"a token shown cut short stands for any token",
			`{"accessToken":"eyJ…","tokenType":"Bearer"}`, `{"accessToken":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln","tokenType":"Bearer"}`, false, true},
		{"a service key is not a principal key",
			`"sgk_l143ZBXH8V5f_` + strings.Repeat("a", 49) + `"`, `"sgp_l143ZBXH8V5f_` + strings.Repeat("a", 49) + `"`, false, false},
		{"null is not a time", `"lastUsedAt": null`, `"lastUsedAt": "2026-11-27T06:18:39.976Z"`, false, false},
		{"durations and gauges by shape", "age=1.286s bound=5s\nx 0.057903839", "age=7.4s bound=5s\nx 3.5e-05", false, true},
		{"counts exactly", "count 1", "count 2", false, false},
		{"counts by shape where numbers vary", "135448\n1011", "1432\n9", true, true},
		{"addresses and versions exactly", "127.0.0.1 curl/7.88.1", "127.0.0.2 curl/7.88.1", false, false},
		{"… within a line", "X-Request-Id: …", "X-Request-Id: anything at all", false, true},
		{"… for lines", "HTTP/1.1 401 Unauthorized\n…\nContent-Type: application/json\n…\n\n{}",
			"HTTP/1.1 401 Unauthorized\r\nDate: x\r\nContent-Type: application/json\r\nA: b\r\nC: d\r\n\r\n{}", false, true},
		{"… for no line", "a\n…\nb", "a\nb", false, true},
		{"lines in order", "a\n…\nb", "b\na", false, false},
		{"trailing blank lines and spaces", "SUCCESS\n", "SUCCESS  \n\n", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := guideMatch(tt.want, tt.got, tt.vary); got != tt.match {
				t.Errorf("guideMatch(%q, %q) = %v\nnormalized: %q\n            %q", tt.want, tt.got, got,
					normalizeGuide(tt.want, tt.vary), normalizeGuide(tt.got, tt.vary))
			}
		})
	}
}

func TestLogExcerptMatch(t *testing.T) {
	log := `time=2026-11-27T08:22:33.215Z level=INFO msg="shutting down"
time=2026-11-27T08:22:33.215Z level=INFO msg=draining delay=2s
time=2026-11-27T08:22:33.216Z level=WARN msg=other
time=2026-11-27T08:22:36.186Z level=INFO msg=stopped
`
	if !logExcerptMatch("level=INFO msg=\"shutting down\"\nlevel=INFO msg=draining delay=…\nlevel=INFO msg=stopped\n", log, false) {
		t.Error("an excerpt of the log, in order, with a line between left out, does not match")
	}
	if logExcerptMatch("level=INFO msg=stopped\nlevel=INFO msg=\"shutting down\"\n", log, false) {
		t.Error("lines out of order match")
	}
}

func TestShellIncomplete(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{`echo done`, false},
		{`curl -s \`, true},
		{`jq '{name: .Name,`, true},
		{`jq '{name: .Name}' file`, false},
		{`echo "it's \"quoted\""`, false},
		{`echo "open`, true},
		{`echo 'a\' b`, false}, // no escapes within single quotes
	}
	for _, tt := range tests {
		if got := shellIncomplete(tt.line); got != tt.want {
			t.Errorf("shellIncomplete(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestRemapPorts(t *testing.T) {
	m := map[int]int{8080: 40001, 6380: 40002}
	got := remapPorts("curl http://127.0.0.1:8080/x; redis-cli -p 6380; 18080 80801 135448", m)
	if want := "curl http://127.0.0.1:40001/x; redis-cli -p 40002; 18080 80801 135448"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestOperationsGuide runs docs/operations.md; see the top of this file.
func TestOperationsGuide(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole operations guide: Redis, three gateways, a release build")
	}
	// Beside the minute-long token-limit tests, which mostly wait: its release build is most of
	// its time. Its ports and folder are its own.
	t.Parallel()
	runGuide(t, guideRun{
		path:  guidePath,
		name:  "docs/operations.md",
		tools: []string{"bash", "curl", "jq", "openssl", "redis-server", "redis-cli", "promtool", "go", "sha256sum"},
		logs:  []string{"a.log", "b.log", "c.log", "tls.log", "redis.log", "model.log"},
	})
}

// logSlow logs a step that took over 5 seconds, so that the time the documents' tests take can
// be read from a verbose run.
func logSlow(t *testing.T, name string, line int, command string, began time.Time) {
	t.Helper()
	if d := time.Since(began); d > 5*time.Second {
		t.Logf("%s line %d took %s: %s", name, line, d.Round(100*time.Millisecond), command)
	}
}

// guideRun is a document to run and what it needs.
type guideRun struct {
	path  string   // the document, from this package's folder
	name  string   // the document, from the repository's root, for messages
	tools []string // the programs its commands run
	logs  []string // files its processes log to, shown when a step fails
}

// runGuide runs a document's steps in order in one bash session, in a scratch folder standing for
// a checkout, and compares what each command prints with the output the document shows.
func runGuide(t *testing.T, g guideRun) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the documents' commands are run on Linux")
	}
	requireGuideTools(t, g.tools...)
	text, err := os.ReadFile(g.path)
	if err != nil {
		t.Fatal(err)
	}
	steps := parseGuide(t, g.name, string(text))
	if t.Failed() {
		return
	}
	ports := guidePortMap(t)
	back := map[int]int{}
	for gp, p := range ports {
		back[p] = gp
	}
	dir := guideWorkdir(t)
	lastOutput := filepath.Join(dir, ".opsguide-output")
	env := append(guideEnv(t), "OPSGUIDE_OUTPUT="+lastOutput, "DOC_OUTPUT="+lastOutput,
		// The admin commands' default, http://127.0.0.1:9901, moved with the port.
		fmt.Sprintf("GATEWAY_ADMIN_URL=http://127.0.0.1:%d", ports[9901]))
	sh := startGuideShell(t, dir, env)
	if out, status := sh.run(t, guidePrelude, 10*time.Second); status != 0 {
		t.Fatalf("prelude: exit %d\n%s", status, out)
	}
	logs := func() string {
		var b strings.Builder
		for _, f := range g.logs {
			if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				fmt.Fprintf(&b, "--- %s (last lines)\n", f)
				lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
				b.WriteString(strings.Join(lines[max(0, len(lines)-15):], "\n") + "\n")
			}
		}
		return b.String()
	}
	// Go stamps the commit into a build only from a checkout whose .git is a folder; from a git
	// worktree or an export it cannot, and the release steps then print "commit unknown" and no
	// vcs settings. Those two outputs are checked for that instead.
	stampable := false
	if fi, err := os.Stat(filepath.Join("..", "..", ".git")); err == nil && fi.IsDir() {
		stampable = true
	} else if strings.Contains(string(text), "$ gateway version") || strings.Contains(string(text), "dist/gateway_linux_amd64/gateway version") {
		t.Logf("SKIPPING the commit in the release steps: this checkout has no .git folder, so Go cannot stamp it")
	}
	var skipped int
	for _, s := range steps {
		switch s.kind {
		case "skip":
			skipped++
			t.Logf("%s line %d: not run: %s", g.name, s.line, s.name)
		case "file":
			if err := os.WriteFile(filepath.Join(dir, s.name), []byte(remapPorts(s.text, ports)), 0o600); err != nil {
				t.Fatal(err)
			}
		case "hidden":
			for _, line := range strings.Split(s.text, "\n") {
				if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
					continue
				}
				began := time.Now()
				out, status := sh.run(t, remapPorts(line, ports), 3*time.Minute)
				logSlow(t, g.name, s.line, line, began)
				if status != 0 {
					t.Fatalf("%s line %d: the hidden step %q: exit %d\n%s\n%s", g.name, s.line, line, status, out, logs())
				}
			}
		case "log":
			data, err := os.ReadFile(filepath.Join(dir, s.name))
			if err != nil {
				t.Errorf("%s line %d: %v", g.name, s.line, err)
				continue
			}
			if !logExcerptMatch(s.text, remapPorts(string(data), back), s.vary) {
				t.Errorf("%s line %d: %s does not hold these lines in this order:\n%s\nit holds:\n%s", g.name, s.line, s.name, s.text, data)
			}
		case "command":
			timeout := time.Minute
			if strings.Contains(s.text, "build.sh") {
				timeout = 15 * time.Minute // two cross builds on a cold cache
			}
			began := time.Now()
			got, _ := sh.run(t, remapPorts(s.text, ports), timeout)
			logSlow(t, g.name, s.line, s.text, began)
			got = remapPorts(got, back)
			if err := os.WriteFile(lastOutput, []byte(got), 0o600); err != nil {
				t.Fatal(err)
			}
			want := s.want
			if !stampable && strings.Contains(s.text, "gateway version") {
				want = regexp.MustCompile(`commit [0-9a-f]{40}`).ReplaceAllString(want, "commit unknown")
			}
			if !stampable && strings.Contains(s.text, "go version -m") {
				want = ""
			}
			if !guideMatch(want, got, s.vary) {
				t.Errorf("%s line %d: $ %s\nshows:\n%s\nprinted:\n%s\n(normalized, shown then printed:\n%s\n---\n%s)",
					g.name, s.line, s.text, s.want, got, normalizeGuide(s.want, s.vary), normalizeGuide(got, s.vary))
			}
		}
	}
	if t.Failed() {
		t.Logf("logs of the processes %s started:\n%s", g.name, logs())
	}
	t.Logf("ran %d steps of %s; %d blocks not run", len(steps)-skipped, g.name, skipped)
}

// Package deploy_test checks the deployment files under deploy/ (and .goreleaser.yaml): every
// YAML file parses, and the properties the files promise hold, checked against the gateway's own
// configuration parser. No Docker engine or cluster is needed; kubectl (for kustomize) and systemd-analyze
// are used when present.
package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/scoregate/scoregate/config"
)

// root is the repository, seen from this package's folder.
const root = ".."

// repoPath joins parts under the repository root.
func repoPath(parts ...string) string {
	return filepath.Join(append([]string{root}, parts...)...)
}

// yamlFiles lists every YAML file under deploy/, and the release configuration.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	files := []string{repoPath(".goreleaser.yaml")}
	err := filepath.WalkDir(repoPath("deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// decodeAll decodes every document of a YAML stream into a fresh T each.
func decodeAll[T any](data []byte) ([]T, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []T
	for {
		var v T
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// readDocs reads every document of the YAML file at path.
func readDocs[T any](t *testing.T, path string) []T {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := decodeAll[T](data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return docs
}

func TestEveryYAMLFileParses(t *testing.T) {
	files := yamlFiles(t)
	if len(files) < 15 {
		t.Fatalf("found only %d YAML files: %v", len(files), files)
	}
	for _, path := range files {
		t.Run(strings.TrimPrefix(path, root+"/"), func(t *testing.T) {
			docs := readDocs[map[string]any](t, path) // duplicate keys are an error too
			if len(docs) == 0 {
				t.Fatal("no document")
			}
			for i, d := range docs {
				if d == nil {
					t.Errorf("document %d is empty", i)
				}
			}
		})
	}
}

// gatewayConfig parses a gateway configuration as `gateway serve` would, with env standing for
// the process environment, and validates it.
func gatewayConfig(t *testing.T, name string, data []byte, env map[string]string) *config.Config {
	t.Helper()
	lookup := func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	cfg, err := config.Parse(data, lookup)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("%s does not pass check-config: %v", name, err)
	}
	return cfg
}

// port is the port of a host:port address.
func port(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var p int
	if _, err := fmt.Sscan(addr[i+1:], &p); i < 0 || err != nil {
		t.Fatalf("%q has no port", addr)
	}
	return p
}

// drainBudget is how long the gateway may take to stop after SIGTERM: the drain delay and the
// shutdown timeout.
func drainBudget(cfg *config.Config) time.Duration {
	return cfg.Server.DrainDelay + cfg.Server.ShutdownTimeout
}

// skipLoudly skips a test that needs a tool this machine lacks, in a way nobody misses. Under
// CI=true the tool is required: the test fails instead, so that CI cannot pass by skipping.
func skipLoudly(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("required under CI=true: %s", msg)
	}
	msg = "SKIPPING: " + msg
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
}

// shellCommand is one simple command of a shell line: its leading NAME=value assignments and
// its words, quotes removed and variables left as written.
type shellCommand struct {
	env  []string
	args []string
}

// shellCommands splits a shell line (continuations already joined) into its simple commands at
// &&, || , ; and |, and each into words, honouring single and double quotes. Enough for the
// build lines of a Dockerfile and a script; not a shell.
func shellCommands(line string) []shellCommand {
	var cmds []shellCommand
	var words []string
	var word strings.Builder
	inWord := false
	flushWord := func() {
		if inWord {
			words = append(words, word.String())
			word.Reset()
			inWord = false
		}
	}
	flushCmd := func() {
		flushWord()
		var c shellCommand
		for i, w := range words {
			if len(c.args) == 0 && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(w) {
				c.env = append(c.env, w)
				continue
			}
			c.args = words[i:]
			break
		}
		if len(c.env)+len(c.args) > 0 {
			cmds = append(cmds, c)
		}
		words = nil
	}
	for i := 0; i < len(line); i++ {
		switch ch := line[i]; {
		case ch == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			word.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == '"':
			j := strings.IndexByte(line[i+1:], '"')
			word.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case ch == ' ' || ch == '\t' || ch == '\n':
			flushWord()
		case ch == ';' || ch == '&' || ch == '|':
			flushCmd()
			if i+1 < len(line) && line[i+1] == ch {
				i++
			}
		default:
			word.WriteByte(ch)
			inWord = true
		}
	}
	flushCmd()
	return cmds
}

// joinContinuations joins lines ending in a backslash with the next.
func joinContinuations(text string) []string {
	return strings.Split(regexp.MustCompile(`\\\n[ \t]*`).ReplaceAllString(text, " "), "\n")
}

// expand replaces $NAME and ${NAME} in s from vars; unknown names stay as written.
func expand(s string, vars map[string]string) string {
	return os.Expand(s, func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return "${" + name + "}"
	})
}

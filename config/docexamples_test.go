package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// yamlBlock is a fenced YAML block of a Markdown document, with its info string.
var yamlBlock = regexp.MustCompile("(?ms)^ *```yaml([^\n]*)\n(.*?)^ *```")

// Every configuration the README and docs/ show is one the gateway accepts, so that a reader who
// copies it gets a running gateway, not a list of problems. A block without services is a part
// of a file (a tls or store section, say): it is checked with one service added. A block whose
// info string says invalid (```yaml file=x.yaml invalid) shows what check-config refuses, and
// must be refused.
func TestDocumentedConfigurations(t *testing.T) {
	docs, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, doc := range append([]string{"../README.md"}, docs...) {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range yamlBlock.FindAllSubmatchIndex(text, -1) {
			info, body := string(text[m[2]:m[3]]), string(text[m[4]:m[5]])
			line := 1 + strings.Count(string(text[:m[0]]), "\n")
			name := strings.TrimPrefix(doc, "../")
			if !regexp.MustCompile(`(?m)^services:`).MatchString(body) {
				body += "services:\n  - name: stub\n    auth: key\n    upstreams: [\"http://127.0.0.1:5001\"]\n"
			}
			c, err := Parse([]byte(body), nil)
			if err == nil {
				err = c.Validate()
			}
			checked++
			invalid := regexp.MustCompile(`(^|\s)invalid(\s|$)`).MatchString(info)
			switch {
			case invalid && err == nil:
				t.Errorf("%s line %d: the configuration is marked invalid, but it is valid", name, line)
			case !invalid && err != nil:
				t.Errorf("%s line %d: the configuration shown is refused:\n%v", name, line, err)
			}
		}
	}
	if checked < 8 {
		t.Errorf("only %d YAML blocks found in the README and docs/", checked)
	}
}

package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Threat ids are a category and two digits: HTTP-01, JWT-46, KEY-04. The categories are those
// of the threat model; nothing else of that shape (HTTP-2, TLS-1.3, UTF-8, SHA-256, AES-256,
// P-256, CRC-32, TLS-ALPN-01) is an id. A citation may go on with more numbers of the same
// category: "HTTP-01/02/10" and "HTTP-25, 26, 28" cite three ids each.
var citation = regexp.MustCompile(`\b(HTTP|JWT|KEY|LOG|REV|TLS|TOOL)-([0-9]{2})\b((?:(?:/|, )[0-9]{2}\b)*)`)

// idInName finds the ids a test's name carries: TestKEY04ConstantTimeComparator,
// TestJWT46SchemeAndJWT47DuplicateHeader.
var idInName = regexp.MustCompile(`(HTTP|JWT|KEY|LOG|REV|TLS|TOOL)([0-9]{2})`)

// acmeChallenge tells a line where "HTTP-01" is ACME's challenge type, not the threat HTTP-01:
// it speaks of ACME, challenges, validation or pebble.
var acmeChallenge = regexp.MustCompile(`(?i)acme|challenge|pebble|validat|answered|alpn`)

// ids returns the threat ids cited in text, in order, with repeats.
func ids(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, m := range citation.FindAllStringSubmatch(line, -1) {
			nums := append([]string{m[2]}, regexp.MustCompile(`[0-9]{2}`).FindAllString(m[3], -1)...)
			for _, n := range nums {
				id := m[1] + "-" + n
				if id == "HTTP-01" && acmeChallenge.MatchString(line) {
					continue
				}
				out = append(out, id)
			}
		}
	}
	return out
}

func TestCitationsFound(t *testing.T) {
	tests := []struct {
		text string
		want []string
	}{
		{"TestSmuggling is HTTP-01/02/10: a request", []string{"HTTP-01", "HTTP-02", "HTTP-10"}},
		{"request-target forms: HTTP-25, 26, 28, 29, 31.", []string{"HTTP-25", "HTTP-26", "HTTP-28", "HTTP-29", "HTTP-31"}},
		{`{"KEY-07 / JWT-47 two headers", ...}`, []string{"KEY-07", "JWT-47"}},
		{"HTTP-44, 10000 pipelined requests", []string{"HTTP-44"}},
		{"HTTP-2, HTTP/1.1, TLS-1.3, TLS 1.2, UTF-8, SHA-256, AES-256-GCM, P-256, CRC-32, HTTP-200", nil},
		{"TLS-ALPN-01 on the HTTPS listener, RFC 9110 §5.5, issue 17", nil},
		{"answers ACME HTTP-01 challenges", nil},
		{"(pebble, HTTP-01 answered on the plain listener)", nil},
		{"HTTP-01 CL.TE with a key", []string{"HTTP-01"}},
	}
	for _, tt := range tests {
		if got := ids(tt.text); !slices.Equal(got, tt.want) {
			t.Errorf("ids(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

// threat is one row of docs/threat-model.md.
type threat struct {
	id    string
	line  int
	tests []string // "proxy.TestSmuggling"
	none  bool     // the tests column says there is none, and why
}

var (
	row      = regexp.MustCompile(`^\| *([A-Z]+-[0-9]{2}) *\|(.*)\|\s*$`)
	testName = regexp.MustCompile("`([a-z0-9/]+)\\.((?:Test|Fuzz|Benchmark|Example)[A-Za-z0-9_]*)`")
)

// readThreatModel returns the threats docs/threat-model.md defines.
func readThreatModel(t *testing.T) map[string]*threat {
	t.Helper()
	data, err := os.ReadFile("threat-model.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*threat{}
	for i, line := range strings.Split(string(data), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cells := strings.Split(m[2], "|")
		th := &threat{id: m[1], line: i + 1}
		if prev, dup := out[th.id]; dup {
			t.Errorf("threat-model.md:%d: %s is already defined on line %d", th.line, th.id, prev.line)
		}
		last := strings.TrimSpace(cells[len(cells)-1])
		for _, tm := range testName.FindAllStringSubmatch(last, -1) {
			th.tests = append(th.tests, tm[1]+"."+tm[2])
		}
		th.none = strings.HasPrefix(last, "none")
		out[th.id] = th
	}
	if len(out) == 0 {
		t.Fatal("threat-model.md defines no threat (rows | ID | attack | expected | tests |)")
	}
	return out
}

// source is what the module's files say: where each id is cited, the test functions, and which
// ids each test function cites in its name, doc comment or body.
type source struct {
	cites     map[string][]string        // id → "file:line" of each citation
	tests     map[string]bool            // "proxy.TestSmuggling"
	testCites map[string]map[string]bool // test → ids it cites
}

func readSource(t *testing.T) *source {
	t.Helper()
	root := ".."
	s := &source{cites: map[string][]string{}, tests: map[string]bool{}, testCites: map[string]map[string]bool{}}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(path, root+string(filepath.Separator)))
		// The threat model defines the ids, and this file's examples of what is and is not one
		// cite nothing.
		if rel == "docs/threat-model.md" || rel == "docs/threatmodel_test.go" || (!strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, ".md")) {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, id := range ids(line) {
				s.cites[id] = append(s.cites[id], fmt.Sprintf("%s:%d", rel, i+1))
			}
		}
		if strings.HasSuffix(rel, "_test.go") {
			s.readTests(t, filepath.ToSlash(filepath.Dir(rel)), path, data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.tests) < 100 {
		t.Fatalf("found only %d test functions under %s", len(s.tests), root)
	}
	return s
}

func (s *source) readTests(t *testing.T, pkg, path string, data []byte) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, data, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Recv != nil || !regexp.MustCompile(`^(Test|Fuzz|Benchmark|Example)`).MatchString(fd.Name.Name) {
			continue
		}
		name := pkg + "." + fd.Name.Name
		s.tests[name] = true
		start := fd.Pos()
		if fd.Doc != nil {
			start = fd.Doc.Pos()
		}
		text := string(data[fset.Position(start).Offset:fset.Position(fd.End()).Offset])
		cited := map[string]bool{}
		for _, id := range ids(text) {
			cited[id] = true
		}
		for _, m := range idInName.FindAllStringSubmatch(fd.Name.Name, -1) {
			cited[m[1]+"-"+m[2]] = true
		}
		s.testCites[name] = cited
	}
}

// Every threat id cited anywhere in the module (code, tests, documents) is defined in
// docs/threat-model.md, and every id it defines is cited.
func TestThreatModelDefinesEveryCitedID(t *testing.T) {
	threats := readThreatModel(t)
	src := readSource(t)
	var cited []string
	for id := range src.cites {
		cited = append(cited, id)
	}
	sort.Strings(cited)
	for _, id := range cited {
		if threats[id] == nil {
			t.Errorf("%s is cited (%s) but docs/threat-model.md does not define it", id, strings.Join(src.cites[id], ", "))
		}
	}
	for id, th := range threats {
		if len(src.cites[id]) == 0 {
			t.Errorf("threat-model.md:%d: %s is cited nowhere in code, tests or documents", th.line, id)
		}
	}
}

// The tests the threat model names exist, every threat names at least one (or says why there
// is none), and a test function that cites a threat is among the tests the threat names.
func TestThreatModelNamesRealTests(t *testing.T) {
	threats := readThreatModel(t)
	src := readSource(t)
	for _, th := range threats {
		if len(th.tests) == 0 && !th.none {
			t.Errorf("threat-model.md:%d: %s names no test (write `pkg.TestName`, or \"none: why\")", th.line, th.id)
		}
		for _, name := range th.tests {
			if !src.tests[name] {
				t.Errorf("threat-model.md:%d: %s names %s, which is not a test function", th.line, th.id, name)
			}
		}
	}
	var names []string
	for name := range src.testCites {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for id := range src.testCites[name] {
			if th := threats[id]; th != nil && !slices.Contains(th.tests, name) {
				t.Errorf("threat-model.md:%d: %s cites %s, which does not name it among its tests", th.line, name, id)
			}
		}
	}
}

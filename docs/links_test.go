package docs

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// The README and every document here link to files of the repository and to headings, by
// relative links (`[text](docs/x.md#heading)`, `![plot](../bench/…png)`, `[text](#heading)`).
// Each must resolve: the file or folder exists inside the repository, and the heading exists
// in the Markdown file named, under the anchor GitHub gives it. Links to other sites
// (http, https, mailto) are not fetched.

// linkedDocs are the documents whose links are checked, from this folder.
func linkedDocs(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{filepath.Join("..", "README.md")}, docs...)
}

func TestLinksResolve(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := linkedDocs(t)
	if len(files) < 10 {
		t.Fatalf("only %d documents found: %q", len(files), files)
	}
	checked := 0
	for _, f := range files {
		problems, n := checkLinks(repo, f)
		checked += n
		for _, p := range problems {
			t.Error(p)
		}
	}
	if checked < 100 {
		t.Errorf("only %d relative links checked in %d documents: is the link parser finding them?", checked, len(files))
	}
}

// markdownLink finds inline links and images, [text](target "title"), with one level of brackets
// inside the text ([`x[]`](#x)).
var markdownLink = regexp.MustCompile(`!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)

// referenceLink finds a reference definition, [label]: target.
var referenceLink = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)

// htmlLink finds href and src attributes of HTML in Markdown.
var htmlLink = regexp.MustCompile(`\b(?:href|src)="([^"]+)"`)

// codeSpan is an inline code span; links inside one are text.
var codeSpan = regexp.MustCompile("(`+)[^`].*?`+")

// fenceLine opens or closes a fenced code block.
var fenceLine = regexp.MustCompile("^ {0,3}(```|~~~)")

// mdLink is one link found in a document.
type mdLink struct {
	line   int
	target string
}

// readMarkdown returns a document's links and the anchors of its headings.
func readMarkdown(text string) (links []mdLink, anchors map[string]bool) {
	anchors = map[string]bool{}
	seen := map[string]int{}
	inFence := false
	for i, line := range strings.Split(text, "\n") {
		if fenceLine.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		for _, m := range regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`).FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		if h, ok := headingText(line); ok {
			slug := slugify(h)
			if n := seen[slug]; n > 0 {
				anchors[fmt.Sprintf("%s-%d", slug, n)] = true
			} else {
				anchors[slug] = true
			}
			seen[slug]++
		}
		if m := referenceLink.FindStringSubmatch(line); m != nil {
			links = append(links, mdLink{i + 1, m[1]})
			continue
		}
		plain := codeSpan.ReplaceAllStringFunc(line, func(span string) string {
			return strings.Repeat(" ", len(span))
		})
		// A link's text may hold a code span ([`deploy/`](deploy)): that span is blanked, the link
		// kept.
		for _, m := range markdownLink.FindAllStringSubmatch(plain, -1) {
			links = append(links, mdLink{i + 1, m[1]})
		}
		for _, m := range htmlLink.FindAllStringSubmatch(plain, -1) {
			links = append(links, mdLink{i + 1, m[1]})
		}
	}
	return links, anchors
}

var atxHeading = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$`)

// headingText returns the text of an ATX heading line.
func headingText(line string) (string, bool) {
	m := atxHeading.FindStringSubmatch(line)
	if m == nil {
		return "", false
	}
	return m[1], true
}

var (
	inlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	emphasis   = regexp.MustCompile(`\*+|~~`)
)

// slugify is GitHub's anchor for a heading: the text as rendered (code spans, links and
// emphasis reduced to their text), lower case, with every character that is not a letter, a
// digit, a space, a hyphen or an underscore removed, and spaces turned into hyphens.
func slugify(heading string) string {
	text := inlineLink.ReplaceAllString(heading, "$1")
	text = strings.ReplaceAll(text, "`", "")
	text = emphasis.ReplaceAllString(text, "")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// checkLinks returns a problem for each relative link of the document at path that does not
// resolve within repo, and how many relative links it checked.
func checkLinks(repo, path string) (problems []string, checked int) {
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}, 0
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return []string{err.Error()}, 0
	}
	rel, _ := filepath.Rel(repo, abs)
	links, anchors := readMarkdown(string(data))
	anchorsOf := map[string]map[string]bool{abs: anchors}
	for _, l := range links {
		where := fmt.Sprintf("%s:%d: %s", rel, l.line, l.target)
		target := l.target
		if i := strings.Index(target, ":"); i > 0 && !strings.ContainsAny(target[:i], "/#.") {
			continue // a scheme: http, https, mailto
		}
		checked++
		file, anchor, _ := strings.Cut(target, "#")
		dest := abs
		if file != "" {
			if strings.HasPrefix(file, "/") {
				problems = append(problems, where+": an absolute path; write it relative to "+filepath.Dir(rel))
				continue
			}
			dest = filepath.Join(filepath.Dir(abs), filepath.FromSlash(file))
			if r, err := filepath.Rel(repo, dest); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
				problems = append(problems, where+": outside the repository")
				continue
			}
			fi, err := os.Stat(dest)
			if err != nil {
				problems = append(problems, where+": no such file or folder")
				continue
			}
			if fi.IsDir() {
				if anchor != "" {
					problems = append(problems, where+": an anchor on a folder")
				}
				continue
			}
		}
		if anchor == "" {
			continue
		}
		if !strings.HasSuffix(dest, ".md") {
			problems = append(problems, where+": an anchor in a file that is not Markdown")
			continue
		}
		a, ok := anchorsOf[dest]
		if !ok {
			text, err := os.ReadFile(dest)
			if err != nil {
				problems = append(problems, where+": "+err.Error())
				continue
			}
			_, a = readMarkdown(string(text))
			anchorsOf[dest] = a
		}
		if !a[anchor] {
			var known []string
			for k := range a {
				known = append(known, k)
			}
			slices.Sort(known)
			problems = append(problems, fmt.Sprintf("%s: no heading with the anchor #%s (anchors there: %s)", where, anchor, strings.Join(known, ", ")))
		}
	}
	return problems, checked
}

func TestSlugify(t *testing.T) {
	tests := []struct{ heading, want string }{
		{"Keys: rotation without downtime", "keys-rotation-without-downtime"},
		{"What the gateway does to requests (choices)", "what-the-gateway-does-to-requests-choices"},
		{"When Redis loses the gateway's data", "when-redis-loses-the-gateways-data"},
		{"`services[].issuers[]`", "servicesissuers"},
		{"`tls.acme.on_demand`", "tlsacmeon_demand"},
		{"gRPC and HTTP/2", "grpc-and-http2"},
		{"Security: what the gateway guarantees, and what it does not", "security-what-the-gateway-guarantees-and-what-it-does-not"},
		{"See [the guide](x.md) **now**", "see-the-guide-now"},
	}
	for _, tt := range tests {
		if got := slugify(tt.heading); got != tt.want {
			t.Errorf("slugify(%q) = %q, want %q", tt.heading, got, tt.want)
		}
	}
}

// The checker finds each kind of broken link, and passes the good ones.
func TestCheckLinksFindsBrokenLinks(t *testing.T) {
	repo := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(repo, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/other.md", "# Other\n\n## A heading: with `code`\n\n## Twice\n\n## Twice\n")
	write("plot.png", "png")
	write("docs/page.md", strings.Join([]string{
		"# Page",
		"## Here",
		"[ok](other.md) [ok](other.md#a-heading-with-code) [ok](#here) [ok](../plot.png) [ok](../docs)",
		"[ok](other.md#twice-1) ![ok](../plot.png \"a title\") [ok](https://example.com/x#y)",
		"[`ok code`](other.md) `[not a link](missing.md)`",
		"```",
		"[not a link](missing.md)",
		"```",
		"[bad file](missing.md)",
		"[bad anchor](other.md#nowhere)",
		"[bad local anchor](#there)",
		"[outside](../../x.md)",
		"[ref]: gone.md",
		`<img src="gone.png">`,
	}, "\n"))
	problems, checked := checkLinks(repo, filepath.Join(repo, "docs", "page.md"))
	want := []string{
		"docs/page.md:9: missing.md: no such file or folder",
		"docs/page.md:10: other.md#nowhere: no heading with the anchor #nowhere",
		"docs/page.md:11: #there: no heading with the anchor #there",
		"docs/page.md:12: ../../x.md: outside the repository",
		"docs/page.md:13: gone.md: no such file or folder",
		"docs/page.md:14: gone.png: no such file or folder",
	}
	if len(problems) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(problems), len(want), strings.Join(problems, "\n"))
	}
	for i := range min(len(problems), len(want)) {
		if !strings.HasPrefix(problems[i], want[i]) {
			t.Errorf("problem %d = %q, want it to start %q", i, problems[i], want[i])
		}
	}
	if checked != 14 {
		t.Errorf("checked %d relative links, want 14", checked)
	}
}

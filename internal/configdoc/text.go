package main

import (
	"regexp"
	"strings"
)

// spans finds, in a comment, what the reference writes as code: code spans already made (the
// lists written out), quoted strings, URLs, environment variables, key names and paths, and URL
// paths.
var spans = regexp.MustCompile(strings.Join([]string{
	"(`[^`]*`)", // 1 a code span
	`("[^"]*")`, // 2 a quoted string
	`([a-z][a-z0-9+.-]*://(?:[^\s,;)]*[^\s,;).])?)`,               // 3 a URL
	`\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b`,                         // 4 an environment variable
	`\b([a-z][a-z0-9_]*(?:\[\])?(?:\.[a-z][a-z0-9_]*(?:\[\])?)*)`, // 5 a word, perhaps a key
	`(?:^|[\s(])(/(?:[A-Za-z0-9._~{}/*-]*[A-Za-z0-9_~{}/*-])?)`,   // 6 a path
}, "|"))

// markdown writes a comment as Markdown: what spans finds as code, the rest with the characters
// Markdown would read escaped.
func (r *renderer) markdown(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range spans.FindAllStringSubmatchIndex(s, -1) {
		group := 0
		for g := 1; g <= 6; g++ {
			if m[2*g] >= 0 {
				group = g
				break
			}
		}
		start, end := m[2*group], m[2*group+1]
		text := s[start:end]
		asCode := true
		switch group {
		case 1:
			b.WriteString(escape(s[last:start]))
			b.WriteString(text)
			last = end
			continue
		case 5:
			asCode = strings.Contains(text, "_") || r.isKey(text)
		case 6:
			asCode = len(text) > 1
		}
		if !asCode {
			continue
		}
		b.WriteString(escape(s[last:start]))
		b.WriteString(code(text))
		last = end
	}
	b.WriteString(escape(s[last:]))
	return b.String()
}

// isKey reports whether w is a key path with at least one dot, whole or as the end of a longer
// one (cors.allowed_origins).
func (r *renderer) isKey(w string) bool {
	w = strings.ReplaceAll(w, "[]", "")
	if !strings.Contains(w, ".") {
		return false
	}
	for k := range r.known {
		if k == w || strings.HasSuffix(k, "."+w) {
			return true
		}
	}
	return false
}

var escaper = strings.NewReplacer(`\`, `\\`, "|", `\|`, "*", `\*`, "_", `\_`, "<", "&lt;", ">", "&gt;", "`", "\\`")

// escape writes plain text so that Markdown shows it as it is.
func escape(s string) string { return escaper.Replace(s) }

package main

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/scoregate/scoregate/config"
)

// lists are the config package's exported lists of strings that doc comments name; the reference
// shows their values in place of the name.
var lists = map[string][]string{
	"AllPermissions":           config.AllPermissions,
	"CredentialHeaders":        config.CredentialHeaders,
	"CredentialParams":         config.CredentialParams,
	"DefaultCORSHeaders":       config.DefaultCORSHeaders,
	"DefaultCORSMethods":       config.DefaultCORSMethods,
	"DefaultRedactQueryParams": config.DefaultRedactQueryParams,
	"ExternalAlgorithms":       config.ExternalAlgorithms,
}

// generate writes the reference of every key of config.Config, reading doc comments from the
// config package's source in dir.
func generate(dir string) ([]byte, error) {
	src, err := readSource(dir)
	if err != nil {
		return nil, err
	}
	return generateFrom(src)
}

// generateFrom writes the reference from the doc comments in src.
func generateFrom(src *source) ([]byte, error) {
	secs, err := sections(reflect.TypeFor[config.Config](), src)
	if err != nil {
		return nil, err
	}
	defs, err := defaults()
	if err != nil {
		return nil, err
	}
	req := map[string]bool{}
	for _, p := range required() {
		req[p] = true
	}
	known := map[string]bool{}
	for _, s := range secs {
		for _, k := range s.keys {
			known[strings.ReplaceAll(k.path, "[]", "")] = true
		}
	}
	r := &renderer{src: src, defs: defs, required: req, known: known}
	// Comments first: every problem with them is reported at once.
	var problems []string
	for _, s := range secs {
		if _, err := r.text(s.doc); err != nil {
			problems = append(problems, fmt.Sprintf("section %q: %v", s.path, err))
		}
		for _, k := range s.keys {
			doc, err := r.text(k.doc)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", k.path, err))
				continue
			}
			if k.leaf() {
				if err := r.checkStated(k, doc); err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", k.path, err))
				}
			}
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return r.render(secs)
}

type renderer struct {
	src      *source
	defs     map[string]*dflt
	required map[string]bool
	known    map[string]bool // key paths without "[]"
	anchors  map[string]string
}

var (
	wordRe     = regexp.MustCompile(`\b[A-Z][A-Za-z0-9]*\b`)
	statedRe   = regexp.MustCompile(`\bDefault\b:? ?`)
	tokenEdge  = `(^|[^0-9A-Za-z_])`
	tokenAfter = `($|[^0-9A-Za-z_])`
)

// text is a doc comment with the lists it names written out, each item a code span.
func (r *renderer) text(doc string) (string, error) {
	var err error
	out := wordRe.ReplaceAllStringFunc(doc, func(w string) string {
		if items, ok := lists[w]; ok {
			quoted := make([]string, len(items))
			for i, it := range items {
				quoted[i] = "`" + it + "`"
			}
			return strings.Join(quoted, ", ")
		}
		if r.src.vars[w] && err == nil {
			err = fmt.Errorf("the comment names config.%s, which configdoc cannot show: add it to configdoc's lists, or say what it holds", w)
		}
		return w
	})
	return out, err
}

// stated returns what a comment says of the default, from "Default" to the end, if it says.
func stated(doc string) (string, bool) {
	loc := statedRe.FindStringIndex(doc)
	if loc == nil {
		return "", false
	}
	return doc[loc[1]:], true
}

// hasToken reports whether tok occurs in s, not as part of a longer word or number.
func hasToken(s, tok string) bool {
	return regexp.MustCompile(tokenEdge + regexp.QuoteMeta(tok) + tokenAfter).MatchString(s)
}

// mentionsKey reports whether phrase names the key at path, by its path, its path relative to
// its section (scoring_timeout for services[].scoring_timeout) or its section's path.
func mentionsKey(phrase, path string) bool {
	path = strings.ReplaceAll(path, "[]", "")
	for _, w := range regexp.MustCompile(`[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*`).FindAllString(phrase, -1) {
		if !strings.ContainsAny(w, "_.") {
			continue
		}
		if w == path || strings.HasSuffix(path, "."+w) || strings.HasPrefix(path, w+".") {
			return true
		}
	}
	return false
}

// checkStated compares the default a key's comment states with the one the code applies. A key
// of a section type used in several places (auth_failure_limit's failures) may leave it to the
// comment of the key that holds the section.
func (r *renderer) checkStated(k *key, doc string) error {
	d := r.defs[k.path]
	phrase, ok := stated(doc)
	if !ok && k.parent != nil {
		parentDoc, _ := r.text(k.parent.doc)
		phrase, ok = stated(parentDoc)
	}
	v, from := d.effective()
	switch {
	case from != "":
		if !ok || !mentionsKey(phrase, from) {
			return fmt.Errorf("the default is the value of %s, and the comment does not say so", from)
		}
	case !v.IsZero():
		if !ok {
			return fmt.Errorf("the comment does not state the default, %s", plain(v))
		}
		if !statesValue(phrase, v) {
			return fmt.Errorf("the comment states the default %q, the code applies %s", phrase, plain(v))
		}
	case ok:
		lead, _, _ := strings.Cut(phrase, " ")
		lead = strings.TrimRight(lead, ".,;:")
		zero := map[string]bool{"0": true, "0s": true, `""`: true, "false": true, "[]": true}
		if regexp.MustCompile(`^([0-9"\[]|true)`).MatchString(lead) && !zero[lead] {
			return fmt.Errorf("the comment states the default %q, the code applies %s", phrase, plain(v))
		}
	}
	return nil
}

var durationRe = regexp.MustCompile(`\b[0-9][0-9.]*(?:ns|us|µs|ms|s|m|h)(?:[0-9.]+(?:ns|us|µs|ms|s|m|h))*\b`)

// statesValue reports whether phrase names the value v: each item of a list, a duration in any
// spelling (60s for 1m), anything else as it is written in YAML.
func statesValue(phrase string, v reflect.Value) bool {
	if v.Type() == durationType {
		for _, w := range durationRe.FindAllString(phrase, -1) {
			if d, err := time.ParseDuration(w); err == nil && int64(d) == v.Int() {
				return true
			}
		}
		return false
	}
	for _, tok := range tokens(v) {
		if !hasToken(phrase, tok) {
			return false
		}
	}
	return true
}

// tokens are the words a statement of the default v must contain.
func tokens(v reflect.Value) []string {
	if v.Kind() == reflect.Slice {
		out := make([]string, v.Len())
		for i := range v.Len() {
			out[i] = v.Index(i).String()
		}
		return out
	}
	return []string{plain(v)}
}

// plain writes a value as the YAML file would.
func plain(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return shortDuration(time.Duration(v.Int()))
	case v.Kind() == reflect.String:
		return v.String()
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case v.Kind() == reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case v.Kind() == reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case v.Kind() == reflect.Slice:
		return "[" + strings.Join(tokens(v), ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// shortDuration writes d as time.Duration does, without the zero minutes and seconds: 1h, 30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// cellValue writes a default for the reference's table.
func cellValue(v reflect.Value, name string) string {
	switch {
	case v.Kind() == reflect.String && v.String() == "":
		return "empty"
	case v.Kind() == reflect.Slice && v.Len() == 0:
		return "none"
	case v.Kind() == reflect.Slice:
		items := tokens(v)
		for i, it := range items {
			items[i] = code(it)
		}
		return strings.Join(items, ", ")
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64 && v.Type() != durationType && strings.HasSuffix(name, "bytes"):
		n := v.Int()
		for _, unit := range []struct {
			size int64
			name string
		}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
			if n >= unit.size && n%unit.size == 0 {
				return fmt.Sprintf("%s (%d %s)", code(plain(v)), n/unit.size, unit.name)
			}
		}
	}
	return code(plain(v))
}

func code(s string) string { return "`" + s + "`" }

// defaultCell is the default column of a key's row.
func (r *renderer) defaultCell(k *key) string {
	if r.required[k.path] {
		return "required"
	}
	if !k.leaf() {
		if k.typ.Kind() == reflect.Slice {
			return "none"
		}
		return "—"
	}
	d := r.defs[k.path]
	one := func(v reflect.Value, from string) string {
		if from != "" {
			return "same as " + r.link(from)
		}
		return cellValue(v, k.name)
	}
	var parts []string
	if !(d.value.IsZero() && d.from == "" && len(d.under) > 0) {
		parts = append(parts, one(d.value, d.from))
	}
	for _, s := range d.under {
		parts = append(parts, one(s.value, s.from)+" "+s.phrase)
	}
	return strings.Join(parts, "; ")
}

// link is a key path as a code span linking to its section.
func (r *renderer) link(path string) string {
	sec := path[:max(strings.LastIndex(path, "."), 0)]
	return "[" + code(path) + "](#" + r.anchors[sec] + ")"
}

// typeCell names a key's type for a user.
func typeCell(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "integer"
	case t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Struct:
		return "mapping"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "list of mappings"
	case t.Kind() == reflect.Slice:
		return "list of " + typeCell(t.Elem()) + "s"
	}
	return t.String()
}

// simpleDefault is a last sentence that only repeats the default column: "Default 10s.".
var simpleDefault = regexp.MustCompile(` ?\bDefault:? ("[^"]*"|[^ ]+)\.$`)

// meaning is the meaning column of a key's row.
func (r *renderer) meaning(k *key) string {
	doc := k.doc
	if k.leaf() || k.typ.Kind() == reflect.Slice {
		doc = simpleDefault.ReplaceAllString(doc, "")
	}
	doc, _ = r.text(doc)
	if rest, ok := strings.CutPrefix(doc, k.goName); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, ",")) {
		doc = code(k.name) + rest
	}
	out := r.markdown(doc)
	if !k.leaf() {
		out += " See " + r.sectionLink(k.nested) + "."
	}
	return out
}

func (r *renderer) sectionLink(s *section) string {
	return "[" + heading(s) + "](#" + r.anchors[s.path] + ")"
}

func heading(s *section) string {
	if s.path == "" {
		return "Top level"
	}
	return code(s.path)
}

// anchor is the fragment GitHub gives a heading: lower case, punctuation other than - and _
// dropped, spaces as dashes.
func anchor(h string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(h) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		case c == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// intro is the section's doc comment, its type's name replaced by what the section is.
func (r *renderer) intro(s *section) string {
	doc, _ := r.text(s.doc)
	subject := "This section"
	switch {
	case s.path == "":
		subject = "The top level"
	case strings.HasSuffix(s.path, "[]"):
		subject = "Each item"
	}
	if rest, ok := strings.CutPrefix(doc, s.typ.Name()+" "); ok {
		doc = subject + " " + rest
	}
	return r.markdown(doc)
}

func (r *renderer) render(secs []*section) ([]byte, error) {
	r.anchors = map[string]string{}
	seen := map[string]string{}
	for _, s := range secs {
		a := anchor(heading(s))
		if other, dup := seen[a]; dup {
			return nil, fmt.Errorf("sections %q and %q would share the anchor #%s", other, s.path, a)
		}
		seen[a] = s.path
		r.anchors[s.path] = a
	}
	var b bytes.Buffer
	b.WriteString("<!-- Code generated by go generate ./config (internal/configdoc) from the config package; DO NOT EDIT. -->\n\n")
	b.WriteString("# Configuration reference\n\n")
	var fileOnly []string
	for _, s := range secs {
		if strings.HasSuffix(s.path, "[]") && !strings.Contains(strings.TrimSuffix(s.path, "[]"), "[]") {
			fileOnly = append(fileOnly, code(strings.TrimSuffix(s.path, "[]")))
		}
	}
	fmt.Fprintf(&b, introText, code(config.EnvPrefix), code("server.read_timeout"), code(config.EnvName("server.read_timeout")),
		strings.Join(fileOnly, ", "))
	b.WriteString("\n## Sections\n\n")
	depth := func(s *section) int {
		n := 0
		for k := r.keyOf(secs, s); k != nil; k = k.parent {
			n++
		}
		return n
	}
	for _, s := range secs {
		fmt.Fprintf(&b, "%s- %s\n", strings.Repeat("  ", depth(s)), r.sectionLink(s))
	}
	for _, s := range secs {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", heading(s), r.intro(s))
		b.WriteString("| key | type | default | meaning |\n|---|---|---|---|\n")
		for _, k := range s.keys {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", code(k.path), typeCell(k.typ), r.defaultCell(k), r.meaning(k))
		}
	}
	return b.Bytes(), nil
}

// keyOf is the key whose section s is, nil for the top level.
func (r *renderer) keyOf(secs []*section, s *section) *key {
	for _, o := range secs {
		for _, k := range o.keys {
			if k.nested == s {
				return k
			}
		}
	}
	return nil
}

const introText = `scoregate reads one YAML file, named by ` + "`-config`" + ` or ` + "`GATEWAY_CONFIG`" + `. Unknown keys
are rejected, and ` + "`gateway check-config -config FILE`" + ` prints every problem at once. Every
key is optional unless its default says "required".

Every key that holds a value or a list of strings can be overridden by an environment variable:
%s and the key's path in upper case, with ` + "`_`" + ` for ` + "`.`" + `, so %s is
%s. A list takes comma-separated values. The keys inside
%s come from the file only.

Durations are Go durations (` + "`500ms`, `10s`, `2m`, `1h`" + `); sizes are in bytes. A default "same as"
another key takes that key's value. ` + "`GATEWAY_ADMIN_KEY`" + ` sets the Owner's key.

This file is generated from the doc comments of the config package's types by
` + "`go generate ./config`" + `: edit those, not this file.
`

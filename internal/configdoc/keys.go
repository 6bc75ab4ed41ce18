package main

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

var durationType = reflect.TypeFor[time.Duration]()

// section is one level of the YAML nesting: the top level, a mapping such as tls.acme, or the
// items of a list such as services[].
type section struct {
	path string // "" for the top level
	typ  reflect.Type
	doc  string // the struct type's doc comment
	keys []*key
}

// key is one configuration key.
type key struct {
	path   string // services[].max_body_bytes
	name   string // max_body_bytes
	goName string // MaxBodyBytes
	typ    reflect.Type
	doc    string   // the field's doc comment, one paragraph
	parent *key     // the key whose section holds this one, nil at the top level
	nested *section // for a mapping or a list of mappings, its section
}

// leaf reports whether the key holds a value rather than a section.
func (k *key) leaf() bool { return k.nested == nil }

// yamlName is the key name a struct field has in the YAML file, "" when it has none.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

// isSection reports whether values of t are YAML mappings, and whether they come as a list.
func isSection(t reflect.Type) (mapping, list bool) {
	switch {
	case t.Kind() == reflect.Struct && t != durationType:
		return true, false
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return true, true
	}
	return false, false
}

// sections walks the configuration type and returns its sections, the top level first and each
// nested one after the section that holds it, in the order of the fields. Every key must have a
// doc comment in src; the error lists every one that has none.
func sections(root reflect.Type, src *source) ([]*section, error) {
	var out []*section
	var missing []string
	var walk func(t reflect.Type, path string, parent *key) *section
	walk = func(t reflect.Type, path string, parent *key) *section {
		td := src.types[t.Name()]
		if td == nil {
			missing = append(missing, fmt.Sprintf("type %s (section %q) is not in the source", t.Name(), path))
			td = &typeDoc{fields: map[string]string{}}
		}
		s := &section{path: path, typ: t, doc: oneLine(td.doc)}
		out = append(out, s)
		for i := range t.NumField() {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" || !f.IsExported() {
				continue
			}
			k := &key{path: join(path, name), name: name, goName: f.Name, typ: f.Type, doc: oneLine(td.fields[f.Name]), parent: parent}
			if k.doc == "" {
				missing = append(missing, fmt.Sprintf("%s (field %s.%s) has no doc comment", k.path, t.Name(), f.Name))
			}
			s.keys = append(s.keys, k)
			if mapping, list := isSection(f.Type); mapping {
				if list {
					k.nested = walk(f.Type.Elem(), k.path+"[]", k)
				} else {
					k.nested = walk(f.Type, k.path, k)
				}
			}
		}
		if s.doc == "" {
			missing = append(missing, fmt.Sprintf("type %s (section %q) has no doc comment", t.Name(), path))
		}
		return s
	}
	walk(root, "", nil)
	if len(missing) > 0 {
		return nil, errors.New(strings.Join(missing, "\n"))
	}
	return out, nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

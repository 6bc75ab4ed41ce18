package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a configuration, at a field path such as
// "services[0].upstreams[1]".
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Problems is every problem found in a configuration. It is an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "; ")
}

// EnvPrefix starts the name of every environment variable that overrides a configuration field:
// the field's path in upper case with dots as underscores, so server.read_timeout is
// GATEWAY_SERVER_READ_TIMEOUT. Lists take comma-separated values; services cannot be overridden.
const EnvPrefix = "GATEWAY_"

// Load reads the YAML file at path, applies GATEWAY_* overrides from the environment and the
// defaults, and validates the result. Every problem is returned at once, as Problems: those found
// while decoding (unknown keys, wrong types) and those Validate finds in the rest of the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data, os.LookupEnv)
	var probs Problems
	if err != nil && (!errors.As(err, &probs) || c == nil) {
		return nil, err
	}
	if verr := c.Validate(); verr != nil {
		probs = merge(probs, verr.(Problems))
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return c, nil
}

// merge appends to found the problems of more that are not about a field found already reports
// (a field dropped for a decoding problem would otherwise be reported again as missing).
func merge(found, more Problems) Problems {
	out := found
next:
	for _, p := range more {
		for _, f := range found {
			if p.Path == f.Path || strings.HasPrefix(p.Path, f.Path+".") || strings.HasPrefix(p.Path, f.Path+"[") {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}

// Parse decodes YAML, applies overrides from lookupEnv (os.LookupEnv, or nil for none) and the
// defaults. It does not validate. Unknown keys, wrong types and bad overrides come back as
// Problems, together with the configuration decoded from the rest of the file (the fields with
// problems left at their defaults); the configuration is nil only when the file is not YAML.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Problems{{Path: "(file)", Message: "is empty"}}
		}
		return nil, Problems{{Path: "(file)", Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var probs Problems
	present := map[string]bool{}
	checkNode(&root, reflect.TypeOf(Config{}), "", &probs, present)
	var c Config
	if err := root.Decode(&c); err != nil {
		// checkNode has dropped every field it could not decode; this is a safety net.
		return nil, append(probs, Problem{Path: "(file)", Message: err.Error()})
	}
	if lookupEnv != nil {
		applyEnv(reflect.ValueOf(&c).Elem(), "", lookupEnv, &probs, present)
	}
	c.present = present
	c.ApplyDefaults()
	if len(probs) > 0 {
		return &c, probs
	}
	return &c, nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkNode walks node against the Go type t and records unknown keys, duplicate keys and values
// of the wrong type, each at its field path, so that one run reports all of them. It returns false
// for a node that cannot be decoded into t; the caller drops it, so that the rest still decodes.
func checkNode(node *yaml.Node, t reflect.Type, path string, probs *Problems, present map[string]bool) bool {
	for node.Kind == yaml.AliasNode && node.Alias != nil {
		node = node.Alias
	}
	if node.Kind == yaml.DocumentNode {
		if len(node.Content) > 0 && !checkNode(node.Content[0], t, path, probs, present) {
			node.Content = nil
		}
		return true
	}
	at := func(msg string) {
		p := path
		if p == "" {
			p = "(file)"
		}
		*probs = append(*probs, Problem{Path: p, Message: fmt.Sprintf("%s (line %d)", msg, node.Line)})
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return true // an empty value leaves the default
	}
	switch {
	case t.Kind() == reflect.Struct && t != durationType:
		if node.Kind != yaml.MappingNode {
			at("expected a mapping of fields")
			return false
		}
		seen := map[string]bool{}
		kept := node.Content[:0:0]
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			name := k.Value
			fpath := join(path, name)
			f, ok := fieldByTag(t, name)
			switch {
			case !ok:
				*probs = append(*probs, Problem{Path: fpath, Message: fmt.Sprintf("unknown field (line %d)", k.Line)})
			case seen[name]:
				*probs = append(*probs, Problem{Path: fpath, Message: fmt.Sprintf("given twice (line %d)", k.Line)})
			case checkNode(v, f.Type, fpath, probs, present):
				kept = append(kept, k, v)
				present[fpath] = true
			}
			seen[name] = true
		}
		node.Content = kept
	case t.Kind() == reflect.Slice:
		if node.Kind != yaml.SequenceNode {
			at("expected a list")
			return false
		}
		for i, item := range node.Content {
			if !checkNode(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), probs, present) {
				// keep the indexes of the items after it: an empty item stands in
				node.Content[i] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
			}
		}
	default:
		if node.Kind != yaml.ScalarNode {
			at("expected a single value, not a " + kindName(node.Kind))
			return false
		}
		if err := node.Decode(reflect.New(t).Interface()); err != nil {
			at(fmt.Sprintf("%q is not %s", node.Value, typeName(t)))
			return false
		}
	}
	return true
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if yamlName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func yamlName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return tag
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "value"
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration (like 500ms, 10s or 2m)"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "a whole number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Float64:
		return "a number"
	}
	return "a " + t.String()
}

// applyEnv overrides leaf fields of v from GATEWAY_<PATH> variables.
func applyEnv(v reflect.Value, path string, lookupEnv func(string) (string, bool), probs *Problems, present map[string]bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || name == "-" {
			continue
		}
		fpath := join(path, name)
		fv := v.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			applyEnv(fv, fpath, lookupEnv, probs, present)
			continue
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() != reflect.String:
			continue // lists of structures (services) come from the file only
		}
		env := EnvName(fpath)
		s, ok := lookupEnv(env)
		if !ok {
			continue
		}
		if err := setFromString(fv, s); err != nil {
			*probs = append(*probs, Problem{Path: fpath, Message: fmt.Sprintf("from %s: %q is not %s", env, s, typeName(f.Type))})
		}
		present[fpath] = true
	}
}

// EnvName is the environment variable that overrides the field at path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func setFromString(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		if v.OverflowInt(n) {
			return errors.New("out of range")
		}
		v.SetInt(n)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var items []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("cannot set %s from the environment", v.Type())
	}
	return nil
}

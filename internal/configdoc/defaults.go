package main

import (
	"errors"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/scoregate/scoregate/config"
)

// A key's default is what config's ApplyDefaults leaves in it, read from a configuration in which
// every list of mappings (services, their deployments and issuers, roles, tls.certificates) has
// one item and nothing is set.
//
// Some defaults exist only once another key is set (a token lifetime for token-mode services,
// say). Each switch below sets such a key; a key whose default changes under it shows that
// default with the switch's phrase. The phrases are written here, the values come from
// ApplyDefaults, and a switch that changes no default is an error.
var switches = []struct {
	phrase string
	set    func(c *config.Config)
}{
	{"with `services[].auth: token`", func(c *config.Config) { c.Services[0].Auth = config.AuthToken }},
	{"once `services[].cors.allowed_origins` is set", func(c *config.Config) {
		c.Services[0].CORS.AllowedOrigins = []string{"https://app.example.com"}
	}},
	{"once `requests_per_second` is set", func(c *config.Config) {
		c.Services[0].RateLimit.PerKey.RequestsPerSecond = 10
		c.Services[0].RateLimit.PerPrincipal.RequestsPerSecond = 10
	}},
	{"when several deployments are listed", func(c *config.Config) {
		c.Services[0].Deployments = append(c.Services[0].Deployments, config.Deployment{})
	}},
}

// dflt is a key's default.
type dflt struct {
	value reflect.Value // under no switch
	from  string        // the key whose value it takes (server.max_body_bytes), or ""
	// under are the defaults the switches give, where they differ from value.
	under []switched
}

type switched struct {
	phrase string
	value  reflect.Value
	from   string
}

// effective is the default a comment must state: the one under no switch, or, when that is the
// zero value, the first a switch gives.
func (d dflt) effective() (reflect.Value, string) {
	if d.value.IsZero() && d.from == "" && len(d.under) > 0 {
		return d.under[0].value, d.under[0].from
	}
	return d.value, d.from
}

// seed is a configuration with nothing set and one item in every list of mappings.
func seed() *config.Config {
	c := new(config.Config)
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		for i := range v.NumField() {
			f := v.Field(i)
			if !v.Type().Field(i).IsExported() {
				continue
			}
			switch mapping, list := isSection(f.Type()); {
			case list:
				f.Set(reflect.MakeSlice(f.Type(), 1, 1))
				fill(f.Index(0))
			case mapping:
				fill(f)
			}
		}
	}
	fill(reflect.ValueOf(c).Elem())
	return c
}

// leafValues maps each leaf key's path to its value in c (the first item of each list).
func leafValues(c *config.Config) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name := yamlName(f)
			if name == "" || !f.IsExported() {
				continue
			}
			p := join(path, name)
			switch mapping, list := isSection(f.Type); {
			case list:
				if v.Field(i).Len() > 0 {
					walk(v.Field(i).Index(0), p+"[]")
				}
			case mapping:
				walk(v.Field(i), p)
			default:
				out[p] = v.Field(i)
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// marker is a value of t that no default has, to find the defaults taken from another key; ok is
// false for types that cannot be told apart that way (booleans, lists).
func marker(t reflect.Type) (v reflect.Value, ok bool) {
	v = reflect.New(t).Elem()
	switch {
	case t == durationType:
		v.SetInt(int64(7919 * time.Millisecond))
	case t.Kind() == reflect.String:
		v.SetString("configdoc-marker")
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		v.SetInt(7919)
	case t.Kind() == reflect.Float64:
		v.SetFloat(0.7919)
	default:
		return v, false
	}
	return v, true
}

// defaults computes every leaf key's default.
func defaults() (map[string]*dflt, error) {
	type context struct {
		phrase string
		set    func(c *config.Config)
	}
	contexts := []context{{"", func(*config.Config) {}}}
	for _, s := range switches {
		contexts = append(contexts, context{s.phrase, s.set})
	}
	run := func(set func(c *config.Config)) map[string]reflect.Value {
		c := seed()
		set(c)
		c.ApplyDefaults()
		return leafValues(c)
	}
	// from[i][path] is the key whose value path's default takes under contexts[i]: set that key
	// to a marker, and the default follows.
	from := make([]map[string]string, len(contexts))
	values := make([]map[string]reflect.Value, len(contexts))
	for i, ctx := range contexts {
		values[i] = run(ctx.set)
		from[i] = map[string]string{}
		for src, v := range values[i] {
			m, ok := marker(v.Type())
			if !ok {
				continue
			}
			got := run(func(c *config.Config) {
				ctx.set(c)
				leafValues(c)[src].Set(m)
			})
			for p, w := range got {
				if p != src && w.Type() == m.Type() && w.Equal(m) && !values[i][p].Equal(m) {
					from[i][p] = src
				}
			}
		}
	}
	// The keys a switch sets are not defaults.
	bare := leafValues(seed())
	setBy := make([]map[string]bool, len(contexts))
	for i, ctx := range contexts {
		c := seed()
		ctx.set(c)
		setBy[i] = map[string]bool{}
		for p, v := range leafValues(c) {
			if !reflect.DeepEqual(v.Interface(), bare[p].Interface()) {
				setBy[i][p] = true
			}
		}
	}
	out := map[string]*dflt{}
	for p, v := range values[0] {
		d := &dflt{value: v, from: from[0][p]}
		for i := 1; i < len(contexts); i++ {
			if setBy[i][p] {
				continue
			}
			w := values[i][p]
			if !reflect.DeepEqual(w.Interface(), v.Interface()) || from[i][p] != d.from {
				d.under = append(d.under, switched{contexts[i].phrase, w, from[i][p]})
			}
		}
		out[p] = d
	}
	for i := 1; i < len(contexts); i++ {
		changed := false
		for _, d := range out {
			for _, s := range d.under {
				changed = changed || s.phrase == contexts[i].phrase
			}
		}
		if !changed {
			return nil, errors.New("the switch " + contexts[i].phrase + " changes no default: remove it from configdoc's switches")
		}
	}
	return out, nil
}

var itemIndex = regexp.MustCompile(`\[\d+\]`)

// required lists the keys Validate asks for, whatever else is set: those it calls required, in
// a configuration with defaults applied and nothing set, with and without one item in each list.
func required() []string {
	var out []string
	for _, c := range []*config.Config{new(config.Config), seed()} {
		c.ApplyDefaults()
		var probs config.Problems
		if err := c.Validate(); !errors.As(err, &probs) {
			continue
		}
		for _, p := range probs {
			m := p.Message
			unconditional := !strings.Contains(m, " when ") && !strings.Contains(m, " with ")
			if unconditional && (m == "required" || strings.HasPrefix(m, "required ") || strings.HasPrefix(m, "required:") ||
				strings.HasPrefix(m, "at least one ") && strings.Contains(m, " is required")) {
				out = append(out, itemIndex.ReplaceAllString(p.Path, "[]"))
			}
		}
	}
	return out
}

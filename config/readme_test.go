package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every configuration key has a row in docs/configuration.md, the reference that go generate
// writes from this package's types (internal/configdoc), by its path (services[].name for fields
// of list items).
func TestEveryKeyIsInTheConfigurationReference(t *testing.T) {
	ref, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := yamlName(f)
			if name == "" || name == "-" {
				continue
			}
			p := join(prefix, name)
			paths = append(paths, p)
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(f.Type, p)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(f.Type.Elem(), p+"[]")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	for _, p := range paths {
		if !strings.Contains(string(ref), "\n| `"+p+"` |") {
			t.Errorf("docs/configuration.md has no row for %s: run go generate ./config", p)
		}
	}
}

// The README sends its readers to the reference for the keys.
func TestREADMELinksTheConfigurationReference(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "](docs/configuration.md)") {
		t.Error("README.md does not link docs/configuration.md")
	}
}

package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// Every configuration key is documented in the README's configuration table, by its path
// (services[].name for fields of list items).
func TestEveryKeyIsInTheREADME(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
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
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(f.Type, p)
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				walk(f.Type.Elem(), p+"[]")
			default:
				paths = append(paths, p)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	for _, p := range paths {
		if !strings.Contains(string(readme), "`"+p+"`") && !strings.Contains(string(readme), "`"+p+"`,") {
			t.Errorf("README does not document %s", p)
		}
	}
}

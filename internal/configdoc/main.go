// Command configdoc writes docs/configuration.md, the reference of every configuration key, from
// the config package itself: the yaml tags give the keys and their nesting, the fields' doc
// comments their meaning, and config's ApplyDefaults and Validate their defaults and which keys
// are required. It fails when a key has no doc comment, or when a comment states a default the
// code does not apply. "go generate ./config" runs it.
//
// Usage:
//
//	configdoc [-src DIR] [-o FILE]
//
// -src is the folder of the config package's source (default "."); without -o the reference
// goes to stdout.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	src := flag.String("src", ".", "`folder` of the config package's source")
	out := flag.String("o", "", "`file` to write the reference to (default stdout)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "configdoc: no arguments expected, only -src and -o")
		os.Exit(2)
	}
	doc, err := generate(*src)
	if err != nil {
		fmt.Fprintf(os.Stderr, "configdoc: %v\n", err)
		os.Exit(1)
	}
	if *out == "" {
		_, err = os.Stdout.Write(doc)
	} else {
		err = os.WriteFile(*out, doc, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "configdoc: %v\n", err)
		os.Exit(1)
	}
}

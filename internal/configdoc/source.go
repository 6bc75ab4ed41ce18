package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// typeDoc is what the source says of one struct type: its doc comment and each field's.
type typeDoc struct {
	doc    string
	fields map[string]string // Go field name → doc comment, "" when it has none
}

// source is the config package's doc comments.
type source struct {
	types map[string]*typeDoc
	// vars are the package's exported variables; a comment that names one is shown with its
	// value when it is a list of strings (see lists).
	vars map[string]bool
}

// readSource parses the non-test Go files of the config package in dir.
func readSource(dir string) (*source, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	files = slices.DeleteFunc(files, func(f string) bool { return strings.HasSuffix(f, "_test.go") })
	if len(files) == 0 {
		return nil, fmt.Errorf("no Go files in %s", dir)
	}
	src := &source{types: map[string]*typeDoc{}, vars: map[string]bool{}}
	fset := token.NewFileSet()
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		f, err := parser.ParseFile(fset, name, data, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok {
				continue
			}
			for _, spec := range gd.Specs {
				switch spec := spec.(type) {
				case *ast.ValueSpec:
					if gd.Tok == token.VAR {
						for _, n := range spec.Names {
							if n.IsExported() {
								src.vars[n.Name] = true
							}
						}
					}
				case *ast.TypeSpec:
					st, ok := spec.Type.(*ast.StructType)
					if !ok {
						continue
					}
					doc := spec.Doc
					if doc == nil && len(gd.Specs) == 1 {
						doc = gd.Doc
					}
					td := &typeDoc{doc: doc.Text(), fields: map[string]string{}}
					for _, field := range st.Fields.List {
						for _, n := range field.Names {
							td.fields[n.Name] = field.Doc.Text()
						}
					}
					src.types[spec.Name.Name] = td
				}
			}
		}
	}
	return src, nil
}

// oneLine joins a comment's lines into one paragraph.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

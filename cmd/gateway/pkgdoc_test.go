package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// Every package of the module has exactly one package comment, in the form
// "// Package x ..." ("// Command x ..." for a command).
func TestEveryPackageHasOneDocComment(t *testing.T) {
	root := filepath.Join("..", "..")
	// folder → files with a package comment, and the count of files seen
	type pkg struct {
		name  string
		docs  []string
		files int
	}
	pkgs := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		p := pkgs[dir]
		if p == nil {
			p = &pkg{name: f.Name.Name}
			pkgs[dir] = p
		}
		p.files++
		if f.Doc != nil {
			p.docs = append(p.docs, path)
			want := "Package " + p.name + " "
			if p.name == "main" {
				want = "Command "
			}
			if !strings.HasPrefix(f.Doc.Text(), want) {
				t.Errorf("%s: package comment should start %q", path, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 5 {
		t.Fatalf("found only %d packages from %s", len(pkgs), root)
	}
	for dir, p := range pkgs {
		if len(p.docs) != 1 {
			t.Errorf("package %s in %s has %d package comments (%v), want exactly 1", p.name, dir, len(p.docs), p.docs)
		}
	}
}

package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A command shown to users is run by a test. The README and every document under docs/ follow
// the operations guide's conventions (see the top of opsguide_e2e_test.go): commands are
// ```console blocks with the output they print, run in order against the set-up the document
// itself starts; a block that cannot run here says why in skip="…". TestDocCommandBlocks fails
// on a document with commands that no test runs; TestDocCommands runs the documents listed in
// docGuides, each in a bash session and a scratch checkout of its own.

// docGuides are the documents TestDocCommands runs (the operations guide has its own test).
var docGuides = []guideRun{
	{
		path:  filepath.Join("..", "..", "README.md"),
		name:  "README.md",
		tools: []string{"bash", "curl", "jq", "go", "pkill"},
		logs:  []string{"quickstart.out", "quickstart.log", "gateway.log", "model.log"},
	},
	{
		path:  filepath.Join("..", "..", "docs", "keys-and-tokens.md"),
		name:  "docs/keys-and-tokens.md",
		tools: []string{"bash", "curl", "jq", "go"},
		logs:  []string{"gateway.log", "model.log"},
	},
	{
		path:  filepath.Join("..", "..", "docs", "language-models.md"),
		name:  "docs/language-models.md",
		tools: []string{"bash", "curl", "jq", "node"},
		logs:  []string{"quickstart.out", "quickstart.log"},
	},
}

// runByTests are the documents whose commands a test runs.
func runByTests() []string {
	names := []string{"docs/operations.md"}
	for _, g := range docGuides {
		names = append(names, g.name)
	}
	return names
}

// docsWithCommands are the README and the documents under docs/, by their names from the
// repository's root.
func docsWithCommands(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"README.md"}
	for _, d := range docs {
		names = append(names, "docs/"+filepath.Base(d))
	}
	return names
}

// Every command block of the README and of docs/ is run by a test or says why it is not. Runs
// without any tool.
func TestDocCommandBlocks(t *testing.T) {
	run := runByTests()
	for _, name := range docsWithCommands(t) {
		text, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		steps := parseGuide(t, name, string(text))
		commands := 0
		for _, s := range steps {
			switch s.kind {
			case "command", "hidden":
				commands++
			case "skip":
				if len(s.name) < 15 {
					t.Errorf("%s line %d: skip=%q does not say why the commands cannot run here", name, s.line, s.name)
				}
			}
		}
		if commands > 0 && !slices.Contains(run, name) {
			t.Errorf("%s has %d commands that no test runs: add it to docGuides (doccommands_e2e_test.go), or mark each block skip=\"why it cannot run here\"", name, commands)
		}
	}
	for _, g := range docGuides {
		text, err := os.ReadFile(g.path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range parseGuide(t, g.name, string(text)) {
			if s.kind == "command" {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s is in docGuides but shows no command to run", g.name)
		}
	}
}

// TestDocCommands runs the README's commands and those of the documents under docs/ that show
// any; see the top of this file.
func TestDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the documents' commands: the quickstart, gateways, the sample model")
	}
	for _, g := range docGuides {
		t.Run(strings.ReplaceAll(g.name, "/", "_"), func(t *testing.T) {
			runGuide(t, g)
		})
	}
}

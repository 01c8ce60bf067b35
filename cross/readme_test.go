package cross

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeLayout: the README's Layout lists every Go package of the
// module (and cross/pkgtool), each under its top-level directory, so that a
// newcomer can find where a thing lives.
func TestReadmeLayout(t *testing.T) {
	r := root(t)
	readme, err := os.ReadFile(filepath.Join(r, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no Layout section")
	}
	_, block, ok := strings.Cut(rest, "```\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("README.md's Layout has no code block")
	}
	// top directory -> the words listed under it
	listed := map[string]map[string]bool{}
	top := ""
	for _, line := range strings.Split(block, "\n") {
		words := strings.FieldsFunc(line, func(c rune) bool { return strings.ContainsRune(" \t,:;()", c) })
		if len(words) == 0 {
			continue
		}
		if !strings.HasPrefix(line, " ") && strings.HasSuffix(words[0], "/") {
			top = strings.TrimSuffix(words[0], "/")
			listed[top] = map[string]bool{}
			continue
		}
		for _, w := range words {
			listed[top][w] = true
		}
	}
	cmd := exec.Command("go", "list", "./...")
	cmd.Dir = r
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/blockcast/beacon/"
	pkgs := append(strings.Fields(string(out)), mod+"cross/pkgtool")
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p, mod)
		dir, sub, _ := strings.Cut(rel, "/")
		words, ok := listed[dir]
		switch {
		case !ok:
			t.Errorf("README Layout has no %s/ line (for %s)", dir, rel)
		case sub != "" && !words[sub]:
			t.Errorf("README Layout does not list %s under %s/", sub, dir)
		}
	}
}

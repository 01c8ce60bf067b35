package cross

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

// Module is the main module's path.
const Module = "github.com/blockcast/beacon"

// LayerRule forbids the packages under From to link what Forbidden names
// (prefixes, matched as in CheckImports).
type LayerRule struct {
	From      string   // import-path prefix the rule holds for
	Forbidden []string // import-path prefixes those packages must not link
	Tests     bool     // the rule holds for test builds too
	Why       string
}

// LayerRules is the design's layering (design.md, "Layout"): firmware and
// cloud never import each other and shared imports neither, in tests too
// (a test that needs both ends belongs in test/). Every firmware package,
// not only the one cmd/beacon links today, keeps clear of what
// ForbiddenImports keeps off the router's flash; firmware tests may use
// such packages (e.g. miekg/dns as a reference peer).
var LayerRules = []LayerRule{
	{From: Module + "/firmware", Forbidden: []string{Module + "/cloud"}, Tests: true, Why: "firmware never imports cloud"},
	{From: Module + "/cloud", Forbidden: []string{Module + "/firmware"}, Tests: true, Why: "cloud never imports firmware"},
	{From: Module + "/shared", Forbidden: []string{Module + "/firmware", Module + "/cloud"}, Tests: true, Why: "shared imports neither firmware nor cloud"},
	{From: Module + "/firmware", Forbidden: ForbiddenImports, Why: "the beacon must not link it (cross/budget.go ForbiddenImports)"},
}

// ListedPackage is one package as `go list -test -json` reports it. Test
// builds appear as "P [P.test]", "P_test [P.test]" and "P.test".
type ListedPackage struct {
	ImportPath string
	ForTest    string
	Imports    []string
	Deps       []string
}

// IsTest reports whether p exists only in a test build.
func (p ListedPackage) IsTest() bool {
	return p.ForTest != "" || strings.HasSuffix(p.ImportPath, ".test")
}

// plainPath drops the " [P.test]" of a test build's variant.
func plainPath(s string) string {
	if i := strings.Index(s, " ["); i >= 0 {
		return s[:i]
	}
	return s
}

// under reports whether path is prefix or below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/") ||
		strings.HasPrefix(path, prefix+"_test") || strings.HasPrefix(path, prefix+".test")
}

// LayerViolation is one package linking what a rule forbids.
type LayerViolation struct {
	Package string   // the package (or test build) that links Dep
	Dep     string   // the forbidden package
	Chain   []string // Package → … → Dep through the listed packages' imports, when found
	Rule    LayerRule
}

func (v LayerViolation) String() string {
	chain := strings.Join(v.Chain, " → ")
	if chain == "" {
		chain = v.Package + " → … → " + v.Dep
	}
	return fmt.Sprintf("%s: %s", v.Rule.Why, chain)
}

// CheckLayers applies rules to every package in pkgs and returns the
// violations, one per package and forbidden dependency.
func CheckLayers(pkgs []ListedPackage, rules []LayerRule) []LayerViolation {
	imports := map[string][]string{}
	for _, p := range pkgs {
		imports[p.ImportPath] = p.Imports
	}
	var out []LayerViolation
	for _, p := range pkgs {
		if p.ForTest == "" && strings.HasSuffix(p.ImportPath, ".test") {
			continue // a test's generated main: its variants below say more
		}
		found := map[string]bool{} // one violation per dependency, by the first rule
		for _, r := range rules {
			if !under(plainPath(p.ImportPath), r.From) || (p.IsTest() && !r.Tests) {
				continue
			}
			deps := make([]string, 0, len(p.Deps))
			for _, d := range p.Deps {
				deps = append(deps, plainPath(d))
			}
			for _, bad := range CheckImports(deps, r.Forbidden) {
				if found[bad] {
					continue
				}
				found[bad] = true
				out = append(out, LayerViolation{Package: p.ImportPath, Dep: bad, Chain: importChain(imports, p.ImportPath, bad), Rule: r})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Package != out[j].Package {
			return out[i].Package < out[j].Package
		}
		return out[i].Dep < out[j].Dep
	})
	return out
}

// importChain finds a shortest import path from one package to another
// (breadth first over the listed imports), so a failure names the import
// to remove. Test variants' imports carry " [P.test]"; dep is plain.
func importChain(imports map[string][]string, from, dep string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if plainPath(cur) == dep {
			var chain []string
			for n := cur; n != ""; n = prev[n] {
				if n == from {
					chain = append(chain, n) // says which test build, if one
				} else {
					chain = append(chain, plainPath(n))
				}
			}
			for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
				chain[i], chain[j] = chain[j], chain[i]
			}
			return chain
		}
		for _, next := range imports[cur] {
			if _, seen := prev[next]; !seen {
				prev[next] = cur
				queue = append(queue, next)
			}
		}
	}
	return nil
}

// ListPackages runs `go list -test -json` for patterns in root, with the
// environment env added (e.g. a target's GOOS/GOARCH: the graph can differ
// between architectures).
func ListPackages(ctx context.Context, root string, env []string, patterns ...string) ([]ListedPackage, error) {
	args := append([]string{"list", "-test", "-json=ImportPath,ForTest,Imports,Deps"}, patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local"), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cross: go list -test %s: %w\n%s", strings.Join(patterns, " "), err, stderr.String())
	}
	var pkgs []ListedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p ListedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("cross: reading go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

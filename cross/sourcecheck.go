package cross

// Source rules a compiler cannot check: one slog key for errors ("err"),
// and HTTP API paths only as constants in shared/protocol. The tests run
// the checks over the tree; the checks take parsed files so that they are
// tested themselves.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Finding is one rule broken at one place.
type Finding struct {
	Pos  token.Position
	What string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s", f.Pos, f.What) }

// slogMethods are the slog.Logger methods and slog package functions that
// take a message (at msgArg) followed by key/value pairs or Attrs. With takes
// pairs only (msgArg -1).
var slogMethods = map[string]int{
	"Debug": 0, "Info": 0, "Warn": 0, "Error": 0,
	"DebugContext": 1, "InfoContext": 1, "WarnContext": 1, "ErrorContext": 1,
	"Log": 2, "LogAttrs": 2, "With": -1,
}

// slogAttrs are the slog constructors whose first argument is a key.
var slogAttrs = map[string]bool{
	"String": true, "Any": true, "Int": true, "Int64": true, "Uint64": true, "Float64": true,
	"Bool": true, "Time": true, "Duration": true, "Group": true,
}

// ErrorKey is the slog key this project spells "err"; BadErrorKeys are the
// other spellings the check refuses.
const ErrorKey = "err"

var BadErrorKeys = map[string]bool{"error": true, "Error": true, "ERROR": true, "e": true}

// CheckSlogKeys reports every slog call in one file's source that uses a spelling
// of the error key other than ErrorKey. Calls are found by syntax: a method
// of slogMethods on anything but an imported package other than log/slog
// (so http.Error(w, "error", 500) is not a log call), and slog's Attr
// constructors.
func CheckSlogKeys(fset *token.FileSet, f *ast.File) []Finding {
	pkgs := map[string]string{} // local name → import path
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		name := p[strings.LastIndex(p, "/")+1:]
		if im.Name != nil {
			name = im.Name.Name
		}
		pkgs[name] = p
	}
	var out []Finding
	badKey := func(e ast.Expr) {
		if s, ok := stringLit(e); ok && BadErrorKeys[s] {
			out = append(out, Finding{fset.Position(e.Pos()), fmt.Sprintf("slog key %q: spell it %q", s, ErrorKey)})
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		pkg := ""
		if id, ok := sel.X.(*ast.Ident); ok {
			pkg = pkgs[id.Name]
		}
		if pkg == "log/slog" && slogAttrs[sel.Sel.Name] && len(call.Args) > 0 {
			badKey(call.Args[0])
			return true
		}
		msgArg, ok := slogMethods[sel.Sel.Name]
		if !ok || (pkg != "" && pkg != "log/slog") {
			return true
		}
		// After the message: a string literal is a key (its value follows);
		// anything else is taken as one Attr.
		for i := msgArg + 1; i < len(call.Args); i++ {
			if _, ok := stringLit(call.Args[i]); ok {
				badKey(call.Args[i])
				i++
			}
		}
		return true
	})
	return out
}

// apiPath matches a string literal that is, or ends in, an HTTP API path of
// castd or the beacon: "/v1", "/v1/...", "/healthz", "/metrics", also after
// a scheme and host. MQTT topics ("blockcast/v1/...") do not start with "/".
var apiPath = regexp.MustCompile(`^(https?://[^/]*)?/(v1(/|$|\?)|healthz$|metrics$)`)

// CheckAPIPaths reports every string literal in one file that spells an API
// path; they belong in shared/protocol as constants.
func CheckAPIPaths(fset *token.FileSet, f *ast.File) []Finding {
	var out []Finding
	ast.Inspect(f, func(n ast.Node) bool {
		if s, ok := stringLit(n); ok && apiPath.MatchString(s) {
			out = append(out, Finding{fset.Position(n.Pos()), fmt.Sprintf("API path %q: use a shared/protocol constant", s)})
		}
		return true
	})
	return out
}

func stringLit(n ast.Node) (string, bool) {
	lit, ok := n.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// ScanSources parses every non-test .go file under root's dirs (relative paths,
// e.g. "cloud") except those under skip, and runs check on each.
func ScanSources(root string, dirs, skip []string, check func(*token.FileSet, *ast.File) []Finding) ([]Finding, error) {
	fset := token.NewFileSet()
	var out []Finding
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, path)
			rel = filepath.ToSlash(rel)
			if d.IsDir() {
				if d.Name() == "testdata" || skipped(rel, skip) {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || skipped(rel, skip) {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
			if err != nil {
				return fmt.Errorf("sourcecheck: %w", err)
			}
			out = append(out, check(fset, f)...)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

func skipped(rel string, skip []string) bool {
	for _, s := range skip {
		if rel == s || strings.HasPrefix(rel, s+"/") {
			return true
		}
	}
	return false
}

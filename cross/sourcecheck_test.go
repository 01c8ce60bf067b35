package cross

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"
)

// sourceRoot is the module root, from this package's directory.
const sourceRoot = ".."

var sourceTrees = []string{"cloud", "firmware", "shared"}

func parseSrc(t *testing.T, src string) (*token.FileSet, *ast.File) {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fset, f
}

func TestSlogKeysRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		bad  int
	}{
		{"logger error key", `s.log.Warn("x", "node", id, "error", err)`, 1},
		{"logger err key", `s.log.Warn("x", "node", id, "err", err)`, 0},
		{"value is the word error", `s.log.Warn("x", "level", "error")`, 0},
		{"attr then key", `log.Info("x", slog.Int("n", 1), "error", err)`, 1},
		{"slog.String attr", `log.Info("x", slog.String("error", err.Error()))`, 1},
		{"package func", `slog.Error("x", "error", err)`, 1},
		{"context method", `l.ErrorContext(ctx, "x", "error", err)`, 1},
		{"Log with level", `l.Log(ctx, slog.LevelWarn, "x", "error", err)`, 1},
		{"With", `l = l.With("error", err)`, 1},
		{"message is error", `l.Info("error")`, 0},
		{"http.Error is not a log call", `http.Error(w, "error", 500)`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "package p\nimport (\n\"log/slog\"\n\"net/http\"\n)\nvar _, _ = slog.Int, http.Error\nfunc f() {\n" + tc.body + "\n}\n"
			fset, f := parseSrc(t, src)
			if got := CheckSlogKeys(fset, f); len(got) != tc.bad {
				t.Errorf("%s: %d findings %v, want %d", tc.body, len(got), got, tc.bad)
			}
		})
	}
}

// TestSlogErrorKey fails when a non-test source logs an error under any key
// but "err".
func TestSlogErrorKey(t *testing.T) {
	found, err := ScanSources(sourceRoot, sourceTrees, nil, CheckSlogKeys)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Error(f)
	}
}

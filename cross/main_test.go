package cross

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// testVersion is stamped into the test builds: PackageVersion turns it into
// 1.2.3.4, which the package tests then expect to find.
const testVersion = "v1.2.3-4-gdeadbee"

// binDir holds what the tests build, once per run: cross builds are slow
// (minutes on a busy 2-core machine), so every test shares them.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "blockcast-cross-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need returns the path of tool, skipping the test when it is missing,
// except in CI (CI=true), where a missing tool is a failure.
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI (test/install-deps.sh installs it): %v", tool, err)
	}
	t.Skipf("%s not installed (test/install-deps.sh): %v", tool, err)
	return ""
}

// slow skips tests that cross-compile or emulate under -short.
func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("cross builds and emulation: skipped with -short")
	}
}

func root(t *testing.T) string {
	t.Helper()
	r, err := ModuleRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type once struct {
	sync.Once
	val string
	err error
}

var (
	buildMu sync.Mutex
	builds  = map[string]*once{}
	artMu   sync.Mutex
	arts    = map[string]Artifact{}
)

// built returns the release build of the target called name (stripped,
// trimmed, CGO off: exactly what make cross ships), building it on first use.
func built(t *testing.T, name string) Artifact {
	t.Helper()
	slow(t)
	buildMu.Lock()
	o := builds[name]
	if o == nil {
		o = &once{}
		builds[name] = o
	}
	buildMu.Unlock()
	o.Do(func() {
		tg, err := Lookup(name)
		if err != nil {
			o.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		r, err := ModuleRoot(ctx)
		if err != nil {
			o.err = err
			return
		}
		a, err := Build(ctx, BuildOptions{Root: r, OutDir: binDir, Version: testVersion}, tg)
		if err != nil {
			o.err = err
			return
		}
		artMu.Lock()
		arts[name] = a
		artMu.Unlock()
	})
	if o.err != nil {
		t.Fatal(o.err)
	}
	artMu.Lock()
	defer artMu.Unlock()
	return arts[name]
}

var castdOnce once

// castd returns a native castd (harness.Build also builds a native beacon,
// which these tests do not use).
func castd(t *testing.T) string {
	t.Helper()
	slow(t)
	castdOnce.Do(func() {
		dir := filepath.Join(binDir, "native")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			castdOnce.err = err
			return
		}
		b, err := harness.Build(dir)
		castdOnce.val, castdOnce.err = b.Castd, err
	})
	if castdOnce.err != nil {
		t.Fatal(castdOnce.err)
	}
	return castdOnce.val
}

var pkgtoolOnce once

// pkgtool builds cross/pkgtool (its own module: `go test ./...` at the root
// does not reach it) and returns the binary.
func pkgtool(t *testing.T) string {
	t.Helper()
	slow(t)
	pkgtoolOnce.Do(func() {
		out := filepath.Join(binDir, "pkgtool")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = filepath.Join(root(t), "cross", "pkgtool")
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			pkgtoolOnce.err = fmt.Errorf("building cross/pkgtool: %w\n%s", err, b)
			return
		}
		pkgtoolOnce.val = out
	})
	if pkgtoolOnce.err != nil {
		t.Fatal(pkgtoolOnce.err)
	}
	return pkgtoolOnce.val
}

// packages runs pkgtool on a manifest of the given targets' test builds and
// returns the output directory. extra are more pkgtool flags.
func packages(t *testing.T, formats string, names []string, extra ...string) string {
	t.Helper()
	tool := pkgtool(t)
	m := &Manifest{Version: testVersion, PackageVersion: PackageVersion(testVersion)}
	for _, n := range names {
		m.Artifacts = append(m.Artifacts, built(t, n))
	}
	dir := t.TempDir()
	man := filepath.Join(dir, ManifestName)
	if err := WriteManifest(man, m); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "pkg")
	args := append([]string{"--root", root(t), "--manifest", man, "--out", out, "--formats", formats}, extra...)
	cmd := exec.Command(tool, args...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkgtool %v: %v\n%s", args, err, b)
	}
	return out
}

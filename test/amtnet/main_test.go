package amtnet

import (
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

var (
	buildOnce sync.Once
	bins      harness.Binaries
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds castd and beacon once for the whole test binary, on first
// use, so a run in which every test skips builds nothing.
func binaries(tb testing.TB) harness.Binaries {
	tb.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "amtnet-bin-"); buildErr == nil {
			bins, buildErr = harness.Build(binDir)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return bins
}

// require skips the test (fails it with CI=true) unless namespaces can be
// made and every tool is installed, and returns the tools' paths. Every
// test here is skipped with -short: each starts processes in namespaces.
func require(tb testing.TB, tools ...string) map[string]string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("multi-namespace test; skipped with -short")
	}
	missing := missingf(tb)
	if err := netns.Available(); err != nil {
		missing("%v", err)
	}
	paths := map[string]string{}
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			missing("%s not installed: %v", tool, err)
		}
		paths[tool] = p
	}
	return paths
}

// missingf is how a test reports a missing prerequisite: it skips, or with
// CI=true, where everything must be installed, fails.
func missingf(tb testing.TB) func(format string, args ...any) {
	if os.Getenv("CI") == "true" {
		return tb.Fatalf
	}
	return tb.Skipf
}

package amtnet

import (
	"os"
	"os/exec"
	"testing"

	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

var build = harness.SharedBuild{Prefix: "amtnet-bin-"}

func TestMain(m *testing.M) {
	code := m.Run()
	build.Remove()
	os.Exit(code)
}

// binaries builds castd and beacon once for the whole test binary, on first
// use, so a run in which every test skips builds nothing.
func binaries(tb testing.TB) harness.Binaries {
	tb.Helper()
	bins, err := build.Get()
	if err != nil {
		tb.Fatal(err)
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

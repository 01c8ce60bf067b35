package mcnet

import (
	"flag"
	"os"
	"testing"

	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// TestDelivery runs the full topology (20 native beacons, 5
// through AMT, a 20 MiB object: about a minute on 2 cores); -mcnet.quick
// runs 5 + 2 and 4 MiB, and the counts can be set.
var (
	quick      = flag.Bool("mcnet.quick", false, "TestDelivery with 5 native + 2 AMT beacons and a 4 MiB object")
	nativeFlag = flag.Int("mcnet.native", 0, "native beacons on the segment in TestDelivery (0: 20, or 5 with -mcnet.quick)")
	amtFlag    = flag.Int("mcnet.amt", 0, "beacons through AMT in TestDelivery (0: 5, or 2 with -mcnet.quick)")
)

// sizes returns the beacon counts and object size of TestDelivery.
func sizes() (native, viaAMT int, size int64) {
	native, viaAMT, size = 20, 5, 20<<20
	if *quick {
		native, viaAMT, size = 5, 2, 4<<20
	}
	if *nativeFlag > 0 {
		native = *nativeFlag
	}
	if *amtFlag > 0 {
		viaAMT = *amtFlag
	}
	return native, viaAMT, size
}

var build = harness.SharedBuild{Prefix: "mcnet-bin-"}

func TestMain(m *testing.M) {
	flag.Parse()
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
// made. Every test here is skipped with -short.
func require(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("multi-namespace test; skipped with -short")
	}
	netns.Require(tb)
}

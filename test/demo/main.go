// Command demo runs the whole system on loopback (an HTTP origin, castd and
// one beacon), fetches one URL through the request router twice as an end
// user would, prints where each request went and whether the beacon's cache
// missed or hit; then starts more beacons that all ask for one popular
// object, which castd sends once by multicast (multicast.go); and stops
// everything. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

func main() {
	dir := flag.String("dir", filepath.Join(os.TempDir(), "blockcast-demo"), "directory for all demo state and logs (emptied first)")
	bin := flag.String("bin", "", "directory holding built castd and beacon (default: build into DIR/bin)")
	size := flag.String("size", "4M", "size of the demo object (e.g. 1024, 64k, 4M)")
	flag.Parse()
	if err := run(*dir, *bin, *size); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(dir, binDir, size string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Printf("Blockcast Beacon demo: all state and logs under %s\n\n", dir)
	var bins harness.Binaries
	var err error
	if binDir == "" {
		binDir = filepath.Join(dir, "bin")
		if err := os.MkdirAll(binDir, 0o755); err != nil {
			return err
		}
		fmt.Println("building castd and beacon ...")
		if bins, err = harness.Build(binDir); err != nil {
			return err
		}
	} else {
		bins = harness.Binaries{Castd: filepath.Join(binDir, "castd"), Beacon: filepath.Join(binDir, "beacon")}
	}
	sys, err := harness.NewSystem(dir, bins)
	if err != nil {
		return err
	}
	defer func() {
		if err := sys.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping:", err)
		} else {
			fmt.Println("\nstopped castd and the beacon cleanly; nothing is left running.")
		}
	}()
	fmt.Printf("origin  %s (a real HTTP server with generated content)\n", sys.Origin.URL)
	if sys.CastdArgs, err = multicastCastdArgs(); err != nil {
		return err
	}
	sys.BeaconArgs = multicastBeaconArgs
	if err := sys.Start(); err != nil {
		return err
	}
	st, _ := harness.BeaconStatus(sys.AdminAddr)
	fmt.Printf("castd   %s (log: %s)\n", sys.CastdURL(), sys.Castd.Log)
	fmt.Printf("beacon  http://%s  node %v, registered with public IP %v (log: %s)\n\n", sys.BeaconAddr, st["node_id"], st["public_ip"], sys.Beacon.Log)

	n, err := harness.ParseSize(size)
	if err != nil {
		return err
	}
	path := "/obj/" + size + "/demo-video.bin"
	url := sys.CastdURL() + path
	want := harness.ContentSHA256(path, n)
	// What the README promises: both requests routed to the beacon, a MISS
	// and then a HIT, one origin pull. Anything else fails the demo.
	wantCache := []string{"", "MISS", "HIT"}
	for i := 1; i <= 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		res, err := harness.Fetch(ctx, url, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		fmt.Printf("request %d: GET %s\n", i, url)
		for _, h := range res.Hops {
			if h.Route != "" {
				fmt.Printf("  router: %d → %s (decision %q, node %s)\n", h.Status, h.Location, h.Route, h.Node)
			} else {
				fmt.Printf("  %s: %d, X-Cache: %s\n", h.URL, h.Status, h.Cache)
			}
		}
		verdict := "matches the origin"
		if res.SHA256 != want {
			verdict = "DOES NOT match the origin"
		}
		last := res.Hops[len(res.Hops)-1]
		fmt.Printf("  → %s: %d bytes in %s, sha256 %s… %s\n\n", last.Cache, len(res.Body), res.Took.Round(time.Millisecond), res.SHA256[:12], verdict)
		if res.SHA256 != want || res.Status != 200 {
			return fmt.Errorf("request %d: wrong content (status %d)", i, res.Status)
		}
		if first := res.Hops[0]; first.Route != protocol.DecisionBeacon {
			return fmt.Errorf("request %d: the router sent it to %q, not to the beacon", i, first.Route)
		}
		if last.Cache != wantCache[i] {
			return fmt.Errorf("request %d: X-Cache %q, want %s", i, last.Cache, wantCache[i])
		}
	}
	pulls := sys.Origin.Hits(path)
	fmt.Printf("origin requests for %s: %d (the second request never left the beacon)\n", path, pulls)
	if pulls != 1 {
		return fmt.Errorf("the origin was asked %d times for %s, want once", pulls, path)
	}
	return runMulticast(sys, size)
}

package cross

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// shippedTargets are every target of targets.txt, each run where it runs
// here: under its qemu-user binary, or natively. A target added to the
// list is tested without a change here.
func shippedTargets(t *testing.T) []string {
	t.Helper()
	ts, err := Targets()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tg := range ts {
		names = append(names, tg.Name)
	}
	return names
}

var base58RE = regexp.MustCompile(`^[1-9A-HJ-NP-Za-km-z]{32,44}$`)

// emulated returns the command prefix that runs the target's binary here:
// qemu-user called explicitly (binfmt_misc is not mounted here).
func emulated(t *testing.T, name string) (Artifact, []string) {
	t.Helper()
	a := built(t, name)
	if a.Target.QEMU == "" {
		return a, nil
	}
	prefix := []string{need(t, a.Target.QEMU)}
	if cpu, ok := qemuCPU[name]; ok {
		prefix = append(prefix, "-cpu", cpu)
	} else {
		t.Fatalf("no qemu CPU model for target %s: add the oldest core it ships for to qemuCPU", name)
	}
	return a, prefix
}

// qemuCPU is the oldest core each emulated target ships for, so that an
// instruction the build must not use (ARMv7 code in an ARMv5 build, an FPU
// op on a 24Kc) traps here as it would on the device.
var qemuCPU = map[string]string{
	"mipsle": "24Kc",       // ath79, ramips
	"mips":   "24Kc",       // ath79 big-endian boards
	"armv5":  "arm926",     // kirkwood, orion
	"armv6":  "arm1176",    // Raspberry Pi 1 and Zero
	"armv7":  "cortex-a7",  // ipq40xx, mt7623, Pi 2
	"arm64":  "cortex-a53", // mt7622, Pi 3 and later
}

func runEmulated(t *testing.T, prefix []string, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append(append(append([]string{}, prefix...), bin), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestQEMUCommands runs the cross-built CLI: --version, keygen (and that a
// second keygen never overwrites the wallet), id.
func TestQEMUCommands(t *testing.T) {
	for _, name := range shippedTargets(t) {
		t.Run(name, func(t *testing.T) {
			a, qemu := emulated(t, name)
			checkELF(t, a)
			out, errOut, err := runEmulated(t, qemu, a.Binary, "--version")
			if err != nil || strings.TrimSpace(out) != "beacon "+testVersion {
				t.Fatalf("--version: %v %q %q", err, out, errOut)
			}

			key := filepath.Join(t.TempDir(), "wallet.json")
			out, errOut, err = runEmulated(t, qemu, a.Binary, "keygen", "--key", key)
			id := strings.TrimSpace(out)
			if err != nil || !base58RE.MatchString(id) {
				t.Fatalf("keygen: %v %q %q", err, out, errOut)
			}
			fi, err := os.Stat(key)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("wallet mode %o, want 600", fi.Mode().Perm())
			}
			before, err := os.ReadFile(key)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := runEmulated(t, qemu, a.Binary, "keygen", "--key", key); err == nil {
				t.Error("a second keygen succeeded; it must refuse to overwrite the wallet")
			}
			after, err := os.ReadFile(key)
			if err != nil || !bytes.Equal(before, after) {
				t.Fatalf("the wallet changed on a second keygen (%v)", err)
			}
			out, errOut, err = runEmulated(t, qemu, a.Binary, "id", "--key", key)
			if err != nil || strings.TrimSpace(out) != id {
				t.Fatalf("id: %v %q %q, want %s", err, out, errOut, id)
			}
		})
	}
}

// waitStored waits until the beacon's cache holds n objects. The beacon
// commits a fill to its store only after the response has gone out, and an
// emulated beacon is slow: a request right behind the first one can still
// join the fill and be a MISS.
func waitStored(t *testing.T, adminAddr string, n float64) {
	t.Helper()
	var last map[string]any
	ok := harness.WaitFor(15*time.Second, func() bool {
		st, err := harness.BeaconStatus(adminAddr)
		if err != nil {
			return false
		}
		last = st
		c, _ := st["cache"].(map[string]any)
		objs, _ := c["Objects"].(float64)
		return objs >= n
	})
	if !ok {
		t.Fatalf("the beacon's cache did not reach %v objects: status %v", n, last)
	}
}

// TestQEMUServe runs the cross-built beacon under qemu against a native
// castd and a real origin: it registers, then serves one object twice
// through the request router, a MISS filled from castd and then a HIT.
func TestQEMUServe(t *testing.T) {
	cd := castd(t)
	for _, name := range shippedTargets(t) {
		t.Run(name, func(t *testing.T) {
			a, qemu := emulated(t, name)
			sys, err := harness.NewSystem(t.TempDir(), harness.Binaries{Castd: cd, Beacon: a.Binary})
			if err != nil {
				t.Fatal(err)
			}
			sys.BeaconExec = qemu
			sys.BeaconCacheSize = "16MiB" // a router-sized cache
			sys.BeaconArgs = []string{"--memory-limit", "32MiB"}
			t.Cleanup(func() {
				if err := sys.Close(); err != nil {
					t.Errorf("shutdown: %v", err)
				}
				if t.Failed() {
					for _, p := range []*harness.Proc{sys.Castd, sys.Beacon} {
						if p != nil {
							t.Logf("--- %s log tail:\n%s", p.Name, p.Tail(4000))
						}
					}
				}
			})
			if err := sys.Start(); err != nil {
				t.Fatal(err)
			}
			const size = 256 << 10
			path := "/obj/256k/qemu-" + name
			for i, wantCache := range []string{"MISS", "HIT"} {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				res, err := harness.Fetch(ctx, sys.CastdURL()+path, nil)
				cancel()
				if err != nil {
					t.Fatalf("fetch %d: %v", i, err)
				}
				if len(res.Hops) != 2 || res.Hops[0].Status != http.StatusFound || res.Hops[0].Route != protocol.DecisionBeacon ||
					!strings.HasPrefix(res.Hops[0].Location, "http://"+sys.BeaconAddr+"/") {
					t.Fatalf("fetch %d: hops %+v, want the router's 302 to the beacon at %s", i, res.Hops, sys.BeaconAddr)
				}
				if res.Status != http.StatusOK || res.Hops[1].Cache != wantCache {
					t.Fatalf("fetch %d: status %d X-Cache %q, want 200 %s", i, res.Status, res.Hops[1].Cache, wantCache)
				}
				if want := harness.ContentSHA256(path, size); res.SHA256 != want {
					t.Fatalf("fetch %d: body sha256 %s, want %s", i, res.SHA256, want)
				}
				waitStored(t, sys.AdminAddr, 1)
			}
			if n := sys.Origin.Hits(path); n != 1 {
				t.Errorf("origin saw %d requests for %s, want 1", n, path)
			}
		})
	}
}

package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	raw, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// castd loses its registry (started empty, or from a backup older than the
// node): the beacon notices (the broker refuses it, castd answers its fetch
// or its signed whoami that it does not know it), registers again, and is
// routed to again; end users get their objects meanwhile.
func TestReregisterAfterRegistryLoss(t *testing.T) {
	for _, tc := range []struct {
		name       string
		castdArgs  []string
		beaconArgs []string
		backup     bool // restore a backup taken before the beacon registered, rather than remove the file
		direct     bool // fetch at the beacon at once: its fetch meets castd's 403 first
	}{
		{name: "registry removed"},
		{name: "old backup", backup: true},
		// No control plane and no whoami for an hour: only the end user's
		// fetch can meet castd's "not registered".
		{name: "fetch meets 403", castdArgs: []string{"--mqtt-listen", ""}, beaconArgs: []string{"--check-interval", "1h"}, direct: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := newSystem(t, tc.castdArgs...)
			sys.BeaconArgs = tc.beaconArgs
			registry := filepath.Join(sys.Dir, "castd", "registry.db")
			backup := filepath.Join(sys.Dir, "registry.backup")
			if err := sys.StartCastd(); err != nil {
				t.Fatal(err)
			}
			if tc.backup {
				if err := sys.Castd.Stop(10 * time.Second); err != nil {
					t.Fatal(err)
				}
				copyFile(t, registry, backup)
				if err := sys.StartCastd(); err != nil {
					t.Fatal(err)
				}
			}
			if err := sys.StartBeacon(); err != nil {
				t.Fatal(err)
			}
			if err := harness.WaitRegistered(sys.AdminAddr, 15*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := sys.WaitRoutable(15 * time.Second); err != nil {
				t.Fatal(err)
			}

			if err := sys.Castd.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			if tc.backup {
				copyFile(t, backup, registry)
			} else if err := os.Remove(registry); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := sys.StartCastd(); err != nil {
				t.Fatal(err)
			}
			if tc.direct {
				// The end user whose request meets castd's 403 still gets
				// the object.
				path := "/obj/300k/direct.bin"
				res := fetch(t, "http://"+sys.BeaconAddr+path)
				if res.Status != http.StatusOK || res.SHA256 != harness.ContentSHA256(path, 300<<10) {
					t.Fatalf("fetch through the beacon after castd forgot it: %d %q", res.Status, truncate(res.Body))
				}
				if log, _ := os.ReadFile(filepath.Join(sys.Dir, "beacon.log")); !strings.Contains(string(log), "castd does not know this node; registering again") {
					t.Fatal("the beacon did not register again on castd's 403")
				}
			}
			if err := sys.WaitRoutable(30 * time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("routed again %v after castd restarted", time.Since(start).Round(time.Millisecond))
			path := "/obj/200k/after.bin"
			expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 200<<10)
		})
	}
}

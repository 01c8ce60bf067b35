package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// mountTmpfs mounts a tmpfs of size at dir (root only: skipped without
// root unless CI=true) and unmounts it when the test ends.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		need(t, "root (to mount a tmpfs)", os.ErrPermission)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// A beacon whose state file system is full: end users still get whole,
// correct bodies (passed through uncached), its health says so, and castd
// sends users elsewhere until a write succeeds again.
func TestStorageFull(t *testing.T) {
	sys, err := harness.NewSystem(t.TempDir(), bins)
	if err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, filepath.Join(sys.Dir, "beacon"), "2m")
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			for _, p := range []*harness.Proc{sys.Castd, sys.Beacon} {
				if p != nil {
					t.Logf("--- %s log tail:\n%s", p.Name, p.Tail(6000))
				}
			}
		}
	})
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}

	// 6 MiB on a 2 MiB file system (the cache's bound is 256 MiB).
	path := "/obj/6M/full.bin"
	res := fetch(t, sys.CastdURL()+path)
	expectVia(t, sys, res, path, "MISS", 6<<20)
	st := mustStatus(t, sys)
	cache := st["cache"].(map[string]any)
	if cache["StoreFullSince"] == nil || cache["PassedOn"] != float64(1) || cache["Objects"] != float64(0) {
		t.Fatalf("beacon status after ENOSPC: %v", cache)
	}
	// Nothing partial left on the small file system.
	ents, _ := os.ReadDir(filepath.Join(sys.Dir, "beacon", "cache.db.bodies"))
	if len(ents) != 0 {
		t.Fatalf("body directory not empty: %v", ents)
	}
	// castd hears it in the next health report and routes users to the
	// origin meanwhile; the user still gets the object.
	if !harness.WaitFor(10*time.Second, func() bool { return decision(t, sys) == protocol.DecisionOrigin }) {
		t.Fatalf("castd still routes to a beacon whose storage is full: %s", decision(t, sys))
	}
	res = fetch(t, sys.CastdURL()+path)
	if res.Status != http.StatusOK || res.SHA256 != harness.ContentSHA256(path, 6<<20) || res.Hops[0].Route != protocol.DecisionOrigin {
		t.Fatalf("while full: status %d route %q", res.Status, res.Hops[0].Route)
	}

	// A fill that fits commits: the condition clears, castd routes here again.
	small := "/obj/64k/small.bin"
	direct := fetch(t, "http://"+sys.BeaconAddr+small)
	if direct.Status != http.StatusOK || direct.SHA256 != harness.ContentSHA256(small, 64<<10) {
		t.Fatalf("direct fetch: %d", direct.Status)
	}
	if err := sys.WaitRoutable(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if c := mustStatus(t, sys)["cache"].(map[string]any); c["StoreFullSince"] != nil || c["Objects"] != float64(1) {
		t.Fatalf("after a commit: %v", c)
	}
}

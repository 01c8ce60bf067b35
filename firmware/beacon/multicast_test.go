package beacon

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

// TestMulticastWiring: the receiver asks for offers only once a CAST key
// is pinned (manifests are checked against it), is off with "off", and
// its counters reach /metrics and the health report.
func TestMulticastWiring(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := New(Options{CastURL: "http://127.0.0.1:1", StateDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.mc == nil {
		t.Fatal("multicast reception is off by default")
	}
	if b.mc.Ready() {
		t.Error("ready before a CAST key is known")
	}
	cast, _ := identity.Generate()
	if err := os.WriteFile(filepath.Join(dir, castKeyFile), []byte(cast.ID()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !b.mc.Ready() {
		t.Error("not ready with a pinned CAST key")
	}
	if k, ok := b.pinnedCastKey(); !ok || k != cast.Public() {
		t.Errorf("pinned key %v %v", k, ok)
	}
	if h := b.health(); h.Multicast == nil {
		t.Error("no multicast in the health report")
	}
	srv := httptest.NewServer(b.adminHandler())
	defer srv.Close()
	_, rec := do(t, "GET", srv.URL+protocol.PathMetrics, "", "", "")
	if !strings.Contains(rec, "beacon_multicast_offers_total") {
		t.Errorf("metrics lack the multicast families:\n%s", rec)
	}

	off, err := New(Options{CastURL: "http://127.0.0.1:1", StateDir: t.TempDir(), Logger: log, MulticastReceive: "off"})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if off.mc != nil || off.health().Multicast != nil {
		t.Error("multicast on with off")
	}
}

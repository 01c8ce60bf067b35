package castd

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	bolt "go.etcd.io/bbolt"
)

// TestDamagedRegistryRecord: one damaged record in castd's registry file
// used to stop castd from starting ("loading registry: registry file is
// corrupt"). Now castd starts, routes every other node, exports
// castd_registry_damaged_records and leaves the record as it was.
func TestDamagedRegistryRecord(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	reg, err := registry.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]*identity.Keypair{}
	for _, name := range []string{"beacon", "relay", "damaged"} {
		ids[name], _ = identity.Generate()
	}
	now := time.Now().UTC()
	for _, n := range []registry.Node{
		{ID: ids["beacon"].ID(), Role: protocol.RoleBeacon, LANURL: "http://192.168.1.10:8081", PublicIP: netip.MustParseAddr("198.51.100.7"), LastSeen: now},
		{ID: ids["relay"].ID(), Role: protocol.RoleRelay, LANURL: "http://relay.example:8080", CIDRs: []string{"10.0.0.0/8"}, PublicIP: netip.MustParseAddr("192.0.2.1"), LastSeen: now},
		{ID: ids["damaged"].ID(), Role: protocol.RoleBeacon, LANURL: "http://192.168.1.99:8081", PublicIP: netip.MustParseAddr("198.51.100.99"), LastSeen: now},
	} {
		if _, err := reg.Upsert(n, false); err != nil {
			t.Fatal(err)
		}
	}
	reg.Close()
	// The test damages one record behind castd's back: truncated JSON, as
	// a torn write or a bad restore leaves it.
	damagedID := ids["damaged"].ID()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("nodes"))
		raw = append([]byte(nil), b.Get([]byte(damagedID))...)
		raw = raw[:len(raw)/2]
		return b.Put([]byte(damagedID), raw)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Runs after castd has closed the file (cleanups run last first).
	t.Cleanup(func() {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Error(err)
			return
		}
		defer db.Close()
		db.View(func(tx *bolt.Tx) error {
			if got := tx.Bucket([]byte("nodes")).Get([]byte(damagedID)); string(got) != string(raw) {
				t.Error("castd changed the damaged record")
			}
			return nil
		})
	})
	s, srv := newTestServer(t, func(o *Options) { o.StateDir = dir })
	route := func(client string) protocol.RouteDecision {
		t.Helper()
		resp, err := http.Get(srv.URL + protocol.PathRoute + "?path=/v/a.mp4&client=" + client)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var d protocol.RouteDecision
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != 200 {
			t.Fatalf("route: %d %v", resp.StatusCode, err)
		}
		return d
	}
	if d := route("198.51.100.7"); d.Decision != protocol.DecisionBeacon || d.NodeID != ids["beacon"].ID() {
		t.Errorf("the beacon's client: %+v", d)
	}
	if d := route("10.1.2.3"); d.NodeID != ids["relay"].ID() {
		t.Errorf("the relay's client: %+v", d)
	}
	if d := route("198.51.100.99"); d.NodeID != "" {
		t.Errorf("the damaged record's beacon is routed to: %+v", d)
	}
	m := scrape(t, srv.URL)
	if m["castd_registry_damaged_records"] != 1 || m["castd_registered_nodes"] != 3 {
		t.Errorf("damaged %v, registered %v; want 1 and 3", m["castd_registry_damaged_records"], m["castd_registered_nodes"])
	}
	// The node's own registration, without its owner's delegation, is
	// refused: the record may hold its owner binding.
	if _, err := s.reg.Upsert(registry.Node{ID: damagedID, Role: protocol.RoleBeacon, LANURL: "http://192.168.1.99:8081",
		PublicIP: netip.MustParseAddr("198.51.100.99")}, false); err == nil {
		t.Error("registration over the damaged record accepted without a delegation")
	}
}

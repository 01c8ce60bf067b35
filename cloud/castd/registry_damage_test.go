package castd

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
	bolt "go.etcd.io/bbolt"
)

// TestDamagedRegistryRecord: one damaged record in castd's registry file
// used to stop castd from starting ("loading registry: registry file is
// corrupt"). Now castd starts, routes every other node, exports
// castd_registry_damaged_records and leaves the record as it was; the
// operator's DELETE /v1/nodes/{id} clears it and the node registers afresh.
func TestDamagedRegistryRecord(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	reg, err := registry.Open(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
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
	// The relay is routed only for what the operator approved.
	if _, _, err := reg.Approve(ids["relay"].ID(), []string{"10.0.0.0/8"}, "test", ""); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	// The test damages one record behind castd's back: truncated JSON, as
	// a torn write or a bad restore leaves it.
	damagedID := ids["damaged"].ID()
	record := func() []byte {
		t.Helper()
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var v []byte
		db.View(func(tx *bolt.Tx) error {
			v = append(v, tx.Bucket([]byte("nodes")).Get([]byte(damagedID))...)
			return nil
		})
		return v
	}
	raw := record()
	raw = raw[:len(raw)/2]
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("nodes")).Put([]byte(damagedID), raw) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	origin := httptest.NewServer(http.NotFoundHandler())
	defer origin.Close()
	var logs harness.LineBuffer
	start := func() (*Server, *httptest.Server) {
		t.Helper()
		s, err := New(Options{StateDir: dir, Origin: origin.URL, CacheSize: 1 << 20, AdminToken: "op-token",
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("castd did not start: %v", err)
		}
		return s, httptest.NewServer(s.Handler())
	}
	route := func(srv *httptest.Server, client string) protocol.RouteDecision {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+protocol.PathRoute+"?path=/v/a.mp4&client="+client, nil)
		req.Header.Set("Authorization", "Bearer op-token") // asking for other clients
		resp, err := http.DefaultClient.Do(req)
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
	register := func(srv *httptest.Server) int {
		t.Helper()
		body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.99:8081"})
		req, _ := http.NewRequest(http.MethodPost, srv.URL+protocol.PathRegister, bytes.NewReader(body))
		signedreq.Sign(req, body, ids["damaged"], time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	s, srv := start()
	if d := route(srv, "198.51.100.7"); d.Decision != protocol.DecisionBeacon || d.NodeID != ids["beacon"].ID() {
		t.Errorf("the beacon's client: %+v", d)
	}
	if d := route(srv, "10.1.2.3"); d.NodeID != ids["relay"].ID() {
		t.Errorf("the relay's client: %+v", d)
	}
	if d := route(srv, "198.51.100.99"); d.NodeID != "" {
		t.Errorf("the damaged record's beacon is routed to: %+v", d)
	}
	if m := scrape(t, srv.URL); m["castd_registry_damaged_records"] != 1 || m["castd_registered_nodes"] != 3 {
		t.Errorf("damaged %v, registered %v; want 1 and 3", m["castd_registry_damaged_records"], m["castd_registered_nodes"])
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "key="+damagedID) {
		t.Errorf("the damaged record is not logged at error with its key:\n%s", logs.String())
	}
	// The node's registration, without its owner's delegation, is refused:
	// the record may hold its owner binding.
	if code := register(srv); code == http.StatusOK {
		t.Error("registration over the damaged record accepted without a delegation")
	}
	srv.Close()
	s.Close()
	if got := record(); !bytes.Equal(got, raw) {
		t.Fatal("castd changed the damaged record")
	}

	// The operator's way out: delete the record; the node registers afresh.
	s, srv = start()
	defer s.Close()
	defer srv.Close()
	del := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+protocol.PathNodes+"/"+damagedID, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("DELETE with a wrong token: %d", code)
	}
	if code := del("op-token"); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	if m := scrape(t, srv.URL); m["castd_registry_damaged_records"] != 0 || m["castd_registered_nodes"] != 2 {
		t.Errorf("after DELETE: damaged %v, registered %v; want 0 and 2", m["castd_registry_damaged_records"], m["castd_registered_nodes"])
	}
	if code := register(srv); code != http.StatusOK {
		t.Fatalf("registration after DELETE: %d", code)
	}
	if d := route(srv, "127.0.0.1"); d.NodeID != damagedID {
		t.Errorf("the re-registered node is not routed to: %+v", d)
	}
}

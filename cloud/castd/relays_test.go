package castd

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/web"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

const relayNodeToken = "operator-secret"

func registerNode(t *testing.T, url string, kp *identity.Keypair, reg protocol.Registration) {
	t.Helper()
	body, _ := json.Marshal(reg)
	req, _ := http.NewRequest(http.MethodPost, url+protocol.PathRegister, bytes.NewReader(body))
	signedreq.Sign(req, body, kp, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("register: %d %s", resp.StatusCode, b)
	}
}

func registerRelayNode(t *testing.T, url string, cidrs ...string) *identity.Keypair {
	t.Helper()
	kp, _ := identity.Generate()
	registerNode(t, url, kp, protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://relay-" + kp.ID()[:6] + ".example", CIDRs: cidrs})
	return kp
}

// adminCall sends an operator request and decodes a 200 answer into out.
func adminCall(t *testing.T, method, url, token, body string, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

func approve(t *testing.T, url, id string, cidrs ...string) protocol.RelayNodeView {
	t.Helper()
	body, _ := json.Marshal(protocol.RelayNodeChange{CIDRs: cidrs, By: "test"})
	var v protocol.RelayNodeView
	if code, msg := adminCall(t, "POST", url+protocol.RelayNodePath(id, protocol.RelayNodeApprove), relayNodeToken, string(body), &v); code != 200 {
		t.Fatalf("approve %q: %d %s", cidrs, code, msg)
	}
	return v
}

func revoke(t *testing.T, url, id string, cidrs ...string) protocol.RelayNodeView {
	t.Helper()
	body, _ := json.Marshal(protocol.RelayNodeChange{CIDRs: cidrs})
	var v protocol.RelayNodeView
	if code, msg := adminCall(t, "POST", url+protocol.RelayNodePath(id, protocol.RelayNodeRevoke), relayNodeToken, string(body), &v); code != 200 {
		t.Fatalf("revoke %q: %d %s", cidrs, code, msg)
	}
	return v
}

// routedTo is the node a client address is sent to ("" for the origin).
func routedTo(s *Server, client string) string {
	return s.router.Decide(netip.MustParseAddr(client), "/x").NodeID
}

func expectRoutes(t *testing.T, s *Server, want map[string]string) {
	t.Helper()
	for client, id := range want {
		if got := routedTo(s, client); got != id {
			t.Errorf("client %s routed to %q, want %q", client, got, id)
		}
	}
}

// The hijack of issue 10: a fresh key registering as a relay for the whole
// address space, or for a /32 inside a legitimate relay's /24, drew the
// clients at once. Now registration requests; only approval routes.
func TestRelayNodeHijackNotRouted(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = relayNodeToken })
	legit := registerRelayNode(t, srv.URL, "198.51.100.0/24")
	approve(t, srv.URL, legit.ID())
	hijack := registerRelayNode(t, srv.URL, "0.0.0.0/0", "::/0")
	sniper := registerRelayNode(t, srv.URL, "198.51.100.7/32")
	expectRoutes(t, s, map[string]string{
		"198.51.100.7": legit.ID(), "198.51.100.8": legit.ID(),
		"203.0.113.5": "", "2001:db8::5": "",
	})
	var list protocol.RelayNodeList
	if code, msg := adminCall(t, "GET", srv.URL+protocol.PathRelayNodes, relayNodeToken, "", &list); code != 200 {
		t.Fatalf("list: %d %s", code, msg)
	}
	states := map[string]string{}
	for _, v := range list.RelayNodes {
		states[v.ID] = v.State
	}
	want := map[string]string{legit.ID(): protocol.RelayNodeApproved, hijack.ID(): protocol.RelayNodePending, sniper.ID(): protocol.RelayNodePending}
	if !reflect.DeepEqual(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
}

// An approved relay gets exactly its approved prefixes: not the rest of
// what it requested, not what it adds by registering again; revoke takes
// them away; approvals survive a restart.
func TestRelayNodeApproveRevoke(t *testing.T) {
	dir := t.TempDir()
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = relayNodeToken; o.StateDir = dir })
	kp := registerRelayNode(t, srv.URL, "198.51.100.0/24", "203.0.113.0/24", "2001:db8:aa::/48")
	id := kp.ID()
	v := approve(t, srv.URL, id, "198.51.100.0/24", "2001:db8:aa::/48")
	if v.State != protocol.RelayNodePartial || !reflect.DeepEqual(v.Added, []string{"198.51.100.0/24", "2001:db8:aa::/48"}) ||
		!reflect.DeepEqual(v.Pending, []string{"203.0.113.0/24"}) || v.Approved[0].By != "test" || v.Approved[0].From != "127.0.0.1" {
		t.Fatalf("approve reply %+v", v)
	}
	expectRoutes(t, s, map[string]string{"198.51.100.9": id, "2001:db8:aa::9": id, "203.0.113.9": ""})
	// Registering again with more changes nothing routed.
	registerNode(t, srv.URL, kp, protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://relay.example",
		CIDRs: []string{"0.0.0.0/0", "198.51.100.0/24"}})
	expectRoutes(t, s, map[string]string{"198.51.100.9": id, "2001:db8:aa::9": id, "203.0.113.9": "", "192.0.2.1": ""})
	// An approval of a prefix it never asked for is the operator's call.
	approve(t, srv.URL, id, "192.0.2.0/24")
	expectRoutes(t, s, map[string]string{"192.0.2.1": id})
	v = revoke(t, srv.URL, id, "198.51.100.0/24")
	if !reflect.DeepEqual(v.Removed, []string{"198.51.100.0/24"}) {
		t.Fatalf("revoke reply %+v", v)
	}
	expectRoutes(t, s, map[string]string{"198.51.100.9": "", "2001:db8:aa::9": id})

	// Restart: approvals are on disk.
	srv.Close()
	s.Close()
	s2, err := New(Options{StateDir: dir, Origin: "http://origin.example", CacheSize: 1 << 20, AdminToken: relayNodeToken,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	expectRoutes(t, s2, map[string]string{"198.51.100.9": "", "2001:db8:aa::9": id, "192.0.2.1": id, "203.0.113.9": ""})
	srv2 := httptest.NewServer(s2.Handler())
	defer srv2.Close()
	revoke(t, srv2.URL, id)
	expectRoutes(t, s2, map[string]string{"2001:db8:aa::9": "", "192.0.2.1": ""})
}

func TestRelayNodeAPIRefusals(t *testing.T) {
	_, srv := newTestServer(t, func(o *Options) { o.AdminToken = relayNodeToken })
	relay := registerRelayNode(t, srv.URL, "198.51.100.0/24")
	bare := registerRelayNode(t, srv.URL)
	beacon, _ := identity.Generate()
	registerNode(t, srv.URL, beacon, protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1"})
	stranger, _ := identity.Generate()
	approvePath := func(id string) string { return protocol.RelayNodePath(id, protocol.RelayNodeApprove) }
	revokePath := func(id string) string { return protocol.RelayNodePath(id, protocol.RelayNodeRevoke) }
	for _, tc := range []struct {
		method, path, token, body string
		want                      int
		msg                       string
	}{
		{"GET", protocol.PathRelayNodes, "", "", 401, "operator's token"},
		{"POST", approvePath(relay.ID()), "wrong", "", 401, "operator's token"},
		{"POST", protocol.PathRelayNodes, relayNodeToken, "", 405, "GET"},
		{"GET", approvePath(relay.ID()), relayNodeToken, "", 405, "POSTed"},
		{"POST", protocol.PathRelayNodes + "/" + relay.ID() + "/bless", relayNodeToken, "", 404, "approve, revoke"},
		{"POST", approvePath("not-an-id"), relayNodeToken, "", 400, "not a node ID"},
		{"POST", approvePath(stranger.ID()), relayNodeToken, "", 404, "no relay"},
		{"GET", protocol.PathRelayNodes + "/" + stranger.ID(), relayNodeToken, "", 404, "no relay"},
		{"POST", approvePath(beacon.ID()), relayNodeToken, `{"cidrs":["10.0.0.0/8"]}`, 409, "not a relay"},
		{"POST", approvePath(bare.ID()), relayNodeToken, `{}`, 400, "requested no prefixes"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidrs":["10.1.2.3/8"]}`, 400, "host bits"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidrs":["::ffff:10.0.0.0/104"]}`, 400, "IPv4-mapped"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidr":["10.0.0.0/8"]}`, 400, "unknown field"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidrs":"10.0.0.0/8"}`, 400, "cidrs"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidrs":[]} {}`, 400, "after the JSON"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidrs":["10.0.0.0/8"],"by":"a\u0000b"}`, 400, "printable"},
		{"POST", revokePath(relay.ID()), relayNodeToken, `{"cidrs":["198.51.100.0/24"]}`, 409, "not approved"},
		{"POST", approvePath(relay.ID()), relayNodeToken, `{"cidrs":["` + strings.Repeat("1", 200<<10) + `"]}`, 413, "larger"},
	} {
		code, msg := adminCall(t, tc.method, srv.URL+tc.path, tc.token, tc.body, nil)
		if code != tc.want || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s %s %.60s: %d %s, want %d with %q", tc.method, tc.path, tc.body, code, msg, tc.want, tc.msg)
		}
	}
	// Without --admin-token the API is off.
	_, off := newTestServer(t, nil)
	if code, _ := adminCall(t, "GET", off.URL+protocol.PathRelayNodes, "", "", nil); code != http.StatusForbidden {
		t.Errorf("API without admin token: %d", code)
	}
}

func writeZone(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestCoverageZone(t *testing.T) {
	a, _ := identity.Generate()
	b, _ := identity.Generate()
	zone := filepath.Join(t.TempDir(), "czf.json")
	writeZone(t, zone, `{"coverageZones": {
		"`+a.ID()+`": {"network": ["198.51.100.0/24"], "network6": ["2001:db8:1::/48"]},
		"east": {"network": ["203.0.113.0/24"], "nodes": ["`+b.ID()+`"], "coordinates": {"latitude": 1, "longitude": 2}},
		"tr-only": {"network": ["100.64.0.0/10"]}}, "revision": "r1"}`)
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = relayNodeToken; o.CoverageZone = zone })
	registerNode(t, srv.URL, a, protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://a.example", CIDRs: []string{"0.0.0.0/0"}})
	registerNode(t, srv.URL, b, protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://b.example"})
	expectRoutes(t, s, map[string]string{"198.51.100.1": a.ID(), "2001:db8:1::1": a.ID(), "203.0.113.1": b.ID(), "100.64.0.1": "", "192.0.2.1": ""})

	// An approval adds to what the file gives; a file prefix cannot be
	// revoked through the API.
	approve(t, srv.URL, b.ID(), "192.0.2.0/24")
	expectRoutes(t, s, map[string]string{"192.0.2.1": b.ID(), "203.0.113.1": b.ID()})
	code, msg := adminCall(t, "POST", srv.URL+protocol.RelayNodePath(b.ID(), protocol.RelayNodeRevoke), relayNodeToken, `{"cidrs":["203.0.113.0/24"]}`, nil)
	if code != http.StatusConflict || !strings.Contains(msg, `coverage-zone group \"east\"`) {
		t.Errorf("revoke of a file prefix: %d %s", code, msg)
	}

	// An edit moves the coverage.
	writeZone(t, zone, `{"coverageZones": {"east": {"network": ["203.0.113.0/25"], "nodes": ["`+a.ID()+`"]}}, "revision": "r2"}`)
	s.reloadCoverageZone(zone)
	expectRoutes(t, s, map[string]string{"198.51.100.1": "", "2001:db8:1::1": "", "203.0.113.1": a.ID(), "203.0.113.200": "", "192.0.2.1": b.ID()})

	// A bad edit keeps the last good file and is counted.
	writeZone(t, zone, `{"coverageZones": {"east": {"network": ["203.0.113.1/24"], "nodes": ["`+a.ID()+`"]}}}`)
	s.reloadCoverageZone(zone)
	s.reloadCoverageZone(zone) // unchanged: not tried (or counted) again
	expectRoutes(t, s, map[string]string{"203.0.113.1": a.ID()})
	m := metricsText(t, srv.URL)
	for _, want := range []string{`castd_coverage_zone_reloads_total{result="ok"} 2`, `castd_coverage_zone_reloads_total{result="error"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
	var list protocol.RelayNodeList
	adminCall(t, "GET", srv.URL+protocol.PathRelayNodes, relayNodeToken, "", &list)
	if st := list.CoverageZone; st == nil || st.Revision != "r2" || !strings.Contains(st.LastError, `group "east": network[0]`) {
		t.Errorf("coverage-zone status %+v", st)
	}
	for _, v := range list.RelayNodes {
		if v.ID == a.ID() && (v.State != protocol.RelayNodePartial || len(v.Zone) != 1 || v.Zone[0].Group != "east" || !reflect.DeepEqual(v.Effective, []string{"203.0.113.0/25"})) {
			t.Errorf("relay a listed as %+v", v)
		}
	}

	// A file naming a node that is not registered lists it, and routes it
	// once it registers.
	c, _ := identity.Generate()
	writeZone(t, zone, `{"coverageZones": {"`+c.ID()+`": {"network": ["192.0.2.128/25"]}}}`)
	s.reloadCoverageZone(zone)
	adminCall(t, "GET", srv.URL+protocol.PathRelayNodes, relayNodeToken, "", &list)
	if n := len(list.RelayNodes); n != 3 || list.RelayNodes[2].ID != c.ID() || list.RelayNodes[2].State != protocol.RelayNodeNotRegistered {
		t.Errorf("list %+v", list.RelayNodes)
	}
	registerNode(t, srv.URL, c, protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://c.example"})
	expectRoutes(t, s, map[string]string{"192.0.2.200": c.ID(), "192.0.2.1": b.ID(), "203.0.113.1": ""})

	// A bad file at start is refused.
	writeZone(t, zone, `{"coverageZones": [`)
	if _, err := New(Options{StateDir: t.TempDir(), Origin: "http://o.example", CacheSize: 1, CoverageZone: zone}); err == nil || !strings.Contains(err.Error(), "coverage-zone") {
		t.Errorf("bad file at start: %v", err)
	}
}

func FuzzDecodeRelayNodeChange(f *testing.F) {
	f.Add([]byte(`{"cidrs":["198.51.100.0/24","2001:db8::/32"],"by":"alice"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	f.Add([]byte(`{"cidrs":null}`))
	f.Add([]byte(`{"cidrs":[]} x`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ch, err := decodeRelayNodeChange(body)
		if err != nil {
			return
		}
		// What is accepted is one object of known members: re-encoding it
		// and decoding again gives the same change.
		b, _ := json.Marshal(ch)
		again, err := decodeRelayNodeChange(b)
		if err != nil || !reflect.DeepEqual(again.By, ch.By) || len(again.CIDRs) != len(ch.CIDRs) {
			t.Fatalf("%q accepted as %+v, re-encoded %s gives %+v, %v", body, ch, b, again, err)
		}
	})
}

// The node view shows what a relay is routed for, not what it asked for:
// an operator reading the dashboard must not take a request for coverage.
func TestRelayNodeViewShowsRouted(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = relayNodeToken })
	kp := registerRelayNode(t, srv.URL, "198.51.100.0/24", "203.0.113.0/24")
	view := func() web.Node {
		t.Helper()
		for _, n := range s.nodeViews() {
			if n.ID == kp.ID() {
				return n
			}
		}
		t.Fatal("relay not in the node views")
		return web.Node{}
	}
	if v := view(); v.CIDRs != nil || !reflect.DeepEqual(v.RequestedCIDRs, []string{"198.51.100.0/24", "203.0.113.0/24"}) {
		t.Fatalf("pending relay: routed %v, requested %v", v.CIDRs, v.RequestedCIDRs)
	}
	approve(t, srv.URL, kp.ID(), "198.51.100.0/24")
	if v := view(); !reflect.DeepEqual(v.CIDRs, []string{"198.51.100.0/24"}) {
		t.Fatalf("approved relay: routed %v", v.CIDRs)
	}
}

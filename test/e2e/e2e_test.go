// Package e2e runs the real castd and beacon processes with a real HTTP
// origin on loopback and walks the whole delivery flow.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
)

var bins harness.Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "blockcast-e2e-bin")
	if err != nil {
		panic(err)
	}
	bins, err = harness.Build(dir)
	if err != nil {
		os.RemoveAll(dir)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// newSystem makes a system (origin started, castd and beacon not) that is
// shut down when the test ends, with the processes' log tails shown if it
// failed; the caller starts the parts.
func newSystem(t *testing.T, castdArgs ...string) *harness.System {
	t.Helper()
	sys, err := harness.NewSystem(t.TempDir(), bins)
	if err != nil {
		t.Fatal(err)
	}
	sys.CastdArgs = castdArgs
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
	return sys
}

// startSystem is newSystem with castd and the beacon started.
func startSystem(t *testing.T, castdArgs ...string) *harness.System {
	t.Helper()
	sys := newSystem(t, castdArgs...)
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	return sys
}

func fetch(t *testing.T, url string) *harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := harness.Fetch(ctx, url, nil)
	if err != nil {
		t.Fatalf("fetch %s: %v", url, err)
	}
	return res
}

// expectVia checks a fetch was routed to the beacon and answered with cache state want.
func expectVia(t *testing.T, sys *harness.System, res *harness.Result, path, wantCache string, size int64) {
	t.Helper()
	if len(res.Hops) != 2 {
		t.Fatalf("hops %+v, want router redirect then beacon", res.Hops)
	}
	if r := res.Hops[0]; r.Status != http.StatusFound || r.Route != protocol.DecisionBeacon || !strings.HasPrefix(r.Location, "http://"+sys.BeaconAddr+"/") {
		t.Fatalf("router hop %+v, want 302 to the beacon at %s", r, sys.BeaconAddr)
	}
	if res.Status != http.StatusOK {
		t.Fatalf("status %d body %q", res.Status, truncate(res.Body))
	}
	if got := res.Hops[1].Cache; got != wantCache {
		t.Fatalf("X-Cache %q, want %q", got, wantCache)
	}
	if want := harness.ContentSHA256(path, size); res.SHA256 != want {
		t.Fatalf("body sha256 %s, want %s (len %d)", res.SHA256, want, len(res.Body))
	}
}

func truncate(b []byte) string {
	if len(b) > 300 {
		b = b[:300]
	}
	return string(b)
}

func TestDeliveryFlowMissThenHit(t *testing.T) {
	sys := startSystem(t)
	path := "/obj/3M/flow.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 3<<20)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 3<<20)
	if n := sys.Origin.Hits(path); n != 1 {
		t.Fatalf("origin saw %d requests, want 1", n)
	}
	// A no-store object is delivered but never cached at either tier.
	ns := "/nostore/2k/private.json"
	expectVia(t, sys, fetch(t, sys.CastdURL()+ns), ns, "MISS", 2048)
	expectVia(t, sys, fetch(t, sys.CastdURL()+ns), ns, "MISS", 2048)
	if n := sys.Origin.Hits(ns); n != 2 {
		t.Fatalf("origin saw %d requests for a no-store object, want 2", n)
	}
}

func TestRouterDecisions(t *testing.T) {
	// Without a control plane every registered node is routed to, so a
	// relay registered by hand is enough to see the decision order.
	sys := startSystem(t, "--mqtt-listen", "", "--admin-token", e2eAdminToken)
	// Register a relay covering a documentation subnet, with a node key of its own.
	kp, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	relay, err := castclient.New(sys.CastdURL(), kp)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := relay.Register(ctx, protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://relay.example:8080",
		CIDRs: []string{"198.51.100.0/24", "198.51.0.0/16", "2001:db8:aa::/48"}}); err != nil {
		t.Fatal(err)
	}
	approveRelayNode(t, sys.CastdURL(), kp.ID()) // a relay's CIDRs are routed once approved
	beaconID := mustStatus(t, sys)["node_id"]
	tests := []struct {
		client, decision, node, location, prefix string
	}{
		{"127.0.0.1", protocol.DecisionBeacon, beaconID.(string), "http://" + sys.BeaconAddr + "/a/b?c=1", ""},
		{"198.51.100.7", protocol.DecisionRelay, kp.ID(), "http://relay.example:8080/a/b?c=1", "198.51.100.0/24"},
		{"198.51.7.7", protocol.DecisionRelay, kp.ID(), "http://relay.example:8080/a/b?c=1", "198.51.0.0/16"},
		{"2001:db8:aa::99", protocol.DecisionRelay, kp.ID(), "http://relay.example:8080/a/b?c=1", "2001:db8:aa::/48"},
		{"203.0.113.5", protocol.DecisionOrigin, "", sys.Origin.URL + "/a/b?c=1", ""},
	}
	for _, tc := range tests {
		resp, err := harness.GetRoute(sys.CastdURL() + protocol.PathRoute + "?path=" + "%2Fa%2Fb%3Fc%3D1" + "&client=" + tc.client)
		if err != nil {
			t.Fatal(err)
		}
		var d protocol.RouteDecision
		err = json.NewDecoder(resp.Body).Decode(&d)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("client %s: status %d err %v", tc.client, resp.StatusCode, err)
		}
		if d.Decision != tc.decision || d.NodeID != tc.node || d.Location != tc.location || d.Prefix != tc.prefix {
			t.Errorf("client %s: got %+v, want decision %s node %s location %s prefix %s", tc.client, d, tc.decision, tc.node, tc.location, tc.prefix)
		}
	}
}

func mustStatus(t *testing.T, sys *harness.System) map[string]any {
	t.Helper()
	st, err := harness.BeaconStatus(sys.AdminAddr)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRestarts(t *testing.T) {
	sys := startSystem(t)
	path := "/obj/1M/restart.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 1<<20)

	// castd restarts: the registry is on disk, so users are routed to the
	// beacon at once, and the beacon's cache still answers.
	if err := sys.Castd.Stop(10 * time.Second); err != nil {
		t.Fatalf("castd did not stop cleanly: %v", err)
	}
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}
	// The registry is on disk; the beacon's agent reconnects and reports,
	// and castd routes to it again.
	if err := sys.WaitRoutable(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 1<<20)

	// The beacon restarts: its cache is on disk.
	if err := sys.Beacon.Stop(10 * time.Second); err != nil {
		t.Fatalf("beacon did not stop cleanly: %v", err)
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
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 1<<20)

	// A new object after both restarts goes through the mid-tier cache of
	// the restarted castd, which still has the first object too.
	p2 := "/obj/200k/after-restart.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+p2), p2, "MISS", 200<<10)
	if n := sys.Origin.Hits(path); n != 1 {
		t.Fatalf("origin saw %d requests for %s, want 1", n, path)
	}
}

func TestBeaconKilledMidDownload(t *testing.T) {
	sys := startSystem(t)
	// /slow/ sends 64 KiB every 20 ms: 8 MiB takes about 2.5 s.
	path := "/slow/8M/killed.bin"
	resp, err := http.Get(sys.CastdURL() + path) // follows the redirect to the beacon
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("first request X-Cache %q", resp.Header.Get("X-Cache"))
	}
	// Kill -9 once the client has received (so the beacon has stored) 2 MiB.
	if _, err := io.CopyN(io.Discard, resp.Body, 2<<20); err != nil {
		t.Fatal(err)
	}
	sys.Beacon.Kill()
	if n, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatalf("the client got a clean end of body (%d more bytes) although the beacon was killed mid-download", n)
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
	// The partial fill must not be served as the whole object.
	res := fetch(t, sys.CastdURL()+path)
	if res.Hops[len(res.Hops)-1].Cache == "HIT" && len(res.Body) != 8<<20 {
		t.Fatalf("partial object served as a HIT (%d bytes)", len(res.Body))
	}
	expectVia(t, sys, res, path, "MISS", 8<<20)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 8<<20)
}

func TestBadInput(t *testing.T) {
	sys := startSystem(t)
	post := func(body []byte, sign func(*http.Request)) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, sys.CastdURL()+protocol.PathRegister, bytes.NewReader(body))
		if sign != nil {
			sign(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	body := []byte(`{"role":"beacon","lan_url":"http://10.9.9.9:8081"}`)
	if resp := post(body, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned registration: %d, want 401", resp.StatusCode)
	}
	kp, _ := identity.Generate()
	// A signed request replayed verbatim is refused the second time.
	var saved http.Header
	sign := func(r *http.Request) {
		if saved == nil {
			if err := signedreq.Sign(r, body, kp, time.Now()); err != nil {
				t.Fatal(err)
			}
			saved = r.Header.Clone()
			return
		}
		r.Header = saved.Clone()
	}
	if resp := post(body, sign); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed registration: %d", resp.StatusCode)
	}
	if resp := post(body, sign); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("replayed registration: %d, want 401", resp.StatusCode)
	}
	// Signed by one key, body tampered.
	tampered := func(r *http.Request) {
		signedreq.Sign(r, []byte(`{"role":"relay"}`), kp, time.Now())
	}
	if resp := post(body, tampered); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("tampered registration: %d, want 401", resp.StatusCode)
	}
	// Stale timestamp.
	stale := func(r *http.Request) { signedreq.Sign(r, body, kp, time.Now().Add(-time.Hour)) }
	if resp := post(body, stale); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stale registration: %d, want 401", resp.StatusCode)
	}
	// Signed but invalid content.
	bad := []byte(`{"role":"beacon","lan_url":"ftp://x"}`)
	if resp := post(bad, func(r *http.Request) { signedreq.Sign(r, bad, kp, time.Now()) }); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("invalid registration: %d, want 400", resp.StatusCode)
	}
	// Unsigned object fetch, and a fetch by an unregistered key.
	if resp, err := http.Get(sys.CastdURL() + protocol.PathObjectPrefix + "/obj/1k/x"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned object fetch: %v %v", resp.StatusCode, err)
	}
	stranger, _ := identity.Generate()
	sc, _ := castclient.New(sys.CastdURL(), stranger)
	if resp, err := sc.Fetch(context.Background(), "/obj/1k/x", nil); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("unregistered fetch: %v %v", resp.StatusCode, err)
	}
	// Path traversal at the router and at the beacon.
	for _, base := range []string{sys.CastdURL(), "http://" + sys.BeaconAddr} {
		for _, p := range []string{"/obj/1k/../../etc/passwd", "/obj/%2e%2e/x", "/obj/1k/a%00b"} {
			req, _ := http.NewRequest(http.MethodGet, base+p, nil)
			req.URL.Opaque = p // send the path exactly as written
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s%s: %d, want 400", base, p, resp.StatusCode)
			}
		}
	}
	// Absurd header sizes.
	for _, base := range []string{sys.CastdURL(), "http://" + sys.BeaconAddr} {
		req, _ := http.NewRequest(http.MethodGet, base+"/obj/1k/x", nil)
		req.Header.Set("X-Huge", strings.Repeat("a", 1<<20))
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: 1 MiB header: %d, want 431", base, resp.StatusCode)
		}
	}
}

func TestCorruptStateReported(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "beacon")
	os.MkdirAll(state, 0o700)
	db := filepath.Join(state, "cache.db")
	garbage := bytes.Repeat([]byte("not a bbolt file "), 4096)
	if err := os.WriteFile(db, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := harness.Start("beacon", filepath.Join(dir, "beacon.log"), bins.Beacon,
		"--cast-url", "http://127.0.0.1:1", "--state-dir", state, "--listen", "127.0.0.1:0", "--admin-listen", "")
	if err != nil {
		t.Fatal(err)
	}
	if !harness.WaitFor(10*time.Second, p.Exited) {
		p.Kill()
		t.Fatal("beacon kept running on a corrupt cache file")
	}
	log := p.Tail(4000)
	if !strings.Contains(log, "corrupt") || !strings.Contains(log, db) {
		t.Errorf("log does not name the corrupt file clearly:\n%s", log)
	}
	after, err := os.ReadFile(db)
	if err != nil || !bytes.Equal(after, garbage) {
		t.Fatal("the corrupt cache file was changed or removed")
	}
}

// TestReRegisterOnPublicIPChange puts castd behind a reverse proxy it
// trusts (as behind a cloud load balancer) that reports the beacon's public
// address; when that address changes, the beacon registers again and users
// on the new address are routed to it.
func TestReRegisterOnPublicIPChange(t *testing.T) {
	sys, err := harness.NewSystem(t.TempDir(), bins)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	public := "198.51.100.10"
	target, _ := url.Parse(sys.CastdURL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		mu.Lock()
		r.Header.Set("X-Forwarded-For", public)
		mu.Unlock()
	}
	front := httptest.NewServer(proxy)
	defer front.Close()
	sys.CastdArgs = []string{"--trusted-proxy", "127.0.0.1/32"}
	sys.BeaconCastURL = front.URL
	sys.PublicIP = "198.51.100.10"
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("beacon log:\n%s", sys.Beacon.Tail(4000))
		}
	})
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	routeOf := func(client string) string {
		resp, err := harness.GetRoute(sys.CastdURL() + protocol.PathRoute + "?path=/x&client=" + client)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var d protocol.RouteDecision
		json.NewDecoder(resp.Body).Decode(&d)
		return d.Decision
	}
	if got := routeOf("198.51.100.10"); got != protocol.DecisionBeacon {
		t.Fatalf("before the change: %s, want beacon", got)
	}
	mu.Lock()
	public = "203.0.113.77"
	mu.Unlock()
	// --check-interval is 2s in the harness.
	if !harness.WaitFor(10*time.Second, func() bool { return routeOf("203.0.113.77") == protocol.DecisionBeacon }) {
		t.Fatal("beacon not routed on its new public IP")
	}
	if got := routeOf("198.51.100.10"); got != protocol.DecisionOrigin {
		t.Fatalf("old public IP still routed to the beacon: %s", got)
	}
}

// TestOwnerDelegation walks the operator's two steps with the real beacon
// binary, signing in between as `solana sign-offchain-message` does, and
// checks that castd records the owner.
func TestOwnerDelegation(t *testing.T) {
	sys, err := harness.NewSystem(t.TempDir(), bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	state := filepath.Join(sys.Dir, "beacon")
	run := func(args ...string) string {
		out, err := exec.Command(bins.Beacon, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("beacon %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("keygen", "--state-dir", state)
	owner, _ := identity.Generate()
	out := run("delegate", "--state-dir", state, "--owner", owner.ID())
	if !strings.Contains(out, "solana sign-offchain-message") {
		t.Fatalf("step 1 output:\n%s", out)
	}
	text, err := os.ReadFile(filepath.Join(state, "delegation-request.txt"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := offchain.NewMessage(offchain.LayoutV0, text, owner.Public())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := offchain.Encode(msg)
	if err != nil {
		t.Fatal(err)
	}
	// A wrong signature is refused and nothing is stored.
	bad := identity.EncodeBase58(owner.Sign([]byte("something else")))
	if o, err := exec.Command(bins.Beacon, "delegate", "--state-dir", state, "--signature", bad).CombinedOutput(); err == nil {
		t.Fatalf("bad signature accepted:\n%s", o)
	}
	run("delegate", "--state-dir", state, "--signature", identity.EncodeBase58(owner.Sign(raw)))
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, sys)
	if st["owner"] != owner.ID() {
		t.Fatalf("castd recorded owner %v, want %s", st["owner"], owner.ID())
	}
}

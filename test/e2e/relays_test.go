package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// e2eAdminToken is castd's --admin-token in the tests that need the
// operator API.
const e2eAdminToken = "e2e-operator-token"

// relayNodeCastdArgs is castd's command line in the relay-coverage tests, in
// one place so that a flag is easy to add.
func relayNodeCastdArgs(zoneFile string) []string {
	return []string{
		"--admin-token", e2eAdminToken,
		"--probe-interval", "300ms",
		"--coverage-zone", zoneFile,
		"--coverage-zone-interval", "200ms",
	}
}

// approveRelayNode approves cidrs (none: all requested) for a relay through the
// HTTP API.
func approveRelayNode(t *testing.T, castdURL, id string, cidrs ...string) {
	t.Helper()
	body, _ := json.Marshal(protocol.RelayNodeChange{CIDRs: cidrs, By: "e2e"})
	req, _ := http.NewRequest(http.MethodPost, castdURL+protocol.RelayNodePath(id, protocol.RelayNodeApprove), bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("approve %s %q: %d %s", id, cidrs, resp.StatusCode, b)
	}
}

// testRelayNode is a relay node as test code plays it: a signed registration,
// an agent reporting online over MQTT, and an HTTP server answering the
// health probe and content.
type testRelayNode struct {
	name string
	key  *identity.Keypair
	srv  *httptest.Server
	cc   *castclient.Client
}

// startTestRelayNode starts a relay with key kp (nil: a fresh one).
func startTestRelayNode(t *testing.T, sys *harness.System, name string, kp *identity.Keypair, cidrs ...string) *testRelayNode {
	t.Helper()
	if kp == nil {
		var err error
		if kp, err = identity.Generate(); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "relay "+name)
	}))
	t.Cleanup(srv.Close)
	cc, err := castclient.New(sys.CastdURL(), kp)
	if err != nil {
		t.Fatal(err)
	}
	rl := &testRelayNode{name: name, key: kp, srv: srv, cc: cc}
	reply := rl.register(t, cidrs...)
	castKey, err := identity.ParsePublicKey(reply.CastKey)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{BrokerURL: reply.MQTT, Key: kp, CastKey: castKey, Interval: time.Second, Version: "relay-" + name})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("relay %s: agent did not stop", name)
		}
	})
	return rl
}

func (rl *testRelayNode) id() string { return rl.key.ID() }

func (rl *testRelayNode) register(t *testing.T, cidrs ...string) protocol.RegistrationReply {
	t.Helper()
	reply, err := rl.cc.Register(context.Background(), protocol.Registration{Role: protocol.RoleRelay, LANURL: rl.srv.URL, CIDRs: cidrs})
	if err != nil {
		t.Fatalf("relay %s: register: %v", rl.name, err)
	}
	return reply
}

// routeFrom fetches a content URL from castd as an end user at source
// address src (a loopback address) does, and returns the node the router
// sent it to ("" for the origin) and the body where the redirect led.
func routeFrom(t *testing.T, sys *harness.System, src string) (node, body string) {
	t.Helper()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(sys.CastdURL() + "/obj/1k/relay-test.bin")
	if err != nil {
		t.Fatalf("fetch from %s: %v", src, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("fetch from %s: %s", src, resp.Status)
	}
	node = resp.Header.Get(protocol.HeaderNode)
	if node != "" {
		r2, err := (&http.Client{Timeout: 10 * time.Second}).Get(resp.Header.Get("Location"))
		if err != nil {
			t.Fatalf("following the redirect to %s: %v", resp.Header.Get("Location"), err)
		}
		b, _ := io.ReadAll(r2.Body)
		r2.Body.Close()
		body = string(b)
	}
	return node, body
}

// routeFor asks the JSON decision API about an address the test cannot
// send from (IPv6 outside ::1).
func routeFor(t *testing.T, sys *harness.System, client string) string {
	t.Helper()
	resp, err := harness.GetRoute(sys.CastdURL() + protocol.PathRoute + "?path=/x&client=" + client)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d protocol.RouteDecision
	json.NewDecoder(resp.Body).Decode(&d)
	return d.NodeID
}

// castdRelayNodes runs the real castd binary's `relays` subcommand.
func castdRelayNodes(t *testing.T, sys *harness.System, args ...string) string {
	t.Helper()
	cmd := exec.Command(bins.Castd, append([]string{"relays", "--url", sys.CastdURL()}, args...)...)
	cmd.Env = append(os.Environ(), "CASTD_ADMIN_TOKEN="+e2eAdminToken, "CASTD_BY=e2e-operator")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("castd relays %q: %v\n%s", args, err, out)
	}
	return string(out)
}

func waitRouted(t *testing.T, sys *harness.System, src, want string) {
	t.Helper()
	var got string
	if !harness.WaitFor(15*time.Second, func() bool { got, _ = routeFrom(t, sys, src); return got == want }) {
		t.Fatalf("client %s routed to %q, want %q", src, got, want)
	}
}

func expectRouted(t *testing.T, sys *harness.System, want map[string]string) {
	t.Helper()
	for src, id := range want {
		if got, _ := routeFrom(t, sys, src); got != id {
			t.Errorf("client %s routed to %q, want %q", src, got, id)
		}
	}
}

func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestRelayNodeCoverageFromOperator is issue 10's relay hijack against a real
// castd: relays registered by fresh keys are online and healthy, yet get
// no client until the operator approves prefixes (with the real `castd
// relays` command) or the coverage-zone file assigns them; then they get
// exactly those.
func TestRelayNodeCoverageFromOperator(t *testing.T) {
	dir := t.TempDir()
	zone := filepath.Join(dir, "coverage-zone.json")
	zoneOf := func(id, network string) string {
		return `{"coverageZones": {"pop-1": {"network": ["` + network + `"], "nodes": ["` + id + `"],
			"coordinates": {"latitude": 52.5, "longitude": 13.4}}}, "revision": "` + network + `", "customerName": "e2e"}`
	}
	// The file names a relay that registers later.
	zoned, _ := identity.Generate()
	writeFileAtomic(t, zone, zoneOf(zoned.ID(), "127.0.1.0/24"))
	sys, err := harness.NewSystem(dir, bins)
	if err != nil {
		t.Fatal(err)
	}
	sys.CastdArgs = relayNodeCastdArgs(zone)
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if t.Failed() && sys.Castd != nil {
			t.Logf("--- castd log tail:\n%s", sys.Castd.Tail(8000))
		}
	})
	if err := sys.StartCastd(); err != nil {
		t.Fatal(err)
	}

	legit := startTestRelayNode(t, sys, "legit", nil, "127.0.0.0/24")
	hijack := startTestRelayNode(t, sys, "hijack", nil, "0.0.0.0/0", "::/0")
	sniper := startTestRelayNode(t, sys, "sniper", nil, "127.0.0.7/32")
	multi := startTestRelayNode(t, sys, "multi", nil, "127.0.2.0/24", "127.0.3.0/24")
	// Every relay is online and answers its probe: only coverage decides.
	for _, rl := range []*testRelayNode{legit, hijack, sniper, multi} {
		if !harness.WaitFor(15*time.Second, func() bool {
			req, _ := http.NewRequest(http.MethodGet, sys.CastdURL()+protocol.PathNodes+"/"+rl.id(), nil)
			req.Header.Set("Authorization", "Bearer "+e2eAdminToken)
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var v struct{ Routable bool }
			json.NewDecoder(resp.Body).Decode(&v)
			return v.Routable
		}) {
			t.Fatalf("relay %s never became routable (online and healthy)", rl.name)
		}
	}

	// Nothing approved: the hijacker's 0.0.0.0/0 and ::/0 draw nobody.
	expectRouted(t, sys, map[string]string{"127.0.0.7": "", "127.0.0.9": "", "127.0.5.5": ""})
	if got := routeFor(t, sys, "2001:db8::5"); got != "" {
		t.Errorf("IPv6 client routed to %q, want the origin", got)
	}

	// The operator approves the legitimate relay's request; the /32 inside
	// it stays unapproved and draws nothing.
	out := castdRelayNodes(t, sys, "approve", legit.id())
	if !strings.Contains(out, "approved for "+legit.id()+": 127.0.0.0/24") {
		t.Errorf("approve said:\n%s", out)
	}
	if node, body := routeFrom(t, sys, "127.0.0.7"); node != legit.id() || body != "relay legit" {
		t.Errorf("client 127.0.0.7 went to %q (%q), want the legitimate relay", node, body)
	}
	expectRouted(t, sys, map[string]string{"127.0.0.9": legit.id(), "127.0.5.5": ""})
	if got := routeFor(t, sys, "2001:db8::5"); got != "" {
		t.Errorf("IPv6 client routed to %q, want the origin", got)
	}

	// An approval of part of a request gives exactly that part, and a
	// wider re-registration adds nothing.
	castdRelayNodes(t, sys, "approve", multi.id(), "127.0.2.0/24")
	multi.register(t, "127.0.0.0/8")
	expectRouted(t, sys, map[string]string{"127.0.2.5": multi.id(), "127.0.3.5": "", "127.0.4.4": "", "127.0.0.9": legit.id()})
	out = castdRelayNodes(t, sys, "list")
	for _, want := range []string{
		legit.id() + "  approved", hijack.id() + "  pending", sniper.id() + "  pending",
		multi.id() + "  partial   127.0.2.0/24", zoned.ID() + "  not-registered",
	} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	// Revoke takes them away.
	castdRelayNodes(t, sys, "revoke", multi.id())
	expectRouted(t, sys, map[string]string{"127.0.2.5": ""})

	// The coverage-zone file: the relay it names is routed once it
	// registers, and an edit moves it.
	startTestRelayNode(t, sys, "zoned", zoned)
	waitRouted(t, sys, "127.0.1.5", zoned.ID())
	writeFileAtomic(t, zone, zoneOf(zoned.ID(), "127.0.6.0/24"))
	waitRouted(t, sys, "127.0.6.5", zoned.ID())
	expectRouted(t, sys, map[string]string{"127.0.1.5": "", "127.0.0.9": legit.id()})
	// A broken edit keeps the last good file.
	writeFileAtomic(t, zone, `{"coverageZones": {"pop-1": {"network": ["127.0.7.1/24"], "nodes": ["`+zoned.ID()+`"]}}}`)
	if !harness.WaitFor(10*time.Second, func() bool {
		return metric(t, sys, `castd_coverage_zone_reloads_total{result="error"}`) == 1
	}) {
		t.Fatal("broken coverage-zone file not counted as a failed reload")
	}
	expectRouted(t, sys, map[string]string{"127.0.6.5": zoned.ID(), "127.0.7.5": ""})

	// Only coverage kept the hijacker away: approved, it is routed.
	castdRelayNodes(t, sys, "approve", hijack.id(), "127.0.9.0/24")
	expectRouted(t, sys, map[string]string{"127.0.9.9": hijack.id(), "127.0.5.5": ""})
}

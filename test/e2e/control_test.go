package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// need skips a test whose tool is missing, but fails it when CI=true.
func need(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI: %v", what, err)
	}
	t.Skipf("%s not available: %v", what, err)
}

// brokerKinds runs fn with castd on its embedded broker and on a real
// Mosquitto.
func brokerKinds(t *testing.T, fn func(t *testing.T, sys *harness.System, mosq *brokertest.Mosquitto)) {
	t.Run("embedded", func(t *testing.T) {
		fn(t, startSystem(t, "--admin-token", "op-secret"), nil)
	})
	t.Run("mosquitto", func(t *testing.T) {
		_, err := os.Stat(brokertest.MosquittoPath)
		need(t, "mosquitto", err)
		m := brokertest.StartMosquitto(t)
		fn(t, startSystem(t, "--admin-token", "op-secret", "--mqtt-listen", "", "--mqtt-broker", "tcp://"+m.Addr()), m)
	})
}

// nodeView reads castd's view of a node, as the operator (node views need
// the --admin-token brokerKinds starts castd with).
func nodeView(t *testing.T, sys *harness.System, id string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, sys.CastdURL()+protocol.PathNodes+"/"+id, nil)
	req.Header.Set("Authorization", "Bearer op-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	return v
}

func decision(t *testing.T, sys *harness.System) string {
	t.Helper()
	resp, err := harness.GetRoute(sys.CastdURL() + protocol.PathRoute + "?path=/x&client=127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d protocol.RouteDecision
	json.NewDecoder(resp.Body).Decode(&d)
	return d.Decision
}

// metric reads one sample from castd's /metrics.
func metric(t *testing.T, sys *harness.System, series string) float64 {
	t.Helper()
	resp, err := http.Get(sys.CastdURL() + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(raw)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func TestControlPlane(t *testing.T) {
	brokerKinds(t, func(t *testing.T, sys *harness.System, mosq *brokertest.Mosquitto) {
		id := mustStatus(t, sys)["node_id"].(string)

		// Online, reporting, routed to (Start waited for the route).
		if !harness.WaitFor(10*time.Second, func() bool {
			v := nodeView(t, sys, id)
			return v["state"] == "online" && v["version"] == "test" && v["routable"] == true
		}) {
			t.Fatalf("node view %v", nodeView(t, sys, id))
		}
		path := "/obj/64k/cp.bin"
		expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 64<<10)
		if !harness.WaitFor(10*time.Second, func() bool {
			v := nodeView(t, sys, id)
			return v["bytes_served"] == float64(64<<10) && v["cache_objects"] == float64(1)
		}) {
			t.Fatalf("health numbers not reported: %v", nodeView(t, sys, id))
		}

		// A signed purge from the operator API reaches the beacon.
		cmd := func(op, arg string) *http.Response {
			req, _ := http.NewRequest(http.MethodPost, sys.CastdURL()+protocol.PathNodes+"/"+id+protocol.PathCommandsSuffix,
				strings.NewReader(fmt.Sprintf(`{"op":%q,"arg":%q}`, op, arg)))
			req.Header.Set("Authorization", "Bearer op-secret")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		if resp := cmd("purge", path); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("purge: %d", resp.StatusCode)
		}
		if !harness.WaitFor(10*time.Second, func() bool {
			c, _ := mustStatus(t, sys)["cache"].(map[string]any)
			return c["Objects"] == float64(0)
		}) {
			t.Fatalf("purge did not reach the beacon: %v", mustStatus(t, sys))
		}
		expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 64<<10)
		if resp := cmd("format-disk", "/"); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("unknown op: %d", resp.StatusCode)
		}

		// castd drives the beacon's AMT gateway: join, then leave, a channel
		// (through a loopback relay address: only the join's bookkeeping is
		// checked here; test/amtnet runs real tunnels).
		amtChannels := func() string {
			resp, err := http.Get("http://" + sys.AdminAddr + protocol.PathAMT)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st struct {
				Channels []struct{ Source, Group string }
			}
			json.NewDecoder(resp.Body).Decode(&st)
			var out []string
			for _, c := range st.Channels {
				out = append(out, c.Source+"@"+c.Group)
			}
			return strings.Join(out, ",")
		}
		if resp := cmd("amt-join", "198.51.100.1@232.1.1.1 relay=127.0.0.1:9"); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("amt-join: %d", resp.StatusCode)
		}
		if !harness.WaitFor(10*time.Second, func() bool { return amtChannels() == "198.51.100.1@232.1.1.1" }) {
			t.Fatalf("amt-join did not reach the gateway: %q", amtChannels())
		}
		if resp := cmd("amt-leave", "198.51.100.1@232.1.1.1"); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("amt-leave: %d", resp.StatusCode)
		}
		if !harness.WaitFor(10*time.Second, func() bool { return amtChannels() == "" }) {
			t.Fatalf("amt-leave did not reach the gateway: %q", amtChannels())
		}

		// Forged health, signed by another key into this node's topic, and a
		// command signed by a key that is not the CAST key: only an external
		// broker with anonymous access lets a stranger publish at all; the
		// application-layer signatures stop both.
		if mosq != nil {
			before := metric(t, sys, `castd_control_messages_dropped_total{reason="wrong_signer"}`)
			thief, _ := identity.Generate()
			c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mosq.Addr()).SetClientID("thief"))
			if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("connect: %v", tok.Error())
			}
			defer c.Disconnect(100)
			htopic := ctrlmsg.Topic(id, ctrlmsg.LeafHealth)
			forged, _ := ctrlmsg.Seal(thief, htopic, ctrlmsg.KindHealth, ctrlmsg.Health{Load: 0.01, UptimeS: 1}, time.Now())
			c.Publish(htopic, 1, false, forged).WaitTimeout(5 * time.Second)
			if !harness.WaitFor(10*time.Second, func() bool {
				return metric(t, sys, `castd_control_messages_dropped_total{reason="wrong_signer"}`) > before
			}) {
				t.Fatal("forged health was not dropped and counted")
			}
			ctopic := ctrlmsg.Topic(id, ctrlmsg.LeafCmd)
			bad, _ := ctrlmsg.Seal(thief, ctopic, ctrlmsg.KindCmd, ctrlmsg.Command{ID: "x1", Op: ctrlmsg.OpPurge, Arg: "/*"}, time.Now())
			refusedBefore := controlField(t, sys, "CommandsRefused")
			c.Publish(ctopic, 1, false, bad).WaitTimeout(5 * time.Second)
			if !harness.WaitFor(10*time.Second, func() bool { return controlField(t, sys, "CommandsRefused") > refusedBefore }) {
				t.Fatal("a command signed by a stranger was not refused")
			}
			if c, _ := mustStatus(t, sys)["cache"].(map[string]any); c["Objects"] != float64(1) {
				t.Fatalf("forged purge took effect: %v", c)
			}
		}

		// Broker restart: the beacon reconnects by itself and is routed again.
		connects := controlField(t, sys, "Connects")
		restarted := time.Now()
		if mosq != nil {
			mosq.Stop()
			mosq.Start()
		} else {
			if err := sys.Castd.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			if err := sys.StartCastd(); err != nil {
				t.Fatal(err)
			}
		}
		if !harness.WaitFor(30*time.Second, func() bool { return controlField(t, sys, "Connects") > connects }) {
			t.Fatalf("beacon did not reconnect to the restarted broker: %v", mustStatus(t, sys)["control"])
		}
		if err := sys.WaitRoutable(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("broker restarted → beacon reconnected and routed in %s", time.Since(restarted).Round(time.Millisecond))

		// The beacon dies: the broker sends its last-will, castd takes it
		// out of routing.
		sys.Beacon.Kill()
		killed := time.Now()
		if !harness.WaitFor(10*time.Second, func() bool { return decision(t, sys) == protocol.DecisionOrigin }) {
			t.Fatalf("dead beacon still routed: %v", nodeView(t, sys, id))
		}
		took := time.Since(killed)
		t.Logf("beacon killed → removed from routing in %s", took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("removal took %s, want within 5 s of the last-will", took)
		}
		if v := nodeView(t, sys, id); v["state"] != "offline" {
			t.Errorf("state %v, want offline", v["state"])
		}
	})
}

func controlField(t *testing.T, sys *harness.System, field string) float64 {
	c, _ := mustStatus(t, sys)["control"].(map[string]any)
	v, _ := c[field].(float64)
	return v
}

// TestRelayNodeProbe: a relay that reports online over MQTT is routed to only
// while its health endpoint answers.
func TestRelayNodeProbe(t *testing.T) {
	sys, err := harness.NewSystem(t.TempDir(), bins)
	if err != nil {
		t.Fatal(err)
	}
	sys.CastdArgs = []string{"--probe-interval", "300ms", "--admin-token", e2eAdminToken}
	t.Cleanup(func() { sys.Close() })
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	healthy := true
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != protocol.PathHealthz || !healthy {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer health.Close()
	kp, _ := identity.Generate()
	cc, _ := castclient.New(sys.CastdURL(), kp)
	reply, err := cc.Register(context.Background(), protocol.Registration{Role: protocol.RoleRelay, LANURL: health.URL, CIDRs: []string{"198.51.100.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	approveRelayNode(t, sys.CastdURL(), kp.ID())
	castKey, _ := identity.ParsePublicKey(reply.CastKey)
	a, err := agent.New(agent.Options{BrokerURL: reply.MQTT, Key: kp, CastKey: castKey, Interval: time.Second, Version: "relay-test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	routed := func() bool {
		resp, err := harness.GetRoute(sys.CastdURL() + protocol.PathRoute + "?path=/x&client=198.51.100.9")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var d protocol.RouteDecision
		json.NewDecoder(resp.Body).Decode(&d)
		return d.Decision == protocol.DecisionRelay
	}
	if !harness.WaitFor(10*time.Second, routed) {
		t.Fatal("online relay with a healthy endpoint not routed to")
	}
	healthy = false
	if !harness.WaitFor(10*time.Second, func() bool { return !routed() }) {
		t.Fatal("relay failing its health probe still routed to")
	}
	healthy = true
	if !harness.WaitFor(10*time.Second, routed) {
		t.Fatal("relay not routed to again after its probe recovered")
	}
}

// TestDashboard loads the fleet dashboard in headless Chromium: before
// sign-in it shows the totals and no node data; a wrong token gets a clear
// message and no data; the operator's token shows the nodes, survives a
// reload (sessionStorage only) and is gone after sign-out. It watches the
// beacon go offline when killed, and saves screenshots.
func TestDashboard(t *testing.T) {
	_, err := harness.ChromiumPath()
	need(t, "chromium", err)
	const token = "dashboard-operator-token-0123456789"
	sys := startSystem(t, "--admin-token", token)
	id := mustStatus(t, sys)["node_id"].(string)
	br, err := harness.StartBrowser(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	page, err := br.Open(sys.CastdURL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	out := screenshotDir(t)
	text := func(id string) string {
		return page.EvalString(fmt.Sprintf(`(document.getElementById(%q)||{}).textContent||""`, id))
	}
	dom := func() string { return page.EvalString(`document.documentElement.outerHTML`) }
	// noNodeData: the page names neither the beacon nor where it is.
	noNodeData := func(when string) {
		t.Helper()
		html := dom()
		for _, secret := range []string{id, id[:6], sys.BeaconAddr, "127.0.0.1"} {
			if strings.Contains(html, secret) {
				t.Errorf("%s: the page shows %q", when, secret)
			}
		}
		if n := page.EvalString(`String(document.querySelectorAll("#nodes tbody tr, #tree li").length)`); n != "0" {
			t.Errorf("%s: %s node rows or tree items", when, n)
		}
	}
	signIn := func(tok string) {
		t.Helper()
		if _, err := page.Eval(fmt.Sprintf(`document.getElementById("token").value = %q; document.getElementById("login").requestSubmit(); true`, tok)); err != nil {
			t.Fatal(err)
		}
	}
	row := fmt.Sprintf(`(document.querySelector('tr[data-id=%q]')||{}).className||""`, id)

	// Anyone: the totals, a sign-in form, no node.
	if !harness.WaitFor(15*time.Second, func() bool { return text("n-online") == "1" && text("n-beacon") == "1" }) {
		t.Fatalf("dashboard never showed the totals; body: %s", page.EvalString("document.body.innerText"))
	}
	if page.EvalString(`String(document.getElementById("signin").hidden)`) != "false" {
		t.Error("no sign-in form before sign-in")
	}
	noNodeData("before sign-in")
	if err := page.Screenshot(filepath.Join(out, "dashboard-signin.png")); err != nil {
		t.Fatal(err)
	}

	// A wrong token: a clear message, no data, nothing kept.
	signIn("not-the-token")
	if !harness.WaitFor(10*time.Second, func() bool { return strings.Contains(text("login-err"), "Wrong operator token") }) {
		t.Fatalf("no message for a wrong token: %q", text("login-err"))
	}
	noNodeData("after a wrong token")
	if n := page.EvalString(`String(sessionStorage.length)`); n != "0" {
		t.Errorf("a wrong token is kept: sessionStorage has %s items", n)
	}

	// The operator's token: the node list and tree.
	signIn(token)
	if !harness.WaitFor(15*time.Second, func() bool { return page.EvalString(row) == "online" }) {
		t.Fatalf("dashboard never showed the beacon online after sign-in; body: %s", page.EvalString("document.body.innerText"))
	}
	if !strings.Contains(text("tree"), id[:6]) {
		t.Errorf("tree does not show the beacon")
	}
	// Kept for this tab only: not in localStorage, a cookie or the URL.
	if got := page.EvalString(`sessionStorage.getItem("castd-operator-token")`); got != token {
		t.Errorf("sessionStorage holds %q", got)
	}
	if got := page.EvalString(`String(localStorage.length) + "|" + document.cookie + "|" + location.href`); got != "0||"+sys.CastdURL()+"/" {
		t.Errorf("localStorage items | cookies | URL = %q", got)
	}
	if err := page.Screenshot(filepath.Join(out, "dashboard-online.png")); err != nil {
		t.Fatal(err)
	}

	// A reload keeps the session.
	page.Eval(`window.beforeReload = true; location.reload(); true`)
	if !harness.WaitFor(15*time.Second, func() bool {
		return page.EvalString(`String(window.beforeReload)`) == "undefined" && page.EvalString(row) == "online"
	}) {
		t.Fatalf("after a reload the node list is gone; body: %s", page.EvalString("document.body.innerText"))
	}

	sys.Beacon.Kill()
	if !harness.WaitFor(15*time.Second, func() bool { return page.EvalString(row) == "offline" }) {
		t.Fatalf("dashboard never showed the beacon offline; row %q", page.EvalString(row))
	}
	if err := page.Screenshot(filepath.Join(out, "dashboard-offline.png")); err != nil {
		t.Fatal(err)
	}
	// Usable on a phone: the table turns into cards that fit the width.
	if err := page.SetViewport(390, 844, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if w := page.EvalString(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("page is %s px wide on a 390 px phone screen", w)
	}
	if err := page.Screenshot(filepath.Join(out, "dashboard-phone.png")); err != nil {
		t.Fatal(err)
	}

	// Sign-out forgets the token and the nodes.
	page.Eval(`document.getElementById("signout").click(); true`)
	if !harness.WaitFor(10*time.Second, func() bool { return strings.Contains(text("login-err"), "Signed out") }) {
		t.Fatalf("no sign-out message: %q", text("login-err"))
	}
	time.Sleep(2500 * time.Millisecond) // a poll period: no late answer brings nodes back
	noNodeData("after sign-out")
	if n := page.EvalString(`String(sessionStorage.length)`); n != "0" {
		t.Errorf("sign-out left %s items in sessionStorage", n)
	}
	if w := page.EvalString(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("signed-out page is %s px wide on a 390 px phone screen", w)
	}
	t.Logf("screenshots in %s", out)
}

// screenshotDir keeps screenshots where a person can look at them:
// $SCREENSHOT_DIR, or the test's temp dir.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("SCREENSHOT_DIR"); d != "" {
		os.MkdirAll(d, 0o755)
		return d
	}
	return t.TempDir()
}

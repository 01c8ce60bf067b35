package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
)

// getHost GETs url with the given Host header.
func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestStatusPage: the owner opens the beacon's LAN URL on a phone and sees
// the node, its registration, castd's view and the cache after a fetch; a
// rebound name gets nothing from the page or the local API.
func TestStatusPage(t *testing.T) {
	_, err := harness.ChromiumPath()
	need(t, "chromium", err)
	sys := startSystem(t)
	id := mustStatus(t, sys)["node_id"].(string)
	path := "/obj/64k/status.bin"
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "MISS", 64<<10)
	expectVia(t, sys, fetch(t, sys.CastdURL()+path), path, "HIT", 64<<10)

	// DNS rebinding: a name that resolves to the beacon gets nothing.
	for _, u := range []string{"http://" + sys.AdminAddr + protocol.PathStatus, "http://" + sys.AdminAddr + protocol.PathMetrics,
		"http://" + sys.BeaconAddr + "/", "http://" + sys.BeaconAddr + protocol.PathStatus} {
		if code, body := getHost(t, u, "evil.example"); code != http.StatusMisdirectedRequest || strings.Contains(body, id) {
			t.Errorf("GET %s with Host evil.example: %d %q", u, code, body)
		}
	}
	// The LAN listener changes nothing.
	resp, err := http.Post("http://"+sys.BeaconAddr+protocol.PathStatus, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s on the LAN listener: %d", protocol.PathStatus, resp.StatusCode)
	}

	// castd's view reaches the beacon at its next check (--check-interval 2s).
	var st map[string]any
	if !harness.WaitFor(15*time.Second, func() bool {
		_, body := getHost(t, "http://"+sys.BeaconAddr+protocol.PathStatus, sys.BeaconAddr)
		st = nil
		json.Unmarshal([]byte(body), &st)
		v, _ := st["castd_view"].(map[string]any)
		return v != nil && v["routable"] == true && v["state"] == "online"
	}) {
		t.Fatalf("castd's view never reached the status: %v", st["castd_view"])
	}

	br, err := harness.StartBrowser(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	page, err := br.Open("http://" + sys.BeaconAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	if err := page.SetViewport(390, 844, true); err != nil {
		t.Fatal(err)
	}
	text := func(id string) string {
		return page.EvalString(`(document.getElementById("` + id + `")||{}).textContent||""`)
	}
	// The script runs only if the CSP's hash matches it: the node ID
	// appearing proves both.
	if !harness.WaitFor(15*time.Second, func() bool {
		return text("node-id") == id && strings.Contains(text("view"), "users are sent here") && strings.Contains(text("hit-ratio"), "1 hits")
	}) {
		t.Fatalf("the page never showed the node; body: %s", page.EvalString("document.body.innerText"))
	}
	for el, want := range map[string]string{
		"registered": "yes",
		"castd":      sys.CastdURL(),
		"mqtt":       "connected to tcp://",
		"cache-use":  "1 objects",
		"hit-ratio":  "50.0%",
		"storage":    "ok",
		"amt":        "no channels joined",
		"backup":     filepath.Join(sys.Dir, "beacon", "wallet.json"),
		"lan-url":    "http://" + sys.BeaconAddr,
	} {
		if got := text(el); !strings.Contains(got, want) {
			t.Errorf("#%s = %q, want %q in it", el, got, want)
		}
	}
	if !strings.HasPrefix(text("backup"), "# OpenWrt\nscp -O root@127.0.0.1:") {
		t.Errorf("backup commands %q", text("backup"))
	}

	// The page asked for nothing but itself and its JSON: no favicon
	// fetched through the cache.
	if n := sys.Origin.Hits("/favicon.ico"); n != 0 {
		t.Errorf("the page made the cache fetch /favicon.ico %d times", n)
	}

	// No secret on the page: the wallet file and its secret key.
	wallet, err := os.ReadFile(filepath.Join(sys.Dir, "beacon", "wallet.json"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := identity.ParseSolana(wallet)
	if err != nil {
		t.Fatal(err)
	}
	html := page.EvalString(`document.documentElement.outerHTML`)
	for what, s := range map[string]string{"wallet file": strings.TrimSpace(string(wallet)), "secret key": identity.EncodeBase58(kp.PrivateKey()),
		"seed": identity.EncodeBase58(kp.PrivateKey().Seed())} {
		if strings.Contains(html, s) {
			t.Errorf("the page shows the %s", what)
		}
	}

	// Fits a phone: no horizontal scrolling.
	time.Sleep(300 * time.Millisecond)
	if w := page.EvalString(`String(document.documentElement.scrollWidth)`); w != "390" {
		t.Errorf("page is %s px wide on a 390 px phone screen", w)
	}
	if err := page.Screenshot(filepath.Join(screenshotDir(t), "status-phone.png")); err != nil {
		t.Fatal(err)
	}

	// castd gone: the page says so within a check or two.
	sys.Castd.Kill()
	if !harness.WaitFor(20*time.Second, func() bool {
		return strings.Contains(text("problems"), "connection refused") && strings.Contains(text("registered"), "last check failed")
	}) {
		t.Errorf("after castd stopped: registered %q, problems %q", text("registered"), text("problems"))
	}
	if err := page.Screenshot(filepath.Join(screenshotDir(t), "status-phone-castd-down.png")); err != nil {
		t.Fatal(err)
	}
}

package castd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
)

const testToken = "operator-token-for-tests-0123456789"

// from returns a client whose connections come from src (a loopback
// address), so that castd sees a different host.
func from(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

func do(t *testing.T, c *http.Client, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// home is one registered node and what must not leak about it.
type home struct {
	id, ip, lanURL, owner string
}

func (h home) secrets() []string {
	out := []string{h.id, h.ip, h.lanURL}
	if h.owner != "" {
		out = append(out, h.owner)
	}
	return out
}

// registerHome registers a beacon from src (its public IP), with an owner
// wallet delegation when owned.
func registerHome(t *testing.T, url, src, lanURL string, owned bool) home {
	t.Helper()
	kp, _ := identity.Generate()
	reg := protocol.Registration{Role: protocol.RoleBeacon, LANURL: lanURL, Version: "v1"}
	h := home{id: kp.ID(), ip: src, lanURL: lanURL}
	if owned {
		owner, _ := identity.Generate()
		d, err := offchain.SignDelegation(owner, kp.Public(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		reg.Delegation, h.owner = &d, owner.ID()
	}
	body, _ := json.Marshal(reg)
	req, _ := http.NewRequest(http.MethodPost, url+protocol.PathRegister, bytes.NewReader(body))
	signedreq.Sign(req, body, kp, time.Now())
	resp, err := from(src).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("registering from %s: %s", src, resp.Status)
	}
	return h
}

func leaks(body string, homes ...home) []string {
	var out []string
	for _, h := range homes {
		for _, s := range h.secrets() {
			if strings.Contains(body, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// TestFleetDataNeedsOperator is the attack of issue 10: anyone listed every
// home's public IP, LAN URL and owner wallet, and ?q=<wallet> found a
// wallet's home. Now a stranger gets totals and nothing that names a node.
func TestFleetDataNeedsOperator(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = testToken })
	a := registerHome(t, srv.URL, "127.0.0.21", "http://192.168.77.7:8081", true)
	b := registerHome(t, srv.URL, "127.0.0.22", "http://10.9.8.7:8081", false)
	stranger := from("127.0.0.30")
	bearer := "Bearer " + testToken

	// The stranger's view: totals only.
	code, body := do(t, stranger, "GET", srv.URL+protocol.PathNodes, "", "")
	var sum struct {
		Total  int
		Counts map[string]int
		Roles  map[string]int
		Nodes  any
	}
	json.Unmarshal([]byte(body), &sum)
	if code != 200 || sum.Total != 2 || sum.Roles["beacon"] != 2 || sum.Counts["online"] != 2 || sum.Nodes != nil {
		t.Fatalf("anonymous GET /v1/nodes: %d %s", code, body)
	}
	if l := leaks(body, a, b); l != nil {
		t.Fatalf("anonymous GET /v1/nodes shows %v: %s", l, body)
	}
	for _, tc := range []struct {
		path, auth string
		want       int
	}{
		{protocol.PathNodes + "?q=" + a.owner, "", 401}, // the wallet → home search of the report
		{protocol.PathNodes + "?q=" + a.ip, "", 401},
		{protocol.PathNodes + "?state=online", "", 401},
		{protocol.PathNodes + "?role=beacon", "", 401},
		{protocol.PathNodes + "?offset=1", "", 401},
		{protocol.PathNodes + "?limit=1", "", 401},
		{protocol.PathNodes + "/" + a.id, "", 401},
		{protocol.PathNodes + "/", "Bearer wrong", 401},
		{protocol.PathNodes, "Bearer wrong", 401},
		{protocol.PathNodes + "/" + a.id, "Basic " + testToken, 401},
	} {
		s.admin = newAdminGate() // each case from a fresh budget
		code, body := do(t, stranger, "GET", srv.URL+tc.path, tc.auth, "")
		if code != tc.want {
			t.Errorf("GET %s (%q): %d, want %d: %s", tc.path, tc.auth, code, tc.want, body)
		}
		if l := leaks(body, a, b); l != nil {
			t.Errorf("GET %s (%q) shows %v", tc.path, tc.auth, l)
		}
	}
	if code, _ := do(t, stranger, "POST", srv.URL+protocol.PathNodes, bearer, "{}"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/nodes: %d", code)
	}

	// The operator sees everything, and can search.
	code, body = do(t, stranger, "GET", srv.URL+protocol.PathNodes, bearer, "")
	if code != 200 || len(leaks(body, a, b)) != len(a.secrets())+len(b.secrets()) {
		t.Fatalf("operator's list: %d %s", code, body)
	}
	code, body = do(t, stranger, "GET", srv.URL+protocol.PathNodes+"?q="+a.owner, bearer, "")
	if code != 200 || !strings.Contains(body, a.lanURL) || strings.Contains(body, b.id) {
		t.Fatalf("operator's search: %d %s", code, body)
	}
	code, body = do(t, stranger, "GET", srv.URL+protocol.PathNodes+"/"+b.id, bearer, "")
	if code != 200 || !strings.Contains(body, `"public_ip":"127.0.0.22"`) {
		t.Fatalf("operator's node view: %d %s", code, body)
	}
	if code, _ := do(t, stranger, "GET", srv.URL+protocol.PathNodes+"/nope", bearer, ""); code != 404 {
		t.Fatalf("operator's view of a missing node: %d", code)
	}
}

// TestFleetDataWithoutOperatorToken: with no --admin-token there is no
// credential to show nodes to, so nobody sees them, and the log says why.
func TestFleetDataWithoutOperatorToken(t *testing.T) {
	var logs harness.LineBuffer
	_, srv := newTestServer(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	a := registerHome(t, srv.URL, "127.0.0.23", "http://192.168.77.8:8081", true)
	if !strings.Contains(logs.String(), "the node list needs --admin-token") {
		t.Errorf("start log does not say the node list needs --admin-token:\n%s", logs.String())
	}
	c := from("127.0.0.31")
	code, body := do(t, c, "GET", srv.URL+protocol.PathNodes, "", "")
	if code != 200 || !strings.Contains(body, `"total":1`) || leaks(body, a) != nil {
		t.Fatalf("GET /v1/nodes: %d %s", code, body)
	}
	for _, p := range []string{protocol.PathNodes + "?q=" + a.owner, protocol.PathNodes + "/" + a.id} {
		for _, auth := range []string{"", "Bearer ", "Bearer x"} {
			if code, body := do(t, c, "GET", srv.URL+p, auth, ""); code != http.StatusForbidden || leaks(body, a) != nil {
				t.Errorf("GET %s (%q): %d %s", p, auth, code, body)
			}
		}
	}
}

// TestMetricsNameNoNode: /metrics is public, so no series may carry a node's
// ID, public IP, LAN URL or owner, whatever the fleet and its traffic.
func TestMetricsNameNoNode(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = testToken; o.MQTTListen = "127.0.0.1:0" })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.startControl(ctx); err != nil {
		t.Fatal(err)
	}
	a := registerHome(t, srv.URL, "127.0.0.24", "http://192.168.77.9:8081", true)
	b := registerHome(t, srv.URL, "127.0.0.25", "http://10.9.8.6:8081", true)
	// Traffic that touches every part with a counter: routing, refusals,
	// a command to a node.
	do(t, from(a.ip), "GET", srv.URL+"/some/content.mp4", "", "")
	do(t, from(b.ip), "GET", srv.URL+protocol.PathRoute+"?path=/x&client="+a.ip, "", "")
	do(t, from(b.ip), "GET", srv.URL+protocol.PathNodes+"/"+a.id, "", "")
	if code, body := do(t, from(b.ip), "POST", srv.URL+protocol.PathNodes+"/"+a.id+protocol.PathCommandsSuffix, "Bearer "+testToken, `{"op":"purge","arg":"/x"}`); code != http.StatusAccepted {
		t.Fatalf("command: %d %s", code, body)
	}
	code, body := do(t, from("127.0.0.32"), "GET", srv.URL+protocol.PathMetrics, "", "")
	if code != 200 || !strings.Contains(body, "castd_registered_nodes 2") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if l := leaks(body, a, b); l != nil {
		t.Fatalf("/metrics shows %v:\n%s", l, body)
	}
	// Every label value is one of a fixed vocabulary, not free text.
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, "127.0.0.") || strings.Contains(line, "http://") {
			t.Errorf("metric line carries an address: %s", line)
		}
	}
}

// TestAdminTokenGuessing: wrong tokens from one address soon get 429, even
// the right one then (or the limit would only slow guessing), while another
// address still gets in; after the wait the right token works again.
func TestAdminTokenGuessing(t *testing.T) {
	s, srv := newTestServer(t, func(o *Options) { o.AdminToken = testToken })
	var mu sync.Mutex
	now := time.Now()
	s.admin.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	wait := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	guesser, operator := "127.0.0.41", "127.0.0.42"
	if s.admin.perAddr.Collide(netip.MustParseAddr(guesser), netip.MustParseAddr(operator)) {
		operator = "127.0.0.43" // a different budget, as a different host has
	}
	g, op := from(guesser), from(operator)
	url := srv.URL + protocol.PathNodes + "?q=x"
	for i := range adminFailBurst {
		if code, _ := do(t, g, "GET", url, "Bearer guess"+string(rune('a'+i)), ""); code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d, want 401", i, code)
		}
	}
	if code, _ := do(t, g, "GET", url, "Bearer guess-z", ""); code != http.StatusTooManyRequests {
		t.Fatalf("guess after the burst: %d, want 429", code)
	}
	code, body := do(t, g, "GET", url, "Bearer "+testToken, "")
	if code != http.StatusTooManyRequests || strings.Contains(body, "nodes") && strings.Contains(body, "total") {
		t.Fatalf("right token from the limited address: %d %s, want 429", code, body)
	}
	if code, _ := do(t, g, "POST", srv.URL+protocol.PathNodes+"/x/commands", "Bearer "+testToken, `{"op":"purge"}`); code != http.StatusTooManyRequests {
		t.Fatalf("command from the limited address: %d, want 429", code)
	}
	if code, _ := do(t, op, "GET", url, "Bearer "+testToken, ""); code != http.StatusOK {
		t.Fatalf("operator at another address: %d, want 200", code)
	}
	wait(adminFailEvery)
	if code, _ := do(t, g, "GET", url, "Bearer "+testToken, ""); code != http.StatusOK {
		t.Fatalf("right token after the wait: %d, want 200", code)
	}
	// One more wrong try is all the wait bought.
	do(t, g, "GET", url, "Bearer guess-again", "")
	if code, _ := do(t, g, "GET", url, "Bearer guess-more", ""); code != http.StatusTooManyRequests {
		t.Fatalf("second guess after the wait: %d, want 429", code)
	}
}

// TestCommandInputClipped: a 15 KB op name is refused with a short answer
// and a short log line; trailing data, unknown fields and oversize bodies
// are refused.
func TestCommandInputClipped(t *testing.T) {
	var logs harness.LineBuffer
	s, srv := newTestServer(t, func(o *Options) {
		o.AdminToken = testToken
		o.MQTTListen = "127.0.0.1:0"
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.startControl(ctx); err != nil {
		t.Fatal(err)
	}
	a := registerHome(t, srv.URL, "127.0.0.26", "http://192.168.77.10:8081", false)
	url := srv.URL + protocol.PathNodes + "/" + a.id + protocol.PathCommandsSuffix
	c := from("127.0.0.33")
	bearer := "Bearer " + testToken
	huge := strings.Repeat("A", 15000)

	logs.Reset()
	code, body := do(t, c, "POST", url, bearer, `{"op":"`+huge+`","arg":"/x"}`)
	if code != http.StatusBadRequest || len(body) > 400 {
		t.Errorf("15 KB op: %d, %d bytes: %.300s", code, len(body), body)
	}
	if !strings.Contains(body, "(15000 bytes)") || !strings.Contains(body, strings.Join(ctrlmsg.Ops(), ", ")) {
		t.Errorf("15 KB op answer does not say how long it was and which ops exist: %s", body)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if len(line) > 1000 {
			t.Errorf("log line of %d bytes: %.300s", len(line), line)
		}
	}
	if !strings.Contains(logs.String(), "unknown op") {
		t.Errorf("refusal not logged: %s", logs.String())
	}

	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"trailing JSON", `{"op":"purge","arg":"/x"}{"op":"purge","arg":"/*"}`, http.StatusBadRequest},
		{"trailing garbage", `{"op":"purge","arg":"/x"} x`, http.StatusBadRequest},
		{"unknown field", `{"op":"purge","agr":"/x"}`, http.StatusBadRequest},
		{"huge unknown field", `{"op":"purge","` + huge + `":1}`, http.StatusBadRequest},
		{"huge arg", `{"op":"purge","arg":"` + huge + `"}`, http.StatusBadRequest}, // over ctrlmsg's 8 KiB
		{"over 16 KiB", `{"op":"purge","arg":"` + strings.Repeat("B", 17000) + `"}`, http.StatusRequestEntityTooLarge},
		{"over 16 KiB in trailing data", `{"op":"purge","arg":"/x"}` + strings.Repeat(" ", 17000), http.StatusRequestEntityTooLarge},
		{"not JSON", `op=purge`, http.StatusBadRequest},
		{"good, trailing newline", "{\"op\":\"purge\",\"arg\":\"/x\"}\n", http.StatusAccepted},
	} {
		logs.Reset()
		code, body := do(t, c, "POST", url, bearer, tc.body)
		if code != tc.want || len(body) > 400 {
			t.Errorf("%s: %d (%d bytes), want %d: %.300s", tc.name, code, len(body), tc.want, body)
		}
		if n := len(logs.String()); n > 1500 {
			t.Errorf("%s: %d bytes of log: %.300s", tc.name, n, logs.String())
		}
	}
}

// FuzzDecodeCommand: whatever the operator API is sent, decodeCommand
// answers without panicking, accepts only known ops, and never quotes more
// than a short piece of the input back.
func FuzzDecodeCommand(f *testing.F) {
	for _, seed := range []string{
		`{"op":"purge","arg":"/x"}`, `{"op":"amt-join","arg":"198.51.100.1@232.1.1.1 relay=127.0.0.1:9"}`,
		`{"op":"purge"}{}`, `{"op":"purge","agr":"/x"}`, `{"op":"` + strings.Repeat("é", 3000) + `"}`,
		`{"op":"purge"} x`, `[]`, `null`, `{"op":1}`, "", "\xff\xfe", `{"op":"purge","arg":"\u0000"}`, `{"op":"prefetch","arg":"/a/../b"}`, `{"op":"amt-leave","arg":"1.2.3.4@232.0.0.1 relay=[::1]:9"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, protocol.PathNodes+"/x/commands", bytes.NewReader(body))
		cmd, status, err := decodeCommand(httptest.NewRecorder(), req)
		if err != nil {
			if status < 400 || status > 499 {
				t.Fatalf("refusal with status %d", status)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("%d-byte error for %d bytes of input: %.200s", len(err.Error()), len(body), err)
			}
			return
		}
		if !ctrlmsg.KnownOp(cmd.Op) {
			t.Fatalf("accepted op %q", cmd.Op)
		}
		if err := ctrlmsg.CheckArg(cmd.Op, cmd.Arg); err != nil {
			t.Fatalf("accepted %s %q: %v", cmd.Op, cmd.Arg, err)
		}
	})
}

// The route API for another address names that home's beacon: a stranger
// must not map addresses to homes with it.
func TestRouteOfOthersNeedsToken(t *testing.T) {
	const routeToken = "route-token-for-tests-0123456789"
	_, srv := newTestServer(t, func(o *Options) { o.AdminToken = testToken; o.RouteToken = routeToken })
	a := registerHome(t, srv.URL, "127.0.0.51", "http://192.168.51.1:8081", false)
	stranger := from("127.0.0.52")
	url := srv.URL + protocol.PathRoute + "?path=/x&client=" + a.ip
	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		auth   string
		want   int
	}{
		{"stranger asks about a home", stranger, url, "", http.StatusUnauthorized},
		{"stranger with a wrong token", stranger, url, "Bearer nope", http.StatusUnauthorized},
		{"the home asks about itself", from(a.ip), url, "", http.StatusOK},
		{"the home asks without client", from(a.ip), srv.URL + protocol.PathRoute + "?path=/x", "", http.StatusOK},
		{"upstream CDN with the route token", stranger, url, "Bearer " + routeToken, http.StatusOK},
		{"operator", stranger, url, "Bearer " + testToken, http.StatusOK},
	} {
		code, body := do(t, tc.client, "GET", tc.url, tc.auth, "")
		if code != tc.want {
			t.Errorf("%s: %d, want %d: %s", tc.name, code, tc.want, body)
			continue
		}
		if leaked := leaks(body, a); code != http.StatusOK && leaked != nil {
			t.Errorf("%s: refusal shows %v", tc.name, leaked)
		}
		if code == http.StatusOK && tc.auth == "" && !strings.Contains(body, a.id) {
			t.Errorf("%s: the home's own route does not name its beacon: %s", tc.name, body)
		}
	}
}

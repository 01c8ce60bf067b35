package beacon

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

// testBeacon is a beacon from New with a wallet and an owner delegation on
// disk; nothing is contacted until Serve.
func testBeacon(t *testing.T, opts Options) (*Beacon, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	deleg := protocol.Delegation{Owner: "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM", Message: "AAAA",
		Signature: "4PbvTtDP8ThSAhxbVrj1Nzi4QWVMjwRz7y1JkZvxTxvnbx7aJ9Pq1KxkwQNLwL1dQxpYvQv4nPZ6eYCbmVv7qx8k"}
	raw, _ := json.Marshal(deleg)
	if err := os.WriteFile(filepath.Join(dir, "delegation.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	opts.CastURL, opts.StateDir, opts.CacheSize = "http://127.0.0.1:1", dir, 1<<20
	opts.AMTRelay, opts.AMTDRIAD = "127.0.0.1:9", false
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	opts.CheckInterval = time.Minute
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, &logs
}

func do(t *testing.T, method, url, host, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestHostGuardAllowed(t *testing.T) {
	g := newHostGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"Beacon.LAN", "router.example."})
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:8082", true},
		{"127.0.0.1", true},
		{"192.168.1.1:8081", true},
		{"[::1]:8082", true},
		{"[::1]", true},
		{"[fe80::1%25eth0]:8081", true}, // a literal with a zone: nothing resolves to it
		{"localhost:8082", true},
		{"LocalHost", true},
		{"beacon.lan:8081", true},
		{"beacon.lan.", true},
		{"router.example", true},
		{"", false},
		{"evil.example", false},
		{"evil.example:8082", false},
		{"localhost.evil.example", false},
		{"127.0.0.1.evil.example", false},
		{"beacon.lan.evil.example", false},
		{"127.1", false}, // browsers send the normalised 127.0.0.1
		{"x.localhost", false},
	} {
		if got := g.allowed(tc.host); got != tc.ok {
			t.Errorf("Host %q: allowed %v, want %v", tc.host, got, tc.ok)
		}
	}
}

func TestCheckAllowHosts(t *testing.T) {
	if err := checkAllowHosts([]string{"beacon.lan", "localhost", "my-pi"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"*", "*.example", "192.168.1.1", "", "a b", "http://x"} {
		if err := checkAllowHosts([]string{bad}); err == nil {
			t.Errorf("--allow-host %q accepted", bad)
		}
	}
	if _, err := New(Options{CastURL: "http://127.0.0.1:1", StateDir: t.TempDir(), CacheSize: 1, AllowHosts: []string{"*"}}); err == nil || !strings.Contains(err.Error(), "Options.AllowHosts") {
		t.Fatalf("New with --allow-host '*': %v", err)
	}
}

// TestLocalAPIRebinding: a page at evil.example whose name resolves to
// 127.0.0.1 is same-origin with the local API, so it could read the status
// and send a JSON POST (no preflight) that the content-type rule lets
// through. The Host check refuses both.
func TestLocalAPIRebinding(t *testing.T) {
	b, logs := testBeacon(t, Options{})
	srv := httptest.NewServer(b.adminHandler())
	defer srv.Close()

	code, body := do(t, "GET", srv.URL+protocol.PathStatus, "evil.example:8082", "", "")
	if code != http.StatusMisdirectedRequest || strings.Contains(body, b.ID()) {
		t.Errorf("GET status with Host evil.example: %d %q", code, body)
	}
	for _, p := range []string{protocol.PathMetrics, protocol.PathAMT, protocol.PathHealthz} {
		if code, _ := do(t, "GET", srv.URL+p, "evil.example", "", ""); code != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with Host evil.example: %d", p, code)
		}
	}
	code, body = do(t, "POST", srv.URL+protocol.PathAMT+protocol.AMTJoin, "evil.example:8082", "application/json", `{"channel":"198.51.100.1@232.1.1.1"}`)
	if code != http.StatusMisdirectedRequest {
		t.Errorf("rebound POST join: %d %q", code, body)
	}
	if n := len(b.gw.State().Channels); n != 0 {
		t.Fatalf("a rebound POST joined %d channels", n)
	}
	if !strings.Contains(logs.String(), "DNS rebinding") {
		t.Error("refusal not logged")
	}

	// The owner's own tools: by address and localhost.
	for _, host := range []string{"", "localhost:8082", "[::1]:8082"} {
		if code, body := do(t, "GET", srv.URL+protocol.PathStatus, host, "", ""); code != 200 || !strings.Contains(body, b.ID()) {
			t.Errorf("GET status with Host %q: %d %q", host, code, body)
		}
	}
	if code, body := do(t, "POST", srv.URL+protocol.PathAMT+protocol.AMTJoin, "", "application/json", `{"channel":"198.51.100.1@232.1.1.1"}`); code != 200 {
		t.Errorf("local POST join: %d %q", code, body)
	}
}

// TestStatusPageReadOnly: the LAN may read the page and its JSON and
// change nothing; other paths stay the cache's.
func TestStatusPageReadOnly(t *testing.T) {
	b, _ := testBeacon(t, Options{StatusPage: true, AllowHosts: []string{"beacon.lan"}, LANURL: "http://my-pi.lan:8081"})
	srv := httptest.NewServer(b.publicHandler())
	defer srv.Close()
	before := b.Status()
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, p := range []string{"/", protocol.PathStatus} {
			code, body := do(t, m, srv.URL+p, "", "application/json", `{"channel":"198.51.100.1@232.1.1.1"}`)
			if code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d %q", m, p, code, body)
			}
		}
	}
	// The local API's state-changing paths are not on this listener: they
	// are content paths here, which take GET and HEAD only.
	if code, _ := do(t, "POST", srv.URL+protocol.PathAMT+protocol.AMTJoin, "", "application/json", `{"channel":"198.51.100.1@232.1.1.1"}`); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/amt/join on the LAN listener: %d", code)
	}
	if after := b.Status(); after.Cache != before.Cache || len(b.gw.State().Channels) != 0 {
		t.Errorf("state changed: %+v -> %+v", before.Cache, after.Cache)
	}

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !bytes.Equal(page, statusPage) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header)
	}
	for _, want := range []string{"default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "form-action 'none'", "'sha256-"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q allows unsafe sources", csp)
	}
	// The hash is the page's script's: else the browser would not run it.
	s := string(statusPage)
	script := s[strings.Index(s, "<script>")+8 : strings.Index(s, "</script>")]
	sum := sha256.Sum256([]byte(script))
	if !strings.Contains(csp, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") {
		t.Error("CSP does not hold the script's hash")
	}
	// Nothing loads from elsewhere, and no untrusted text becomes HTML.
	for _, bad := range []string{"http://", "https://", "innerHTML", "<img", "<link rel=\"style", "src=", "localStorage", "document.cookie"} {
		if strings.Contains(s, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if len(statusPage) > 8<<10 {
		t.Errorf("page is %d bytes: keep it a few KB (flash)", len(statusPage))
	}

	code, body := do(t, "GET", srv.URL+protocol.PathStatus, "", "", "")
	var st Status
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.NodeID != b.ID() || st.CacheMax != 1<<20 || st.Wallet == "" {
		t.Fatalf("GET %s: %d %q", protocol.PathStatus, code, body)
	}
	if code, _ := do(t, "HEAD", srv.URL+"/", "", "", ""); code != 200 {
		t.Errorf("HEAD /: %d", code)
	}

	// Rebinding: refused by name, allowed by address, the LAN URL's host
	// and --allow-host.
	for host, want := range map[string]int{"evil.example:8081": 421, "beacon.lan:8081": 200, "my-pi.lan:8081": 200, "192.168.1.20:8081": 200} {
		for _, p := range []string{"/", protocol.PathStatus} {
			if code, body := do(t, "GET", srv.URL+p, host, "", ""); code != want || (want == 421 && strings.Contains(body, b.ID())) {
				t.Errorf("GET %s with Host %s: %d, want %d", p, host, code, want)
			}
		}
	}

	// --status-page=false: "/" is the cache's again.
	b.opts.StatusPage = false
	off := httptest.NewServer(b.publicHandler())
	defer off.Close()
	if code, body := do(t, "GET", off.URL+protocol.PathStatus, "", "", ""); strings.Contains(body, b.ID()) {
		t.Errorf("status served with the page off: %d", code)
	}
}

// TestStatusNoSecrets: neither the page's JSON nor the problems it lists
// hold the wallet's secret key (in any encoding, or the file's bytes) or
// the owner's delegation signature, even when a log line carried them.
func TestStatusNoSecrets(t *testing.T) {
	b, logs := testBeacon(t, Options{StatusPage: true})
	wallet, err := os.ReadFile(b.opts.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := identity.ParseSolana(wallet)
	if err != nil {
		t.Fatal(err)
	}
	priv := kp.PrivateKey()
	secrets := map[string]string{
		"wallet file":         strings.TrimSpace(string(wallet)),
		"base58 secret":       identity.EncodeBase58(priv),
		"base58 seed":         identity.EncodeBase58(priv.Seed()),
		"hex seed":            hex.EncodeToString(priv.Seed()),
		"delegation sig":      b.deleg.Signature,
		"base64 secret":       base64.StdEncoding.EncodeToString(priv),
		"wallet file, 1st 40": strings.TrimSpace(string(wallet))[:40],
	}
	// Parts of the beacon log errors that could quote what they hold.
	b.log.Warn("a failure quoting the key", "err", "bad key "+identity.EncodeBase58(priv)+" and sig "+b.deleg.Signature)
	b.log.Error("a failure quoting the file", "err", string(wallet))
	b.log.With("component", "agent").Warn("seed "+hex.EncodeToString(priv.Seed()), "err", io.EOF)

	srv := httptest.NewServer(b.publicHandler())
	defer srv.Close()
	_, page := do(t, "GET", srv.URL+"/", "", "", "")
	code, body := do(t, "GET", srv.URL+protocol.PathStatus, "", "", "")
	if code != 200 {
		t.Fatal(code, body)
	}
	for what, s := range secrets {
		if strings.Contains(body, s) || strings.Contains(page, s) {
			t.Errorf("the status shows the %s", what)
		}
	}
	var st Status
	json.Unmarshal([]byte(body), &st)
	if len(st.Problems) < 3 || !strings.Contains(st.Problems[0].Msg, "[redacted]") || st.Problems[0].Component != "agent" {
		t.Errorf("problems %+v", st.Problems)
	}
	// The log itself is the operator's, on the device: unchanged.
	if !strings.Contains(logs.String(), b.deleg.Signature) {
		t.Error("the log lost its text")
	}
}

func TestProblemRing(t *testing.T) {
	var out bytes.Buffer
	pl := newProblemLog(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}), []string{"s3cr3t-value", "short"})
	log := slog.New(pl)
	log.Info("quiet")
	for i := range 12 {
		log.Warn("warn", "err", strings.Repeat("x", i)+" s3cr3t-value", "remote", "192.168.1.7")
	}
	log.With("component", "amt-gateway").Error(strings.Repeat("long ", 200))
	got := pl.ring.recent()
	if len(got) != maxProblems {
		t.Fatalf("%d problems, want %d", len(got), maxProblems)
	}
	if got[0].Component != "amt-gateway" || len(got[0].Msg) > maxProblemText+4 || got[0].Level != "ERROR" {
		t.Errorf("newest %+v", got[0])
	}
	if got[1].Err != strings.Repeat("x", 11)+" [redacted]" {
		t.Errorf("second newest err %q", got[1].Err)
	}
	for _, p := range got {
		if strings.Contains(p.Msg+p.Err, "192.168.1.7") || strings.Contains(p.Err, "s3cr3t") {
			t.Errorf("kept %+v", p)
		}
	}
	// A repeated problem counts up instead of pushing the others out.
	for range 50 {
		log.Warn("refused", "err", "flood")
	}
	got = pl.ring.recent()
	if got[0].Msg != "refused" || got[0].Count != 50 || got[1].Component != "amt-gateway" {
		t.Errorf("after a flood: %+v", got[:2])
	}
	log.Error(strings.Repeat("long ", 200))
	if got = pl.ring.recent(); got[0].Count != 1 || got[0].Component != "" {
		t.Errorf("another component's problem merged: %+v", got[0])
	}
	// Below the configured level nothing reaches the log; warnings are
	// still kept for the page.
	if strings.Contains(out.String(), "quiet") || strings.Contains(out.String(), "level=WARN") || !strings.Contains(out.String(), "level=ERROR") {
		t.Errorf("log %q", out.String())
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"tcp://user:pw@broker:1883": "tcp://broker:1883",
		"tls://broker:8883":         "tls://broker:8883",
		"%zz":                       "(unparsable URL)",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzHostGuard: any Host header gets an answer without a panic, and one
// that is let through is an address, localhost or a configured name.
func FuzzHostGuard(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8082", "[::1]:8082", "localhost", "beacon.lan.", "evil.example", "", "[", "]:", "[fe80::1%eth0]:1", "127.1", ":8082", "beacon.lan:x:y"} {
		f.Add(s)
	}
	g := newHostGuard(slog.New(slog.NewTextHandler(io.Discard, nil)), []string{"beacon.lan"})
	f.Fuzz(func(t *testing.T, host string) {
		if !g.allowed(host) {
			return
		}
		h := hostOnly(host)
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if _, err := netip.ParseAddr(h); err == nil {
			return
		}
		if n := normalHost(h); n != "localhost" && n != "beacon.lan" {
			t.Fatalf("Host %q let through as %q", host, n)
		}
	})
}

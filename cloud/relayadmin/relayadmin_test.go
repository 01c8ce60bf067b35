package relayadmin

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/castd"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

// startCastd runs a real castd handler with an admin token and one relay
// registered for two prefixes.
func startCastd(t *testing.T) (url, relayID string) {
	t.Helper()
	s, err := castd.New(castd.Options{StateDir: t.TempDir(), Origin: "http://origin.example", CacheSize: 1 << 20,
		AdminToken: "tok", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	kp, _ := identity.Generate()
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleRelay, LANURL: "http://relay.example", CIDRs: []string{"198.51.100.0/24", "203.0.113.0/24"}})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+protocol.PathRegister, bytes.NewReader(body))
	signedreq.Sign(req, body, kp, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("register: %v %v", err, resp)
	}
	resp.Body.Close()
	return srv.URL, kp.ID()
}

func run(env map[string]string, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Run(args, &o, &e, func(k string) string { return env[k] })
	return code, o.String(), e.String()
}

func TestRun(t *testing.T) {
	url, id := startCastd(t)
	env := map[string]string{"CASTD_URL": url, "CASTD_ADMIN_TOKEN": "tok"}
	for _, tc := range []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{[]string{"list"}, ExitOK, id + "  pending", ""},
		{[]string{"approve", id, "198.51.100.0/24", "--by", "alice"}, ExitOK, "approved for " + id + ": 198.51.100.0/24\nstate partial; routed for: 198.51.100.0/24; requested, not approved: 203.0.113.0/24", ""},
		{[]string{"--json", "list"}, ExitOK, `"state": "partial"`, ""},
		{[]string{"revoke", id, "203.0.113.0/24"}, ExitFailed, "", "not approved"},
		{[]string{"revoke", id}, ExitOK, "revoked from " + id + ": 198.51.100.0/24", ""},
		{[]string{"approve", id, "10.1.2.3/8"}, ExitFailed, "", "400 Bad Request: invalid registration"},
		{[]string{"approve", id, "--admin-token", "wrong"}, ExitFailed, "", "401"},
		{[]string{"approve"}, ExitUsage, "", "needs the relay's node ID"},
		{[]string{"bless", id}, ExitUsage, "", `unknown command "bless"`},
		{[]string{}, ExitUsage, "", "say list, approve or revoke"},
		{[]string{"list", "extra"}, ExitUsage, "", "no arguments"},
		{[]string{"list", "--url", "ftp://x"}, ExitUsage, "", "--url"},
		{[]string{"list", "--nope"}, ExitUsage, "", "flag provided but not defined"},
	} {
		code, out, errOut := run(env, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.errIn) {
			t.Errorf("castd relays %q: exit %d\nstdout %s\nstderr %s\nwant exit %d, stdout with %q, stderr with %q", tc.args, code, out, errOut, tc.code, tc.out, tc.errIn)
		}
	}
	if code, _, errOut := run(map[string]string{"CASTD_URL": url}, "list"); code != ExitUsage || !strings.Contains(errOut, "CASTD_ADMIN_TOKEN") {
		t.Errorf("no token: %d %s", code, errOut)
	}
	if code, _, errOut := run(env, "list", "--url", "http://127.0.0.1:1"); code != ExitFailed || !strings.Contains(errOut, "cannot reach castd") {
		t.Errorf("unreachable: %d %s", code, errOut)
	}
	// The token goes unencrypted only to this host without a warning (the
	// check is made before any connection, so no address is dialled here).
	for host, local := range map[string]bool{"127.0.0.1": true, "::1": true, "localhost": true, "castd.example": false, "192.0.2.1": false} {
		if isLoopback(host) != local {
			t.Errorf("isLoopback(%s) = %v", host, !local)
		}
	}
}

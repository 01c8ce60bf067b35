package castd

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/ratelimit"
	"github.com/blockcast/beacon/shared/signedreq"
	"github.com/blockcast/beacon/test/harness"
)

func newTestServer(t *testing.T, mod func(*Options)) (*Server, *httptest.Server) {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "content of "+r.URL.Path)
	}))
	t.Cleanup(origin.Close)
	opts := Options{StateDir: t.TempDir(), Origin: origin.URL, CacheSize: 1 << 20, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return s, srv
}

func TestOptionsRefused(t *testing.T) {
	for _, o := range []Options{
		{Origin: "http://o", CacheSize: 1},
		{StateDir: "x", CacheSize: 1},
		{StateDir: "x", Origin: "ftp://o", CacheSize: 1},
		{StateDir: "x", Origin: "http://o", CacheSize: -1},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestRegisterRouteAndFetch(t *testing.T) {
	s, srv := newTestServer(t, nil)
	kp, _ := identity.Generate()
	body, _ := json.Marshal(protocol.Registration{Role: protocol.RoleBeacon, LANURL: "http://192.168.1.1:8081", Version: "v"})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+protocol.PathRegister, bytes.NewReader(body))
	signedreq.Sign(req, body, kp, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var reply protocol.RegistrationReply
	json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if resp.StatusCode != 200 || reply.NodeID != kp.ID() || reply.PublicIP != "127.0.0.1" || reply.CastKey != s.ID() || reply.MQTT != "" {
		t.Fatalf("%d %+v", resp.StatusCode, reply)
	}
	// The router sends this address to the beacon, with no caching of the answer.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = client.Get(srv.URL + "/v/a.mp4?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "http://192.168.1.1:8081/v/a.mp4?x=1" ||
		resp.Header.Get(protocol.HeaderRoute) != protocol.DecisionBeacon || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	// The registered node fetches through the mid-tier cache; a stranger cannot.
	get := func(k *identity.Keypair) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+protocol.PathObjectPrefix+"/v/a.mp4", nil)
		signedreq.Sign(req, nil, k, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp = get(kp)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "content of /v/a.mp4" || resp.Header.Get("X-Cache") != "MISS" {
		t.Fatalf("%d %q %v", resp.StatusCode, b, resp.Header)
	}
	if resp = get(kp); resp.Header.Get("X-Cache") != "HIT" {
		t.Fatalf("second fetch %v", resp.Header)
	}
	resp.Body.Close()
	stranger, _ := identity.Generate()
	if resp = get(stranger); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("stranger: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestAPIRefusals(t *testing.T) {
	_, srv := newTestServer(t, func(o *Options) { o.AdminToken = "secret" })
	tests := []struct {
		method, path, body, auth string
		want                     int
	}{
		{"GET", protocol.PathRegister, "", "", http.StatusMethodNotAllowed},
		{"DELETE", "/some/content", "", "", http.StatusMethodNotAllowed},
		{"GET", protocol.PathRoute + "?path=relative", "", "", http.StatusBadRequest},
		{"GET", protocol.PathRoute + "?path=/x&client=999.1.1.1", "", "", http.StatusBadRequest},
		{"GET", protocol.PathAPIPrefix + "nope", "", "", http.StatusNotFound},
		{"POST", protocol.PathNodes + "/abc/commands", `{"op":"purge"}`, "", http.StatusUnauthorized},
		{"POST", protocol.PathNodes + "/abc/commands", `{"op":"purge"}`, "Bearer wrong", http.StatusUnauthorized},
		{"POST", protocol.PathNodes + "/abc/commands", `{"op":"purge"}`, "Bearer secret", http.StatusServiceUnavailable}, // no control plane
		{"GET", protocol.PathNodes + "/abc", "", "", http.StatusUnauthorized},
		{"GET", protocol.PathNodes + "/abc", "", "Bearer secret", http.StatusNotFound},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e protocol.Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d (%s)", tc.method, tc.path, resp.StatusCode, tc.want, e.Error)
		}
	}
	resp, err := http.Get(srv.URL + protocol.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "castd_requests_refused_total") || !strings.Contains(string(b), "castd_midcache_hits_total") {
		t.Fatalf("metrics:\n%s", b)
	}
}

func TestQueryResponseInterval(t *testing.T) {
	for qi, want := range map[time.Duration]time.Duration{
		0: 10 * time.Second, 125 * time.Second: 10 * time.Second, 10 * time.Second: 10 * time.Second,
		5 * time.Second: 5 * time.Second, time.Second: time.Second,
	} {
		if got := queryResponseInterval(qi); got != want {
			t.Errorf("queryResponseInterval(%s) = %s, want %s", qi, got, want)
		}
	}
}

// A stranger's flood of bad requests is answered in full but cannot flood
// castd's log: refusals past the burst are counted, and the next line
// that is written says how many were left out.
func TestRefusalLogBounded(t *testing.T) {
	var logs harness.LineBuffer
	s, srv := newTestServer(t, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	const flood = 3 * refusalLogBurst
	c := srv.Client()
	for i := 0; i < flood; i++ {
		resp, err := c.Get(srv.URL + protocol.PathRoute + "?path=relative")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if got := s.refused.Load(); got != flood {
		t.Fatalf("counted %d refusals, want %d", got, flood)
	}
	lines := strings.Count(logs.String(), "request refused")
	if lines >= flood || lines < refusalLogBurst {
		t.Fatalf("%d refusal lines for %d refusals (burst %d)", lines, flood, refusalLogBurst)
	}
	// Once the bucket refills, a line says what was left out.
	s.refusalLog = ratelimit.NewBucket(refusalLogRate, refusalLogBurst, time.Now())
	resp, err := c.Get(srv.URL + protocol.PathRoute + "?path=relative")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !regexp.MustCompile(`unlogged_before=\d+`).MatchString(logs.String()) {
		t.Fatalf("no line says how many refusals were not logged")
	}
}

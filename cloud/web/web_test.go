package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
)

func fleet() []Node {
	var out []Node
	out = append(out, Node{ID: "relayA", Role: "relay", State: "online", PublicIP: "192.0.2.1", CIDRs: []string{"198.51.100.0/24"}})
	for i := 0; i < 30; i++ {
		state := []string{"online", "stale", "offline"}[i%3]
		parent := ""
		if i%2 == 0 {
			parent = "relayA"
		}
		out = append(out, Node{ID: fmt.Sprintf("beacon%02d", i), Role: "beacon", State: state, PublicIP: fmt.Sprintf("198.51.100.%d", i), Version: "v1", Parent: parent})
	}
	return out
}

func get(t *testing.T, d *Dashboard, url string) (*httptest.ResponseRecorder, NodeList) {
	t.Helper()
	rec := httptest.NewRecorder()
	d.ServeNodes(rec, httptest.NewRequest("GET", url, nil))
	var l NodeList
	if rec.Code == 200 {
		if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
	}
	return rec, l
}

func TestServeNodes(t *testing.T) {
	d := New(Options{List: fleet, CastID: "CAST", Version: "test"})
	tests := []struct {
		url         string
		total, n    int
		first       string
		wantParents int
	}{
		{protocol.PathNodes, 31, 31, "beacon00", 1},
		{protocol.PathNodes + "?state=offline", 10, 10, "beacon02", 1},
		{protocol.PathNodes + "?role=relay", 1, 1, "relayA", 0},
		{protocol.PathNodes + "?q=100.7", 1, 1, "beacon07", 0},
		{protocol.PathNodes + "?limit=5&offset=3", 31, 5, "beacon09", 1},
		{protocol.PathNodes + "?offset=100", 31, 0, "", 0},
	}
	for _, tc := range tests {
		rec, l := get(t, d, tc.url)
		if rec.Code != 200 {
			t.Fatalf("%s: %d", tc.url, rec.Code)
		}
		if l.Total != tc.total || len(l.Nodes) != tc.n || len(l.Parents) != tc.wantParents {
			t.Errorf("%s: total %d n %d parents %d", tc.url, l.Total, len(l.Nodes), len(l.Parents))
		}
		if tc.n > 0 && l.Nodes[0].ID != tc.first {
			t.Errorf("%s: first %s want %s", tc.url, l.Nodes[0].ID, tc.first)
		}
		if l.Counts["online"] != 11 || l.Roles["beacon"] != 30 || l.Cast != "CAST" {
			t.Errorf("%s: counts %v roles %v", tc.url, l.Counts, l.Roles)
		}
	}
	for _, bad := range []string{protocol.PathNodes + "?limit=-1", protocol.PathNodes + "?offset=x", protocol.PathNodes + "?limit=1e9"} {
		if rec, _ := get(t, d, bad); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, rec.Code)
		}
	}
}

func TestServeNodeAndPage(t *testing.T) {
	d := New(Options{List: fleet})
	rec := httptest.NewRecorder()
	d.ServeNode(rec, httptest.NewRequest("GET", protocol.PathNodes+"/beacon03", nil), "beacon03")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"id":"beacon03"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	d.ServeNode(rec, httptest.NewRequest("GET", protocol.PathNodes+"/nope", nil), "nope")
	if rec.Code != 404 {
		t.Fatalf("missing node: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	d.ServePage(rec, httptest.NewRequest("GET", "/", nil))
	if !strings.Contains(rec.Body.String(), "Blockcast fleet") || !strings.Contains(rec.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatal("page or CSP missing")
	}
	// Untrusted strings must never be inserted as HTML.
	if strings.Contains(rec.Body.String(), "innerHTML") {
		t.Fatal("dashboard uses innerHTML")
	}
}

// TestServeSummaryNamesNoNode: the anonymous view has the totals and not
// one field of a node: no ID, address, URL, owner or prefix.
func TestServeSummaryNamesNoNode(t *testing.T) {
	nodes := fleet()
	nodes[1].Owner, nodes[1].LANURL = "OwnerWallet1111", "http://192.168.7.7:8081"
	d := New(Options{List: func() []Node { return nodes }, CastID: "CAST", Version: "test"})
	rec := httptest.NewRecorder()
	d.ServeSummary(rec, httptest.NewRequest("GET", protocol.PathNodes, nil))
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, n := range nodes {
		for _, secret := range append([]string{n.ID, n.PublicIP, n.Owner, n.LANURL}, n.CIDRs...) {
			if secret != "" && strings.Contains(body, secret) {
				t.Errorf("summary carries %q: %s", secret, body)
			}
		}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
		t.Fatal(err)
	}
	for k := range fields {
		switch k {
		case "cast", "version", "time", "total", "counts", "roles":
		default:
			t.Errorf("summary has field %q", k)
		}
	}
	var s Summary
	json.Unmarshal(rec.Body.Bytes(), &s)
	if s.Total != 31 || s.Counts["online"] != 11 || s.Roles["beacon"] != 30 || s.Roles["relay"] != 1 || s.Cast != "CAST" {
		t.Errorf("summary %+v", s)
	}
}

// TestServeSummaryCached: however many anonymous callers ask, the registry
// is walked at most once per summaryTTL.
func TestServeSummaryCached(t *testing.T) {
	calls := 0
	d := New(Options{List: func() []Node { calls++; return fleet() }})
	now := time.Unix(1e9, 0)
	d.now = func() time.Time { return now }
	for i := 0; i < 100; i++ {
		d.ServeSummary(httptest.NewRecorder(), httptest.NewRequest("GET", protocol.PathNodes, nil))
	}
	if calls != 1 {
		t.Fatalf("100 requests in one instant listed the fleet %d times", calls)
	}
	now = now.Add(summaryTTL)
	d.ServeSummary(httptest.NewRecorder(), httptest.NewRequest("GET", protocol.PathNodes, nil))
	if calls != 2 {
		t.Fatalf("after the TTL: %d lists, want 2", calls)
	}
}

func TestClipAndPageHeaders(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 64, `"abc"`},
		{strings.Repeat("x", 15000), 4, `"xxxx"…(15000 bytes)`},
		{"ééé", 3, `"é"…(6 bytes)`}, // never half a rune
		{"a\nb", 8, `"a\nb"`},
	} {
		if got := clip(tc.in, tc.n); got != tc.want {
			t.Errorf("clip(%.10q, %d) = %s, want %s", tc.in, tc.n, got, tc.want)
		}
	}
	rec := httptest.NewRecorder()
	New(Options{List: fleet}).ServeNode(rec, httptest.NewRequest("GET", "/", nil), strings.Repeat("y", 15000))
	if rec.Code != 404 || rec.Body.Len() > 200 {
		t.Fatalf("missing node with a 15 KB ID: %d, %d bytes", rec.Code, rec.Body.Len())
	}
	rec = httptest.NewRecorder()
	New(Options{List: fleet}).ServePage(rec, httptest.NewRequest("GET", "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	for _, d := range []string{"form-action 'none'", "frame-ancestors 'none'", "connect-src 'self'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	page := rec.Body.String()
	// The token is kept for the tab only, and the form cannot submit it.
	if strings.Contains(page, "localStorage") || strings.Contains(page, "document.cookie") {
		t.Error("dashboard keeps the token beyond the tab")
	}
	if strings.Contains(page, `id="token" name=`) {
		t.Error("the token input has a name, so a form submission would carry it")
	}
}

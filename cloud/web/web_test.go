package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
		{"/v1/nodes", 31, 31, "beacon00", 1},
		{"/v1/nodes?state=offline", 10, 10, "beacon02", 1},
		{"/v1/nodes?role=relay", 1, 1, "relayA", 0},
		{"/v1/nodes?q=100.7", 1, 1, "beacon07", 0},
		{"/v1/nodes?limit=5&offset=3", 31, 5, "beacon09", 1},
		{"/v1/nodes?offset=100", 31, 0, "", 0},
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
	for _, bad := range []string{"/v1/nodes?limit=-1", "/v1/nodes?offset=x", "/v1/nodes?limit=1e9"} {
		if rec, _ := get(t, d, bad); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, rec.Code)
		}
	}
}

func TestServeNodeAndPage(t *testing.T) {
	d := New(Options{List: fleet})
	rec := httptest.NewRecorder()
	d.ServeNode(rec, httptest.NewRequest("GET", "/v1/nodes/beacon03", nil), "beacon03")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"id":"beacon03"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	d.ServeNode(rec, httptest.NewRequest("GET", "/v1/nodes/nope", nil), "nope")
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

// Package web is castd's fleet dashboard and the JSON node API behind it:
// every node with its state, role, version, last contact, public IP and
// serving figures, and the delivery tree CAST → relays → beacons. The page
// polls the API, so it needs no build step and works on a phone.
//
// Node records say where homes are (public IP, LAN URL, owner wallet), so
// only the operator sees them: the caller (castd) checks the operator's
// token before ServeNodes and ServeNode, and anyone else gets ServeSummary,
// fleet totals. The page shows the totals to anyone and asks for the token
// before it asks for nodes.
package web

import (
	_ "embed"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Node is one node as the dashboard shows it: registry facts merged with
// what the topology monitor last heard.
type Node struct {
	ID       string   `json:"id"`
	Role     string   `json:"role"`
	State    string   `json:"state"` // online, stale, offline, unknown
	Version  string   `json:"version,omitempty"`
	Owner    string   `json:"owner,omitempty"`
	PublicIP string   `json:"public_ip"`
	LANURL   string   `json:"lan_url,omitempty"`
	CIDRs    []string `json:"cidrs,omitempty"` // relays: the prefixes clients are routed there for
	// RequestedCIDRs are what a relay registered; only the operator's
	// approval (or the coverage zone) makes them routed.
	RequestedCIDRs []string  `json:"requested_cidrs,omitempty"`
	FirstSeen      time.Time `json:"first_seen"`
	LastSeen       time.Time `json:"last_seen"` // last registration or report
	Load           float64   `json:"load"`
	HitRatio       float64   `json:"hit_ratio"`
	BytesServed    uint64    `json:"bytes_served"`
	UpstreamBytes  uint64    `json:"upstream_bytes"`
	CacheObjects   uint64    `json:"cache_objects"`
	CacheBytes     uint64    `json:"cache_bytes"`
	AMT            string    `json:"amt,omitempty"` // tunnel state, once reported
	// Parent is the relay whose CIDRs cover a beacon's public IP, or ""
	// when the beacon hangs directly off the CAST node.
	Parent string `json:"parent,omitempty"`
	// Routable says whether the request router currently sends users here.
	Routable bool `json:"routable"`
	// Receipts summarises the node's delivery receipts and the flags
	// castd raised on them (package cloud/receipts), once it sent one.
	Receipts any `json:"receipts,omitempty"`
}

// Options configure the dashboard.
type Options struct {
	// List returns every node; it is called on each API request.
	List    func() []Node
	CastID  string
	Version string
	Logger  *slog.Logger
}

// Dashboard serves the page and the node API.
type Dashboard struct {
	opts Options
	now  func() time.Time

	mu      sync.Mutex
	summary Summary // the last one ServeSummary made, reused for summaryTTL
}

// summaryTTL bounds how often anonymous callers make castd walk the
// registry: one walk a second, however many of them ask.
const summaryTTL = time.Second

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// New returns a dashboard over opts.List.
func New(opts Options) *Dashboard {
	opts.ensureDefaults()
	return &Dashboard{opts: opts, now: time.Now}
}

//go:embed dashboard.html
var page []byte

// ServePage serves the dashboard at /.
func (d *Dashboard) ServePage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	// The page loads nothing from elsewhere and runs only its own script.
	// The sign-in form is never submitted (the script reads it), and no other
	// site may frame the page and trick the operator into typing the token.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.Write(page)
}

// NodeList is the body of GET /v1/nodes.
type NodeList struct {
	Cast    string         `json:"cast"`
	Version string         `json:"version"`
	Time    time.Time      `json:"time"`
	Total   int            `json:"total"`   // nodes matching the filter
	Counts  map[string]int `json:"counts"`  // all nodes by state
	Roles   map[string]int `json:"roles"`   // all nodes by role
	Offset  int            `json:"offset"`  // of the first node returned
	Nodes   []Node         `json:"nodes"`   // at most limit
	Parents []Node         `json:"parents"` // the relays the returned beacons hang off
}

const maxLimit = 1000

// Summary is the body of GET /v1/nodes for a caller without the operator's
// token: fleet totals, and nothing that tells one node or home from another
// (no IDs, addresses, URLs, owners or prefixes).
type Summary struct {
	Cast    string         `json:"cast"`
	Version string         `json:"version"`
	Time    time.Time      `json:"time"`
	Total   int            `json:"total"`  // all nodes
	Counts  map[string]int `json:"counts"` // by state
	Roles   map[string]int `json:"roles"`  // by role
}

// ServeSummary serves the anonymous GET /v1/nodes: the fleet totals, made
// at most once per summaryTTL.
func (d *Dashboard) ServeSummary(w http.ResponseWriter, r *http.Request) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.summary.Counts == nil || now.Sub(d.summary.Time) >= summaryTTL || now.Before(d.summary.Time) {
		sum := Summary{Cast: d.opts.CastID, Version: d.opts.Version, Time: now.UTC(), Counts: map[string]int{}, Roles: map[string]int{}}
		for _, n := range d.opts.List() {
			sum.Total++
			sum.Counts[n.State]++
			sum.Roles[n.Role]++
		}
		d.summary = sum
	}
	writeJSON(w, d.summary)
}

// ServeNodes serves GET /v1/nodes?state=&role=&q=&limit=&offset=: nodes
// sorted by state (online first) then ID, filtered and paged so a fleet of
// a million nodes stays cheap to show.
func (d *Dashboard) ServeNodes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), 200)
	if err != nil || limit < 0 {
		writeErr(w, http.StatusBadRequest, "limit must be a non-negative integer")
		return
	}
	limit = min(limit, maxLimit)
	offset, err := intParam(q.Get("offset"), 0)
	if err != nil || offset < 0 {
		writeErr(w, http.StatusBadRequest, "offset must be a non-negative integer")
		return
	}
	state, role, text := q.Get("state"), q.Get("role"), strings.ToLower(q.Get("q"))
	all := d.opts.List()
	out := NodeList{Cast: d.opts.CastID, Version: d.opts.Version, Time: time.Now().UTC(),
		Counts: map[string]int{}, Roles: map[string]int{}, Offset: offset, Nodes: []Node{}, Parents: []Node{}}
	byID := make(map[string]*Node, 64)
	var match []Node
	for i := range all {
		n := &all[i]
		out.Counts[n.State]++
		out.Roles[n.Role]++
		if n.Role == "relay" {
			byID[n.ID] = n
		}
		if (state == "" || n.State == state) && (role == "" || n.Role == role) && (text == "" || matches(n, text)) {
			match = append(match, *n)
		}
	}
	sort.Slice(match, func(i, j int) bool {
		a, b := rank(match[i].State), rank(match[j].State)
		if a != b {
			return a < b
		}
		return match[i].ID < match[j].ID
	})
	out.Total = len(match)
	if offset < len(match) {
		match = match[offset:]
		if len(match) > limit {
			match = match[:limit]
		}
		out.Nodes = match
	}
	seen := map[string]bool{}
	for _, n := range out.Nodes {
		if p, ok := byID[n.Parent]; ok && !seen[n.Parent] {
			seen[n.Parent] = true
			out.Parents = append(out.Parents, *p)
		}
	}
	writeJSON(w, out)
}

// ServeNode serves GET /v1/nodes/{id}.
func (d *Dashboard) ServeNode(w http.ResponseWriter, r *http.Request, id string) {
	for _, n := range d.opts.List() {
		if n.ID == id {
			writeJSON(w, n)
			return
		}
	}
	writeErr(w, http.StatusNotFound, "no node "+clip(id, 64))
}

func matches(n *Node, text string) bool {
	for _, s := range []string{n.ID, n.PublicIP, n.Version, n.Owner, n.LANURL} {
		if strings.Contains(strings.ToLower(s), text) {
			return true
		}
	}
	return false
}

func rank(state string) int {
	switch state {
	case "online":
		return 0
	case "stale":
		return 1
	case "offline":
		return 2
	}
	return 3
}

func intParam(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// clip quotes s for an error message or a log line, cut to at most n bytes
// of it: callers choose what they send, and a message must not carry a
// caller's 15 KB back whole.
func clip(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// History is the body of castd's operator-only multicast history (see
// protocol.PathMulticastHistory): bytes by path in each minute of the last
// hour, oldest first, the minute in progress last.
type History struct {
	Time    time.Time       `json:"time"`
	Minutes []HistoryMinute `json:"minutes"`
}

// HistoryMinute is one minute's bytes by path. Saved is the copies
// multicast spared castd's uplink: the bytes of the objects beacons took by
// offer (what unicast would have sent them) less what the multicast
// sessions sent (data, parity, early media, repairs); a minute in which a
// session sends before beacons take its offers is negative.
type HistoryMinute struct {
	Start     time.Time `json:"start"`
	Origin    int64     `json:"origin"`    // pulled from the origin
	Unicast   int64     `json:"unicast"`   // objects served to nodes by HTTP
	Multicast int64     `json:"multicast"` // source symbols, manifests and hash lists on channels
	Parity    int64     `json:"parity"`    // parity on channels (proactive and for NACKs)
	Repair    int64     `json:"repair"`    // early media and repairs over DTLS
	Saved     int64     `json:"saved"`
}

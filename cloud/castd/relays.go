package castd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blockcast/beacon/cloud/coverage"
	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/protocol"
)

// Relay coverage. What a relay registers is only a request: the router
// sends clients to a relay for its effective prefixes, the union of those
// the operator approved through the admin API (kept in the registry, apart
// from the node's record) and those the coverage-zone file assigns to it.
// A relay with none is registered, monitored and listed as pending, but
// draws no client.

// DefaultCoverageZoneInterval is how often the coverage-zone file is
// checked for changes.
const DefaultCoverageZoneInterval = 5 * time.Second

// maxRelayNodeChangeBody bounds an approve or revoke body (1024 prefixes fit).
const maxRelayNodeChangeBody = 128 << 10

type relayNodeCoverage struct {
	// mu serialises computing a relay's effective prefixes with setting
	// them in the router, so that an approval, a registration and a reload
	// racing on one relay cannot leave an older set in force.
	mu     sync.Mutex
	zone   map[string][]coverage.Assignment // node ID → prefixes from the file
	status *protocol.CoverageZoneStatus     // nil without --coverage-zone
	sig    fileSig                          // of the file last read (good or bad)

	reloadsOK, reloadsErr atomic.Int64
	zonePrefixes          atomic.Int64
}

// fileSig is what the watcher compares to notice an edit: a file replaced
// by a rename has another inode, one edited in place another mtime or size.
type fileSig struct {
	mtime time.Time
	size  int64
	ino   uint64
	err   string
}

func statSig(path string) fileSig {
	fi, err := os.Stat(path)
	if err != nil {
		return fileSig{err: err.Error()}
	}
	sig := fileSig{mtime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sig.ino = uint64(st.Ino)
	}
	return sig
}

// initRelayNodes loads the coverage-zone file and gives every relay in the
// router its effective prefixes. A bad file at start is an error: there is
// no earlier good one to keep.
func (s *Server) initRelayNodes() error {
	rc := &s.relayNodes
	rc.zone = map[string][]coverage.Assignment{}
	if path := s.opts.CoverageZone; path != "" {
		rc.sig = statSig(path)
		f, err := coverage.Load(path)
		if err != nil {
			return fmt.Errorf("castd: --coverage-zone: %w", err)
		}
		rc.reloadsOK.Add(1)
		s.installZone(f)
	}
	ids := map[string]bool{}
	if err := s.reg.ForEachApproval(func(id string, _ []registry.Approval) error {
		ids[id] = true
		return nil
	}); err != nil {
		return fmt.Errorf("castd: reading relay approvals: %w", err)
	}
	for id := range rc.zone {
		ids[id] = true
	}
	for id := range ids {
		s.applyRelayNode(id)
	}
	return nil
}

// installZone makes f the coverage-zone file in force and returns the
// nodes whose assignments it may change. The caller holds no lock.
func (s *Server) installZone(f *coverage.File) []string {
	rc := &s.relayNodes
	next := f.Assignments()
	rc.mu.Lock()
	changed := make([]string, 0, len(next)+len(rc.zone))
	for id := range rc.zone {
		changed = append(changed, id)
	}
	for id := range next {
		if _, ok := rc.zone[id]; !ok {
			changed = append(changed, id)
		}
	}
	rc.zone = next
	rc.status = &protocol.CoverageZoneStatus{Path: s.opts.CoverageZone, Revision: f.Revision, LoadedAt: time.Now().UTC(),
		Groups: len(f.Groups), Prefixes: f.Prefixes(), Unassigned: f.Unassigned()}
	rc.mu.Unlock()
	rc.zonePrefixes.Store(int64(f.Prefixes()))
	if u := f.Unassigned(); len(u) > 0 {
		s.log.Warn("coverage-zone groups name no relay node (add a \"nodes\" list, or name the group by the node ID)",
			"path", s.opts.CoverageZone, "groups", strings.Join(clipList(u, 20), ","))
	}
	return changed
}

// applyRelayNode computes relay id's effective prefixes and sets them in the
// router; it is called whenever an input changes.
func (s *Server) applyRelayNode(id string) {
	rc := &s.relayNodes
	rc.mu.Lock()
	defer rc.mu.Unlock()
	approved, err := s.reg.Approvals(id)
	if err != nil {
		// Fail closed: route the relay only for what the file gives it.
		s.log.Error("relay approvals unreadable; routing the relay without them", "id", id, "err", err)
		approved = nil
	}
	s.router.SetRelayNodePrefixes(id, effectivePrefixes(approved, rc.zone[id]))
}

func effectivePrefixes(approved []registry.Approval, zone []coverage.Assignment) []netip.Prefix {
	out := registry.Prefixes(approved)
	for _, a := range zone {
		if !slices.Contains(out, a.Prefix) {
			out = append(out, a.Prefix)
		}
	}
	return out
}

// relayNodeRegistered is called after a registration is in the router: a relay
// that is new to the router (or was a beacon) gets its effective prefixes.
func (s *Server) relayNodeRegistered(n registry.Node) {
	if n.Role == protocol.RoleRelay {
		s.applyRelayNode(n.ID)
	}
}

// watchCoverageZone reloads the coverage-zone file when it changes, until
// ctx ends. A file that fails to load leaves the last good one in force.
func (s *Server) watchCoverageZone(ctx context.Context) {
	path := s.opts.CoverageZone
	if path == "" {
		return
	}
	t := time.NewTicker(s.opts.CoverageZoneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.reloadCoverageZone(path)
	}
}

// reloadCoverageZone loads the file if it changed since it was last read.
func (s *Server) reloadCoverageZone(path string) {
	rc := &s.relayNodes
	sig := statSig(path)
	if sig == rc.sig {
		return
	}
	rc.sig = sig // also for a bad file: it is not retried until it changes again
	f, err := coverage.Load(path)
	if err != nil {
		rc.reloadsErr.Add(1)
		rc.mu.Lock()
		if rc.status != nil {
			rc.status.LastError = err.Error()
		}
		rc.mu.Unlock()
		s.log.Error("coverage-zone file not reloaded; the last good one stays in force", "path", path, "err", err)
		return
	}
	changed := s.installZone(f)
	for _, id := range changed {
		s.applyRelayNode(id)
	}
	rc.reloadsOK.Add(1)
	s.log.Info("coverage-zone file reloaded", "path", path, "revision", f.Revision, "groups", len(f.Groups),
		"prefixes", f.Prefixes(), "relays", len(f.Assignments()))
}

func (s *Server) relayNodeMetrics(m *metrics.Registry) {
	m.Collect("castd_coverage_zone_reloads_total", "Loads of the --coverage-zone file, by result (an error keeps the last good file).", metrics.Counter, func() []metrics.Sample {
		if s.opts.CoverageZone == "" {
			return nil
		}
		return []metrics.Sample{
			{Labels: []string{"result", "ok"}, Value: float64(s.relayNodes.reloadsOK.Load())},
			{Labels: []string{"result", "error"}, Value: float64(s.relayNodes.reloadsErr.Load())},
		}
	})
	m.Collect("castd_coverage_zone_prefixes", "Prefixes in the coverage-zone file in force.", metrics.Gauge, func() []metrics.Sample {
		if s.opts.CoverageZone == "" {
			return nil
		}
		return []metrics.Sample{{Value: float64(s.relayNodes.zonePrefixes.Load())}}
	})
}

// handleRelayNodes serves the operator's relay API: GET /v1/relays,
// GET /v1/relays/{id}, POST /v1/relays/{id}/approve and /revoke.
func (s *Server) handleRelayNodes(w http.ResponseWriter, r *http.Request) {
	if !s.requireAdmin(w, r) {
		return
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, protocol.PathRelayNodes), "/")
	id, action, _ := strings.Cut(rest, "/")
	if action != "" {
		action = "/" + action
	}
	switch {
	case id == "":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			s.fail(w, r, http.StatusMethodNotAllowed, "the relay list takes GET")
			return
		}
		s.listRelayNodes(w, r)
		return
	case !plausibleNodeID(id):
		s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("%q is not a node ID", truncate(id, 64)))
		return
	case action == "":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET")
			s.fail(w, r, http.StatusMethodNotAllowed, "a relay takes GET")
			return
		}
		s.showRelayNode(w, r, id)
		return
	case action != protocol.RelayNodeApprove && action != protocol.RelayNodeRevoke:
		s.fail(w, r, http.StatusNotFound, "no such relay action: "+truncate(action, 64)+" (approve, revoke)")
		return
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", "POST")
		s.fail(w, r, http.StatusMethodNotAllowed, "approve and revoke are POSTed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRelayNodeChangeBody))
	if err != nil {
		s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxRelayNodeChangeBody))
		return
	}
	ch, err := decodeRelayNodeChange(body)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	from := r.RemoteAddr
	if ip, err := s.ips.Addr(r); err == nil {
		from = ip.String()
	}
	var changed []string
	if action == protocol.RelayNodeApprove {
		changed, _, err = s.reg.Approve(id, ch.CIDRs, ch.By, from)
	} else {
		changed, _, err = s.reg.Revoke(id, ch.CIDRs)
	}
	if s.relayNodeChangeFailed(w, r, id, err, ch.CIDRs) {
		return
	}
	s.applyRelayNode(id)
	view, err := s.relayNodeView(id)
	if action == protocol.RelayNodeApprove {
		s.log.Info("relay prefixes approved", "id", id, "added", changed, "asked", ch.CIDRs, "by", ch.By, "from", from, "effective", view.Effective)
		view.Added = changed
	} else {
		s.log.Info("relay prefixes revoked", "id", id, "removed", changed, "asked", ch.CIDRs, "by", ch.By, "from", from, "effective", view.Effective)
		view.Removed = changed
	}
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, "registry: "+err.Error())
		return
	}
	writeJSON(w, view)
}

// relayNodeChangeFailed answers a failed approval or revocation of cidrs.
func (s *Server) relayNodeChangeFailed(w http.ResponseWriter, r *http.Request, id string, err error, cidrs []string) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, registry.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, "no relay "+id+" is registered")
	case errors.Is(err, registry.ErrNotRelayNode):
		s.fail(w, r, http.StatusConflict, err.Error())
	case errors.Is(err, registry.ErrNotApproved):
		msg := err.Error()
		s.relayNodes.mu.Lock()
		for _, a := range s.relayNodes.zone[id] {
			if slices.Contains(cidrs, a.Prefix.String()) {
				msg += fmt.Sprintf("; %s comes from coverage-zone group %q: edit that file to take it away", a.Prefix, a.Group)
			}
		}
		s.relayNodes.mu.Unlock()
		s.fail(w, r, http.StatusConflict, msg)
	case errors.Is(err, registry.ErrInvalid):
		s.fail(w, r, http.StatusBadRequest, err.Error())
	default:
		s.fail(w, r, http.StatusInternalServerError, "registry: "+err.Error())
	}
	return true
}

// decodeRelayNodeChange reads an approve or revoke body strictly: one JSON
// object with known members only. An empty body means an empty change
// (everything requested, or everything approved).
func decodeRelayNodeChange(body []byte) (protocol.RelayNodeChange, error) {
	var ch protocol.RelayNodeChange
	if len(bytes.TrimSpace(body)) == 0 {
		return ch, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ch); err != nil {
		return protocol.RelayNodeChange{}, fmt.Errorf(`body is not {"cidrs":[...],"by":"..."}: %v`, err)
	}
	if dec.More() {
		return protocol.RelayNodeChange{}, errors.New("body has data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return protocol.RelayNodeChange{}, errors.New("body has data after the JSON object")
	}
	if len(ch.CIDRs) > registry.MaxCIDRs {
		return protocol.RelayNodeChange{}, fmt.Errorf("%d CIDRs, at most %d", len(ch.CIDRs), registry.MaxCIDRs)
	}
	return ch, nil
}

func (s *Server) listRelayNodes(w http.ResponseWriter, r *http.Request) {
	out := protocol.RelayNodeList{RelayNodes: []protocol.RelayNodeView{}}
	approvals := map[string][]registry.Approval{}
	err := s.reg.ForEachApproval(func(id string, a []registry.Approval) error {
		approvals[id] = a
		return nil
	})
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, "registry: "+err.Error())
		return
	}
	rc := &s.relayNodes
	rc.mu.Lock()
	zone := rc.zone
	if rc.status != nil {
		st := *rc.status
		out.CoverageZone = &st
	}
	rc.mu.Unlock()
	registered := map[string]bool{}
	err = s.reg.ForEach(func(n registry.Node) error {
		if n.Role != protocol.RoleRelay {
			return nil
		}
		registered[n.ID] = true
		out.RelayNodes = append(out.RelayNodes, buildRelayNodeView(n, approvals[n.ID], zone[n.ID]))
		return nil
	})
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, "registry: "+err.Error())
		return
	}
	// Nodes the file names that are not (or no longer) relays: most
	// likely a typo in the file, so show them.
	var orphans []string
	for id := range zone {
		if !registered[id] {
			orphans = append(orphans, id)
		}
	}
	slices.Sort(orphans)
	for _, id := range orphans {
		v := buildRelayNodeView(registry.Node{ID: id}, nil, zone[id])
		v.State, v.Effective = protocol.RelayNodeNotRegistered, []string{}
		out.RelayNodes = append(out.RelayNodes, v)
	}
	writeJSON(w, out)
}

func (s *Server) showRelayNode(w http.ResponseWriter, r *http.Request, id string) {
	v, err := s.relayNodeView(id)
	if s.relayNodeChangeFailed(w, r, id, err, nil) {
		return
	}
	writeJSON(w, v)
}

// relayNodeView reads relay id as the API shows it.
func (s *Server) relayNodeView(id string) (protocol.RelayNodeView, error) {
	n, err := s.reg.Get(id)
	if err != nil {
		return protocol.RelayNodeView{}, err
	}
	if n.Role != protocol.RoleRelay {
		return protocol.RelayNodeView{}, fmt.Errorf("%w: %s registered as %q", registry.ErrNotRelayNode, id, n.Role)
	}
	approved, err := s.reg.Approvals(id)
	if err != nil {
		return protocol.RelayNodeView{}, err
	}
	s.relayNodes.mu.Lock()
	zone := s.relayNodes.zone[id]
	s.relayNodes.mu.Unlock()
	return buildRelayNodeView(n, approved, zone), nil
}

func buildRelayNodeView(n registry.Node, approved []registry.Approval, zone []coverage.Assignment) protocol.RelayNodeView {
	v := protocol.RelayNodeView{ID: n.ID, LANURL: n.LANURL, LastSeen: n.LastSeen,
		Requested: append([]string{}, n.CIDRs...), Approved: []protocol.RelayNodeApproval{},
		Zone: []protocol.RelayNodeZonePrefix{}, Effective: []string{}, Pending: []string{}}
	for _, a := range approved {
		v.Approved = append(v.Approved, protocol.RelayNodeApproval{CIDR: a.CIDR, By: a.By, From: a.From, At: a.At})
	}
	for _, a := range zone {
		v.Zone = append(v.Zone, protocol.RelayNodeZonePrefix{CIDR: a.Prefix.String(), Group: a.Group})
	}
	eff := map[string]bool{}
	for _, p := range effectivePrefixes(approved, zone) {
		v.Effective = append(v.Effective, p.String())
		eff[p.String()] = true
	}
	for _, c := range n.CIDRs {
		if !eff[c] {
			v.Pending = append(v.Pending, c)
		}
	}
	switch {
	case len(v.Effective) == 0:
		v.State = protocol.RelayNodePending
	case len(v.Pending) > 0:
		v.State = protocol.RelayNodePartial
	default:
		v.State = protocol.RelayNodeApproved
	}
	return v
}

// plausibleNodeID is a cheap shape check before the registry is asked.
func plausibleNodeID(id string) bool {
	if len(id) < 32 || len(id) > 44 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('1' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') || c == 'I' || c == 'O' || c == 'l' {
			return false
		}
	}
	return true
}

func clipList(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("…(%d more)", len(s)-n))
	}
	return s
}

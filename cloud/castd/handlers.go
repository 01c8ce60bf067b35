package castd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/signedreq"
)

// maxRegistrationBody bounds a registration; a relay with 1024 CIDRs fits easily.
const maxRegistrationBody = 256 << 10

// Handler returns castd's HTTP API, request router and node fetch path.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(protocol.PathRegister, s.handleRegister)
	mux.HandleFunc(protocol.PathRoute, s.handleRoute)
	mux.HandleFunc(protocol.PathWhoami, s.handleWhoami)
	mux.HandleFunc(protocol.PathCastKey, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, s.key.ID())
	})
	mux.HandleFunc(protocol.PathCastRecord, s.handleCastRecord)
	mux.HandleFunc(protocol.PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc(protocol.PathObjectPrefix+"/", s.handleObject)
	mux.Handle(protocol.PathMetrics, s.metrics)
	mux.HandleFunc(protocol.PathNodes, s.handleNodes)
	mux.HandleFunc(protocol.PathNodes+"/", s.handleNodes)
	mux.HandleFunc(protocol.PathRelayNodes, s.handleRelayNodes)
	mux.HandleFunc(protocol.PathRelayNodes+"/", s.handleRelayNodes)
	mux.HandleFunc(protocol.PathReceipts+"/", s.handleReceiptProof)
	s.ownerRoutes(mux)
	mux.HandleFunc(protocol.PathMulticastHistory, s.handleMulticastHistory)
	mux.HandleFunc(protocol.PathDebugProfile, s.handleDebugProfile)
	mux.HandleFunc(protocol.PathAPIPrefix, func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "no such API endpoint: "+r.URL.Path)
	})
	// Content paths bypass the mux: it would answer a path with dot
	// segments with a redirect to the cleaned path, and the router must
	// refuse such a path instead of normalising it.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; strings.HasPrefix(p, protocol.PathAPIPrefix) || p == protocol.PathHealthz || p == protocol.PathMetrics {
			mux.ServeHTTP(w, r)
			return
		}
		s.handleContent(w, r)
	})
}

// fail answers with a JSON error and logs it; 4xx at info, 5xx at warn.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	msg = clipText(msg, maxReason) // messages quote callers' input
	lvl := s.log.Info
	if status >= 500 {
		lvl = s.log.Warn
	} else {
		s.refused.Add(1)
	}
	// A stranger can make refusals as fast as it can send requests: log
	// them at a bounded rate, and say how many were not logged.
	if now := time.Now(); s.refusalLog.Allow(now) {
		args := []any{"status", status, "method", r.Method, "path", truncate(r.URL.RequestURI(), 200), "remote", r.RemoteAddr, "reason", msg}
		if n := s.refusalsUnlogged.Swap(0); n > 0 {
			args = append(args, "unlogged_before", n)
		}
		lvl("request refused", args...)
	} else {
		s.refusalsUnlogged.Add(1)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(protocol.Error{Error: msg})
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// verify checks a node's signed request and returns the signer.
func (s *Server) verify(w http.ResponseWriter, r *http.Request, body []byte) (identity.PublicKey, bool) {
	pub, err := s.verifier.Verify(r, body)
	if err != nil {
		s.fail(w, r, signedreq.StatusCode(err), "signed request refused: "+err.Error())
		return identity.PublicKey{}, false
	}
	return pub, true
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.fail(w, r, http.StatusMethodNotAllowed, "registration is a signed POST")
		return
	}
	if !s.allowRegistration(w, r) {
		return
	}
	body, err := signedreq.ReadBody(r, maxRegistrationBody)
	if err != nil {
		s.fail(w, r, signedreq.StatusCode(err), "reading registration: "+err.Error())
		return
	}
	pub, ok := s.verify(w, r, body)
	if !ok {
		return
	}
	reg, err := decodeRegistration(body)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "registration is not one valid JSON object: "+err.Error())
		return
	}
	ip, err := s.ips.Addr(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.checkRelayNodeURL(reg); err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	var owner string
	if reg.Delegation != nil {
		o, err := offchain.VerifyDelegation(*reg.Delegation, pub)
		if err != nil {
			s.fail(w, r, http.StatusForbidden, "owner delegation refused: "+err.Error())
			return
		}
		owner = o.String()
	} else if s.opts.RequireDelegation {
		s.fail(w, r, http.StatusForbidden, "this castd requires an owner wallet delegation (see `beacon delegate`)")
		return
	}
	if !s.checkOnchainRegistration(w, r, pub, reg) {
		return
	}
	node := registry.Node{
		ID:           pub.String(),
		Owner:        owner,
		Role:         reg.Role,
		LANURL:       reg.LANURL,
		Version:      reg.Version,
		Capabilities: reg.Capabilities,
		CIDRs:        reg.CIDRs,
		PublicIP:     ip,
		LastSeen:     time.Now().UTC(),
	}
	stored, err := s.reg.Upsert(node, owner != "")
	switch {
	case errors.Is(err, registry.ErrInvalid):
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, registry.ErrOwnerConflict):
		s.fail(w, r, http.StatusConflict, err.Error())
		return
	case err != nil:
		s.fail(w, r, http.StatusInternalServerError, "registry: "+err.Error())
		return
	}
	if s.control != nil {
		s.control.registered(stored) // before the router sees a new URL
	}
	s.router.Upsert(stored)
	s.relayNodeRegistered(stored)
	if s.control != nil {
		s.control.refresh(stored.ID)
	}
	s.notePending(stored)
	s.log.Info("node registered", "id", stored.ID, "role", stored.Role, "public_ip", stored.PublicIP, "lan_url", stored.LANURL, "owner", stored.Owner, "cidrs", len(stored.CIDRs))
	writeJSON(w, protocol.RegistrationReply{
		NodeID:    stored.ID,
		PublicIP:  stored.PublicIP.String(),
		Owner:     stored.Owner,
		CastKey:   s.key.ID(),
		MQTT:      s.mqttURL(r),
		FirstSeen: stored.FirstSeen,
		LastSeen:  stored.LastSeen,
	})
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	ip, err := s.ips.Addr(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	reply := protocol.Whoami{IP: ip.String()}
	if r.Header.Get(signedreq.HeaderSignature) != "" {
		// A node checking that castd still knows it (a registry lost or
		// restored from an old backup forgets nodes).
		if pub, err := s.verifier.Verify(r, nil); err == nil {
			known := s.router.Has(pub.String())
			reply.Registered = &known
			if known {
				reply.State, reply.Routable = s.nodeState(pub.String())
			}
		}
	}
	writeJSON(w, reply)
}

// handleRoute is the JSON decision API for upstream CDNs that redirect
// themselves: GET /v1/route?path=/a/b.mp4&client=198.51.100.7. Without
// client, the caller's own address is used; another address needs the
// route token.
func (s *Server) handleRoute(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key, err := protocol.CleanContentPath(q.Get("path"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "path: "+err.Error())
		return
	}
	self, err := s.ips.Addr(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	client := self
	if c := q.Get("client"); c != "" {
		client, err = netip.ParseAddr(c)
		if err != nil {
			s.fail(w, r, http.StatusBadRequest, fmt.Sprintf("client %q is not an IP address", truncate(c, 64)))
			return
		}
	}
	// The answer for an address names the beacon of the home behind it:
	// only upstream CDNs (and the operator) may ask for addresses other
	// than their own, or anyone could map IPs to homes.
	if client.Unmap() != self.Unmap() && !s.requireToken(w, r, "--route-token (or the operator's token) to ask for another client's route", s.opts.RouteToken, s.opts.AdminToken) {
		return
	}
	d := s.router.Decide(client.Unmap(), key)
	if d.NodeID != "" {
		s.receipts.NoteRedirect(d.NodeID) // the upstream CDN redirects on this answer
	}
	writeJSON(w, d)
}

// handleContent is the request router for end users: every path that is not
// an API path is a content URL, answered with a 302 by client address.
func (s *Server) handleContent(w http.ResponseWriter, r *http.Request) {
	if !s.onlyRead(w, r, "content URLs take GET or HEAD") {
		return
	}
	if r.URL.Path == "/" {
		s.dashboard.ServePage(w, r)
		return
	}
	key, err := protocol.CleanContentPath(r.URL.RequestURI())
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	client, err := s.ips.Addr(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	d := s.router.Decide(client, key)
	h := w.Header()
	h.Set("Location", d.Location)
	h.Set("Cache-Control", "no-store") // the answer depends on who asks
	h.Set(protocol.HeaderRoute, d.Decision)
	if d.NodeID != "" {
		h.Set(protocol.HeaderNode, d.NodeID)
		s.receipts.NoteRedirect(d.NodeID)
	}
	s.log.Debug("routed", "client", client, "path", key, "decision", d.Decision, "node", d.NodeID)
	w.WriteHeader(http.StatusFound)
}

// handleObject serves a registered node's signed fetch through the mid-tier cache.
func (s *Server) handleObject(w http.ResponseWriter, r *http.Request) {
	if !s.onlyRead(w, r, "objects take a signed GET or HEAD") {
		return
	}
	pub, ok := s.verify(w, r, nil)
	if !ok {
		return
	}
	// Every registered node is in the router; asking it keeps this per-fetch
	// check off the registry's disk.
	if !s.router.Has(pub.String()) {
		w.Header().Set(protocol.HeaderError, protocol.ErrNotRegistered) // the node registers again
		s.fail(w, r, http.StatusForbidden, "node "+pub.String()+" is not registered")
		return
	}
	key, err := protocol.CleanContentPath(strings.TrimPrefix(r.URL.RequestURI(), protocol.PathObjectPrefix))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	s.receipts.NoteObject(pub.String(), key)
	if s.mc != nil && s.mc.offer(w, r, s.cache, pub.String(), key) {
		return
	}
	s.cache.ServeKey(w, r, key)
}

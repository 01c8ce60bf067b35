package castd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/cloud/history"
	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/cloud/ownerauth"
	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/cloud/report"
	"github.com/blockcast/beacon/cloud/web"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// Defaults of the owner and contract options.
const (
	DefaultOwnerSessionTTL = ownerauth.DefaultSessionTTL
	DefaultHistoryInterval = time.Minute
)

// Challenges are limited per source address: each one is state castd
// keeps until it expires.
const (
	challengeBurst = 10
	challengeEvery = 6 * time.Second
	maxOwnerBody   = 16 << 10
)

// owners is the owners' sign-in, the capacity contracts and the history
// they are measured against.
type owners struct {
	auth       *ownerauth.Auth
	contracts  *contracts.Store
	history    *history.History
	challenges *ratelimit.PerAddr
	interval   time.Duration
	anchorer   atomic.Pointer[contracts.Anchorer] // with --solana-rpc (contractanchor.go)
}

// initOwners opens the contract store and the history; New calls it.
func (s *Server) initOwners() error {
	o := &s.owners
	if s.opts.OwnerSessionTTL < 0 {
		return fieldError("OwnerSessionTTL", errors.New("must not be negative"))
	}
	if s.opts.HistoryInterval < 0 {
		return fieldError("HistoryInterval", errors.New("must not be negative"))
	}
	o.interval = s.opts.HistoryInterval
	if o.interval == 0 {
		o.interval = DefaultHistoryInterval
	}
	o.auth = ownerauth.New(ownerauth.Options{Cast: s.key.Public(), SessionTTL: s.opts.OwnerSessionTTL})
	o.challenges = ratelimit.NewPerAddr(1/challengeEvery.Seconds(), challengeBurst)
	var err error
	if o.contracts, err = contracts.Open(filepath.Join(s.opts.StateDir, "contracts.db"), s.log); err != nil {
		return fmt.Errorf("castd: %w", err)
	}
	if o.history, err = history.Open(filepath.Join(s.opts.StateDir, "history.db"), 0, s.log); err != nil {
		o.contracts.Close()
		o.contracts = nil
		return fmt.Errorf("castd: %w", err)
	}
	o.history.Watching(time.Now())
	return nil
}

func (s *Server) closeOwners() error {
	var errs []error
	if s.owners.contracts != nil {
		errs = append(errs, s.owners.contracts.Close())
	}
	if s.owners.history != nil {
		errs = append(errs, s.owners.history.Close())
	}
	return errors.Join(errs...)
}

// sampleHistory records, every interval, which registered nodes the
// monitor has online and what they last reported, until ctx ends.
func (s *Server) sampleHistory(ctx context.Context) {
	if s.control == nil {
		s.log.Info("no control plane: contracts cannot be measured (availability comes from the monitor)")
		return
	}
	t := time.NewTicker(s.owners.interval)
	defer t.Stop()
	for {
		s.recordHistory(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) recordHistory(now time.Time) {
	var samples []history.Sample
	s.reg.ForEach(func(n registry.Node) error {
		sm := history.Sample{Node: n.ID}
		if st, ok := s.control.monitor.Get(n.ID); ok {
			sm.Online = st.State == monitor.StateOnline
			if h := st.Health; h != nil && sm.Online {
				sm.HasHealth, sm.BytesServed, sm.HitRatio = true, h.BytesServed, h.HitRatio
				sm.StorageBytes = h.CacheBytes + h.StorageFree
				sm.Uptime = time.Duration(min(h.UptimeS, 1<<32)) * time.Second
			}
		}
		samples = append(samples, sm)
		return nil
	})
	if err := s.owners.history.Record(now, 3*s.owners.interval, samples); err != nil {
		s.log.Error("recording availability history", "err", err)
	}
}

func (s *Server) ownerRoutes(mux *http.ServeMux) {
	mux.HandleFunc(protocol.PathOwnerChallenge, s.handleOwnerChallenge)
	mux.HandleFunc(protocol.PathOwnerSession, s.handleOwnerSession)
	mux.HandleFunc(protocol.PathOwnerNodes, s.handleOwnerNodes)
	mux.HandleFunc(protocol.PathOwnerNodes+"/", s.handleOwnerNodes)
	mux.HandleFunc(protocol.PathContracts, s.handleContracts)
	mux.HandleFunc(protocol.PathContracts+"/", s.handleContracts)
	mux.HandleFunc(protocol.PathReport, s.handleReport)
}

// scope is who a request speaks for: the operator (all) or one owner.
type scope struct {
	operator bool
	owner    identity.PublicKey
}

func (sc scope) sees(owner string) bool {
	return sc.operator || (owner != "" && owner == sc.owner.String())
}

// requireScope lets through the operator's token or a live owner session;
// anything else is refused as requireToken refuses (and a wrong session
// token spends the address's tries like a wrong admin token).
func (s *Server) requireScope(w http.ResponseWriter, r *http.Request) (scope, bool) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && strings.HasPrefix(tok, "bco_") {
		src, _ := s.ips.Addr(r)
		if !src.IsValid() {
			src = netip.IPv6Unspecified()
		}
		if s.admin.perAddr.Available(src, s.admin.now()) {
			if owner, ok := s.owners.auth.Lookup(tok); ok {
				return scope{owner: owner}, true
			}
		}
	}
	if s.requireToken(w, r, "an owner's session token (sign in with your wallet) or the operator's token", s.opts.AdminToken) {
		return scope{operator: true}, true
	}
	return scope{}, false
}

func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.fail(w, r, http.StatusMethodNotAllowed, "this is a POST of a JSON object")
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxOwnerBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.fail(w, r, http.StatusBadRequest, "body is not the expected JSON object (at most 16 KiB): "+err.Error())
		return false
	}
	if dec.More() {
		s.fail(w, r, http.StatusBadRequest, "body has data after the JSON object")
		return false
	}
	return true
}

func (s *Server) handleOwnerChallenge(w http.ResponseWriter, r *http.Request) {
	var req protocol.OwnerChallengeRequest
	if !s.readJSON(w, r, &req) {
		return
	}
	owner, err := identity.ParsePublicKey(req.Owner)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "owner is not a base58 wallet address: "+err.Error())
		return
	}
	src, _ := s.ips.Addr(r)
	if !src.IsValid() {
		src = netip.IPv6Unspecified()
	}
	if !s.owners.challenges.Allow(src, time.Now()) {
		w.Header().Set("Retry-After", fmt.Sprint(int(challengeEvery.Seconds())))
		s.fail(w, r, http.StatusTooManyRequests, "too many sign-in challenges from this address; try again later")
		return
	}
	c, err := s.owners.auth.Challenge(owner, r.Host)
	switch {
	case errors.Is(err, ownerauth.ErrBusy):
		w.Header().Set("Retry-After", "10")
		s.fail(w, r, http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, protocol.OwnerChallenge{Text: c.Text(), Expires: c.Expires})
}

func (s *Server) handleOwnerSession(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !s.owners.auth.SignOut(tok) {
			s.fail(w, r, http.StatusNotFound, "no such session")
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var in protocol.OwnerSignIn
	if !s.readJSON(w, r, &in) {
		return
	}
	owner, err := identity.ParsePublicKey(in.Owner)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "owner is not a base58 wallet address: "+err.Error())
		return
	}
	sess, err := s.owners.auth.SignIn(owner, in.Text, in.Message, in.Signature)
	switch {
	case errors.Is(err, ownerauth.ErrMalformed), errors.Is(err, offchain.ErrBadSignedText):
		s.fail(w, r, http.StatusBadRequest, "sign-in refused: "+err.Error())
		return
	case err != nil:
		s.fail(w, r, http.StatusForbidden, "sign-in refused: "+err.Error())
		return
	}
	s.log.Info("owner signed in", "owner", owner.String(), "expires", sess.Expires)
	writeJSON(w, protocol.OwnerSession{Token: sess.Token, Owner: owner.String(), Expires: sess.Expires})
}

// OwnerNodes is the body of GET /v1/owner/nodes.
type OwnerNodes struct {
	Owner string     `json:"owner"`
	Cast  string     `json:"cast"`
	Nodes []web.Node `json:"nodes"`
}

func (s *Server) handleOwnerNodes(w http.ResponseWriter, r *http.Request) {
	if !s.onlyRead(w, r, "nodes are read with GET") {
		return
	}
	sc, ok := s.requireScope(w, r)
	if !ok {
		return
	}
	if sc.operator {
		s.fail(w, r, http.StatusForbidden, "this is an owner's view: the operator uses "+protocol.PathNodes)
		return
	}
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, protocol.PathOwnerNodes), "/")
	out := OwnerNodes{Owner: sc.owner.String(), Cast: s.key.ID(), Nodes: []web.Node{}}
	for _, n := range s.nodeViews() {
		if !sc.sees(n.Owner) {
			continue
		}
		if id != "" && n.ID == id {
			writeJSON(w, n)
			return
		}
		out.Nodes = append(out.Nodes, n)
	}
	if id != "" {
		// The same answer whether the node is someone else's or absent.
		s.fail(w, r, http.StatusNotFound, "you own no node "+clipText(id, 64))
		return
	}
	writeJSON(w, out)
}

// ContractView is a contract with its evaluation.
type ContractView struct {
	Contract   contracts.Contract   `json:"contract"`
	Evaluation contracts.Evaluation `json:"evaluation"`
	Anchor     *ContractAnchor      `json:"anchor,omitempty"`
}

func (s *Server) handleContracts(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.requireScope(w, r)
	if !ok {
		return
	}
	id := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, protocol.PathContracts), "/")
	switch {
	case r.Method == http.MethodPost && id == "":
		s.offerContract(w, r, sc)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD, POST")
		s.fail(w, r, http.StatusMethodNotAllowed, "contracts are offered with POST and read with GET")
	case id == "":
		now := time.Now()
		views := []ContractView{}
		for _, c := range s.owners.contracts.List(func(c contracts.Contract) bool { return sc.sees(c.Offer.Owner.String()) }) {
			ev, err := contracts.Evaluate(c, c.Offer.Start, c.Offer.End, now, s.owners.history, s.served())
			if err != nil {
				s.fail(w, r, http.StatusInternalServerError, err.Error())
				return
			}
			views = append(views, ContractView{Contract: c, Evaluation: ev, Anchor: s.contractAnchor(c.ID)})
		}
		writeJSON(w, views)
	default:
		c, err := s.owners.contracts.Get(id)
		if err != nil || !sc.sees(c.Offer.Owner.String()) {
			s.fail(w, r, http.StatusNotFound, "no contract of yours "+clipText(id, 70))
			return
		}
		from, to := c.Offer.Start, c.Offer.End
		if q := r.URL.Query(); q.Get("from") != "" || q.Get("to") != "" {
			if from, to, err = report.ParsePeriod(q.Get("from"), q.Get("to")); err != nil {
				s.fail(w, r, http.StatusBadRequest, err.Error())
				return
			}
		}
		ev, err := contracts.Evaluate(c, from, to, time.Now(), s.owners.history, s.served())
		if err != nil {
			s.fail(w, r, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, ContractView{Contract: c, Evaluation: ev, Anchor: s.contractAnchor(c.ID)})
	}
}

// offerContract checks an owner's signed offer, countersigns and stores it.
func (s *Server) offerContract(w http.ResponseWriter, r *http.Request, sc scope) {
	var in protocol.CapacityOffer
	if !s.readJSON(w, r, &in) {
		return
	}
	owner, err := identity.ParsePublicKey(in.Owner)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, "owner is not a base58 wallet address: "+err.Error())
		return
	}
	if !sc.sees(owner.String()) {
		s.fail(w, r, http.StatusForbidden, "you are signed in as "+sc.owner.String()+", not as the offering owner")
		return
	}
	c, err := contracts.Accept(s.key, owner, in.Text, in.Message, in.Signature, time.Now())
	if err != nil {
		s.fail(w, r, contractStatus(err), "offer refused: "+err.Error())
		return
	}
	node, err := s.reg.Get(c.Offer.Node.String())
	if err != nil || node.Owner != owner.String() {
		s.fail(w, r, http.StatusForbidden, "offer refused: "+contracts.ErrNotOwner.Error()+": "+c.Offer.Node.String()+" is not registered with a delegation from "+owner.String())
		return
	}
	stored, err := s.owners.contracts.Put(c)
	if err != nil {
		s.fail(w, r, contractStatus(err), "offer refused: "+err.Error())
		return
	}
	s.log.Info("capacity contract accepted", "id", stored.ID, "owner", owner.String(), "node", stored.Offer.Node.String(),
		"start", stored.Offer.Start, "end", stored.Offer.End)
	s.kickContractAnchor()
	w.Header().Set("Location", protocol.PathContracts+"/"+stored.ID)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(stored)
}

func contractStatus(err error) int {
	switch {
	case errors.Is(err, contracts.ErrOverlap):
		return http.StatusConflict
	case errors.Is(err, contracts.ErrMalformed), errors.Is(err, contracts.ErrTerms), errors.Is(err, offchain.ErrBadSignedText):
		return http.StatusBadRequest
	case errors.Is(err, offchain.ErrBadSignature), errors.Is(err, offchain.ErrNotSigner), errors.Is(err, contracts.ErrWrongCast):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

func (s *Server) handleReport(w http.ResponseWriter, r *http.Request) {
	if !s.onlyRead(w, r, "the report is read with GET") {
		return
	}
	sc, ok := s.requireScope(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	from, to, err := report.ParsePeriod(q.Get("from"), q.Get("to"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	format := q.Get("format")
	if format != "" && format != "csv" && format != "json" {
		s.fail(w, r, http.StatusBadRequest, "format is csv or json")
		return
	}
	var nodes []report.Node
	s.reg.ForEach(func(n registry.Node) error {
		if sc.sees(n.Owner) {
			nodes = append(nodes, report.Node{ID: n.ID, Owner: n.Owner})
		}
		return nil
	})
	cs := s.owners.contracts.List(func(c contracts.Contract) bool { return sc.sees(c.Offer.Owner.String()) })
	rows, err := report.Build(from, to, time.Now(), nodes, cs, s.owners.history, s.served())
	if err != nil {
		s.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	if format == "json" {
		writeJSON(w, rows)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="castd-report-%s-%s.csv"`, from.Format("20060102T150405Z"), to.Format("20060102T150405Z")))
	if err := report.WriteCSV(w, rows); err != nil {
		s.log.Warn("writing report", "err", err)
	}
}

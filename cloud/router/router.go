// Package router decides where castd's request router sends an end user:
// to a beacon on the user's own public IP (self-IP unicast distribution), to
// a relay whose operator-approved prefixes cover the user (subnet CIDR
// unicast distribution, the longest prefix winning), or to the origin
// (traditional delivery).
//
// The index is built for a large fleet: beacons by exact public IP in a hash
// map (behind a cache-resident filter), relay prefixes in a multibit trie,
// about 230 bytes per beacon, and a decision costs a few hundred
// nanoseconds and a single allocation (the strings it returns). When several nodes qualify equally (beacons behind
// one NAT, relays announcing the same prefix), weighted rendezvous hashing
// of the content path picks one, so a URL keeps going to the node that has
// it cached while different URLs spread by the nodes' spare capacity. The
// hash is fixed, so every castd replica decides alike.
package router

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/shared/protocol"
)

// Options configure a Router.
type Options struct {
	// Origin is the base URL of traditional delivery: the origin or
	// upstream CDN that gets requests no node serves.
	Origin *url.URL
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// NewIneligible makes a node the router has not seen start ineligible
	// (castd with a control plane: nothing is routed to before its health
	// is known, not even between Upsert and SetEligible).
	NewIneligible bool
}

// MinWeight is the rendezvous weight of a node reporting a load of 1 or
// more: such a node still gets a small share rather than none, so that a
// group whose nodes are all loaded keeps working and keeps its affinity.
const MinWeight = 0.01

// Router is the routing index. Its methods are safe for concurrent use;
// Decide runs in parallel with itself and with SetEligible and SetLoad.
type Router struct {
	log    *slog.Logger
	origin string // base without trailing slash
	newOK  bool   // eligibility of a node the router has not seen

	mu       sync.RWMutex
	nodes    nodeStore
	byID     map[string]uint32
	ip4      map[uint32]uint32         // beacon public IPv4 → first beacon on it
	ip4f     v4Filter                  // which keys ip4 may have, in cache
	ip6      map[[16]byte]uint32       // same for IPv6
	cidrs    map[uint32][]netip.Prefix // relay → its indexed prefixes
	longBase map[uint32]string         // node → base URL after the scheme, when not inline
	lpm      table                     // relay prefix → relay index, or groupBit | index in groups
	groups   [][]uint32
	freeGrp  []uint32
	nBeacons int
	nRelays  int
}

// groupBit marks a prefix value that is not a relay but an index into
// Router.groups, the relays that share the prefix. A prefix nearly always
// has one relay, and then the trie holds it directly, saving a lookup.
const groupBit = 1 << 31

const (
	roleFree uint8 = iota
	roleBeacon
	roleRelayNode
)

// none ends a list of node indices.
const none = ^uint32(0)

// nodeEntry is the part of a node that a decision reads, packed into one
// 64-byte cache line: at a million nodes every decision misses the CPU
// cache (and the TLB) on the entry, and a second line or a pointer to
// follow (a separately allocated URL) would cost as much again. The base
// URL is stored inline when it fits, which a beacon's LAN URL nearly
// always does.
type nodeEntry struct {
	id       string
	next     uint32 // next beacon on the same IP, or none
	weight   atomic.Uint32
	eligible atomic.Bool
	role     uint8
	flags    uint8
	baseLen  uint8
	_        uint8
	base     [inlineBase]byte // base URL after the scheme, when it fits
}

const inlineBase = 32

const (
	flagHTTPS    = 1 << iota // base URL scheme is https, not http
	flagLongBase             // base URL after the scheme is in Router.longBase
)

// coldEntry is the part of a node only updates and ties read.
type coldEntry struct {
	ip   [16]byte // beacon public IP; IPv4 in the first 4 bytes
	seed uint64   // rendezvous hash of the ID
	is4  bool
}

func (c *coldEntry) addr() netip.Addr {
	if c.is4 {
		return netip.AddrFrom4([4]byte(c.ip[:4]))
	}
	return netip.AddrFrom16(c.ip)
}

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// New returns an empty Router.
func New(opts Options) (*Router, error) {
	if opts.Origin == nil {
		return nil, errors.New("router: Options.Origin is required")
	}
	origin, err := baseURL(opts.Origin)
	if err != nil {
		return nil, fmt.Errorf("router: Options.Origin: %w", err)
	}
	opts.ensureDefaults()
	return &Router{
		log:      opts.Logger,
		origin:   origin,
		newOK:    !opts.NewIneligible,
		byID:     make(map[string]uint32),
		ip4:      make(map[uint32]uint32),
		ip6:      make(map[[16]byte]uint32),
		cidrs:    make(map[uint32][]netip.Prefix),
		longBase: make(map[uint32]string),
	}, nil
}

// baseURL returns u as a base that a content path is appended to: scheme,
// host and path without the trailing slash. It refuses what would change
// how the appended path is read.
func baseURL(u *url.URL) (string, error) {
	if _, err := protocol.ParseBaseURL(u.String()); err != nil {
		return "", err
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"), nil
}

// Upsert adds a node, or replaces what the router knows of it: a beacon is
// indexed by its public IP, and whatever the node was indexed by before is
// dropped. A relay keeps the prefixes SetRelayPrefixes gave it (a new one
// has none); the CIDRs it registered with are not used. Eligibility and
// load of a known node are kept; a new node has load 0 and is eligible
// unless NewIneligible. A node the router cannot use (which the registry
// would not have stored) is logged and removed.
func (r *Router) Upsert(n registry.Node) {
	var role uint8
	switch n.Role {
	case protocol.RoleBeacon:
		role = roleBeacon
	case protocol.RoleRelay:
		role = roleRelayNode
	default:
		r.refuse(n, fmt.Errorf("role %q", n.Role))
		return
	}
	u, err := url.Parse(n.LANURL)
	if err != nil {
		r.refuse(n, fmt.Errorf("lan_url: %w", err))
		return
	}
	base, err := baseURL(u)
	if err != nil {
		r.refuse(n, fmt.Errorf("lan_url: %w", err))
		return
	}
	ip := n.PublicIP.Unmap().WithZone("")
	if role == roleBeacon && !ip.IsValid() {
		r.refuse(n, errors.New("beacon without a public IP"))
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	idx, known := r.byID[n.ID]
	var e *nodeEntry
	if known {
		e = r.nodes.at(idx)
		if e.role != role || role == roleBeacon && r.nodes.cold(idx).addr() != ip {
			r.unindex(idx, e)
		}
	} else {
		idx = r.nodes.alloc()
		e = r.nodes.at(idx)
		e.id = n.ID
		e.next = none
		e.eligible.Store(r.newOK)
		e.weight.Store(math.Float32bits(1))
		r.nodes.cold(idx).seed = hashString(n.ID)
		r.byID[n.ID] = idx
	}
	r.setBase(idx, e, base)
	switch {
	case e.role == roleFree && role == roleBeacon:
		e.role = role
		r.nBeacons++
		r.linkBeacon(idx, e, ip)
	case e.role == roleFree && role == roleRelayNode:
		e.role = role
		r.nRelays++
	}
}

// SetRelayNodePrefixes sets the prefixes relay id is routed for, replacing what
// it had; nil routes it for none. These are the prefixes the operator
// approved, never the CIDRs a relay registered with: Upsert ignores those,
// so nothing a relay says about itself can draw clients to it. Prefixes
// are masked and IPv4-mapped ones unmapped. It reports false, changing
// nothing, when id is not a known relay.
func (r *Router) SetRelayNodePrefixes(id string, prefixes []netip.Prefix) bool {
	norm := make([]netip.Prefix, 0, len(prefixes))
	seen := newPrefixSet(nil)
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if !seen.has(p) {
			seen.add(p)
			norm = append(norm, p)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	idx, ok := r.byID[id]
	if !ok || r.nodes.at(idx).role != roleRelayNode {
		return false
	}
	r.setCIDRs(idx, norm)
	return true
}

// RelayNodePrefixes returns the prefixes relay id is routed for.
func (r *Router) RelayNodePrefixes(id string) []netip.Prefix {
	r.mu.RLock()
	defer r.mu.RUnlock()
	idx, ok := r.byID[id]
	if !ok {
		return nil
	}
	return append([]netip.Prefix(nil), r.cidrs[idx]...)
}

// setBase stores a base URL from baseURL in the entry.
func (r *Router) setBase(idx uint32, e *nodeEntry, base string) {
	e.flags = 0
	rest := strings.TrimPrefix(base, "http://")
	if strings.HasPrefix(base, "https://") {
		e.flags |= flagHTTPS
		rest = base[len("https://"):]
	}
	delete(r.longBase, idx)
	if len(rest) > inlineBase {
		e.flags |= flagLongBase
		e.baseLen = 0
		r.longBase[idx] = rest
		return
	}
	e.baseLen = uint8(copy(e.base[:], rest))
}

func (r *Router) refuse(n registry.Node, err error) {
	r.log.Warn("router: node not routable", "id", n.ID, "err", err)
	r.Remove(n.ID)
}

// Remove drops a node; unknown IDs are ignored.
func (r *Router) Remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	idx, ok := r.byID[id]
	if !ok {
		return
	}
	e := r.nodes.at(idx)
	r.unindex(idx, e)
	delete(r.byID, id)
	delete(r.longBase, idx)
	r.nodes.free(idx)
}

// SetEligible is the health gate: an ineligible node is skipped by Decide
// until it is made eligible again. Unknown IDs are ignored.
func (r *Router) SetEligible(id string, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if idx, found := r.byID[id]; found {
		r.nodes.at(idx).eligible.Store(ok)
	}
}

// SetLoad sets a node's reported load, 0 (idle) to 1 (full) or more. Among
// equally good candidates a node gets a share of paths proportional to
// 1-load (at least MinWeight). Unknown IDs and NaN are ignored.
func (r *Router) SetLoad(id string, load float64) {
	if math.IsNaN(load) {
		return
	}
	w := 1 - math.Max(load, 0)
	if w < MinWeight {
		w = MinWeight
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if idx, found := r.byID[id]; found {
		r.nodes.at(idx).weight.Store(math.Float32bits(float32(w)))
	}
}

// Len reports how many beacons and relays are indexed, and how many
// distinct relay prefixes.
func (r *Router) Len() (beacons, relays, prefixes int) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.nBeacons, r.nRelays, r.lpm.Len()
}

// unindex drops a node from the IP or prefix index, leaving it free of a role.
func (r *Router) unindex(idx uint32, e *nodeEntry) {
	switch e.role {
	case roleBeacon:
		r.unlinkBeacon(idx, e)
		r.nBeacons--
	case roleRelayNode:
		r.setCIDRs(idx, nil)
		delete(r.cidrs, idx)
		r.nRelays--
	}
	e.role = roleFree
}

// linkBeacon puts a beacon at the head of the list of beacons on ip.
func (r *Router) linkBeacon(idx uint32, e *nodeEntry, ip netip.Addr) {
	c := r.nodes.cold(idx)
	c.is4 = ip.Is4()
	c.ip = [16]byte{}
	var head uint32
	var ok bool
	if c.is4 {
		k := ip.As4()
		copy(c.ip[:], k[:])
		head, ok = r.ip4[be32(k)]
		r.ip4[be32(k)] = idx
		if !ok {
			r.ip4f.add(be32(k), r.ip4)
		}
	} else {
		c.ip = ip.As16()
		head, ok = r.ip6[c.ip]
		r.ip6[c.ip] = idx
	}
	e.next = none
	if ok {
		e.next = head
	}
}

func (r *Router) unlinkBeacon(idx uint32, e *nodeEntry) {
	c := r.nodes.cold(idx)
	key4 := be32([4]byte(c.ip[:4]))
	var head uint32
	var ok bool
	if c.is4 {
		head, ok = r.ip4[key4]
	} else {
		head, ok = r.ip6[c.ip]
	}
	if !ok {
		return
	}
	if head == idx {
		switch {
		case e.next == none && c.is4:
			delete(r.ip4, key4)
			r.ip4f.remove(key4)
		case e.next == none:
			delete(r.ip6, c.ip)
		case c.is4:
			r.ip4[key4] = e.next
		default:
			r.ip6[c.ip] = e.next
		}
	} else {
		for p := r.nodes.at(head); p.next != none; p = r.nodes.at(p.next) {
			if p.next == idx {
				p.next = e.next
				break
			}
		}
	}
	e.next = none
}

// setCIDRs makes prefixes the relay's indexed set, touching only what
// changed so that a relay re-registering its 1,024 prefixes is cheap.
func (r *Router) setCIDRs(idx uint32, prefixes []netip.Prefix) {
	old := r.cidrs[idx]
	oldSet, newSet := newPrefixSet(old), newPrefixSet(prefixes)
	for _, p := range old {
		if !newSet.has(p) {
			r.leaveGroup(idx, p)
		}
	}
	for _, p := range prefixes {
		if !oldSet.has(p) {
			r.joinGroup(idx, p)
		}
	}
	if len(prefixes) == 0 {
		delete(r.cidrs, idx)
	} else {
		r.cidrs[idx] = prefixes
	}
}

// prefixSet answers membership by a scan while small (a relay usually has
// a handful of CIDRs) and by a map once larger (it may have 1,024).
type prefixSet struct {
	list []netip.Prefix
	set  map[netip.Prefix]struct{}
}

const prefixSetScan = 16

func newPrefixSet(list []netip.Prefix) *prefixSet {
	s := &prefixSet{}
	for _, p := range list {
		s.add(p)
	}
	return s
}

func (s *prefixSet) add(p netip.Prefix) {
	if s.set == nil && len(s.list) < prefixSetScan {
		s.list = append(s.list, p)
		return
	}
	if s.set == nil {
		s.set = make(map[netip.Prefix]struct{}, 2*prefixSetScan)
		for _, q := range s.list {
			s.set[q] = struct{}{}
		}
	}
	s.set[p] = struct{}{}
}

func (s *prefixSet) has(p netip.Prefix) bool {
	if s.set != nil {
		_, ok := s.set[p]
		return ok
	}
	for _, q := range s.list {
		if q == p {
			return true
		}
	}
	return false
}

func (r *Router) joinGroup(idx uint32, p netip.Prefix) {
	v, ok := r.lpm.Get(p)
	switch {
	case !ok:
		r.lpm.Insert(p, idx)
	case v&groupBit != 0:
		r.groups[v&^groupBit] = append(r.groups[v&^groupBit], idx)
	default:
		var gi uint32
		if n := len(r.freeGrp); n > 0 {
			gi = r.freeGrp[n-1]
			r.freeGrp = r.freeGrp[:n-1]
		} else {
			gi = uint32(len(r.groups))
			r.groups = append(r.groups, nil)
		}
		r.groups[gi] = []uint32{v, idx}
		r.lpm.Insert(p, groupBit|gi)
	}
}

func (r *Router) leaveGroup(idx uint32, p netip.Prefix) {
	v, ok := r.lpm.Get(p)
	switch {
	case !ok:
	case v&groupBit == 0:
		if v == idx {
			r.lpm.Delete(p)
		}
	default:
		gi := v &^ groupBit
		g := r.groups[gi]
		for i, x := range g {
			if x == idx {
				// Order does not matter to rendezvous hashing.
				g[i] = g[len(g)-1]
				g = g[:len(g)-1]
				break
			}
		}
		r.groups[gi] = g
		if len(g) == 1 {
			r.lpm.Insert(p, g[0])
			r.groups[gi] = nil
			r.freeGrp = append(r.freeGrp, gi)
		}
	}
}

// Decide routes a client asking for path, an already validated request URI
// (path and optional query, see protocol.CleanContentPath), which is
// appended to the chosen base URL. An invalid client address goes to the
// origin.
func (r *Router) Decide(client netip.Addr, path string) protocol.RouteDecision {
	client = client.Unmap()
	if client.Zone() != "" {
		client = client.WithZone("")
	}
	if path == "" || path[0] != '/' {
		// Without the slash the path would run into the base URL's host.
		path = "/" + path
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if client.IsValid() {
		if i := r.pickBeacon(client, path); i != none {
			return r.decision(protocol.DecisionBeacon, i, path, client, netip.Prefix{})
		}
		if i, prefix := r.pickRelayNode(client, path); i != none {
			return r.decision(protocol.DecisionRelay, i, path, client, prefix)
		}
	}
	return buildDecision(protocol.DecisionOrigin, r.origin, nil, path, client, "", netip.Prefix{})
}

func (r *Router) pickBeacon(client netip.Addr, path string) uint32 {
	var head uint32
	var ok bool
	if client.Is4() {
		k := be32(client.As4())
		if !r.ip4f.mayHave(k) {
			return none
		}
		head, ok = r.ip4[k]
	} else {
		head, ok = r.ip6[client.As16()]
	}
	if !ok {
		return none
	}
	c := chooser{nodes: &r.nodes, path: path, best: none}
	for i := head; i != none; i = r.nodes.at(i).next {
		c.offer(i)
	}
	return c.best
}

func (r *Router) pickRelayNode(client netip.Addr, path string) (best uint32, prefix netip.Prefix) {
	best = none
	r.lpm.Lookup(client, func(v uint32, bits int) bool {
		if v&groupBit == 0 {
			if !r.nodes.at(v).eligible.Load() {
				return false
			}
			best = v
		} else {
			c := chooser{nodes: &r.nodes, path: path, best: none}
			for _, i := range r.groups[v&^groupBit] {
				c.offer(i)
			}
			if best = c.best; best == none {
				return false
			}
		}
		prefix = netip.PrefixFrom(client, bits)
		return true
	})
	return best, prefix
}

// decision builds the decision that sends the client to node i.
func (r *Router) decision(kind string, i uint32, path string, client netip.Addr, prefix netip.Prefix) protocol.RouteDecision {
	e := r.nodes.at(i)
	scheme := "http://"
	if e.flags&flagHTTPS != 0 {
		scheme = "https://"
	}
	if e.flags&flagLongBase != 0 {
		return buildDecision(kind, scheme+r.longBase[i], nil, path, client, e.id, prefix)
	}
	return buildDecision(kind, scheme, e.base[:e.baseLen], path, client, e.id, prefix)
}

// buildDecision makes a RouteDecision with Location base+base2+path, using
// one allocation for all the strings it makes.
func buildDecision(kind, base string, base2 []byte, path string, client netip.Addr, id string, prefix netip.Prefix) protocol.RouteDecision {
	// An IPv6 address without zone is at most 39 bytes, a prefix 43.
	var buf [96]byte
	tail := client.AppendTo(buf[:0])
	nip := len(tail)
	if prefix.IsValid() {
		tail = prefix.Masked().AppendTo(tail)
	}
	var sb strings.Builder
	n := len(base) + len(base2) + len(path)
	sb.Grow(n + len(tail))
	sb.WriteString(base)
	sb.Write(base2)
	sb.WriteString(path)
	sb.Write(tail)
	s := sb.String()
	return protocol.RouteDecision{Decision: kind, Location: s[:n], NodeID: id, Client: s[n : n+nip], Prefix: s[n+nip:]}
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// nodeStore holds node entries in fixed-size chunks: entries never move (so
// pointers into it stay valid and growth never copies a million entries)
// and freed slots are reused.
type nodeStore struct {
	chunks []*chunk
	used   uint32 // slots handed out at least once
	freed  []uint32
}

const chunkBits = 12

// chunk is allocated whole; being large it is page aligned, so every
// nodeEntry in hot sits in exactly one cache line.
type chunk struct {
	hot  [1 << chunkBits]nodeEntry
	cold [1 << chunkBits]coldEntry
}

func (s *nodeStore) at(i uint32) *nodeEntry {
	return &s.chunks[i>>chunkBits].hot[i&(1<<chunkBits-1)]
}

func (s *nodeStore) cold(i uint32) *coldEntry {
	return &s.chunks[i>>chunkBits].cold[i&(1<<chunkBits-1)]
}

func (s *nodeStore) alloc() uint32 {
	if n := len(s.freed); n > 0 {
		i := s.freed[n-1]
		s.freed = s.freed[:n-1]
		return i
	}
	i := s.used
	if int(i>>chunkBits) == len(s.chunks) {
		s.chunks = append(s.chunks, new(chunk))
	}
	s.used++
	return i
}

func (s *nodeStore) free(i uint32) {
	e := s.at(i)
	e.id, e.next, e.role, e.flags, e.baseLen = "", none, roleFree, 0, 0
	e.base = [inlineBase]byte{}
	e.weight.Store(0)
	e.eligible.Store(false)
	*s.cold(i) = coldEntry{}
	s.freed = append(s.freed, i)
}

package router

import "net/netip"

// RelayNodeFor returns the eligible relay whose CIDRs cover addr (longest prefix
// wins; several relays on one prefix are chosen between as Decide would for
// the path "/"). The dashboard uses it to draw the tree CAST → relays →
// beacons.
func (r *Router) RelayNodeFor(addr netip.Addr) (id string, ok bool) {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return "", false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	i, _ := r.pickRelayNode(addr, "/")
	if i == none {
		return "", false
	}
	return r.nodes.at(i).id, true
}

// Has reports whether the router knows node id; the control plane asks it
// for every message, so it must not touch the registry's disk.
func (r *Router) Has(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.byID[id]
	return ok
}

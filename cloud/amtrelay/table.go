package amtrelay

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// tunnel is the state of one gateway, created by its first authenticated
// Membership Update and keyed by the address and port the relay saw.
type tunnel struct {
	key   netip.AddrPort
	c     *conn      // the socket of its family
	local netip.Addr // relay address the gateway sends to
	dst   dest       // precomputed send address

	// nonce and mac of the last authenticated message. They stay valid for
	// this tunnel across secret rotations while it is refreshed: VLC never
	// sends a new Request, so it echoes one MAC for the tunnel's lifetime.
	nonce uint32
	mac   [6]byte

	created, lastUpdate time.Time
	chans               map[amt.Channel]time.Time // channel → expiry
}

// table is the relay's control state, guarded by Relay.mu.
type table struct {
	tunnels map[netip.AddrPort]*tunnel
	members map[amt.Channel]map[*tunnel]struct{}
	dirty   map[amt.Channel]struct{} // channels whose fan-out list changed
}

func (t *table) init() {
	t.tunnels = make(map[netip.AddrPort]*tunnel)
	t.members = make(map[amt.Channel]map[*tunnel]struct{})
	t.dirty = make(map[amt.Channel]struct{})
}

// joinResult says what join did.
type joinResult int

const (
	joined joinResult = iota
	refreshed
	refusedLimit
)

// join adds ch to tunnel t, or refreshes it, until expires. r.mu is held.
func (r *Relay) join(t *tunnel, ch amt.Channel, expires time.Time) joinResult {
	if _, ok := t.chans[ch]; ok {
		t.chans[ch] = expires
		return refreshed
	}
	m := r.tab.members[ch]
	if len(t.chans) >= r.opts.MaxChannelsPerGateway || (m == nil && len(r.tab.members) >= r.opts.MaxChannels) {
		r.refuse(reasonChannelLimit, t.key)
		return refusedLimit
	}
	if m == nil {
		m = make(map[*tunnel]struct{})
		r.tab.members[ch] = m
		if r.native != nil {
			if err := r.native.join(ch); err != nil {
				r.log.Warn("native join failed", "channel", ch, "err", err)
			}
		}
	}
	m[t] = struct{}{}
	t.chans[ch] = expires
	r.tab.dirty[ch] = struct{}{}
	return joined
}

// leave removes ch from tunnel t. r.mu is held.
func (r *Relay) leave(t *tunnel, ch amt.Channel) {
	if _, ok := t.chans[ch]; !ok {
		return
	}
	delete(t.chans, ch)
	m := r.tab.members[ch]
	delete(m, t)
	if len(m) == 0 {
		delete(r.tab.members, ch)
		if r.native != nil {
			if err := r.native.leave(ch); err != nil {
				r.log.Warn("native leave failed", "channel", ch, "err", err)
			}
		}
	}
	r.tab.dirty[ch] = struct{}{}
}

// removeTunnel deletes t and its memberships. r.mu is held.
func (r *Relay) removeTunnel(t *tunnel) {
	for ch := range t.chans {
		r.leave(t, ch)
	}
	delete(r.tab.tunnels, t.key)
}

// expire drops channels and tunnels not refreshed in time.
func (r *Relay) expire(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.tab.tunnels {
		if !now.Before(t.lastUpdate.Add(r.gmi)) {
			r.log.Debug("tunnel expired", "gateway", t.key)
			r.removeTunnel(t)
			r.stats.expired.Add(1)
			continue
		}
		for ch, exp := range t.chans {
			if !now.Before(exp) {
				r.leave(t, ch)
			}
		}
		if len(t.chans) == 0 {
			// Every channel timed out while the gateway kept refreshing
			// nothing: no state worth a slot.
			r.log.Debug("tunnel expired: no channels left", "gateway", t.key)
			r.removeTunnel(t)
			r.stats.expired.Add(1)
		}
	}
	r.publish()
}

// publish makes the data path see the dirty channels' new gateway lists.
// The index is copied, not changed, so readers never lock. r.mu is held.
func (r *Relay) publish() {
	if len(r.tab.dirty) == 0 {
		return
	}
	old := r.index.Load().m
	m := make(map[amt.Channel]*fanEntry, len(old)+len(r.tab.dirty))
	for ch, e := range old {
		m[ch] = e
	}
	for ch := range r.tab.dirty {
		members := r.tab.members[ch]
		if len(members) == 0 {
			delete(m, ch)
			continue
		}
		m[ch] = r.buildEntry(members)
	}
	clear(r.tab.dirty)
	r.index.Store(&index{m: m})
}

// buildEntry groups a channel's gateways by socket, in a stable order.
func (r *Relay) buildEntry(members map[*tunnel]struct{}) *fanEntry {
	ts := make([]*tunnel, 0, len(members))
	for t := range members {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *tunnel) int { return a.key.Compare(b.key) })
	e := &fanEntry{}
	for _, c := range r.conns {
		var ds []dest
		for _, t := range ts {
			if t.c == c {
				ds = append(ds, t.dst)
			}
		}
		if len(ds) > 0 {
			e.groups = append(e.groups, fanGroup{c: c, dests: ds})
		}
	}
	return e
}

func sortChannels(chs []amt.Channel) {
	slices.SortFunc(chs, func(a, b amt.Channel) int {
		return cmp.Or(a.Group.Compare(b.Group), a.Source.Compare(b.Source))
	})
}

package amtgw

import (
	"net/netip"
	"sort"
	"time"
)

// State is a snapshot of the gateway for the health report and the local
// API.
type State struct {
	Running   bool           `json:"running"`
	LocalAddr netip.AddrPort `json:"local_addr"`
	Tunnels   []TunnelState  `json:"tunnels"`
	Channels  []ChannelState `json:"channels"`
	// UnknownSource counts datagrams from addresses with no tunnel,
	// Unexpected control messages a gateway does not take (wrong type,
	// unknown nonce, malformed), StaleQueries queries for no outstanding
	// Request, ControlDropped those the control loop had no room for.
	UnknownSource  uint64          `json:"unknown_source"`
	Unexpected     uint64          `json:"unexpected"`
	StaleQueries   uint64          `json:"stale_queries"`
	ControlDropped uint64          `json:"control_dropped"`
	ReadErrors     uint64          `json:"read_errors"`
	Consumers      []QueueState    `json:"consumers,omitempty"`
	Reemit         *ReemitState    `json:"reemit,omitempty"`
	HeldDown       []HeldDownRelay `json:"held_down,omitempty"`
}

// TunnelState describes one tunnel.
type TunnelState struct {
	// Discovery is the address the relay was found at (where Relay
	// Discovery went, or the relay itself); Relay where Requests go.
	Discovery netip.AddrPort `json:"discovery"`
	Relay     netip.AddrPort `json:"relay"`
	Phase     Phase          `json:"phase"`
	Since     time.Time      `json:"since"`
	// Gateway is our address as the relay sees it (G flag), if it says.
	Gateway       netip.AddrPort `json:"gateway,omitempty"`
	QueryInterval time.Duration  `json:"query_interval"`
	Robustness    int            `json:"robustness"`
	Limited       bool           `json:"limited"` // the relay set the L flag
	NATChanges    int            `json:"nat_changes"`
	Channels      []string       `json:"channels"` // "(S,G)"
	Packets       uint64         `json:"packets"`
	Bytes         uint64         `json:"bytes"`
	Filtered      uint64         `json:"filtered"` // data for channels not joined here
	Malformed     uint64         `json:"malformed"`
	LastData      time.Time      `json:"last_data"`
	LastQuery     time.Time      `json:"last_query"`
	BackoffUntil  time.Time      `json:"backoff_until"`
	LastError     string         `json:"last_error,omitempty"`
}

// Channel statuses in ChannelState.
const (
	StatusResolving  = "resolving"  // looking up relays for the source
	StatusConnecting = "connecting" // its tunnel is discovering or requesting
	StatusJoined     = "joined"     // its tunnel is up
	StatusLeaving    = "leaving"
	StatusBackoff    = "backoff" // waiting before trying relays again
	StatusWaiting    = "waiting" // not placed yet (gateway not running)
)

// ChannelState describes one joined channel.
type ChannelState struct {
	Source        netip.Addr     `json:"source"`
	Group         netip.Addr     `json:"group"`
	Status        string         `json:"status"`
	Relay         netip.AddrPort `json:"relay,omitempty"`
	Reemit        bool           `json:"reemit"`
	Since         time.Time      `json:"since"`
	Packets       uint64         `json:"packets"`
	Bytes         uint64         `json:"bytes"`   // UDP payload bytes
	Dropped       uint64         `json:"dropped"` // lost to slow consumers
	ReemitDropped uint64         `json:"reemit_dropped"`
	LastData      time.Time      `json:"last_data"`
	Failures      int            `json:"failures"`
	LastError     string         `json:"last_error,omitempty"`
}

// QueueState counts one consumer's losses.
type QueueState struct {
	Dropped  uint64 `json:"dropped"`
	Oversize uint64 `json:"oversize"`
}

// ReemitState counts the LAN re-emission.
type ReemitState struct {
	Interface  string `json:"interface"`
	Sent       uint64 `json:"sent"`
	Dropped    uint64 `json:"dropped"` // queue full
	TTLExpired uint64 `json:"ttl_expired"`
	Errors     uint64 `json:"errors"`
	LastError  string `json:"last_error,omitempty"`
}

// Channel returns the channel (S,G).
func (c ChannelState) Channel() Channel { return Channel{Source: c.Source, Group: c.Group} }

// HeldDownRelay is a relay avoided until Until.
type HeldDownRelay struct {
	Addr  netip.AddrPort `json:"addr"`
	Until time.Time      `json:"until"`
}

// State returns a snapshot of the gateway.
func (g *Gateway) State() State {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	s := State{
		Running:        g.running,
		UnknownSource:  g.unknownSource.Load(),
		Unexpected:     g.unexpected.Load(),
		StaleQueries:   g.staleQueries.Load(),
		ControlDropped: g.ctrlDropped.Load(),
		ReadErrors:     g.readErrors.Load(),
	}
	if g.io != nil {
		s.LocalAddr = g.io.local
	}
	for _, t := range g.tunnels {
		ts := TunnelState{
			Discovery:    t.cand.Addr,
			Relay:        t.relay,
			Phase:        t.phase,
			Since:        t.since,
			Limited:      t.limited,
			NATChanges:   t.natChanges,
			Packets:      t.stats.packets.Load(),
			Bytes:        t.stats.bytes.Load(),
			Filtered:     t.stats.filtered.Load(),
			Malformed:    t.stats.malformed.Load(),
			LastData:     wallTime(t.stats.lastData.Load()),
			LastQuery:    t.lastQuery,
			BackoffUntil: t.backoffUntil,
			LastError:    t.lastErr,
		}
		if t.gw.valid {
			ts.Gateway = t.gw.addr
		}
		for _, cyc := range t.cyc {
			if cyc != nil && cyc.haveMAC {
				ts.QueryInterval = cyc.qi
				ts.Robustness = cyc.robustness()
			}
		}
		chs := make([]Channel, 0, len(t.chans))
		for ch := range t.chans {
			chs = append(chs, ch)
		}
		sortChannels(chs)
		for _, ch := range chs {
			ts.Channels = append(ts.Channels, ch.String())
		}
		s.Tunnels = append(s.Tunnels, ts)
	}
	for _, c := range g.chans {
		cs := ChannelState{
			Source:        c.ch.Source,
			Group:         c.ch.Group,
			Reemit:        c.stats.reemit.Load(),
			Since:         c.since,
			Packets:       c.stats.packets.Load(),
			Bytes:         c.stats.bytes.Load(),
			Dropped:       c.stats.dropped.Load(),
			ReemitDropped: c.stats.reemitDropped.Load(),
			LastData:      wallTime(c.stats.lastData.Load()),
			Failures:      c.failures,
			LastError:     c.lastErr,
		}
		switch t := c.tun; {
		case t != nil:
			cs.Relay = t.relay
			if !cs.Relay.IsValid() {
				cs.Relay = t.cand.Addr
			}
			switch t.phase {
			case PhaseJoined:
				cs.Status = StatusJoined
			case PhaseBackoff:
				cs.Status = StatusBackoff
			case PhaseLeaving:
				cs.Status = StatusLeaving
			default:
				cs.Status = StatusConnecting
			}
		case c.resolving:
			cs.Status = StatusResolving
		case c.notBefore.After(now):
			cs.Status = StatusBackoff
		default:
			cs.Status = StatusWaiting
		}
		s.Channels = append(s.Channels, cs)
	}
	// Channels asked for before Run placed them.
	for ch, req := range g.want {
		if g.chans[ch] == nil {
			s.Channels = append(s.Channels, ChannelState{Source: ch.Source, Group: ch.Group, Status: StatusWaiting, Reemit: req.reemit, Relay: req.relay})
		}
	}
	// sort.Slice, not slices.SortFunc: each struct type slices sorts
	// instantiates its own ~12 KB of sorting code on flash.
	sort.Slice(s.Channels, func(i, j int) bool {
		a, b := s.Channels[i], s.Channels[j]
		if c := a.Group.Compare(b.Group); c != 0 {
			return c < 0
		}
		return a.Source.Less(b.Source)
	})
	for _, q := range g.subs {
		s.Consumers = append(s.Consumers, QueueState{Dropped: q.drops.Load(), Oversize: q.oversize.Load()})
	}
	if r := g.reemit; r != nil {
		s.Reemit = r.state()
	}
	for a, until := range g.holdDown {
		if until.After(now) {
			s.HeldDown = append(s.HeldDown, HeldDownRelay{Addr: a, Until: until})
		}
	}
	sort.Slice(s.HeldDown, func(i, j int) bool { return s.HeldDown[i].Addr.Compare(s.HeldDown[j].Addr) < 0 })
	return s
}

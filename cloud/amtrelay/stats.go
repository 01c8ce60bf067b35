package amtrelay

import "sync/atomic"

// Stats is a snapshot of the relay's counters.
type Stats struct {
	Gateways int // tunnels
	Channels int // distinct (S,G) with at least one gateway

	ControlIn      uint64 // AMT messages received from gateways
	Advertisements uint64 // Relay Advertisements sent
	Queries        uint64 // Membership Queries sent
	Updates        uint64 // authenticated Membership Updates processed
	Teardowns      uint64 // authenticated Teardowns that ended a tunnel
	Expired        uint64 // tunnels expired without refresh

	PacketsIn  uint64 // multicast datagrams to relay (Inject and native)
	BytesIn    uint64
	NoReceiver uint64 // datagrams no gateway had joined
	PacketsOut uint64 // Multicast Data messages sent (one per gateway copy)
	BytesOut   uint64 // their UDP payload bytes

	Drops Drops
}

// Drops counts what the relay refused, by reason (ByReason lists them with
// their metric labels).
type Drops struct {
	Malformed    uint64 // undecodable AMT message or encapsulated report
	Unexpected   uint64 // a relay-to-gateway message type sent to the relay
	BadMAC       uint64 // Update or Teardown whose MAC/nonce did not verify
	RateLimited  uint64 // Requests/Discoveries over the per-source rate
	GatewayLimit uint64 // Updates from new gateways refused: MaxGateways
	ChannelLimit uint64 // joins refused: MaxChannelsPerGateway or MaxChannels
	NotSSM       uint64 // records for non-SSM groups or in EXCLUDE mode
	BadDatagram  uint64 // native datagrams that failed to parse
	TooBig       uint64 // copies the kernel refused as larger than the path MTU
	SendErrors   uint64 // other send failures (copies)
	NoAddress    uint64 // discoveries the relay had no address to advertise for
}

type counters struct {
	controlIn, advertisements, queries, updates, teardowns, expired atomic.Uint64
	packetsIn, bytesIn, noReceiver, packetsOut, bytesOut            atomic.Uint64

	refused refusals
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	gw, ch := len(r.tab.tunnels), len(r.tab.members)
	r.mu.Unlock()
	c := &r.stats
	return Stats{
		Gateways: gw, Channels: ch,
		ControlIn: c.controlIn.Load(), Advertisements: c.advertisements.Load(),
		Queries: c.queries.Load(), Updates: c.updates.Load(),
		Teardowns: c.teardowns.Load(), Expired: c.expired.Load(),
		PacketsIn: c.packetsIn.Load(), BytesIn: c.bytesIn.Load(), NoReceiver: c.noReceiver.Load(),
		PacketsOut: c.packetsOut.Load(), BytesOut: c.bytesOut.Load(),
		Drops: dropsFrom(&c.refused.n),
	}
}

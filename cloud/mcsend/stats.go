package mcsend

import "sync/atomic"

// Kind is what a datagram the sender sent carried, for the byte counters.
type Kind int

// Kinds. The first four go on the channel, the last two over DTLS.
const (
	KindData       Kind = iota // source symbols, carousel
	KindParity                 // proactive parity, carousel
	KindNackParity             // parity (or source) put on the channel for NACKs of several nodes
	KindAuth                   // manifest and hash-list packets on the channel
	KindEarly                  // early media over DTLS (manifest, hash lists, source)
	KindRepair                 // unicast repair over DTLS (symbols and hash lists one node lacked)
	NumKinds
)

var kindNames = [NumKinds]string{"data", "parity", "nack_parity", "auth", "early", "repair"}

// String is the kind's metric label.
func (k Kind) String() string {
	if k < 0 || k >= NumKinds {
		return "unknown"
	}
	return kindNames[k]
}

// Multicast reports whether the kind goes on the channel.
func (k Kind) Multicast() bool { return k <= KindAuth }

// Refusal is why the service did not serve (part of) a request.
type Refusal int

// Refusals.
const (
	RefuseMalformed Refusal = iota // not a control message
	RefuseUnknown                  // Join/Nack for no running session (answered StatusUnknown)
	RefuseRate                     // message over the node's rate (Join, Nack, Leave)
	RefuseRanges                   // ranges past MaxRanges in one NACK, or out of the object
	RefusePending                  // the node's or session's pending repairs are at the cap
	RefuseLimited                  // WriteLimited refused: the node's repair budget is spent (StatusLimited)
	RefuseNodes                    // too many nodes with state
	NumRefusals
)

var refusalNames = [NumRefusals]string{"malformed", "unknown", "rate", "ranges", "pending", "limited", "nodes"}

// String is the refusal's metric label.
func (r Refusal) String() string {
	if r < 0 || r >= NumRefusals {
		return "unknown"
	}
	return refusalNames[r]
}

// Stats are a Sender's counters since New (or a Session's since it
// started: Sessions, Active and Nodes are then zero).
type Stats struct {
	Bytes    [NumKinds]uint64    // ALC bytes sent, by kind
	Packets  [NumKinds]uint64    // ALC packets sent, by kind
	Refused  [NumRefusals]uint64 // requests or ranges refused, by reason
	Sessions uint64              // sessions started
	Active   int                 // sessions running now
	Nodes    int                 // nodes with state now
	Joins    uint64              // Join messages
	Nacks    uint64              // NACK messages taken
	Leaves   uint64              // Leave messages
	Passes   uint64              // carousel passes completed
	SendErrs uint64              // datagrams a sink failed to send
}

// MulticastBytes is the bytes put on the channel (data, parity, auth).
func (s Stats) MulticastBytes() uint64 {
	var n uint64
	for k := range NumKinds {
		if k.Multicast() {
			n += s.Bytes[k]
		}
	}
	return n
}

// UnicastBytes is the bytes sent over DTLS (early media and repairs).
func (s Stats) UnicastBytes() uint64 { return s.Bytes[KindEarly] + s.Bytes[KindRepair] }

// counters are Stats kept with atomics.
type counters struct {
	bytes    [NumKinds]atomic.Uint64
	packets  [NumKinds]atomic.Uint64
	refused  [NumRefusals]atomic.Uint64
	joins    atomic.Uint64
	nacks    atomic.Uint64
	leaves   atomic.Uint64
	passes   atomic.Uint64
	sendErrs atomic.Uint64
}

func (c *counters) sent(k Kind, n int) {
	c.bytes[k].Add(uint64(n))
	c.packets[k].Add(1)
}

func (c *counters) snapshot() Stats {
	var s Stats
	for i := range s.Bytes {
		s.Bytes[i], s.Packets[i] = c.bytes[i].Load(), c.packets[i].Load()
	}
	for i := range s.Refused {
		s.Refused[i] = c.refused[i].Load()
	}
	s.Joins, s.Nacks, s.Leaves = c.joins.Load(), c.nacks.Load(), c.leaves.Load()
	s.Passes, s.SendErrs = c.passes.Load(), c.sendErrs.Load()
	return s
}

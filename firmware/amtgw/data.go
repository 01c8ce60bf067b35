package amtgw

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// dataPlane is what the receive goroutine reads: an immutable snapshot that
// the control loop replaces whenever tunnels, channels or consumers change.
type dataPlane struct {
	// tunnels by the relay address their datagrams come from.
	tunnels     map[netip.AddrPort]dpTunnel
	discovering bool // some tunnel waits for a Relay Advertisement
	subs        []*queue
	reemit      *reemitter
}

type dpTunnel struct {
	stats *tunnelStats
	chans map[Channel]*chanStats // joined channels; others are dropped
}

// tunnelStats are a tunnel's receive counters, updated by the receive path.
type tunnelStats struct {
	packets   atomic.Uint64 // Multicast Data for a joined channel
	bytes     atomic.Uint64 // their AMT payload (the inner IP datagrams)
	filtered  atomic.Uint64 // valid data for a channel not joined here
	malformed atomic.Uint64 // data that does not parse
	lastData  atomic.Int64  // monoNow() of the last joined datagram; 0: none
}

// chanStats are a channel's counters; they survive moves between tunnels.
type chanStats struct {
	reemit        atomic.Bool
	packets       atomic.Uint64
	bytes         atomic.Uint64 // UDP payload bytes
	dropped       atomic.Uint64 // datagrams a consumer queue had no room for
	reemitDropped atomic.Uint64
	lastData      atomic.Int64
}

// epoch anchors the receive path's timestamps to the monotonic clock:
// routers often boot with a wrong wall clock that NTP later moves by years,
// which must not look like years of silence.
var epoch = time.Now()

// monoNow is the monotonic time since epoch, never 0 after startup. It
// reads only the monotonic clock, which is cheaper than time.Now.
func monoNow() int64 { return int64(time.Since(epoch)) | 1 }

// monoTime converts a monoNow value for comparisons with time.Now.
func monoTime(ns int64) time.Time { return epoch.Add(time.Duration(ns)) }

// wallTime converts a monoNow value (0: never) to the wall clock for
// reports, as its age before now.
func wallTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Now().Add(-time.Since(monoTime(ns))).Round(0)
}

// ctrlMsg is a control message for the loop, copied out of the read buffer.
type ctrlMsg struct {
	from netip.AddrPort
	b    []byte
}

// tunnelIO is the gateway's tunnel socket.
type tunnelIO struct {
	conn  *net.UDPConn
	local netip.AddrPort
	buf   []byte // the control loop's send buffer
}

// readLoop reads the tunnel socket until it is closed.
func (g *Gateway) readLoop(conn *net.UDPConn) {
	// One buffer for the socket's lifetime: a UDP datagram is at most
	// 64 KiB, and datagrams that are handed on are copied.
	buf := make([]byte, 1<<16)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors surface here on some systems; they say
			// nothing the timers do not. Pause so that a persistent
			// error cannot spin.
			g.readErrors.Add(1)
			time.Sleep(time.Millisecond)
			continue
		}
		g.handlePacket(buf[:n], from)
	}
}

// handlePacket dispatches one datagram from the tunnel socket. Multicast
// Data is handled here, without allocating; the few control messages a
// gateway expects are passed to the control loop.
func (g *Gateway) handlePacket(b []byte, from netip.AddrPort) {
	if from.Addr().Is4In6() {
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	}
	dp := g.dp.Load()
	if len(b) == 0 {
		g.unexpected.Add(1)
		return
	}
	switch b[0] {
	case byte(amt.TypeMulticastData):
		g.handleData(dp, b, from)
		return
	case byte(amt.TypeMembershipQuery):
		if _, ok := dp.tunnels[from]; !ok {
			g.unknownSource.Add(1)
			return
		}
	case byte(amt.TypeRelayAdvertisement):
		// From the relay, which need not be the address the discovery
		// went to (anycast); the nonce identifies it.
		if !dp.discovering {
			g.unexpected.Add(1)
			return
		}
	default:
		// Gateway-to-relay types, unknown types and versions.
		g.unexpected.Add(1)
		return
	}
	select {
	case g.ctrl <- ctrlMsg{from: from, b: append([]byte(nil), b...)}:
	default:
		g.ctrlDropped.Add(1)
	}
}

func (g *Gateway) handleData(dp *dataPlane, b []byte, from netip.AddrPort) {
	t, ok := dp.tunnels[from]
	if !ok {
		g.unknownSource.Add(1)
		return
	}
	inner, err := amt.ParseDataHeader(b)
	if err != nil {
		t.stats.malformed.Add(1)
		return
	}
	d, err := amt.ParseInnerUDP(inner)
	if err != nil {
		t.stats.malformed.Add(1)
		return
	}
	c := t.chans[Channel{Source: d.Src, Group: d.Dst}]
	if c == nil {
		t.stats.filtered.Add(1)
		return
	}
	now := monoNow()
	t.stats.packets.Add(1)
	t.stats.bytes.Add(uint64(len(inner)))
	t.stats.lastData.Store(now)
	c.packets.Add(1)
	c.bytes.Add(uint64(len(d.Payload)))
	c.lastData.Store(now)
	for _, q := range dp.subs {
		if !q.push(&d, inner) {
			c.dropped.Add(1)
		}
	}
	if dp.reemit != nil && c.reemit.Load() {
		if !dp.reemit.q.push(&d, inner) {
			c.reemitDropped.Add(1)
		}
	}
}

// queue hands datagrams from the receive goroutine to one consumer
// goroutine through a fixed ring of buffers: nothing is allocated per
// datagram, and when the consumer lags the datagram is dropped instead of
// waiting.
type queue struct {
	fn       func(d *amt.Datagram, pkt []byte)
	slots    []slot
	free     chan int32 // slots the producer may fill
	ready    chan int32 // filled slots, in order
	quit     chan struct{}
	stopOnce sync.Once
	drops    atomic.Uint64
	oversize atomic.Uint64
}

type slot struct {
	buf []byte
	n   int
	d   amt.Datagram
}

func newQueue(n, size int, fn func(d *amt.Datagram, pkt []byte)) *queue {
	q := &queue{
		fn:    fn,
		slots: make([]slot, n),
		free:  make(chan int32, n),
		ready: make(chan int32, n),
		quit:  make(chan struct{}),
	}
	backing := make([]byte, n*size)
	for i := range q.slots {
		q.slots[i].buf = backing[i*size : (i+1)*size : (i+1)*size]
		q.free <- int32(i)
	}
	return q
}

// push copies pkt (the inner IP datagram) and d, whose Payload is pkt's
// tail, into a free slot. It reports false if there was none.
func (q *queue) push(d *amt.Datagram, pkt []byte) bool {
	if len(pkt) > len(q.slots[0].buf) {
		q.oversize.Add(1)
		return false
	}
	select {
	case i := <-q.free:
		s := &q.slots[i]
		s.n = copy(s.buf, pkt)
		s.d = *d
		s.d.Payload = s.buf[s.n-len(d.Payload) : s.n]
		q.ready <- i // never blocks: ready has room for every slot
		return true
	default:
		q.drops.Add(1)
		return false
	}
}

// run calls fn for each queued datagram until stop or done.
func (q *queue) run(done <-chan struct{}) {
	for {
		select {
		case i := <-q.ready:
			s := &q.slots[i]
			q.fn(&s.d, s.buf[:s.n])
			q.free <- i
		case <-q.quit:
			return
		case <-done:
			return
		}
	}
}

func (q *queue) stop() { q.stopOnce.Do(func() { close(q.quit) }) }

// publish replaces the receive path's snapshot. Callers hold g.mu.
func (g *Gateway) publish() {
	dp := &dataPlane{
		tunnels: make(map[netip.AddrPort]dpTunnel, len(g.tunnels)),
		subs:    append([]*queue(nil), g.subs...),
		reemit:  g.reemit,
	}
	for _, t := range g.tunnels {
		if t.phase == PhaseDiscovering {
			dp.discovering = true
		}
		if !t.relay.IsValid() || t.phase == PhaseBackoff {
			continue
		}
		chans := make(map[Channel]*chanStats, len(t.chans))
		for ch, c := range t.chans {
			chans[ch] = c.stats
		}
		dp.tunnels[t.relay] = dpTunnel{stats: t.stats, chans: chans}
	}
	g.dp.Store(dp)
	g.dirty = false
}

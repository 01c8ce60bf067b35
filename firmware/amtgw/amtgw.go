// Package amtgw is the beacon's AMT gateway (RFC 7450 §5.2): it receives
// source-specific multicast channels (S,G) through unicast tunnels from AMT
// relays, hands the datagrams to the beacon's consumers, and can re-emit
// chosen channels as native multicast on the LAN so that set-top boxes and
// players on the home network receive them.
//
// Relays are found per source: a configured address, DNS Reverse IP AMT
// Discovery (RFC 8777, see package driad), the anycast discovery addresses,
// or the relay a castd offer names, tried in order with fallback. There is
// one tunnel per relay; channels whose sources lead to the same relay share
// it. Every tunnel runs the RFC 7450 handshake (Relay Discovery when the
// relay must be discovered, then Request, Membership Query and Membership
// Update), refreshes its membership at the interval the relay's query gives,
// repeats state changes as the query's robustness asks, and ends with a
// Teardown when its last channel leaves or the gateway stops.
//
// A relay that stops answering (no data and no query answers for
// Options.NoDataTimeout) is held down for a few minutes; the gateway backs
// off (4 s doubling to 120 s, RFC 8777 §2.5.4.1), finds a relay again and
// re-joins. A relay that sets the L flag before the tunnel is up is skipped
// for the next one. State reports all of it for the health report.
//
// The receive path does not allocate: one goroutine reads the tunnel
// socket, parses Multicast Data in place, drops what no joined channel
// wants (source filtering is the point of SSM) and copies each datagram into
// a fixed ring per consumer; a consumer that falls behind loses datagrams,
// counted, and never slows the others.
//
// Re-emission is IPv4 only: it writes the inner datagram unchanged (source
// S kept, so receivers that joined (S,G) accept it, TTL decremented as a
// router would) through a raw socket, which needs root or CAP_NET_RAW.
// IPv6 has no portable way to send with a foreign source address.
package amtgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// Channel is a source-specific multicast channel (S,G). Ports are not part
// of it: consumers filter by destination port.
type Channel = amt.Channel

// Errors returned by Join, Leave and Run; use errors.Is.
var (
	// ErrInvalidChannel: S is not a unicast address, G not a routable
	// multicast group, or they are of different families.
	ErrInvalidChannel = errors.New("invalid channel")
	// ErrNotJoined: Leave of a channel that is not joined.
	ErrNotJoined = errors.New("channel not joined")
	// ErrNoRelay: Join without a relay, and Options.Relays is nil.
	ErrNoRelay = errors.New("no relay for the channel")
	// ErrReemit: re-emission asked for but impossible (no interface
	// configured, an IPv6 channel, or an unsupported platform).
	ErrReemit = errors.New("cannot re-emit")
	// ErrClosed: the gateway's Run has returned.
	ErrClosed = errors.New("gateway closed")
	// ErrRunning: Run called twice.
	ErrRunning = errors.New("gateway already running")
)

// Options configure a Gateway. Durations left zero take the defaults in
// brackets, which are the RFC's where it gives one.
type Options struct {
	// Relays finds the relays for a channel's source when Join names none:
	// Static, DRIAD, Anycast, or a Chain of them.
	Relays RelaySource
	Logger *slog.Logger

	// LocalAddr is the address of the tunnel socket [":0", all addresses,
	// any port].
	LocalAddr string
	// ReadBuffer is the tunnel socket's receive buffer in bytes [1 MiB];
	// the kernel caps it (net.core.rmem_max).
	ReadBuffer int

	// NoDataTimeout: a tunnel that received neither data nor a query answer
	// for this long has lost its relay [30 s]. After half of it without
	// anything the gateway asks the relay with a Request.
	NoDataTimeout time.Duration

	// ReemitInterface is the LAN interface for native re-emission of the
	// channels joined with reemit ["", off].
	ReemitInterface string
	// ReemitTTL sets the TTL of re-emitted datagrams. Zero decrements the
	// received TTL, as a router does, and drops datagrams that arrive with
	// TTL 1; use it for sources that send with TTL 1.
	ReemitTTL uint8

	// RetransmitInitial and RetransmitMax bound the random wait before
	// Relay Discovery and Request retransmissions: attempt n waits in
	// [RetransmitInitial, min(RetransmitInitial·2ⁿ, RetransmitMax)]
	// [1 s, 120 s] (RFC 7450 §5.2.3.4.3).
	RetransmitInitial time.Duration
	RetransmitMax     time.Duration
	// ConnectAttempts is how many Relay Discoveries or Requests a new tunnel
	// sends before the gateway tries the next relay [4].
	ConnectAttempts int
	// BackoffInitial and BackoffMax bound the random wait before finding a
	// relay again after one was lost or all failed: [BackoffInitial,
	// min(BackoffInitial·2ⁿ, BackoffMax)] [4 s, 120 s] (RFC 8777 §2.5.4.1).
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// HoldDown is how long a relay that failed or went silent is avoided
	// while others are available [5 min; RFC 8777: 3 to 10 min].
	HoldDown time.Duration
	// LimitHoldDown is the same after a relay set the L flag [10 min].
	LimitHoldDown time.Duration
	// ReportInterval spaces the repetitions of a state-change report
	// (the unsolicited report interval of RFC 3376 §8.11) [1 s].
	ReportInterval time.Duration
	// ResolveTimeout bounds one Relays lookup [10 s]; ResolveCache is how
	// long its answer is reused [5 min].
	ResolveTimeout time.Duration
	ResolveCache   time.Duration

	// QueueLen is the number of datagrams queued per consumer [256], and
	// MaxDatagram the largest inner IP datagram a queue slot holds [2048];
	// larger ones are dropped and counted.
	QueueLen    int
	MaxDatagram int
}

// Defaults of Options, the RFCs' where they give one; ensureDefaults gives
// them to zero fields.
const (
	DefaultLocalAddr         = ":0"
	DefaultReadBuffer        = 1 << 20
	DefaultNoDataTimeout     = 30 * time.Second
	DefaultRetransmitInitial = time.Second
	DefaultRetransmitMax     = 120 * time.Second
	DefaultConnectAttempts   = 4
	DefaultBackoffInitial    = 4 * time.Second
	DefaultBackoffMax        = 120 * time.Second
	DefaultHoldDown          = 5 * time.Minute
	DefaultLimitHoldDown     = 10 * time.Minute
	DefaultReportInterval    = time.Second
	DefaultResolveTimeout    = 10 * time.Second
	DefaultResolveCache      = 5 * time.Minute
	DefaultQueueLen          = 256
	DefaultMaxDatagram       = 2048
)

// ensureDefaults gives every zero (or negative: none of these can be
// turned off) field its default, and raises a maximum below its initial
// value to it.
func (o *Options) ensureDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.LocalAddr == "" {
		o.LocalAddr = DefaultLocalAddr
	}
	if o.ReadBuffer <= 0 {
		o.ReadBuffer = DefaultReadBuffer
	}
	def(&o.NoDataTimeout, DefaultNoDataTimeout)
	def(&o.RetransmitInitial, DefaultRetransmitInitial)
	def(&o.RetransmitMax, DefaultRetransmitMax)
	def(&o.BackoffInitial, DefaultBackoffInitial)
	def(&o.BackoffMax, DefaultBackoffMax)
	def(&o.HoldDown, DefaultHoldDown)
	def(&o.LimitHoldDown, DefaultLimitHoldDown)
	def(&o.ReportInterval, DefaultReportInterval)
	def(&o.ResolveTimeout, DefaultResolveTimeout)
	def(&o.ResolveCache, DefaultResolveCache)
	o.RetransmitMax = max(o.RetransmitMax, o.RetransmitInitial)
	o.BackoffMax = max(o.BackoffMax, o.BackoffInitial)
	if o.ConnectAttempts <= 0 {
		o.ConnectAttempts = DefaultConnectAttempts
	}
	if o.QueueLen <= 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.MaxDatagram <= 0 {
		o.MaxDatagram = DefaultMaxDatagram
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Gateway is an AMT gateway. Join, Leave, Subscribe and State are safe for
// concurrent use, before and while Run runs.
type Gateway struct {
	opts Options
	log  *slog.Logger

	// mu guards everything below that the receive path does not read;
	// the control loop holds it while it handles an event.
	mu       sync.Mutex
	want     map[Channel]joinReq
	started  bool
	running  bool
	closed   bool
	io       *tunnelIO // the sockets, while running
	runCtx   context.Context
	tunnels  []*tunnel
	chans    map[Channel]*chanRec
	sources  map[netip.Addr]*sourceRec
	holdDown map[netip.AddrPort]time.Time
	subs     []*queue
	reemit   *reemitter
	dirty    bool // the data plane needs republishing
	wakeups  int  // control loop iterations, for tests

	// dp is the receive path's read-only view, replaced on every change.
	dp   atomic.Pointer[dataPlane]
	kick chan struct{}
	ctrl chan ctrlMsg
	res  chan resolveResult
	done chan struct{} // closed when Run returns

	unknownSource atomic.Uint64 // datagrams from no known relay
	unexpected    atomic.Uint64 // control messages a gateway ignores
	ctrlDropped   atomic.Uint64 // control messages the loop had no room for
	staleQueries  atomic.Uint64 // queries for no outstanding request
	readErrors    atomic.Uint64
}

type joinReq struct {
	relay  netip.AddrPort
	reemit bool
}

// New returns a gateway; Run starts it.
func New(opts Options) (*Gateway, error) {
	opts.ensureDefaults()
	g := &Gateway{
		opts:     opts,
		log:      opts.Logger,
		want:     map[Channel]joinReq{},
		chans:    map[Channel]*chanRec{},
		sources:  map[netip.Addr]*sourceRec{},
		holdDown: map[netip.AddrPort]time.Time{},
		kick:     make(chan struct{}, 1),
		ctrl:     make(chan ctrlMsg, 64),
		res:      make(chan resolveResult, 16),
		done:     make(chan struct{}),
	}
	g.dp.Store(&dataPlane{})
	return g, nil
}

// Join asks for channel ch. A valid relay (a castd offer's) is tried first,
// before the relays Options.Relays finds for ch.Source; a relay without a
// port means port 2268. With reemit the channel's datagrams are also sent
// as native multicast on Options.ReemitInterface. Joining a joined channel
// updates reemit and the relay to try next time.
func (g *Gateway) Join(ch Channel, relay netip.AddrPort, reemit bool) error {
	ch = Channel{Source: ch.Source.Unmap(), Group: ch.Group.Unmap()}
	if err := checkChannel(ch); err != nil {
		return err
	}
	if relay.IsValid() {
		a := relay.Addr().Unmap()
		if a.IsUnspecified() || a.IsMulticast() {
			return fmt.Errorf("amtgw: relay %v is not a unicast address: %w", relay, ErrNoRelay)
		}
		port := relay.Port()
		if port == 0 {
			port = amt.Port
		}
		relay = netip.AddrPortFrom(a, port)
	} else if g.opts.Relays == nil {
		return fmt.Errorf("amtgw: join %v: no relay given and none configured: %w", ch, ErrNoRelay)
	}
	if reemit {
		switch {
		case g.opts.ReemitInterface == "":
			return fmt.Errorf("amtgw: join %v: re-emission is off (no interface configured): %w", ch, ErrReemit)
		case !ch.Group.Is4():
			return fmt.Errorf("amtgw: join %v: IPv6 re-emission is not supported: %w", ch, ErrReemit)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	g.want[ch] = joinReq{relay: relay, reemit: reemit}
	if g.running {
		g.sync(time.Now())
		g.poke()
	}
	return nil
}

// Leave drops channel ch: the relay is told (BLOCK_OLD_SOURCES, repeated
// as the query's robustness asks) and a tunnel left without channels ends
// with a Teardown.
func (g *Gateway) Leave(ch Channel) error {
	ch = Channel{Source: ch.Source.Unmap(), Group: ch.Group.Unmap()}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.want[ch]; !ok {
		return fmt.Errorf("amtgw: leave %v: %w", ch, ErrNotJoined)
	}
	delete(g.want, ch)
	if g.running {
		g.sync(time.Now())
		g.poke()
	}
	return nil
}

// Joined returns the channels joined (asked for), in no particular order.
func (g *Gateway) Joined() []Channel {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Channel, 0, len(g.want))
	for ch := range g.want {
		out = append(out, ch)
	}
	return out
}

// Subscribe calls fn for every datagram received on a joined channel, from
// a goroutine of its own, in order. d.Payload is valid only during the call;
// copy it to keep it. When fn falls QueueLen datagrams behind, datagrams
// for it are dropped and counted (State's Dropped). cancel stops the calls;
// it does not wait for one in progress.
func (g *Gateway) Subscribe(fn func(ch Channel, d amt.Datagram)) (cancel func()) {
	q := newQueue(g.opts.QueueLen, g.opts.MaxDatagram, func(d *amt.Datagram, _ []byte) {
		fn(d.Channel(), *d)
	})
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return func() {}
	}
	g.subs = append(g.subs, q)
	g.publish()
	g.mu.Unlock()
	go q.run(g.done)
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			for i, s := range g.subs {
				if s == q {
					g.subs = append(g.subs[:i:i], g.subs[i+1:]...)
					break
				}
			}
			g.publish()
			g.mu.Unlock()
			q.stop()
		})
	}
}

func checkChannel(ch Channel) error {
	s, grp := ch.Source, ch.Group
	switch {
	case !s.IsValid() || s.IsUnspecified() || s.IsMulticast():
		return fmt.Errorf("amtgw: %v: source is not a unicast address: %w", ch, ErrInvalidChannel)
	case !grp.IsMulticast():
		return fmt.Errorf("amtgw: %v: group is not multicast: %w", ch, ErrInvalidChannel)
	case grp.IsLinkLocalMulticast() || grp.IsInterfaceLocalMulticast():
		return fmt.Errorf("amtgw: %v: group is link-local: %w", ch, ErrInvalidChannel)
	case s.Is4() != grp.Is4():
		return fmt.Errorf("amtgw: %v: source and group of different families: %w", ch, ErrInvalidChannel)
	case s.Zone() != "" || grp.Zone() != "":
		return fmt.Errorf("amtgw: %v: addresses with zones: %w", ch, ErrInvalidChannel)
	}
	return nil
}

// poke wakes the control loop to recompute its timer.
func (g *Gateway) poke() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

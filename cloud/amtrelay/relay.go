// Package amtrelay is castd's AMT relay (RFC 7450, relay side): it answers
// gateways' Relay Discovery and Request messages, keeps the per-gateway
// tunnel state that authenticated Membership Updates create, and replicates
// source-specific multicast (SSM) datagrams to every gateway joined to their
// (S,G) as Multicast Data. Datagrams come from castd's own sender (Inject)
// and, optionally, from native multicast received on one interface, so the
// relay also serves third-party SSM streams.
//
// # Authentication and state
//
// The relay holds no state for a gateway until it sends a Membership Update
// whose response MAC matches the one the relay computed, in its Membership
// Query, over the gateway's address, port and request nonce with a secret
// that only the relay knows and rotates (RFC 7450 §5.1.4, §5.3). Requests,
// Discoveries and anything unauthenticated allocate nothing: a flood of them
// costs the relay CPU, bounded per source address by a fixed-size rate
// limiter, but never memory. A tunnel is keyed by the gateway's address and
// port as the relay sees them, so a gateway whose NAT binding changes makes a
// new tunnel and the old one expires or is ended by a Teardown (§5.3.3.7).
// A tunnel exists only while it has at least one (S,G): an authenticated
// Update that joins nothing creates none, one that leaves everything ends
// its tunnel at once, and a tunnel whose channels all time out expires with
// them, so a gateway slot (MaxGateways) is never held by an empty tunnel.
//
// Every message refused and every copy dropped is counted under one reason
// (Stats.Drops, RefusalReasons) and summarised in one warning per reason
// per minute at most, never logged per packet.
//
// # Group membership
//
// IGMPv3 and MLDv2 records are processed as an RFC 3376 §6.4 router does on a
// link with a single member, the gateway: INCLUDE and ALLOW add or refresh
// (S,G) for the group membership interval (QRV × QI + QRI); BLOCK removes at
// once (AMT has no group-and-source-specific queries to confirm it with);
// TO_IN(B) sets the group's sources to B, so TO_IN{} leaves the group.
// Current-state records refresh what they list and leave the rest to expire
// rather than replacing the set, because RFC 3376 §4.2.16 lets a gateway
// split its current state over several reports. Only SSM channels are
// served: EXCLUDE records and non-SSM groups are ignored and counted.
//
// # Gateways in the wild
//
// Decoding is lenient (reserved bits, VLC's 9-byte Request, reports to the
// group address without Router Alert). A Teardown with port 0 and address ::,
// sent by gateways that never saw the G flag, tears down the tunnel of the
// address it comes from, if its MAC matches that address. Options.CiscoMACQuirk
// opts in to Cisco IOS-XE 03.16's 4-byte MAC echo. VLC never sends a second
// Request, so a live tunnel keeps accepting the MAC and nonce it was
// authenticated with across secret rotations.
//
// # Data
//
// The (S,G) → gateways index is copy-on-write, so the per-packet path takes
// no lock and allocates nothing. Each datagram is encapsulated once and sent
// to all destinations with sendmmsg (golang.org/x/net ipv4/ipv6 WriteBatch)
// in batches of 64, from the socket of the gateway's address family. The
// sockets set DF and the relay never fragments: a copy larger than the path
// MTU is dropped and counted (Drops.TooBig).
package amtrelay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// Defaults of Options (RFC 7450 §5.3, RFC 3376 §8).
const (
	DefaultListen                = ":2268"
	DefaultQueryInterval         = 125 * time.Second
	DefaultRobustness            = 2
	DefaultQueryResponseInterval = 10 * time.Second
	DefaultSecretRotation        = 2 * time.Hour
	DefaultMaxGateways           = 10000
	DefaultMaxChannelsPerGateway = 64
	DefaultMaxChannels           = 4096
	DefaultRequestRate           = 20
	DefaultRequestBurst          = 40
)

// MinSecretRotation is the shortest secret rotation RFC 7450 allows.
const MinSecretRotation = 2 * time.Hour

// maxQueryInterval keeps QQIC below 128, where its encoding is literal
// seconds: VLC reads it literally.
const maxQueryInterval = 127 * time.Second

// Errors callers branch on.
var (
	// ErrOptions: an Options value is out of range.
	ErrOptions = errors.New("amtrelay: invalid options")
	// ErrClosed: the relay has stopped.
	ErrClosed = errors.New("amtrelay: relay closed")
	// ErrRunning: Run was called twice.
	ErrRunning = errors.New("amtrelay: already running")
	// ErrDatagram: Inject was handed something that is not a whole IPv4 or
	// IPv6 UDP datagram from a unicast source to a multicast group.
	ErrDatagram = errors.New("amtrelay: not a multicast UDP datagram")
	// ErrTooBig: the datagram cannot be encapsulated in one UDP datagram.
	ErrTooBig = errors.New("amtrelay: datagram too big")
	// ErrNativeUnsupported: native multicast reception is not implemented on
	// this platform.
	ErrNativeUnsupported = errors.New("amtrelay: native multicast not supported on this platform")
)

// Options configures a Relay. The zero value of a field selects its default.
type Options struct {
	// Listen is the UDP address to bind, default ":2268". An empty host
	// binds both families (0.0.0.0 and [::], on the same port); an IPv4 or
	// IPv6 literal binds that family only.
	Listen string
	// Advertise is the address put in Relay Advertisements answering
	// discoveries of its family, for a relay behind a cloud NAT. By default
	// the relay advertises its bound address or, bound to a wildcard, the
	// local address the discovery arrived on (an interface address when
	// that was the anycast discovery address).
	Advertise netip.Addr
	// QueryInterval is the QQIC sent in queries (default 125 s). It must
	// stay below 128 s, where QQIC is literal seconds (VLC reads it so).
	QueryInterval time.Duration
	// Robustness is the QRV, 1–7 (default 2).
	Robustness int
	// QueryResponseInterval is the Max Resp Code of queries (default 10 s).
	// State expires after Robustness × QueryInterval + QueryResponseInterval
	// without a refresh.
	QueryResponseInterval time.Duration
	// SecretRotation is how often the MAC secret changes, at least 2 h
	// (default). MACs under the previous secret stay valid for one more
	// period, and a live tunnel's MAC stays valid while it is refreshed.
	SecretRotation time.Duration
	// MaxGateways limits tunnels (default 10000). When full, queries to
	// gateways without a tunnel carry the L flag and their updates are
	// refused.
	MaxGateways int
	// MaxChannelsPerGateway limits the (S,G) one tunnel may join (default 64).
	MaxChannelsPerGateway int
	// MaxChannels limits distinct (S,G) across all tunnels (default 4096);
	// it also bounds native multicast memberships.
	MaxChannels int
	// RequestRate and RequestBurst limit Requests and Discoveries per
	// source address (defaults 20/s, burst 40). They elicit replies larger
	// than themselves, so they must not be a reflection amplifier. Gateways
	// sharing a carrier-grade NAT share the budget.
	RequestRate  float64
	RequestBurst int
	// SendGatewayAddr sets the G flag: queries carry the gateway address
	// and port the relay saw. Opt-in: VLC expects exactly 48-byte IPv4
	// queries without it.
	SendGatewayAddr bool
	// CiscoMACQuirk accepts a response MAC whose first four bytes match,
	// for Cisco IOS-XE 03.16 gateways that echo the last two wrongly. It
	// weakens the MAC from 48 to 32 bits; off by default.
	CiscoMACQuirk bool
	// NativeInterface receives native SSM on this interface for the
	// channels gateways join ("" = off). It needs root (raw sockets).
	NativeInterface string
	// Logger receives the relay's logs; nil uses slog.Default().
	Logger *slog.Logger

	// Test knobs.
	minRotation time.Duration // replaces MinSecretRotation
	randSource  io.Reader     // secrets; nil = crypto/rand
	batchSize   int           // messages per sendmmsg; 0 = 64
	refusalLog  time.Duration // DefaultRefusalLogInterval if 0
}

// withDefaults returns o with every zero field given its default.
func (o Options) withDefaults() Options {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.QueryInterval == 0 {
		o.QueryInterval = DefaultQueryInterval
	}
	if o.Robustness == 0 {
		o.Robustness = DefaultRobustness
	}
	if o.QueryResponseInterval == 0 {
		o.QueryResponseInterval = DefaultQueryResponseInterval
	}
	if o.SecretRotation == 0 {
		o.SecretRotation = DefaultSecretRotation
	}
	if o.MaxGateways == 0 {
		o.MaxGateways = DefaultMaxGateways
	}
	if o.MaxChannelsPerGateway == 0 {
		o.MaxChannelsPerGateway = DefaultMaxChannelsPerGateway
	}
	if o.MaxChannels == 0 {
		o.MaxChannels = DefaultMaxChannels
	}
	if o.RequestRate == 0 {
		o.RequestRate = DefaultRequestRate
	}
	if o.RequestBurst == 0 {
		o.RequestBurst = DefaultRequestBurst
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.batchSize == 0 {
		o.batchSize = 64
	}
	if o.refusalLog == 0 {
		o.refusalLog = DefaultRefusalLogInterval
	}
	o.Advertise = o.Advertise.Unmap()
	return o
}

// check validates the options after withDefaults; its errors (ErrOptions)
// name the fields.
func (o Options) check() error {
	minRot := MinSecretRotation
	if o.minRotation != 0 {
		minRot = o.minRotation
	}
	switch {
	case o.QueryInterval < 0 || o.QueryInterval > maxQueryInterval:
		return fmt.Errorf("%w: QueryInterval %v not in (0, %v]", ErrOptions, o.QueryInterval, maxQueryInterval)
	case o.Robustness < 1 || o.Robustness > 7:
		return fmt.Errorf("%w: Robustness %d not in 1..7", ErrOptions, o.Robustness)
	case o.QueryResponseInterval < 0 || o.QueryResponseInterval > o.QueryInterval:
		// RFC 3376 §8.3: the response interval must be less than the
		// query interval.
		return fmt.Errorf("%w: QueryResponseInterval %v not in (0, QueryInterval]", ErrOptions, o.QueryResponseInterval)
	case o.SecretRotation < minRot:
		return fmt.Errorf("%w: SecretRotation %v below %v (RFC 7450)", ErrOptions, o.SecretRotation, minRot)
	case o.MaxGateways < 0 || o.MaxChannelsPerGateway < 0 || o.MaxChannels < 0:
		return fmt.Errorf("%w: MaxGateways, MaxChannelsPerGateway and MaxChannels must not be negative", ErrOptions)
	case o.RequestRate < 0 || o.RequestBurst < 0:
		return fmt.Errorf("%w: RequestRate and RequestBurst must not be negative", ErrOptions)
	case o.Advertise.IsValid() && (o.Advertise.IsUnspecified() || o.Advertise.IsMulticast()):
		return fmt.Errorf("%w: Advertise %v is not a unicast address", ErrOptions, o.Advertise)
	}
	return nil
}

// groupMembershipInterval is how long state lives without a refresh
// (RFC 3376 §8.4, RFC 7450 §5.3).
func (o Options) groupMembershipInterval() time.Duration {
	return time.Duration(o.Robustness)*o.QueryInterval + o.QueryResponseInterval
}

// Relay is an AMT relay. Create it with New, serve with Run.
type Relay struct {
	opts  Options
	log   *slog.Logger
	gmi   time.Duration
	conns []*conn // one per address family

	keys    atomic.Pointer[keyring]
	limiter *ratelimit.PerAddr

	mu    sync.Mutex // guards the control state below
	tab   table
	index atomic.Pointer[index] // read lock-free by the data path

	native nativeReceiver // nil when NativeInterface is ""

	scratch sync.Pool // *fanScratch
	stats   counters

	running atomic.Bool
	closed  atomic.Bool
	closeMu sync.Once
}

// New binds the relay's sockets (and, with NativeInterface, its native
// multicast socket) and returns a Relay ready to Run.
func New(opts Options) (*Relay, error) {
	o := opts.withDefaults()
	if err := o.check(); err != nil {
		return nil, err
	}
	r := &Relay{
		opts:    o,
		log:     o.Logger.With("component", "amtrelay"),
		gmi:     o.groupMembershipInterval(),
		limiter: ratelimit.NewPerAddr(o.RequestRate, o.RequestBurst),
	}
	r.tab.init()
	r.index.Store(&index{})
	kr, err := newKeyring(nil, o.randSource, time.Now(), o.SecretRotation)
	if err != nil {
		return nil, err
	}
	r.keys.Store(kr)
	r.scratch.New = func() any { return newFanScratch(o.batchSize) }

	if r.conns, err = listen(o.Listen, r.log); err != nil {
		return nil, err
	}
	if o.NativeInterface != "" {
		if r.native, err = newNative(o.NativeInterface, r.log); err != nil {
			r.closeConns()
			return nil, err
		}
	}
	return r, nil
}

// Addr returns the bound address: the IPv4 one when both families are bound.
func (r *Relay) Addr() net.Addr { return r.conns[0].laddr() }

// Addrs returns every bound address, one per family.
func (r *Relay) Addrs() []net.Addr {
	out := make([]net.Addr, len(r.conns))
	for i, c := range r.conns {
		out[i] = c.laddr()
	}
	return out
}

// Run serves until ctx is done or a socket fails, then closes the relay.
// It returns nil after ctx is done.
func (r *Relay) Run(ctx context.Context) error {
	if r.closed.Load() {
		return ErrClosed
	}
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(r.conns)+2)
	var wg sync.WaitGroup
	for _, c := range r.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- r.serve(c)
		}()
	}
	if r.native != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- r.native.run(r.forwardNative)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.maintain(ctx)
	}()
	r.log.Info("relay running", "listen", r.Addrs(), "native", r.opts.NativeInterface,
		"query_interval", r.opts.QueryInterval, "expiry", r.gmi)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	r.Close()
	wg.Wait()
	if err != nil && r.closedCleanly(err) {
		err = nil
	}
	return err
}

// closedCleanly reports whether err is the read error of a socket that
// Close shut.
func (r *Relay) closedCleanly(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, ErrClosed)
}

// Close releases the sockets; Run returns. Use it for a relay that was
// never Run.
func (r *Relay) Close() error {
	r.closeMu.Do(func() {
		r.closed.Store(true)
		r.closeConns()
		if r.native != nil {
			r.native.close()
		}
	})
	return nil
}

func (r *Relay) closeConns() {
	for _, c := range r.conns {
		c.close()
	}
}

// maintain expires state, rotates the secret and summarises refusals.
func (r *Relay) maintain(ctx context.Context) {
	tick := min(max(r.gmi/16, 10*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.logRefusals(time.Now(), true)
			return
		case now := <-t.C:
			r.expire(now)
			r.logRefusals(now, false)
			if kr := r.keys.Load(); !now.Before(kr.next) {
				if err := r.rotate(now); err != nil {
					r.log.Error("secret rotation failed", "err", err)
				}
			}
		}
	}
}

// rotate makes a new current secret; the current one becomes the previous.
func (r *Relay) rotate(now time.Time) error {
	kr, err := newKeyring(r.keys.Load(), r.opts.randSource, now, r.opts.SecretRotation)
	if err != nil {
		return err
	}
	r.keys.Store(kr)
	r.log.Debug("rotated MAC secret", "generation", kr.gen)
	return nil
}

// GatewayInfo describes one tunnel, for dashboards and health checks.
type GatewayInfo struct {
	Addr       netip.AddrPort // gateway address and port as the relay sees them
	Local      netip.Addr     // relay address the gateway talks to, if known
	Channels   []amt.Channel
	Created    time.Time
	LastUpdate time.Time // last authenticated Membership Update
	Expires    time.Time
}

// Gateways returns the current tunnels.
func (r *Relay) Gateways() []GatewayInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]GatewayInfo, 0, len(r.tab.tunnels))
	for _, t := range r.tab.tunnels {
		gi := GatewayInfo{
			Addr: t.key, Local: t.local, Created: t.created,
			LastUpdate: t.lastUpdate, Expires: t.lastUpdate.Add(r.gmi),
			Channels: make([]amt.Channel, 0, len(t.chans)),
		}
		for ch := range t.chans {
			gi.Channels = append(gi.Channels, ch)
		}
		sortChannels(gi.Channels)
		out = append(out, gi)
	}
	return out
}

package mcrecv

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/lossconn"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

var errReaderGone = errors.New("mcrecv: the object's reader went away")

// nativeConn is a UDP socket receiving one SSM channel.
type nativeConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	Close() error
}

// listenSSM joins (S,G) on iface ("" lets the kernel route the group: the
// default route's interface) with a socket bound to G:port, so that only
// the channel's datagrams reach it.
func listenSSM(ch manifest.Channel, iface string) (nativeConn, error) {
	var ifi *net.Interface
	if iface != "" {
		var err error
		if ifi, err = net.InterfaceByName(iface); err != nil {
			return nil, err
		}
	}
	network := "udp4"
	if ch.Group.Is6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ch.Group, ch.Port)))
	if err != nil {
		return nil, err
	}
	g, s := &net.UDPAddr{IP: ch.Group.AsSlice()}, &net.UDPAddr{IP: ch.Source.AsSlice()}
	if ch.Group.Is4() {
		err = ipv4.NewPacketConn(c).JoinSourceSpecificGroup(ifi, g, s)
	} else {
		err = ipv6.NewPacketConn(c).JoinSourceSpecificGroup(ifi, g, s)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadBuffer(1 << 20)
	return lossconn.Wrap(c), nil // closing the socket leaves the channel; lossconn: a test hook, off unless BLOCKCAST_TEST_LOSS is set
}

// channels holds the channel subscriptions, shared by the objects on one
// channel (and path).
type channels struct {
	r    *Receiver
	mu   sync.Mutex
	subs map[subKey]*subscription
}

type subKey struct {
	ch     manifest.Channel
	viaAMT bool
}

type subscription struct {
	c       *channels
	key     subKey
	objs    map[mcproto.Object]*object // c.mu
	conn    nativeConn
	cancel  func() // AMT: stops the gateway's calls
	leaveGW bool   // AMT: this receiver joined the channel at the gateway
	pkt     alc.Packet
}

func newChannels(r *Receiver) *channels { return &channels{r: r, subs: map[subKey]*subscription{}} }

// count returns the channels joined now by path.
func (c *channels) count() (native, viaAMT int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.subs {
		if k.viaAMT {
			viaAMT++
		} else {
			native++
		}
	}
	return native, viaAMT
}

// subscribe adds o to its channel's subscription on one path, joining the
// channel when o is the first.
func (c *channels) subscribe(o *object, viaAMT bool) (*subscription, error) {
	k := subKey{ch: o.m.Channel, viaAMT: viaAMT}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.subs[k]; s != nil {
		s.objs[o.id] = o
		return s, nil
	}
	s := &subscription{c: c, key: k, objs: map[mcproto.Object]*object{o.id: o}}
	r := c.r
	ch := amt.Channel{Source: k.ch.Source, Group: k.ch.Group}
	if viaAMT {
		gw := r.opts.Gateway
		relay, _ := netip.ParseAddrPort(o.offer.AMTRelay) // checked by DecodeOffer; empty: the gateway's own relays
		s.leaveGW = !slices.Contains(gw.Joined(), ch)
		if err := gw.Join(ch, relay, false); err != nil {
			return nil, err
		}
		s.cancel = gw.Subscribe(s.fromAMT)
		inc(&r.c.joins, "amt")
	} else {
		conn, err := r.opts.ListenNative(k.ch, r.opts.Interface)
		if err != nil {
			return nil, err
		}
		s.conn = conn
		go s.readNative()
		inc(&r.c.joins, "native")
	}
	c.subs[k] = s
	r.log.Debug("multicast: joined", "channel", chanString(k.ch), "amt", viaAMT)
	return s, nil
}

// release drops o; the last object leaves the channel.
func (s *subscription) release(o *object) {
	c := s.c
	c.mu.Lock()
	delete(s.objs, o.id)
	last := len(s.objs) == 0 && c.subs[s.key] == s
	if last {
		delete(c.subs, s.key)
	}
	c.mu.Unlock()
	if !last {
		return
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.cancel != nil {
		s.cancel()
		if s.leaveGW {
			if err := c.r.opts.Gateway.Leave(amt.Channel{Source: s.key.ch.Source, Group: s.key.ch.Group}); err != nil {
				c.r.log.Debug("multicast: AMT leave", "err", err)
			}
		}
	}
	c.r.log.Debug("multicast: left", "channel", chanString(s.key.ch), "amt", s.key.viaAMT)
}

func (s *subscription) readNative() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.c.r.log.Warn("multicast: native socket", "channel", chanString(s.key.ch), "err", err)
			}
			return
		}
		// The SSM join filters sources in the kernel; check anyway.
		if from.Addr().Unmap() != s.key.ch.Source {
			s.c.r.c.source.Add(1)
			continue
		}
		s.dispatch(buf[:n])
	}
}

// fromAMT is called by the gateway, in order, from one goroutine.
func (s *subscription) fromAMT(ch amt.Channel, d amt.Datagram) {
	k := s.key.ch
	if d.Dst != k.Group || d.DstPort != k.Port {
		return // another channel or port of the gateway's
	}
	if d.Src != k.Source {
		s.c.r.c.source.Add(1)
		return
	}
	s.dispatch(d.Payload)
}

// dispatch hands a datagram to the object it belongs to. One goroutine per
// subscription calls it.
func (s *subscription) dispatch(b []byte) {
	o := s.c.lookup(s, b, &s.pkt)
	if o != nil {
		o.feed(b, &s.pkt, labelMulticast)
	}
}

// lookup finds the object a packet belongs to (by TSI and TOI; hash-list
// packets carry TOI|HashListBit). Manifest repeats (TOI 0) are ignored:
// the offer carried the manifest.
func (c *channels) lookup(s *subscription, b []byte, p *alc.Packet) *object {
	if err := p.Decode(b); err != nil {
		c.r.c.unwanted.Add(1)
		return nil
	}
	if p.TOI == manifest.ManifestTOI {
		return nil
	}
	id := mcproto.Object{TSI: uint32(p.TSI), TOI: uint32(p.TOI &^ manifest.HashListBit)}
	c.mu.Lock()
	o := s.objs[id]
	c.mu.Unlock()
	if o == nil || uint64(id.TSI) != p.TSI || uint64(id.TOI)|p.TOI&manifest.HashListBit != p.TOI {
		c.r.c.unwanted.Add(1)
		return nil
	}
	return o
}

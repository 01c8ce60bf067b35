package mcsend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/lossconn"
	"github.com/blockcast/beacon/shared/manifest"
)

// ErrSource: a packet for a channel whose source is not this sink's
// address; it would leave with the wrong S and no SSM receiver would
// take it.
var ErrSource = errors.New("mcsend: channel source is not the sink's address")

// UDPSink sends natively: one UDP socket per address family, bound to an
// address of the multicast interface, so that the packets' source is the
// channel's S.
type UDPSink struct {
	iface *net.Interface
	conns map[netip.Addr]*net.UDPConn
}

// NativeSink opens the native multicast sink on iface, an interface name
// or one of its addresses (--multicast-iface), with the given multicast
// TTL (hop limit; 0: DefaultMulticastTTL). Given a name it takes the
// interface's first IPv4 and first global IPv6 address. Sources lists
// them, for the channel allocator.
func NativeSink(iface string, ttl int) (*UDPSink, error) {
	if ttl <= 0 {
		ttl = DefaultMulticastTTL
	}
	if ttl > 255 {
		return nil, fmt.Errorf("%w: multicast TTL %d", ErrBadOptions, ttl)
	}
	var ifi *net.Interface
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(iface); err == nil {
		ifi, err = interfaceOf(a.Unmap())
		if err != nil {
			return nil, err
		}
		addrs = []netip.Addr{a.Unmap()}
	} else {
		ifi, err = net.InterfaceByName(iface)
		if err != nil {
			return nil, fmt.Errorf("%w: multicast interface %q: %w", ErrBadOptions, iface, err)
		}
		as, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("%w: multicast interface %q: %w", ErrBadOptions, iface, err)
		}
		var v4, v6 netip.Addr
		for _, x := range as {
			p, err := netip.ParsePrefix(x.String())
			if err != nil {
				continue
			}
			a := p.Addr().Unmap()
			switch {
			case a.Is4() && !v4.IsValid():
				v4 = a
			case a.Is6() && !v6.IsValid() && !a.IsLinkLocalUnicast():
				v6 = a
			}
		}
		for _, a := range []netip.Addr{v4, v6} {
			if a.IsValid() {
				addrs = append(addrs, a)
			}
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("%w: multicast interface %q has no usable address", ErrBadOptions, iface)
		}
	}
	u := &UDPSink{iface: ifi, conns: map[netip.Addr]*net.UDPConn{}}
	for _, a := range addrs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("mcsend: native sink on %v: %w", a, err)
		}
		u.conns[a] = c
		if a.Is4() {
			pc := ipv4.NewPacketConn(c)
			err = errors.Join(pc.SetMulticastInterface(ifi), pc.SetMulticastTTL(ttl))
		} else {
			pc := ipv6.NewPacketConn(c)
			err = errors.Join(pc.SetMulticastInterface(ifi), pc.SetMulticastHopLimit(ttl))
		}
		if err != nil {
			u.Close()
			return nil, fmt.Errorf("mcsend: native sink on %v (%s): %w", a, ifi.Name, err)
		}
	}
	return u, nil
}

func interfaceOf(a netip.Addr) (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("mcsend: interfaces: %w", err)
	}
	for i := range ifs {
		as, _ := ifs[i].Addrs()
		for _, x := range as {
			if p, err := netip.ParsePrefix(x.String()); err == nil && p.Addr().Unmap() == a {
				return &ifs[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%w: no interface has address %v", ErrBadOptions, a)
}

// Sources are the addresses the sink sends from (the channels' S).
func (u *UDPSink) Sources() []netip.Addr {
	out := make([]netip.Addr, 0, len(u.conns))
	for a := range u.conns {
		out = append(out, a)
	}
	return out
}

// Interface is the interface the sink sends on.
func (u *UDPSink) Interface() *net.Interface { return u.iface }

// Send sends pkt to the channel's group and port from its source.
func (u *UDPSink) Send(ch manifest.Channel, pkt []byte) error {
	c := u.conns[ch.Source]
	if c == nil {
		return fmt.Errorf("%w: %v", ErrSource, ch.Source)
	}
	if !ch.Group.IsMulticast() {
		return fmt.Errorf("mcsend: group %v is not multicast", ch.Group)
	}
	if lossconn.DropTx() { // test hook, off unless BLOCKCAST_TEST_LOSS is set
		return nil
	}
	_, err := c.WriteToUDPAddrPort(pkt, netip.AddrPortFrom(ch.Group, ch.Port))
	return err
}

// Close closes the sockets.
func (u *UDPSink) Close() error {
	var errs []error
	for _, c := range u.conns {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// AMTSink returns a Sink that wraps each packet in the IP and UDP
// headers native multicast would carry ((S,G), destination port the
// channel's, source port the same) and hands it to inject, castd's AMT
// relay (amtrelay.Relay.Inject).
func AMTSink(inject func(inner []byte) error) Sink { return &amtSink{inject: inject} }

type amtSink struct {
	inject func([]byte) error
	pool   sync.Pool
}

func (a *amtSink) Send(ch manifest.Channel, pkt []byte) error {
	bp, _ := a.pool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	b, err := amt.AppendInnerUDP((*bp)[:0], amt.Datagram{Src: ch.Source, Dst: ch.Group,
		SrcPort: ch.Port, DstPort: ch.Port, Payload: pkt})
	if err == nil {
		err = a.inject(b)
	}
	*bp = b
	a.pool.Put(bp)
	if err != nil {
		return fmt.Errorf("mcsend: AMT inject: %w", err)
	}
	return nil
}

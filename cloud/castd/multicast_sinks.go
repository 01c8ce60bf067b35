package castd

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

// amtSink puts ALC packets into castd's own AMT relay: each becomes the
// inner IP/UDP datagram (S,G,port) that gateways joined to the channel get.
type amtSink struct {
	inject func(inner []byte) error
	bufs   sync.Pool
}

func newAMTSink(inject func([]byte) error) *amtSink {
	return &amtSink{inject: inject, bufs: sync.Pool{New: func() any { b := make([]byte, 0, 1600); return &b }}}
}

// Send implements mcsend.Sink.
func (a *amtSink) Send(ch manifest.Channel, pkt []byte) error {
	bp := a.bufs.Get().(*[]byte)
	defer a.bufs.Put(bp)
	inner, err := amt.AppendInnerUDP((*bp)[:0], amt.Datagram{
		Src: ch.Source, Dst: ch.Group, SrcPort: ch.Port, DstPort: ch.Port, Payload: pkt,
	})
	if err != nil {
		return fmt.Errorf("castd: AMT sink: %w", err)
	}
	*bp = inner
	return a.inject(inner)
}

// nativeSink sends ALC packets natively on --multicast-iface: one UDP
// socket per family bound to the interface's address (the channel's
// source S), with the interface as the multicast egress.
type nativeSink struct {
	v4, v6 *net.UDPConn
}

// multicastHops is the TTL / hop limit of natively sent packets: enough for
// a provider's multicast-enabled network, not the whole internet.
const multicastHops = 16

func newNativeSink(iface string, sources []netip.Addr) (*nativeSink, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	ns := &nativeSink{}
	for _, src := range sources {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			ns.Close()
			return nil, fmt.Errorf("sending from %v: %w", src, err)
		}
		if src.Is4() {
			p := ipv4.NewPacketConn(c)
			err = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastTTL(multicastHops), p.SetMulticastLoopback(false))
			ns.v4 = c
		} else {
			p := ipv6.NewPacketConn(c)
			err = errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastHopLimit(multicastHops), p.SetMulticastLoopback(false))
			ns.v6 = c
		}
		if err != nil {
			ns.Close()
			return nil, fmt.Errorf("multicast on %s: %w", iface, err)
		}
	}
	return ns, nil
}

// Send implements mcsend.Sink.
func (n *nativeSink) Send(ch manifest.Channel, pkt []byte) error {
	c := n.v6
	if ch.Group.Is4() {
		c = n.v4
	}
	if c == nil {
		return fmt.Errorf("castd: no native socket for %v", ch.Group)
	}
	if lossconn.DropTx() { // test hook, off unless BLOCKCAST_TEST_LOSS is set
		return nil
	}
	_, err := c.WriteToUDPAddrPort(pkt, netip.AddrPortFrom(ch.Group, ch.Port))
	return err
}

// Close closes the sockets.
func (n *nativeSink) Close() error {
	var errs []error
	for _, c := range []*net.UDPConn{n.v4, n.v6} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

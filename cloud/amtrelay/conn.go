package amtrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"github.com/blockcast/beacon/shared/amt"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Socket buffer sizes. A fan-out batch is 64 × ~1.3 kB; the kernel caps
// these at net.core.{w,r}mem_max unless the process is privileged.
const (
	sendBuffer = 4 << 20
	recvBuffer = 1 << 20
)

// conn is the relay's UDP socket for one address family. Replies and data
// go out of the socket the gateway talks to, so they come from port 2268.
type conn struct {
	is6   bool
	uc    *net.UDPConn
	p4    *ipv4.PacketConn // set for IPv4
	p6    *ipv6.PacketConn // set for IPv6
	bound netip.Addr       // bound address, maybe unspecified
	// wildcard: bound to 0.0.0.0 or ::, so replies name their source
	// address (IP_PKTINFO) to leave from the address the gateway used,
	// as RFC 7450 §5.1.2 and §5.1.4 ask and gateways (VLC) check.
	wildcard bool
	// noBatch: sendmmsg is unavailable (ENOSYS, e.g. under a seccomp
	// filter); send one message per syscall instead.
	noBatch atomic.Bool
}

// listen binds the relay's sockets for addr (see Options.Listen).
func listen(addr string, log *slog.Logger) ([]*conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: Listen %q: %v", ErrOptions, addr, err)
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil {
		return nil, fmt.Errorf("%w: Listen %q: %v", ErrOptions, addr, err)
	}
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			ua, rerr := net.ResolveUDPAddr("udp", addr)
			if rerr != nil {
				return nil, fmt.Errorf("amtrelay: listen %q: %w", addr, rerr)
			}
			ip, _ = netip.AddrFromSlice(ua.IP)
		}
		c, err := listenOne(netip.AddrPortFrom(ip.Unmap(), uint16(port)))
		if err != nil {
			return nil, err
		}
		return []*conn{c}, nil
	}

	// Both families on one port. With port 0 the IPv4 socket picks it and
	// the IPv6 one follows; retry if that port is taken for IPv6.
	for attempt := 0; ; attempt++ {
		c4, err := listenOne(netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)))
		if err != nil {
			return nil, err
		}
		p := c4.laddr().(*net.UDPAddr).Port
		c6, err := listenOne(netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(p)))
		if err == nil {
			return []*conn{c4, c6}, nil
		}
		if port == 0 && errors.Is(err, syscall.EADDRINUSE) && attempt < 8 {
			c4.close()
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			c4.close()
			return nil, err
		}
		// No IPv6 on this host: serve IPv4 only.
		log.Warn("IPv6 socket unavailable; serving IPv4 only", "err", err)
		return []*conn{c4}, nil
	}
}

func listenOne(ap netip.AddrPort) (*conn, error) {
	network := "udp4"
	if ap.Addr().Is6() {
		network = "udp6" // Go sets IPV6_V6ONLY for "udp6"
	}
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("amtrelay: listen %v: %w", ap, err)
	}
	c := &conn{is6: ap.Addr().Is6(), uc: uc, bound: ap.Addr(), wildcard: ap.Addr().IsUnspecified()}
	// Best effort: the kernel caps them at its maximum.
	_ = uc.SetWriteBuffer(sendBuffer)
	_ = uc.SetReadBuffer(recvBuffer)
	if err := setDontFragment(uc, c.is6); err != nil {
		uc.Close()
		return nil, fmt.Errorf("amtrelay: %v: set DF: %w", ap, err)
	}
	if c.is6 {
		c.p6 = ipv6.NewPacketConn(uc)
		err = c.p6.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	} else {
		c.p4 = ipv4.NewPacketConn(uc)
		err = c.p4.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	}
	if err != nil && c.wildcard {
		// Without the destination address a wildcard socket cannot
		// answer from the address the gateway used.
		uc.Close()
		return nil, fmt.Errorf("amtrelay: %v: packet info: %w", ap, err)
	}
	return c, nil
}

func (c *conn) laddr() net.Addr { return c.uc.LocalAddr() }

func (c *conn) close() { c.uc.Close() }

// read reads one datagram and reports its source, the local address it was
// sent to (invalid if unknown) and the receiving interface.
func (c *conn) read(b []byte) (n int, src netip.AddrPort, dst netip.Addr, ifIndex int, err error) {
	var from net.Addr
	if c.is6 {
		var cm *ipv6.ControlMessage
		n, cm, from, err = c.p6.ReadFrom(b)
		if cm != nil {
			dst, _ = netip.AddrFromSlice(cm.Dst)
			ifIndex = cm.IfIndex
		}
	} else {
		var cm *ipv4.ControlMessage
		n, cm, from, err = c.p4.ReadFrom(b)
		if cm != nil {
			dst, _ = netip.AddrFromSlice(cm.Dst)
			ifIndex = cm.IfIndex
		}
	}
	if err != nil {
		return 0, src, dst, 0, err
	}
	if ua, ok := from.(*net.UDPAddr); ok {
		src = ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	}
	if !dst.IsValid() && !c.wildcard {
		dst = c.bound
	}
	return n, src, dst.Unmap(), ifIndex, nil
}

// reply sends a control message to a gateway from local, the address the
// gateway sent its message to.
func (c *conn) reply(b []byte, to netip.AddrPort, local netip.Addr) error {
	ua := net.UDPAddrFromAddrPort(to)
	var err error
	if c.is6 {
		var cm *ipv6.ControlMessage
		if c.wildcard && local.IsValid() && !local.IsMulticast() {
			cm = &ipv6.ControlMessage{Src: local.AsSlice()}
		}
		_, err = c.p6.WriteTo(b, cm, ua)
	} else {
		var cm *ipv4.ControlMessage
		if c.wildcard && local.IsValid() && !local.IsMulticast() {
			cm = &ipv4.ControlMessage{Src: local.AsSlice()}
		}
		_, err = c.p4.WriteTo(b, cm, ua)
	}
	return err
}

// sourceOOB is the control message that makes data to a gateway leave from
// local, or nil when the socket's bound address already does.
func (c *conn) sourceOOB(local netip.Addr) []byte {
	if !c.wildcard || !local.IsValid() || local.IsMulticast() {
		return nil
	}
	if c.is6 {
		return (&ipv6.ControlMessage{Src: local.AsSlice()}).Marshal()
	}
	return (&ipv4.ControlMessage{Src: local.AsSlice()}).Marshal()
}

// writeBatch sends ms with one sendmmsg where the platform has it and
// returns how many went out before the first failure; x/net's WriteBatch
// sends one message per call on other platforms.
func (c *conn) writeBatch(ms []ipv4.Message) (int, error) {
	if !c.noBatch.Load() {
		var n int
		var err error
		if c.is6 {
			n, err = c.p6.WriteBatch(ms, 0)
		} else {
			n, err = c.p4.WriteBatch(ms, 0)
		}
		if !errors.Is(err, syscall.ENOSYS) {
			return max(n, 0), err
		}
		c.noBatch.Store(true)
	}
	for i := range ms {
		ua, _ := ms[i].Addr.(*net.UDPAddr)
		if _, _, err := c.uc.WriteMsgUDP(ms[i].Buffers[0], ms[i].OOB, ua); err != nil {
			return i, err
		}
	}
	return len(ms), nil
}

// localAddrFor picks the address to advertise on a discovery that arrived
// at dst on interface ifIndex (RFC 7450 §5.3: a unicast address of the
// relay, not the anycast discovery address).
func (c *conn) localAddrFor(dst netip.Addr, ifIndex int) netip.Addr {
	if !c.wildcard {
		return c.bound
	}
	if dst.IsValid() && !dst.IsUnspecified() && !dst.IsMulticast() && !isDiscoveryAnycast(dst) {
		return dst
	}
	ifi, err := net.InterfaceByIndex(ifIndex)
	if err != nil {
		return netip.Addr{}
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}
	}
	var fallback netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is6() != c.is6 || isDiscoveryAnycast(ip) || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		if ip.IsGlobalUnicast() && !ip.IsPrivate() {
			return ip
		}
		if !fallback.IsValid() {
			fallback = ip
		}
	}
	return fallback
}

// udpAddr is net.UDPAddrFromAddrPort with the IPv4 address in 4-byte form,
// which is what x/net's sendmmsg marshalling tests for.
func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	a := ap.Addr().Unmap()
	return &net.UDPAddr{IP: a.AsSlice(), Port: int(ap.Port()), Zone: a.Zone()}
}

func isDiscoveryAnycast(a netip.Addr) bool {
	return amt.DiscoveryPrefix4.Contains(a) || amt.DiscoveryPrefix6.Contains(a)
}

package amtrelay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/blockcast/beacon/shared/amt"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// native receives SSM on one interface. Raw sockets ("ip4:udp",
// "ip6:udp") see whole datagrams of every port, filtered in the kernel to
// that interface (and, for IPv4, to multicast destinations). Memberships
// are held by one plain UDP socket per channel: a socket holds at most
// net.ipv4.igmp_max_memberships (20) groups of igmp_max_msf (10) sources,
// and a membership on a raw socket would not help it see more.
type native struct {
	ifi  *net.Interface
	log  *slog.Logger
	raw4 *ipv4.RawConn
	raw6 *ipv6.PacketConn // nil without IPv6

	mu      sync.Mutex
	holders map[amt.Channel]*net.UDPConn
	closed  bool
}

func newNative(name string, log *slog.Logger) (nativeReceiver, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("amtrelay: native interface %q: %w", name, err)
	}
	n := &native{ifi: ifi, log: log, holders: make(map[amt.Channel]*net.UDPConn)}

	pc, err := net.ListenPacket("ip4:udp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("amtrelay: native multicast on %q needs root or CAP_NET_RAW: %w", name, err)
	}
	if n.raw4, err = ipv4.NewRawConn(pc); err == nil {
		err = n.raw4.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true)
	}
	if err == nil {
		err = n.raw4.SetBPF(mustAssemble(filter4(ifi.Index)))
	}
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("amtrelay: native IPv4 socket on %q: %w", name, err)
	}

	pc6, err := net.ListenPacket("ip6:udp", "::")
	if err != nil {
		log.Warn("native IPv6 multicast unavailable", "interface", name, "err", err)
		return n, nil
	}
	n.raw6 = ipv6.NewPacketConn(pc6)
	err = n.raw6.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst|ipv6.FlagHopLimit, true)
	if err == nil {
		err = n.raw6.SetBPF(mustAssemble(filter6(ifi.Index)))
	}
	if err != nil {
		n.raw4.Close()
		pc6.Close()
		return nil, fmt.Errorf("amtrelay: native IPv6 socket on %q: %w", name, err)
	}
	return n, nil
}

// filter4 accepts IPv4 datagrams that arrived on ifIndex for a multicast
// destination (the raw socket sees the IP header at offset 0).
func filter4(ifIndex int) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtInterfaceIndex},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ifIndex), SkipTrue: 4},
		bpf.LoadAbsolute{Off: 16, Size: 1}, // first byte of the destination
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0xe0, SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 18},
		bpf.RetConstant{Val: 0},
	}
}

// filter6 accepts what arrived on ifIndex; an IPv6 raw socket sees no IP
// header, so the destination is checked in user space.
func filter6(ifIndex int) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtInterfaceIndex},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ifIndex), SkipTrue: 1},
		bpf.RetConstant{Val: 1 << 18},
		bpf.RetConstant{Val: 0},
	}
}

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(fmt.Sprintf("amtrelay: BPF program: %v", err)) // a bug in the constants above
	}
	return raw
}

func (n *native) run(forward func([]byte)) error {
	errc := make(chan error, 2)
	go func() { errc <- n.read4(forward) }()
	if n.raw6 != nil {
		go func() { errc <- n.read6(forward) }()
		err := <-errc
		n.close()
		<-errc
		return err
	}
	return <-errc
}

func (n *native) read4(forward func([]byte)) error {
	buf := make([]byte, 1<<16)
	for {
		h, p, cm, err := n.raw4.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			n.log.Debug("native IPv4 read failed", "err", err)
			continue
		}
		if cm != nil && cm.IfIndex != n.ifi.Index {
			continue
		}
		// x/net parsed the header out of buf; the datagram is still whole.
		if pkt := buf[:h.Len+len(p)]; nativeIPv4(pkt) {
			forward(pkt)
		}
	}
}

func (n *native) read6(forward func([]byte)) error {
	buf := make([]byte, 1<<16)
	out := make([]byte, 0, 1<<16+64)
	for {
		nr, cm, from, err := n.raw6.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			n.log.Debug("native IPv6 read failed", "err", err)
			continue
		}
		ia, ok := from.(*net.IPAddr)
		if cm == nil || cm.IfIndex != n.ifi.Index || !ok {
			continue
		}
		src, _ := netip.AddrFromSlice(ia.IP)
		dst, _ := netip.AddrFromSlice(cm.Dst)
		var fwd bool
		if out, fwd = nativeIPv6(out[:0], src, dst, cm.HopLimit, buf[:nr]); fwd {
			forward(out)
		}
	}
}

func (n *native) join(ch amt.Channel) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if _, ok := n.holders[ch]; ok {
		return nil
	}
	g, s := ch.Group.Unmap(), ch.Source.Unmap()
	if g.Is6() && n.raw6 == nil {
		return fmt.Errorf("amtrelay: native join %v: no IPv6", ch)
	}
	network, wild := "udp4", netip.IPv4Unspecified()
	if g.Is6() {
		network, wild = "udp6", netip.IPv6Unspecified()
	}
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(wild, 0)))
	if err != nil {
		return fmt.Errorf("amtrelay: native join %v: %w", ch, err)
	}
	_ = uc.SetReadBuffer(1) // it holds a membership, it reads nothing
	ga, sa := &net.UDPAddr{IP: g.AsSlice()}, &net.UDPAddr{IP: s.AsSlice()}
	if g.Is6() {
		err = ipv6.NewPacketConn(uc).JoinSourceSpecificGroup(n.ifi, ga, sa)
	} else {
		err = ipv4.NewPacketConn(uc).JoinSourceSpecificGroup(n.ifi, ga, sa)
	}
	if err != nil {
		uc.Close()
		return fmt.Errorf("amtrelay: native join %v on %s: %w", ch, n.ifi.Name, err)
	}
	n.holders[ch] = uc
	n.log.Debug("native join", "channel", ch, "interface", n.ifi.Name)
	return nil
}

// leave drops the membership: closing the socket leaves the group.
func (n *native) leave(ch amt.Channel) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	uc, ok := n.holders[ch]
	if !ok {
		return nil
	}
	delete(n.holders, ch)
	n.log.Debug("native leave", "channel", ch, "interface", n.ifi.Name)
	return uc.Close()
}

func (n *native) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	n.raw4.Close()
	if n.raw6 != nil {
		n.raw6.Close()
	}
	for ch, uc := range n.holders {
		uc.Close()
		delete(n.holders, ch)
	}
}

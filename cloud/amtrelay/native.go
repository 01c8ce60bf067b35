package amtrelay

import (
	"encoding/binary"
	"net/netip"

	"github.com/blockcast/beacon/shared/amt"
)

// nativeReceiver receives native SSM for the channels gateways joined.
// join and leave are called with Relay.mu held, run from its own goroutine.
type nativeReceiver interface {
	// run reads datagrams and hands each whole IP datagram to forward
	// until close; it returns ErrClosed then.
	run(forward func(inner []byte)) error
	join(ch amt.Channel) error
	leave(ch amt.Channel) error
	close()
}

// nativeIPv4 checks a datagram a raw IPv4 socket received (IP header
// included) and returns it ready to relay: an unfragmented UDP datagram to
// a multicast group whose lengths agree, its checksum repaired if offload
// left it unfinished. The codec's ParseInnerUDP checks the rest.
func nativeIPv4(pkt []byte) bool {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) < ihl+8 || int(binary.BigEndian.Uint16(pkt[2:4])) != len(pkt) {
		return false
	}
	if pkt[9] != amt.ProtoUDP || binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or offset: a fragment
		return false
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	if !dst.IsMulticast() {
		return false
	}
	fixPartialChecksum(src, dst, pkt[ihl:])
	return true
}

// nativeIPv6 rebuilds, into out, the datagram whose UDP header and payload
// a raw IPv6 socket received (the kernel keeps the IPv6 header and reports
// source, destination and hop limit separately). Source, group, ports, hop
// limit and payload are the source's; the checksum is recomputed over the
// same values after the received one is checked.
func nativeIPv6(out []byte, src, dst netip.Addr, hopLimit int, udp []byte) ([]byte, bool) {
	if !src.Is6() || !dst.Is6() || !dst.IsMulticast() || len(udp) < 8 || !fixPartialChecksum(src, dst, udp) {
		return out, false
	}
	out, err := amt.AppendInnerUDP(out, amt.Datagram{
		Src: src, Dst: dst,
		SrcPort: binary.BigEndian.Uint16(udp[0:2]),
		DstPort: binary.BigEndian.Uint16(udp[2:4]),
		TTL:     uint8(hopLimit),
		Payload: udp[8:],
	})
	return out, err == nil
}

// pseudoSum is the folded one's-complement sum of the UDP pseudo-header.
func pseudoSum(src, dst netip.Addr, udpLen int) uint16 {
	var sum uint32
	for _, a := range [2]netip.Addr{src, dst} {
		b := a.AsSlice()
		for i := 0; i < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
	}
	sum += amt.ProtoUDP + uint32(udpLen&0xffff) + uint32(udpLen>>16)
	return fold(sum)
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// udpChecksum returns the checksum field a correct UDP datagram udp from
// src to dst carries.
func udpChecksum(src, dst netip.Addr, udp []byte) uint16 {
	sum := uint32(pseudoSum(src, dst, len(udp)))
	for i := 0; i+1 < len(udp); i += 2 {
		if i == 6 {
			continue // the checksum field itself
		}
		sum += uint32(binary.BigEndian.Uint16(udp[i:]))
	}
	if len(udp)%2 == 1 {
		sum += uint32(udp[len(udp)-1]) << 8
	}
	c := ^fold(sum)
	if c == 0 {
		c = 0xffff
	}
	return c
}

// fixPartialChecksum repairs the UDP checksum of a datagram a raw socket
// received with checksum offload unfinished: locally sent multicast looped
// back, or traffic from a veth or tap whose sender left the checksum to
// "hardware", carries only the pseudo-header sum (CHECKSUM_PARTIAL). Such a
// datagram never crossed a wire, so filling in the sum hides no corruption.
// Anything else with a wrong checksum is left alone for the parser to
// refuse. It reports whether udp's checksum is now valid.
func fixPartialChecksum(src, dst netip.Addr, udp []byte) bool {
	if len(udp) < 8 || int(binary.BigEndian.Uint16(udp[4:6])) != len(udp) {
		return false
	}
	got := binary.BigEndian.Uint16(udp[6:8])
	if got == 0 && src.Is4() {
		return true // no checksum (IPv4 only)
	}
	want := udpChecksum(src, dst, udp)
	if got == want {
		return true
	}
	if got != pseudoSum(src, dst, len(udp)) {
		return false
	}
	binary.BigEndian.PutUint16(udp[6:8], want)
	return true
}

package amt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

const udpHeaderLen = 8

// DefaultTTL is the TTL (hop limit) AppendInnerUDP uses when Datagram.TTL
// is zero.
const DefaultTTL = 64

// Datagram is a multicast UDP datagram as carried in Multicast Data: the
// source's own IP and UDP headers, so a receiver filters by (S,G,port)
// exactly as native multicast would.
type Datagram struct {
	Src, Dst         netip.Addr // source S and group G
	SrcPort, DstPort uint16
	TTL              uint8 // TTL or hop limit; 0 sends DefaultTTL
	Payload          []byte
}

// Channel returns the datagram's (S,G).
func (d Datagram) Channel() Channel { return Channel{Source: d.Src, Group: d.Dst} }

// ParseInnerUDP decodes the IPv4 or IPv6 UDP datagram inside a Multicast
// Data message without allocating. It verifies the IPv4 header checksum and
// the UDP checksum (optional over IPv4 when zero, mandatory over IPv6), and
// requires a multicast destination and a unicast source. Payload aliases b.
func ParseInnerUDP(b []byte) (Datagram, error) {
	var (
		d       Datagram
		payload []byte
	)
	if len(b) == 0 {
		return d, fmt.Errorf("inner: empty packet: %w", ErrShort)
	}
	switch b[0] >> 4 {
	case 4:
		h, p, err := ParseIPv4(b)
		if err != nil {
			return d, fmt.Errorf("inner: %w", err)
		}
		if h.Protocol != ProtoUDP {
			return d, fmt.Errorf("inner: protocol %d, want UDP: %w", h.Protocol, ErrProtocol)
		}
		d.Src, d.Dst, d.TTL, payload = h.Src, h.Dst, h.TTL, p
	case 6:
		h, p, err := ParseIPv6(b)
		if err != nil {
			return d, fmt.Errorf("inner: %w", err)
		}
		if h.NextHeader != ProtoUDP {
			return d, fmt.Errorf("inner: next header %d, want UDP: %w", h.NextHeader, ErrProtocol)
		}
		d.Src, d.Dst, d.TTL, payload = h.Src, h.Dst, h.HopLimit, p
	default:
		return d, fmt.Errorf("inner: IP version %d: %w", b[0]>>4, ErrVersion)
	}
	if !d.Dst.IsMulticast() || d.Src.IsMulticast() || d.Src.IsUnspecified() {
		return Datagram{}, fmt.Errorf("inner: %v -> %v is not multicast from a unicast source: %w", d.Src, d.Dst, ErrAddress)
	}
	if len(payload) < udpHeaderLen {
		return Datagram{}, fmt.Errorf("inner: UDP header of %d bytes: %w", len(payload), ErrShort)
	}
	if n := int(binary.BigEndian.Uint16(payload[4:6])); n != len(payload) {
		return Datagram{}, fmt.Errorf("inner: UDP length %d, IP payload %d: %w", n, len(payload), ErrLength)
	}
	sum := binary.BigEndian.Uint16(payload[6:8])
	if sum == 0 && d.Src.Is6() {
		return Datagram{}, fmt.Errorf("inner: zero UDP checksum over IPv6: %w", ErrChecksum)
	}
	if sum != 0 && upperChecksum(d.Src, d.Dst, ProtoUDP, payload) != 0 {
		return Datagram{}, fmt.Errorf("inner: UDP: %w", ErrChecksum)
	}
	d.SrcPort = binary.BigEndian.Uint16(payload[0:2])
	d.DstPort = binary.BigEndian.Uint16(payload[2:4])
	d.Payload = payload[udpHeaderLen:]
	return d, nil
}

// AppendInnerUDP appends d as an IP datagram ready for AppendData: an IPv4
// header (DF set, checksum) or IPv6 header, then UDP with its checksum.
// Dst must be multicast and Src unicast, of the same family.
func AppendInnerUDP(dst []byte, d Datagram) ([]byte, error) {
	src, group := d.Src.Unmap(), d.Dst.Unmap()
	if !group.IsMulticast() || !src.IsValid() || src.IsMulticast() || src.IsUnspecified() || src.Is4() != group.Is4() {
		return dst, fmt.Errorf("inner: %v -> %v is not multicast from a unicast source: %w", d.Src, d.Dst, ErrAddress)
	}
	ttl := d.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	ulen := udpHeaderLen + len(d.Payload)
	start := len(dst)
	var err error
	if src.Is4() {
		dst, err = AppendIPv4(dst, IPv4Header{DontFragment: true, TTL: ttl, Protocol: ProtoUDP, Src: src, Dst: group}, ulen)
	} else {
		dst, err = AppendIPv6(dst, IPv6Header{NextHeader: ProtoUDP, HopLimit: ttl, Src: src, Dst: group}, ulen)
	}
	if err != nil {
		return dst[:start], fmt.Errorf("inner: %w", err)
	}
	u := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, d.SrcPort)
	dst = binary.BigEndian.AppendUint16(dst, d.DstPort)
	dst = binary.BigEndian.AppendUint16(dst, uint16(ulen))
	dst = append(dst, 0, 0)
	dst = append(dst, d.Payload...)
	sum := upperChecksum(src, group, ProtoUDP, dst[u:])
	if sum == 0 {
		sum = 0xffff // zero means "no checksum" (RFC 768)
	}
	binary.BigEndian.PutUint16(dst[u+6:], sum)
	return dst, nil
}

package amt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

const (
	ipv6HeaderLen = 40
	ipv6HBHLen    = 8 // Hop-by-Hop header holding Router Alert and padding

	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6DestOpts = 60

	ipv6OptPad1        = 0
	ipv6OptPadN        = 1
	ipv6OptRouterAlert = 5 // RFC 2711; value 0 means MLD
)

// IPv6Header holds the IPv6 header fields this package reads and writes.
type IPv6Header struct {
	TrafficClass uint8
	FlowLabel    uint32 // 20 bits
	// NextHeader is the upper-layer protocol. When parsing, it is the one
	// after any Hop-by-Hop, Routing and Destination Options headers.
	NextHeader uint8
	HopLimit   uint8
	Src, Dst   netip.Addr
	// RouterAlert is a Hop-by-Hop Router Alert option with value 0, the one
	// MLD messages carry (RFC 2711, RFC 3810 §5).
	RouterAlert bool
}

// ParseIPv6 decodes the IPv6 header and the extension headers before the
// upper layer, and returns the upper-layer payload. The payload length must
// cover exactly b (ErrLength otherwise; jumbograms are refused), and a
// Fragment header is refused (ErrFragment).
func ParseIPv6(b []byte) (h IPv6Header, payload []byte, err error) {
	if len(b) < ipv6HeaderLen {
		return h, nil, fmt.Errorf("ipv6: %d bytes: %w", len(b), ErrShort)
	}
	if v := b[0] >> 4; v != 6 {
		return h, nil, fmt.Errorf("ipv6: version %d: %w", v, ErrVersion)
	}
	total := ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return h, nil, fmt.Errorf("ipv6: payload length says %d bytes, have %d: %w", total, len(b), ErrShort)
	}
	if total < len(b) {
		return h, nil, fmt.Errorf("ipv6: payload length says %d bytes, have %d: %w", total, len(b), ErrLength)
	}
	vtf := binary.BigEndian.Uint32(b[0:4])
	h = IPv6Header{
		TrafficClass: uint8(vtf >> 20),
		FlowLabel:    vtf & 0xfffff,
		HopLimit:     b[7],
		Src:          netip.AddrFrom16([16]byte(b[8:24])),
		Dst:          netip.AddrFrom16([16]byte(b[24:40])),
	}
	if h.Src.Is4In6() || h.Dst.Is4In6() {
		// IPv4-mapped addresses stand for IPv4 nodes inside IPv6 APIs
		// (RFC 4291 §2.5.5.2); in a header they would blur the families.
		return IPv6Header{}, nil, fmt.Errorf("ipv6: IPv4-mapped address: %w", ErrAddress)
	}
	next := b[6]
	rest := b[ipv6HeaderLen:]
	first := true
	for {
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
		case ipv6Fragment:
			return IPv6Header{}, nil, fmt.Errorf("ipv6: %w", ErrFragment)
		default:
			h.NextHeader = next
			return h, rest, nil
		}
		if next == ipv6HopByHop && !first {
			// RFC 8200 §4.1: Hop-by-Hop only right after the IPv6 header.
			return IPv6Header{}, nil, fmt.Errorf("ipv6: misplaced hop-by-hop header: %w", ErrMalformed)
		}
		if len(rest) < 2 {
			return IPv6Header{}, nil, fmt.Errorf("ipv6: extension header %d: %w", next, ErrShort)
		}
		n := (int(rest[1]) + 1) * 8
		if n > len(rest) {
			return IPv6Header{}, nil, fmt.Errorf("ipv6: extension header %d of %d bytes in %d: %w", next, n, len(rest), ErrShort)
		}
		if next == ipv6HopByHop || next == ipv6DestOpts {
			ra, err := ipv6Options(rest[2:n])
			if err != nil {
				return IPv6Header{}, nil, err
			}
			if next == ipv6HopByHop {
				h.RouterAlert = ra
			}
		}
		next, rest, first = rest[0], rest[n:], false
	}
}

// ipv6Options walks Hop-by-Hop or Destination options (RFC 8200 §4.2) and
// reports whether a Router Alert with value 0 is among them.
func ipv6Options(opts []byte) (routerAlert bool, err error) {
	for len(opts) > 0 {
		if opts[0] == ipv6OptPad1 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || 2+int(opts[1]) > len(opts) {
			return false, fmt.Errorf("ipv6: option %#x overruns its header: %w", opts[0], ErrMalformed)
		}
		n := 2 + int(opts[1])
		if opts[0] == ipv6OptRouterAlert && n == 4 && opts[2] == 0 && opts[3] == 0 {
			routerAlert = true
		}
		opts = opts[n:]
	}
	return routerAlert, nil
}

// AppendIPv6 appends an IPv6 header for an upper-layer payload of
// payloadLen bytes; with RouterAlert it adds the 8-byte Hop-by-Hop header
// MLD needs (Router Alert value 0, then PadN). The caller appends the
// payload. Src and Dst must be IPv6 addresses that are not IPv4-mapped.
func AppendIPv6(dst []byte, h IPv6Header, payloadLen int) ([]byte, error) {
	if !h.Src.Is6() || !h.Dst.Is6() || h.Src.Is4In6() || h.Dst.Is4In6() {
		return dst, fmt.Errorf("ipv6: addresses %v -> %v: %w", h.Src, h.Dst, ErrAddress)
	}
	if h.FlowLabel > 0xfffff {
		return dst, fmt.Errorf("ipv6: flow label %#x: %w", h.FlowLabel, ErrMalformed)
	}
	plen := payloadLen
	if h.RouterAlert {
		plen += ipv6HBHLen
	}
	if payloadLen < 0 || plen > 0xffff {
		return dst, fmt.Errorf("ipv6: payload of %d bytes: %w", payloadLen, ErrLength)
	}
	next := h.NextHeader
	if h.RouterAlert {
		next = ipv6HopByHop
	}
	dst = binary.BigEndian.AppendUint32(dst, 6<<28|uint32(h.TrafficClass)<<20|h.FlowLabel)
	dst = binary.BigEndian.AppendUint16(dst, uint16(plen))
	dst = append(dst, next, h.HopLimit)
	s, d := h.Src.As16(), h.Dst.As16()
	dst = append(dst, s[:]...)
	dst = append(dst, d[:]...)
	if h.RouterAlert {
		// Next Header, Hdr Ext Len 0 (8 bytes), Router Alert (type 5, length
		// 2, value 0 = MLD), PadN of 2 to fill the 8 bytes.
		dst = append(dst, h.NextHeader, 0, ipv6OptRouterAlert, 2, 0, 0, ipv6OptPadN, 0)
	}
	return dst, nil
}

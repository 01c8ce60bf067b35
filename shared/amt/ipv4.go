package amt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

const (
	ipv4MinHeaderLen = 20
	ipv4RAHeaderLen  = 24 // with the 4-byte Router Alert option

	ipv4FlagDF      = 0x4000
	ipv4FlagMF      = 0x2000
	ipv4OffsetMask  = 0x1fff
	ipv4OptEOL      = 0
	ipv4OptNOP      = 1
	ipv4OptRouterAl = 0x94 // copied flag, class 0, number 20 (RFC 2113)
)

// IP protocol numbers of the packets this package builds and reads.
const (
	ProtoIGMP   = 2
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IPv4Header holds the IPv4 header fields this package reads and writes.
// Options other than Router Alert are skipped when parsing and never sent.
type IPv4Header struct {
	TOS          uint8
	ID           uint16
	DontFragment bool
	TTL          uint8
	Protocol     uint8
	Src, Dst     netip.Addr
	// RouterAlert is the Router Alert option with value 0, "every router
	// examines this packet" (RFC 2113): 0x94 0x04 0x00 0x00.
	RouterAlert bool
}

// ParseIPv4 decodes the IPv4 header at the start of b, verifying its
// checksum, and returns the payload. The total length must cover exactly b
// (ErrLength otherwise), and fragments are refused (ErrFragment).
func ParseIPv4(b []byte) (h IPv4Header, payload []byte, err error) {
	if len(b) < ipv4MinHeaderLen {
		return h, nil, fmt.Errorf("ipv4: %d bytes: %w", len(b), ErrShort)
	}
	if v := b[0] >> 4; v != 4 {
		return h, nil, fmt.Errorf("ipv4: version %d: %w", v, ErrVersion)
	}
	hlen := int(b[0]&0x0f) * 4
	if hlen < ipv4MinHeaderLen {
		return h, nil, fmt.Errorf("ipv4: header length %d: %w", hlen, ErrMalformed)
	}
	if len(b) < hlen {
		return h, nil, fmt.Errorf("ipv4: header of %d bytes in %d: %w", hlen, len(b), ErrShort)
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	switch {
	case total < hlen:
		return h, nil, fmt.Errorf("ipv4: total length %d below header length %d: %w", total, hlen, ErrMalformed)
	case total > len(b):
		return h, nil, fmt.Errorf("ipv4: total length %d, have %d bytes: %w", total, len(b), ErrShort)
	case total < len(b):
		return h, nil, fmt.Errorf("ipv4: total length %d, have %d bytes: %w", total, len(b), ErrLength)
	}
	if checksum(b[:hlen]) != 0 {
		return h, nil, fmt.Errorf("ipv4: header: %w", ErrChecksum)
	}
	frag := binary.BigEndian.Uint16(b[6:8])
	if frag&ipv4FlagMF != 0 || frag&ipv4OffsetMask != 0 {
		return h, nil, fmt.Errorf("ipv4: %w", ErrFragment)
	}
	h = IPv4Header{
		TOS:          b[1],
		ID:           binary.BigEndian.Uint16(b[4:6]),
		DontFragment: frag&ipv4FlagDF != 0,
		TTL:          b[8],
		Protocol:     b[9],
		Src:          netip.AddrFrom4([4]byte(b[12:16])),
		Dst:          netip.AddrFrom4([4]byte(b[16:20])),
	}
	if h.RouterAlert, err = ipv4Options(b[ipv4MinHeaderLen:hlen]); err != nil {
		return IPv4Header{}, nil, err
	}
	return h, b[hlen:total], nil
}

// ipv4Options walks the options (RFC 791) and reports whether a Router
// Alert with value 0 is among them.
func ipv4Options(opts []byte) (routerAlert bool, err error) {
	for len(opts) > 0 {
		switch opts[0] {
		case ipv4OptEOL:
			return routerAlert, nil
		case ipv4OptNOP:
			opts = opts[1:]
			continue
		}
		if len(opts) < 2 || opts[1] < 2 || int(opts[1]) > len(opts) {
			return false, fmt.Errorf("ipv4: option %#x overruns the header: %w", opts[0], ErrMalformed)
		}
		n := int(opts[1])
		if opts[0] == ipv4OptRouterAl && n == 4 && opts[2] == 0 && opts[3] == 0 {
			routerAlert = true
		}
		opts = opts[n:]
	}
	return routerAlert, nil
}

// AppendIPv4 appends an IPv4 header for a payload of payloadLen bytes,
// with its checksum; the caller appends the payload. Src and Dst must be
// IPv4 (IPv4-mapped addresses are unmapped).
func AppendIPv4(dst []byte, h IPv4Header, payloadLen int) ([]byte, error) {
	src, dstAddr := h.Src.Unmap(), h.Dst.Unmap()
	if !src.Is4() || !dstAddr.Is4() {
		return dst, fmt.Errorf("ipv4: addresses %v -> %v: %w", h.Src, h.Dst, ErrAddress)
	}
	hlen := ipv4MinHeaderLen
	if h.RouterAlert {
		hlen = ipv4RAHeaderLen
	}
	if payloadLen < 0 || hlen+payloadLen > 0xffff {
		return dst, fmt.Errorf("ipv4: payload of %d bytes: %w", payloadLen, ErrLength)
	}
	start := len(dst)
	var frag uint16
	if h.DontFragment {
		frag = ipv4FlagDF
	}
	dst = append(dst, 0x40|byte(hlen/4), h.TOS)
	dst = binary.BigEndian.AppendUint16(dst, uint16(hlen+payloadLen))
	dst = binary.BigEndian.AppendUint16(dst, h.ID)
	dst = binary.BigEndian.AppendUint16(dst, frag)
	dst = append(dst, h.TTL, h.Protocol, 0, 0)
	s, d := src.As4(), dstAddr.As4()
	dst = append(dst, s[:]...)
	dst = append(dst, d[:]...)
	if h.RouterAlert {
		dst = append(dst, ipv4OptRouterAl, 4, 0, 0)
	}
	binary.BigEndian.PutUint16(dst[start+10:], checksum(dst[start:]))
	return dst, nil
}

package amt

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// csumAdd adds b to the running one's complement sum acc (RFC 1071), eight
// bytes at a time. Every chunk but the last must have even length so the
// 16-bit words stay aligned; an odd final byte is padded with zero.
func csumAdd(acc uint64, b []byte) uint64 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) > 0 {
		var tail [8]byte
		copy(tail[:], b)
		acc, c = bits.Add64(acc, binary.BigEndian.Uint64(tail[:]), c)
	}
	// End-around carry; acc is 0 whenever this second add overflows, so
	// adding the final carry cannot overflow again.
	acc, c = bits.Add64(acc, 0, c)
	return acc + c
}

// csumFold folds a running sum to 16 bits.
func csumFold(acc uint64) uint16 {
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>32 + acc&0xffffffff
	acc = acc>>16 + acc&0xffff
	acc = acc>>16 + acc&0xffff
	return uint16(acc)
}

// checksum is the Internet checksum of b: the complement of its one's
// complement sum. Computed over data that includes a correct checksum field
// it yields 0.
func checksum(b []byte) uint16 { return ^csumFold(csumAdd(0, b)) }

// pseudoSum is the running sum of the IPv4 or IPv6 pseudo-header for an
// upper-layer packet of length n and protocol proto (RFC 768, RFC 8200 §8.1).
func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint64 {
	var acc uint64
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = csumAdd(acc, s[:])
		acc = csumAdd(acc, d[:])
		var p [4]byte
		p[1] = proto
		binary.BigEndian.PutUint16(p[2:], uint16(n))
		return csumAdd(acc, p[:])
	}
	s, d := src.As16(), dst.As16()
	acc = csumAdd(acc, s[:])
	acc = csumAdd(acc, d[:])
	var p [8]byte
	binary.BigEndian.PutUint32(p[0:4], uint32(n))
	p[7] = proto
	return csumAdd(acc, p[:])
}

// upperChecksum is the checksum of an upper-layer packet b (UDP, ICMPv6)
// with its pseudo-header.
func upperChecksum(src, dst netip.Addr, proto uint8, b []byte) uint16 {
	return ^csumFold(csumAdd(pseudoSum(src, dst, proto, len(b)), b))
}

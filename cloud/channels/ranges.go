package channels

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrBadRange is wrapped by every error of ParseRange and ParseRanges.
var ErrBadRange = errors.New("bad SSM range")

// DefaultRanges is the default --multicast-range.
const DefaultRanges = "232.0.0.0/8,ff3e::/96"

var ssm4 = netip.MustParsePrefix("232.0.0.0/8")

const (
	// reserved4 is 232.0.0.0/24, which IANA keeps out of SSM allocation.
	reserved4 = 256
	// serverGID is the first IPv6 SSM group ID for dynamic allocation by
	// servers (RFC 3307 section 4.3); lower IDs are IANA's or hosts'.
	serverGID = 0x8000_0000
)

// Range is a validated block of SSM group addresses: a prefix inside
// 232.0.0.0/8 or inside an ff3x::/96 (x a scope: 4, 5, 8 or e), less the
// groups that are not for a server to hand out (232.0.0.0/24; IPv6 group
// IDs below 0x80000000).
type Range struct {
	prefix netip.Prefix
	first  uint64 // offset of the first usable group from the prefix's base
	n      uint64 // usable groups
}

// ParseRanges parses a comma- or space-separated list of ranges; ranges
// may not overlap.
func ParseRanges(s string) ([]Range, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: no range in %q", ErrBadRange, s)
	}
	if len(fields) > 64 {
		return nil, fmt.Errorf("%w: %d ranges, at most 64", ErrBadRange, len(fields))
	}
	rs := make([]Range, 0, len(fields))
	for _, f := range fields {
		r, err := ParseRange(f)
		if err != nil {
			return nil, err
		}
		for _, o := range rs {
			if o.prefix.Overlaps(r.prefix) {
				return nil, fmt.Errorf("%w: %s overlaps %s", ErrBadRange, r.prefix, o.prefix)
			}
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// ParseRange parses one range in CIDR form ("232.1.0.0/16", "ff3e::8000:0/112").
func ParseRange(s string) (Range, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("%w: %w", ErrBadRange, err)
	}
	return rangeOf(p)
}

// rangeOf validates p as an SSM range.
func rangeOf(p netip.Prefix) (Range, error) {
	a := p.Addr()
	if a.Zone() != "" {
		return Range{}, fmt.Errorf("%w: %s: a range has no zone", ErrBadRange, p)
	}
	if a.Is4In6() {
		return Range{}, fmt.Errorf("%w: %s: write IPv4 ranges in IPv4 form", ErrBadRange, p)
	}
	if m := p.Masked(); m != p {
		return Range{}, fmt.Errorf("%w: %s has bits set past /%d (did you mean %s?)", ErrBadRange, p, p.Bits(), m)
	}
	if a.Is4() {
		if p.Bits() < 8 || !ssm4.Contains(a) {
			return Range{}, fmt.Errorf("%w: %s is not inside the IPv4 SSM range 232.0.0.0/8", ErrBadRange, p)
		}
		size := uint64(1) << (32 - p.Bits())
		b := a.As4()
		base := uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
		r := Range{prefix: p, n: size}
		if base < reserved4 {
			if base+size <= reserved4 {
				return Range{}, fmt.Errorf("%w: %s is inside 232.0.0.0/24, which is reserved", ErrBadRange, p)
			}
			r.first = reserved4 - base
			r.n = size - r.first
		}
		return r, nil
	}
	b := a.As16()
	if b[0] != 0xff || b[1]>>4 != 3 {
		return Range{}, fmt.Errorf("%w: %s is not an IPv6 SSM range (ff3x::/96)", ErrBadRange, p)
	}
	switch b[1] & 0xf {
	case 0x4, 0x5, 0x8, 0xe:
	default:
		return Range{}, fmt.Errorf("%w: %s: scope %x; use 4 (admin), 5 (site), 8 (organization) or e (global)", ErrBadRange, p, b[1]&0xf)
	}
	for _, x := range b[2:12] {
		if x != 0 {
			return Range{}, fmt.Errorf("%w: %s is not inside ff3%x::/96", ErrBadRange, p, b[1]&0xf)
		}
	}
	if p.Bits() < 96 {
		return Range{}, fmt.Errorf("%w: %s is wider than ff3%x::/96", ErrBadRange, p, b[1]&0xf)
	}
	size := uint64(1) << (128 - p.Bits())
	base := uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	r := Range{prefix: p, n: size}
	if base < serverGID {
		if base+size <= serverGID {
			return Range{}, fmt.Errorf("%w: %s: group IDs below 0x80000000 are not for servers to allocate (RFC 3307)", ErrBadRange, p)
		}
		r.first = serverGID - base
		r.n = size - r.first
	}
	return r, nil
}

// Prefix is the range as configured.
func (r Range) Prefix() netip.Prefix { return r.prefix }

// Len is how many groups the range hands out.
func (r Range) Len() uint64 { return r.n }

// String is the range in CIDR form; ParseRange reads it back.
func (r Range) String() string { return r.prefix.String() }

// Is4 reports whether the range holds IPv4 groups.
func (r Range) Is4() bool { return r.prefix.Addr().Is4() }

// group is the i-th usable group, i < Len.
func (r Range) group(i uint64) netip.Addr {
	off := r.first + i
	a := r.prefix.Addr()
	if a.Is4() {
		b := a.As4()
		v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) + uint32(off)
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b := a.As16()
	v := (uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])) + uint32(off)
	b[12], b[13], b[14], b[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return netip.AddrFrom16(b)
}

package router

import "math/bits"

// v4Filter answers "might a beacon be on this IPv4 address?" from a bitmap
// of about one byte per beacon: small enough (1 MiB at a million beacons)
// to stay in the CPU cache, so that requests from addresses with no beacon,
// usually most of them, do not pay the cache and TLB miss of probing the
// million-entry map. One hash and eight bits per address make about one
// address in nine a false positive, which then just probes the map.
//
// A count per bit lets an address leave the filter; a count that reaches
// 255 stays (the bit can then never be cleared, which costs only false
// positives).
type v4Filter struct {
	bits   []uint64
	counts []uint8
	shift  uint // 64 - log2(len(counts))
	n      int  // addresses in the filter
}

const minFilterBits = 1 << 16

func (f *v4Filter) slot(ip uint32) uint64 {
	// Fibonacci hashing: the top bits of the product mix all of ip.
	return (uint64(ip) * 0x9e3779b97f4a7c15) >> f.shift
}

func (f *v4Filter) mayHave(ip uint32) bool {
	if f.n == 0 {
		return false
	}
	s := f.slot(ip)
	return f.bits[s>>6]&(1<<(s&63)) != 0
}

// add puts ip in the filter; all is every address in it (ip included), for
// when the filter has to grow.
func (f *v4Filter) add(ip uint32, all map[uint32]uint32) {
	f.n++
	if 8*f.n > len(f.counts) {
		f.rebuild(all)
		return
	}
	f.set(ip)
}

func (f *v4Filter) set(ip uint32) {
	s := f.slot(ip)
	if f.counts[s] < 255 {
		f.counts[s]++
	}
	f.bits[s>>6] |= 1 << (s & 63)
}

func (f *v4Filter) remove(ip uint32) {
	f.n--
	s := f.slot(ip)
	switch f.counts[s] {
	case 255:
	case 1:
		f.counts[s] = 0
		f.bits[s>>6] &^= 1 << (s & 63)
	default:
		f.counts[s]--
	}
}

// rebuild sizes the filter to eight bits per address, at least
// minFilterBits, and refills it.
func (f *v4Filter) rebuild(all map[uint32]uint32) {
	m := max(minFilterBits, 1<<bits.Len(uint(8*len(all)-1)))
	f.bits = make([]uint64, m/64)
	f.counts = make([]uint8, m)
	f.shift = uint(64 - bits.TrailingZeros(uint(m)))
	f.n = len(all)
	for ip := range all {
		f.set(ip)
	}
}

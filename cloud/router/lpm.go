package router

import (
	"math/bits"
	"net/netip"
)

// table is a longest-prefix-match table from IPv4 and IPv6 prefixes to
// uint32 values. It is a multibit trie with one level per address byte, so a
// lookup visits at most 4 levels for IPv4 and 16 for IPv6 (8 for the /64s
// relays usually announce), whatever the number of prefixes. Within a level
// the prefixes are kept as in ART (Knuth's allotment routing table, also the
// layout of tailscale's bart): a complete binary tree over the byte, indexed
// 1..511, stored as a bitset with the values packed in index order (rank by
// popcount), so a level costs 192 bytes plus 4 per prefix and 32 per child
// rather than arrays of 256 slots. A subtree that would hold a single prefix is kept as a
// leaf in its parent's child slot instead (path compression), which keeps
// sparse long prefixes from costing one level per byte.
//
// A table is not safe for concurrent use; Router guards it.
type table struct {
	root4, root6 level
	n4, n6       int
}

// level is the trie node for address byte d (its depth). It holds the
// prefixes whose length is in (8d, 8d+8] (and at the root also /0), and a
// child per next byte value for longer ones.
//
// The fields are laid out for the cache: what the descent reads (kids,
// next) fills the first 64-byte line and the padding makes the size 192, a
// size class whose objects are line aligned, so descending through a level
// touches one line of it; backtracking reads the other two.
type level struct {
	kids bitset256 // byte values with a child
	next []child   // children of kids, in byte order
	_    [8]byte
	vals []uint32 // values of pfx, in index order
	_    [40]byte
	pfx  bitset512 // ART indices of the prefixes held here
}

// child is either a level, or a leaf: one prefix longer than 8(d+1) bits
// that is alone in the subtree, stored with its full address.
type child struct {
	level *level // nil for a leaf
	addr  addr128
	val   uint32
	bits  uint8
}

// addr128 is an address as a 128-bit big-endian number; IPv4 addresses take
// the top 32 bits.
type addr128 struct{ hi, lo uint64 }

func toAddr128(a netip.Addr) addr128 {
	if a.Is4() {
		b := a.As4()
		return addr128{hi: uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32}
	}
	b := a.As16()
	var x addr128
	for i := 0; i < 8; i++ {
		x.hi = x.hi<<8 | uint64(b[i])
		x.lo = x.lo<<8 | uint64(b[8+i])
	}
	return x
}

// octet is the address byte at depth d.
func (a addr128) octet(d int) uint8 {
	if d < 8 {
		return uint8(a.hi >> (56 - 8*d))
	}
	return uint8(a.lo >> (56 - 8*(d-8)))
}

// masked keeps the first n bits.
func (a addr128) masked(n int) addr128 {
	switch {
	case n <= 0:
		return addr128{}
	case n < 64:
		return addr128{hi: a.hi &^ (^uint64(0) >> n)}
	case n < 128:
		return addr128{hi: a.hi, lo: a.lo &^ (^uint64(0) >> (n - 64))}
	}
	return a
}

// artIndex is the index of a prefix of l bits (0..8) of byte o in a level.
func artIndex(o uint8, l int) int {
	return 1<<l | int(o)>>(8-l)
}

// prefixKey splits a prefix into the root it belongs to, its masked address
// and its length. IPv4-mapped IPv6 prefixes are stored as IPv4, because
// clients are looked up by their unmapped address.
func (t *table) prefixKey(p netip.Prefix) (root *level, a addr128, n int, ok bool) {
	if !p.IsValid() {
		return nil, a, 0, false
	}
	ip, n := p.Addr(), p.Bits()
	if ip.Is4In6() {
		if n < 96 {
			// Mixes mapped and unmapped space; keep it as IPv6.
			return &t.root6, toAddr128(ip).masked(n), n, true
		}
		ip, n = ip.Unmap(), n-96
	}
	if ip.Is4() {
		return &t.root4, toAddr128(ip).masked(n), n, true
	}
	return &t.root6, toAddr128(ip).masked(n), n, true
}

func (t *table) count(root *level, delta int) {
	if root == &t.root4 {
		t.n4 += delta
	} else {
		t.n6 += delta
	}
}

// Len is the number of prefixes held.
func (t *table) Len() int { return t.n4 + t.n6 }

// Insert sets the value of a prefix, reporting whether it replaced one.
// Host bits of p are ignored.
func (t *table) Insert(p netip.Prefix, val uint32) (replaced bool) {
	root, a, n, ok := t.prefixKey(p)
	if !ok {
		return false
	}
	replaced = root.insert(0, a, n, val)
	if !replaced {
		t.count(root, 1)
	}
	return replaced
}

func (l *level) insert(d int, a addr128, n int, val uint32) (replaced bool) {
	for {
		if n <= 8*d+8 {
			return l.setPrefix(artIndex(a.octet(d), n-8*d), val)
		}
		o := a.octet(d)
		if !l.kids.has(o) {
			l.insertChild(o, child{addr: a, bits: uint8(n), val: val})
			return false
		}
		c := &l.next[l.kids.rank(o)]
		if c.level == nil {
			if c.addr == a && int(c.bits) == n {
				c.val = val
				return true
			}
			// Two prefixes share the slot now: push the leaf down a level.
			old := *c
			*c = child{level: &level{}}
			c.level.insert(d+1, old.addr, int(old.bits), old.val)
		}
		l, d = c.level, d+1
	}
}

// Get returns the value of exactly p.
func (t *table) Get(p netip.Prefix) (uint32, bool) {
	root, a, n, ok := t.prefixKey(p)
	if !ok {
		return 0, false
	}
	l := root
	for d := 0; ; d++ {
		if n <= 8*d+8 {
			i := artIndex(a.octet(d), n-8*d)
			if !l.pfx.has(i) {
				return 0, false
			}
			return l.vals[l.pfx.rank(i)], true
		}
		o := a.octet(d)
		if !l.kids.has(o) {
			return 0, false
		}
		c := &l.next[l.kids.rank(o)]
		if c.level == nil {
			return c.val, c.addr == a && int(c.bits) == n
		}
		l = c.level
	}
}

// Delete removes p, reporting whether it was there, and folds back levels
// left empty or holding a single prefix so that the trie stays as small as
// if p had never been inserted.
func (t *table) Delete(p netip.Prefix) bool {
	root, a, n, ok := t.prefixKey(p)
	if !ok {
		return false
	}
	var parents [16]*level
	l, d := root, 0
	for ; ; d++ {
		if n <= 8*d+8 {
			i := artIndex(a.octet(d), n-8*d)
			if !l.pfx.has(i) {
				return false
			}
			l.deletePrefix(i)
			break
		}
		o := a.octet(d)
		if !l.kids.has(o) {
			return false
		}
		c := &l.next[l.kids.rank(o)]
		if c.level == nil {
			if c.addr != a || int(c.bits) != n {
				return false
			}
			l.deleteChild(o)
			break
		}
		parents[d] = l
		l = c.level
	}
	t.count(root, -1)
	// l is at depth d; fold upwards while a level can be dropped.
	for ; d > 0; d-- {
		parent, o := parents[d-1], a.octet(d-1)
		slot := &parent.next[parent.kids.rank(o)]
		np, nk := len(l.vals), len(l.next)
		switch {
		case np == 0 && nk == 0:
			parent.deleteChild(o)
		case np == 1 && nk == 0:
			// The one prefix becomes a leaf: rebuild its address from the
			// path (shared with p) and its index in this level.
			i := l.pfx.first()
			bl := bits.Len(uint(i)) - 1
			oct := uint64(i-1<<bl) << (8 - bl)
			full := a.masked(8 * d)
			if d < 8 {
				full.hi |= oct << (56 - 8*d)
			} else {
				full.lo |= oct << (56 - 8*(d-8))
			}
			*slot = child{addr: full, bits: uint8(8*d + bl), val: l.vals[0]}
		case np == 0 && nk == 1 && l.next[0].level == nil:
			*slot = l.next[0]
		default:
			return true
		}
		l = parent
	}
	return true
}

// Lookup calls fn with the value and length of every prefix that contains
// a, longest first, until fn returns true, and reports whether it did. An
// IPv4-mapped address must be unmapped by the caller.
func (t *table) Lookup(ip netip.Addr, fn func(val uint32, bits int) bool) bool {
	var root *level
	switch {
	case ip.Is4():
		root = &t.root4
	case ip.Is6():
		root = &t.root6
	default:
		return false
	}
	a := toAddr128(ip)
	var path [16]*level
	l, d := root, 0
	for {
		path[d] = l
		o := a.octet(d)
		if !l.kids.has(o) {
			break
		}
		c := &l.next[l.kids.rank(o)]
		if c.level == nil {
			// A leaf is longer than anything on the path above it.
			if a.masked(int(c.bits)) == c.addr && fn(c.val, int(c.bits)) {
				return true
			}
			break
		}
		l, d = c.level, d+1
	}
	for ; d >= 0; d-- {
		l := path[d]
		if len(l.vals) == 0 {
			continue
		}
		// The prefixes of this level that contain a are the ones on the
		// path from the byte's leaf index to the root of the ART tree;
		// higher indices are longer prefixes.
		m := &ancestors[a.octet(d)]
		for w := len(l.pfx) - 1; w >= 0; w-- {
			for hit := l.pfx[w] & m[w]; hit != 0; {
				b := bits.Len64(hit) - 1
				hit &^= 1 << b
				i := w*64 + b
				if fn(l.vals[l.pfx.rank(i)], 8*d+bits.Len(uint(i))-1) {
					return true
				}
			}
		}
	}
	return false
}

// ancestors[o] has the ART indices of every prefix of byte o, from /0 (1)
// to /8 (256+o).
var ancestors = func() (t [256]bitset512) {
	for o := range t {
		for i := 256 + o; i > 0; i >>= 1 {
			t[o].set(i)
		}
	}
	return t
}()

func (l *level) setPrefix(i int, val uint32) (replaced bool) {
	r := l.pfx.rank(i)
	if l.pfx.has(i) {
		l.vals[r] = val
		return true
	}
	l.pfx.set(i)
	l.vals = insertAt(l.vals, r, val)
	return false
}

func (l *level) deletePrefix(i int) {
	r := l.pfx.rank(i)
	l.pfx.clear(i)
	l.vals = deleteAt(l.vals, r)
}

func (l *level) insertChild(o uint8, c child) {
	r := l.kids.rank(o)
	l.kids.set(o)
	l.next = insertAt(l.next, r, c)
}

func (l *level) deleteChild(o uint8) {
	r := l.kids.rank(o)
	l.kids.clear(o)
	l.next = deleteAt(l.next, r)
}

func insertAt[T any](s []T, i int, v T) []T {
	var zero T
	s = append(s, zero)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// deleteAt removes s[i], giving memory back when a slice has shrunk to a
// quarter of its capacity (prefixes come and go with relays).
func deleteAt[T any](s []T, i int) []T {
	var zero T
	copy(s[i:], s[i+1:])
	s[len(s)-1] = zero
	s = s[:len(s)-1]
	if len(s) == 0 {
		return nil
	}
	if cap(s) >= 8 && len(s) <= cap(s)/4 {
		s = append([]T(nil), s...)
	}
	return s
}

type bitset512 [8]uint64

func (b *bitset512) has(i int) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b *bitset512) set(i int)      { b[i>>6] |= 1 << (i & 63) }
func (b *bitset512) clear(i int)    { b[i>>6] &^= 1 << (i & 63) }

// rank is the number of set bits below i.
func (b *bitset512) rank(i int) int {
	n := bits.OnesCount64(b[i>>6] & (1<<(i&63) - 1))
	for w := 0; w < i>>6; w++ {
		n += bits.OnesCount64(b[w])
	}
	return n
}

// first is the lowest set bit, or -1.
func (b *bitset512) first() int {
	for w, x := range b {
		if x != 0 {
			return w*64 + bits.TrailingZeros64(x)
		}
	}
	return -1
}

type bitset256 [4]uint64

func (b *bitset256) has(i uint8) bool { return b[i>>6]&(1<<(i&63)) != 0 }
func (b *bitset256) set(i uint8)      { b[i>>6] |= 1 << (i & 63) }
func (b *bitset256) clear(i uint8)    { b[i>>6] &^= 1 << (i & 63) }

func (b *bitset256) rank(i uint8) int {
	n := bits.OnesCount64(b[i>>6] & (1<<(i&63) - 1))
	for w := 0; w < int(i>>6); w++ {
		n += bits.OnesCount64(b[w])
	}
	return n
}

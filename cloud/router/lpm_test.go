package router

import (
	"math/bits"
	"math/rand"
	"net/netip"
	"sort"
	"testing"
	"unsafe"
)

// bruteTable is the reference the trie is checked against: a map, scanned.
type bruteTable map[netip.Prefix]uint32

// matches lists the values of the prefixes containing a, longest first,
// each followed by the prefix length: it tries every length.
func (m bruteTable) matches(a netip.Addr) []uint32 {
	out := []uint32{}
	for n := a.BitLen(); n >= 0; n-- {
		if v, ok := m[netip.PrefixFrom(a, n).Masked()]; ok {
			out = append(out, v, uint32(n))
		}
	}
	return out
}

func allMatches(t *table, a netip.Addr) []uint32 {
	out := []uint32{}
	t.Lookup(a, func(v uint32, bits int) bool { out = append(out, v, uint32(bits)); return false })
	return out
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkShape verifies the trie's invariants: bitsets agree with the packed
// slices, leaves sit where they belong, and no level is one that Delete
// should have folded away.
func checkShape(t *testing.T, l *level, d int, v4 bool) int {
	t.Helper()
	if n := popcount512(&l.pfx); n != len(l.vals) {
		t.Fatalf("depth %d: %d prefix bits, %d values", d, n, len(l.vals))
	}
	if n := popcount256(&l.kids); n != len(l.next) {
		t.Fatalf("depth %d: %d child bits, %d children", d, n, len(l.next))
	}
	if d > 0 {
		switch np, nk := len(l.vals), len(l.next); {
		case np == 0 && nk == 0:
			t.Fatalf("empty level at depth %d", d)
		case np == 1 && nk == 0:
			t.Fatalf("level at depth %d holds one prefix, should be a leaf", d)
		case np == 0 && nk == 1 && l.next[0].level == nil:
			t.Fatalf("level at depth %d holds one leaf, should be folded", d)
		}
		if l.pfx.has(1) {
			t.Fatalf("index 1 used below the root at depth %d", d)
		}
	}
	maxBits := 128
	if v4 {
		maxBits = 32
	}
	n := len(l.vals)
	for _, c := range l.next {
		if c.level != nil {
			n += checkShape(t, c.level, d+1, v4)
			continue
		}
		if int(c.bits) <= 8*(d+1) || int(c.bits) > maxBits {
			t.Fatalf("leaf /%d at depth %d", c.bits, d)
		}
		if c.addr.masked(int(c.bits)) != c.addr {
			t.Fatalf("leaf /%d at depth %d has host bits", c.bits, d)
		}
		n++
	}
	return n
}

func popcount512(b *bitset512) (n int) {
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

func popcount256(b *bitset256) (n int) {
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// randPrefix draws prefixes around a few seed addresses, so that they nest
// and share trie paths as real announcements do, with all lengths present.
func randPrefix(rng *rand.Rand, seeds []netip.Addr) netip.Prefix {
	a := seeds[rng.Intn(len(seeds))]
	b := a.AsSlice()
	// Perturb a few bits so that siblings and cousins appear too.
	for i := rng.Intn(3); i > 0; i-- {
		bit := rng.Intn(len(b) * 8)
		b[bit/8] ^= 1 << (7 - bit%8)
	}
	a, _ = netip.AddrFromSlice(b)
	n := rng.Intn(a.BitLen() + 1)
	if a.Is6() && rng.Intn(2) == 0 {
		n = 32 + rng.Intn(33) // relays' usual /32../64
	}
	return netip.PrefixFrom(a, n).Masked()
}

func randAddrNear(rng *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if rng.Intn(2) == 0 {
			b[i/8] ^= 1 << (7 - i%8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func randSeeds(rng *rand.Rand, n int) []netip.Addr {
	seeds := make([]netip.Addr, n)
	for i := range seeds {
		if i%2 == 0 {
			var b [4]byte
			rng.Read(b[:])
			seeds[i] = netip.AddrFrom4(b)
		} else {
			var b [16]byte
			rng.Read(b[:])
			b[0], b[1] = 0x20, 0x01
			seeds[i] = netip.AddrFrom16(b)
		}
	}
	return seeds
}

func TestTableAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var tbl table
	ref := bruteTable{}
	seeds := randSeeds(rng, 40)
	check := func(stage string, lookups int) {
		t.Helper()
		if tbl.Len() != len(ref) {
			t.Fatalf("%s: Len %d, want %d", stage, tbl.Len(), len(ref))
		}
		n := checkShape(t, &tbl.root4, 0, true) + checkShape(t, &tbl.root6, 0, false)
		if n != len(ref) {
			t.Fatalf("%s: trie holds %d prefixes, want %d", stage, n, len(ref))
		}
		var ps []netip.Prefix
		for p, v := range ref {
			ps = append(ps, p)
			if got, ok := tbl.Get(p); !ok || got != v {
				t.Fatalf("%s: Get(%s) = %d, %v; want %d", stage, p, got, ok, v)
			}
		}
		for i := 0; i < lookups; i++ {
			var a netip.Addr
			switch {
			case i%3 == 0 || len(ps) == 0:
				a = randAddrNear(rng, netip.PrefixFrom(seeds[rng.Intn(len(seeds))], rng.Intn(24)))
			default:
				a = randAddrNear(rng, ps[rng.Intn(len(ps))])
			}
			if got, want := allMatches(&tbl, a), ref.matches(a); !equalU32(got, want) {
				t.Fatalf("%s: Lookup(%s) = %v, want %v", stage, a, got, want)
			}
		}
	}

	// Insert ~2000 prefixes (some twice, replacing the value).
	for i := 0; i < 2000; i++ {
		p := randPrefix(rng, seeds)
		_, had := ref[p]
		if replaced := tbl.Insert(p, uint32(i)); replaced != had {
			t.Fatalf("Insert(%s) replaced = %v, want %v", p, replaced, had)
		}
		ref[p] = uint32(i)
	}
	check("after insert", 20000)

	// Delete half, including prefixes that are absent.
	var ps []netip.Prefix
	for p := range ref {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	rng.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
	for _, p := range ps[:len(ps)/2] {
		if !tbl.Delete(p) {
			t.Fatalf("Delete(%s) = false", p)
		}
		delete(ref, p)
		if tbl.Delete(p) {
			t.Fatalf("second Delete(%s) = true", p)
		}
	}
	for i := 0; i < 500; i++ {
		p := randPrefix(rng, seeds)
		_, had := ref[p]
		if tbl.Delete(p) != had {
			t.Fatalf("Delete(%s) != %v", p, had)
		}
		delete(ref, p)
	}
	check("after delete", 10000)

	// Delete everything: the trie must fold back to two empty roots.
	for p := range ref {
		if !tbl.Delete(p) {
			t.Fatalf("Delete(%s) = false", p)
		}
		delete(ref, p)
	}
	check("empty", 100)
	for _, root := range []*level{&tbl.root4, &tbl.root6} {
		if len(root.vals) != 0 || len(root.next) != 0 {
			t.Fatalf("root not empty: %d prefixes, %d children", len(root.vals), len(root.next))
		}
	}
}

func TestLevelLayout(t *testing.T) {
	if s, o := unsafe.Sizeof(level{}), unsafe.Offsetof(level{}.next); s != 192 || o+24 > 64 {
		t.Errorf("level is %d bytes with next at %d; the layout assumes 192 with kids and next in the first 64", s, o)
	}
}

func TestTableEdges(t *testing.T) {
	var tbl table
	tbl.Insert(netip.MustParsePrefix("0.0.0.0/0"), 1)
	tbl.Insert(netip.MustParsePrefix("::/0"), 2)
	tbl.Insert(netip.MustParsePrefix("255.255.255.255/32"), 3)
	tbl.Insert(netip.MustParsePrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 4)
	tbl.Insert(netip.MustParsePrefix("10.0.0.0/8"), 5)
	tbl.Insert(netip.MustParsePrefix("::ffff:10.1.0.0/112"), 6) // stored as 10.1.0.0/16
	if tbl.Insert(netip.Prefix{}, 9) || tbl.Len() != 6 {
		t.Fatalf("invalid prefix inserted; Len %d", tbl.Len())
	}
	for _, tt := range []struct {
		addr string
		want []uint32
	}{
		{"1.2.3.4", []uint32{1, 0}},
		{"255.255.255.255", []uint32{3, 32, 1, 0}},
		{"10.1.2.3", []uint32{6, 16, 5, 8, 1, 0}},
		{"::1", []uint32{2, 0}},
		{"::ffff:10.1.2.3", []uint32{2, 0}}, // not unmapped: IPv6 space
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", []uint32{4, 128, 2, 0}},
	} {
		if got := allMatches(&tbl, netip.MustParseAddr(tt.addr)); !equalU32(got, tt.want) {
			t.Errorf("Lookup(%s) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if tbl.Lookup(netip.Addr{}, func(uint32, int) bool { return true }) {
		t.Error("zero Addr matched")
	}
	if v, ok := tbl.Get(netip.MustParsePrefix("10.1.0.0/16")); !ok || v != 6 {
		t.Errorf("Get(10.1.0.0/16) = %d, %v", v, ok)
	}
	// Stops at the first value fn accepts.
	var seen []uint32
	tbl.Lookup(netip.MustParseAddr("10.1.2.3"), func(v uint32, _ int) bool { seen = append(seen, v); return v == 5 })
	if !equalU32(seen, []uint32{6, 5}) {
		t.Errorf("Lookup visited %v, want [6 5]", seen)
	}
}

// FuzzTable runs a stream of inserts and deletes drawn from the input
// against the brute-force table, checking lookups after each step.
func FuzzTable(f *testing.F) {
	f.Add([]byte{0x00, 10, 0, 0, 0, 8, 0x01, 10, 1, 0, 0, 16, 0x02, 10, 1, 2, 3})
	f.Add([]byte{0x80, 0x20, 0x01, 0x0d, 0xb8, 32, 0x81, 0x20, 0x01, 0x0d, 0xb8, 48, 0x82, 0x20, 0x01, 0x0d, 0xb8, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var tbl table
		ref := bruteTable{}
		for len(ops) >= 6 {
			op := ops[0]
			var a netip.Addr
			var n int
			if op&0x80 == 0 {
				a = netip.AddrFrom4([4]byte(ops[1:5]))
				n = int(ops[5]) % 33
				ops = ops[6:]
			} else {
				// Short IPv6 keys: four bytes spread over the address.
				var b [16]byte
				copy(b[0:2], ops[1:3])
				b[7], b[15] = ops[3], ops[4]
				a = netip.AddrFrom16(b)
				n = int(ops[5]) % 129
				ops = ops[6:]
			}
			p := netip.PrefixFrom(a, n).Masked()
			switch op & 3 {
			case 0, 1:
				tbl.Insert(p, uint32(op))
				ref[p] = uint32(op)
			case 2:
				_, had := ref[p]
				if tbl.Delete(p) != had {
					t.Fatalf("Delete(%s) != %v", p, had)
				}
				delete(ref, p)
			case 3:
				if got, want := allMatches(&tbl, a), ref.matches(a); !equalU32(got, want) {
					t.Fatalf("Lookup(%s) = %v, want %v", a, got, want)
				}
			}
			if tbl.Len() != len(ref) {
				t.Fatalf("Len %d, want %d", tbl.Len(), len(ref))
			}
		}
		checkShape(t, &tbl.root4, 0, true)
		checkShape(t, &tbl.root6, 0, false)
		for p := range ref {
			if got, want := allMatches(&tbl, p.Addr()), ref.matches(p.Addr()); !equalU32(got, want) {
				t.Fatalf("Lookup(%s) = %v, want %v", p.Addr(), got, want)
			}
		}
	})
}

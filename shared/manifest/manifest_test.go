package manifest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/goldenhex"
	"github.com/blockcast/beacon/shared/identity"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func testKey(t testing.TB, seed byte) *identity.Keypair {
	t.Helper()
	k, err := identity.FromSeed(bytes.Repeat([]byte{seed}, identity.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testParams(t testing.TB) Params {
	t.Helper()
	ch, err := ChannelOf("2001:db8::c", "ff3e::8000:7", 5001)
	if err != nil {
		t.Fatal(err)
	}
	return Params{
		URL: "/video/seg-00042.m4s?v=3", ContentType: "video/iso.segment", ETag: `"abc123"`,
		LastModified: t0.Add(-time.Hour), Sequence: 7, Issued: t0, Expires: t0.Add(time.Hour),
		TSI: 0x01020304, TOI: 42, Channel: ch,
		// Blocks of 200 with 56 parity symbols: the shapes these tests
		// (and their golden files) were written for.
		MaxBlockLen: 200,
	}
}

func object(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func build(t testing.TB, obj []byte, p Params, key *identity.Keypair) (*Manifest, []*HashList) {
	t.Helper()
	m, lists, err := Build(bytes.NewReader(obj), int64(len(obj)), p, key, fec.NewCodec())
	if err != nil {
		t.Fatal(err)
	}
	return m, lists
}

// symbols returns every symbol of block sbn as sent: source (the last one
// short) and all MaxParity parity symbols.
func symbols(t testing.TB, m *Manifest, obj []byte, sbn uint32) [][]byte {
	t.Helper()
	p, err := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen))
	if err != nil {
		t.Fatal(err)
	}
	src, err := p.Source(obj, sbn)
	if err != nil {
		t.Fatal(err)
	}
	k := len(src)
	parity, err := fec.NewCodec().Parity(src, k, k+int(m.FEC.MaxParity))
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, 0, k+len(parity))
	for esi, s := range src {
		out = append(out, s[:p.SymbolLen(sbn, esi)])
	}
	return append(out, parity...)
}

// TestEndToEnd builds a manifest, sends it and every hash part through ALC
// encoding, verifies them as a receiver would, checks every symbol and
// decodes each block from a random k of them.
func TestEndToEnd(t *testing.T) {
	key := testKey(t, 1)
	obj := object(3*200*alc.MaxSymbolSize+5000, 1)
	m, lists := build(t, obj, testParams(t), key)
	if len(lists) != 4 {
		t.Fatalf("%d blocks", len(lists))
	}
	mp, err := m.Packet()
	if err != nil {
		t.Fatal(err)
	}
	wire, err := mp.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := alc.Decode(wire)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := FromPacket(got)
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Verify(key.Public()); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rm, m) {
		t.Fatalf("manifest after the wire:\n%+v\nwant\n%+v", rm, m)
	}
	codec := fec.NewCodec()
	part, _ := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen))
	var out []byte
	for sbn, sent := range lists {
		if err := sent.Verify(m); err != nil {
			t.Fatal(err)
		}
		recv, err := NewHashList(rm, uint32(sbn))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range sent.Parts() {
			pkt, err := h.Packet(m)
			if err != nil {
				t.Fatal(err)
			}
			b, err := pkt.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			ap, err := alc.Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			hp, err := HashPartFromPacket(ap)
			if err != nil {
				t.Fatal(err)
			}
			if err := recv.Add(rm, hp); err != nil {
				t.Fatal(err)
			}
		}
		if err := recv.Verify(rm); err != nil {
			t.Fatal(err)
		}
		syms := symbols(t, m, obj, uint32(sbn))
		for esi, s := range syms {
			if !recv.Check(uint16(esi), s) {
				t.Fatalf("block %d ESI %d: genuine symbol refused", sbn, esi)
			}
		}
		k := part.BlockLen(uint32(sbn))
		d, err := codec.NewDecoder(k, int(m.FEC.MaxParity), int(m.FEC.SymbolLen))
		if err != nil {
			t.Fatal(err)
		}
		for _, esi := range rand.New(rand.NewPCG(uint64(sbn), 2)).Perm(len(syms))[:k] {
			s := syms[esi]
			if len(s) < int(m.FEC.SymbolLen) { // the last symbol, padded for the code
				s = append(append([]byte(nil), s...), make([]byte, int(m.FEC.SymbolLen)-len(s))...)
			}
			d.Add(esi, s)
		}
		src, err := d.Decode()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range src {
			out = append(out, s...)
		}
	}
	if !bytes.Equal(out[:len(obj)], obj) {
		t.Fatal("decoded object differs")
	}
}

// TestForgedSymbolRefused: a packet with the right header and the wrong
// bytes never gets past Check, nor does a genuine symbol replayed under
// another ESI, block or object, nor one cut short or padded.
func TestForgedSymbolRefused(t *testing.T) {
	key := testKey(t, 1)
	obj := object(2*200*alc.MaxSymbolSize-100, 2)
	m, lists := build(t, obj, testParams(t), key)
	_, otherLists := build(t, object(len(obj), 22), testParams(t), key) // same TOI, other bytes
	syms0, syms1 := symbols(t, m, obj, 0), symbols(t, m, obj, 1)
	last := len(syms1) - int(m.FEC.MaxParity) - 1 // the object's short last symbol
	flip := func(b []byte, i int) []byte { c := append([]byte(nil), b...); c[(i+len(c))%len(c)] ^= 1; return c }
	cases := []struct {
		name string
		hl   *HashList
		esi  int
		data []byte
	}{
		{"source byte flipped", lists[0], 3, flip(syms0[3], 100)},
		{"parity byte flipped", lists[0], 250, flip(syms0[250], 0)},
		{"last byte of last parity flipped", lists[1], len(syms1) - 1, flip(syms1[len(syms1)-1], -1)},
		{"zeros", lists[0], 0, make([]byte, len(syms0[0]))},
		{"another ESI's symbol", lists[0], 4, syms0[5]},
		{"another block's symbol", lists[0], 5, syms1[5]},
		{"same place in another object", otherLists[0], 5, syms0[5]},
		{"short symbol padded", lists[1], last, append(append([]byte(nil), syms1[last]...), 0)},
		{"full symbol cut", lists[0], 7, syms0[7][:len(syms0[7])-1]},
		{"ESI past max parity", lists[0], len(syms0), syms0[0]},
	}
	for _, c := range cases {
		if c.hl.Check(uint16(c.esi), c.data) {
			t.Errorf("%s: accepted", c.name)
		}
	}
	// A receiver that holds only some chunks refuses what they do not cover.
	part, _ := NewHashList(m, 0)
	if err := part.Add(m, &lists[0].Parts()[0]); err != nil {
		t.Fatal(err)
	}
	if !part.Check(0, syms0[0]) || part.Check(200, syms0[200]) {
		t.Fatal("partial list: covered symbol refused or uncovered symbol accepted")
	}
}

// TestTamperedManifest flips every bit of a signed manifest: each result
// is either not a manifest at all or fails its signature.
func TestTamperedManifest(t *testing.T) {
	key := testKey(t, 1)
	m, _ := build(t, object(5000, 3), testParams(t), key)
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		for bit := range 8 {
			c := append([]byte(nil), b...)
			c[i] ^= 1 << bit
			got, err := Decode(c)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("byte %d bit %d: %v", i, bit, err)
				}
				continue
			}
			if err := got.Verify(key.Public()); !errors.Is(err, ErrSignature) {
				t.Fatalf("byte %d bit %d: tampered manifest verified: %v", i, bit, err)
			}
		}
	}
	if err := m.Verify(testKey(t, 2).Public()); !errors.Is(err, ErrSignature) {
		t.Fatalf("another key's verify: %v", err)
	}
	// A field changed in memory, re-encoded, fails too.
	m2 := *m
	m2.ContentLength++
	if err := m2.Verify(key.Public()); !errors.Is(err, ErrSignature) {
		t.Fatalf("changed length verified: %v", err)
	}
}

// TestHashPartRefused: hash parts of another block or object, with a
// tampered digest, path or position, are refused before any symbol is
// checked against them.
func TestHashPartRefused(t *testing.T) {
	key := testKey(t, 1)
	obj := object(3*200*alc.MaxSymbolSize, 4)
	m, lists := build(t, obj, testParams(t), key)
	p2 := testParams(t)
	p2.TOI = 43
	m2, lists2 := build(t, obj, p2, key)
	p3 := testParams(t)
	m3, lists3 := build(t, object(len(obj), 5), p3, key) // same TOI, other bytes
	_, _ = m2, m3
	good := lists[1].Parts()[2]
	mod := func(f func(h *HashPart)) *HashPart {
		h := good
		h.Digests = append([]Digest(nil), good.Digests...)
		h.Path = append([]Node(nil), good.Path...)
		f(&h)
		return &h
	}
	list1, _ := NewHashList(m, 1)
	cases := []struct {
		name string
		h    *HashPart
		list *HashList
	}{
		{"another block's part", &lists[0].Parts()[2], list1},
		{"another object's part (other TOI)", &lists2[1].Parts()[2], list1},
		{"another object's part (same TOI)", &lists3[1].Parts()[2], list1},
		{"digest flipped", mod(func(h *HashPart) { h.Digests[5][0] ^= 1 }), list1},
		{"path node flipped", mod(func(h *HashPart) { h.Path[0][15] ^= 1 }), list1},
		{"path cut", mod(func(h *HashPart) { h.Path = h.Path[:len(h.Path)-1] }), list1},
		{"path extended", mod(func(h *HashPart) { h.Path = append(h.Path, Node{}) }), list1},
		{"chunk renumbered", mod(func(h *HashPart) { h.Chunk = 1 }), list1},
		{"first ESI moved", mod(func(h *HashPart) { h.FirstESI++ }), list1},
		{"digest dropped", mod(func(h *HashPart) { h.Digests = h.Digests[1:] }), list1},
		{"chunk past the block", mod(func(h *HashPart) { h.Chunk = 4 }), list1},
		{"SBN past the object", mod(func(h *HashPart) { h.SBN = 3 }), list1},
	}
	for _, c := range cases {
		if err := c.list.Add(m, c.h); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: Add = %v, want ErrMismatch", c.name, err)
		}
		if c.h.SBN == 1 && c.h.TOI == m.TOI {
			if err := c.h.Verify(m); !errors.Is(err, ErrMismatch) {
				t.Errorf("%s: Verify = %v, want ErrMismatch", c.name, err)
			}
		}
	}
	if list1.Complete() || list1.Check(0, symbols(t, m, obj, 1)[0]) {
		t.Fatal("refused parts left digests behind")
	}
	// A whole list of another block fails Verify against this manifest's
	// block, and another object's list fails too.
	if err := lists2[0].Verify(m); !errors.Is(err, ErrMismatch) {
		t.Errorf("another object's list verified: %v", err)
	}
	if err := lists3[0].Verify(m); !errors.Is(err, ErrMismatch) {
		t.Errorf("same-TOI other object's list verified: %v", err)
	}
	// Packet header and payload must agree.
	pkt, _ := good.Packet(m)
	pkt.ESI++
	if _, err := HashPartFromPacket(&pkt); !errors.Is(err, ErrMalformed) {
		t.Errorf("hash part under another chunk's header: %v", err)
	}
	pkt, _ = good.Packet(m)
	pkt.TOI = uint64(m.TOI)
	if _, err := HashPartFromPacket(&pkt); !errors.Is(err, ErrMalformed) {
		t.Errorf("hash part on a data TOI: %v", err)
	}
}

func TestReplay(t *testing.T) {
	key := testKey(t, 1)
	obj := object(1000, 6)
	mk := func(seq uint64, mod func(*Params)) *Manifest {
		p := testParams(t)
		p.Sequence = seq
		if mod != nil {
			mod(&p)
		}
		m, _ := build(t, obj, p, key)
		return m
	}
	var r Replay
	now := t0.Add(time.Minute)
	steps := []struct {
		name string
		m    *Manifest
		want error
	}{
		{"first", mk(7, nil), nil},
		{"same again (in-band repeat)", mk(7, nil), nil},
		{"older sequence", mk(6, nil), ErrReplay},
		{"same sequence, other content", mk(7, func(p *Params) { p.ETag = `"other"` }), ErrReplay},
		{"newer", mk(8, nil), nil},
		{"the previous one again", mk(7, nil), ErrReplay},
		{"other URL, older sequence", mk(1, func(p *Params) { p.URL = "/other" }), nil},
		{"expired", mk(9, func(p *Params) { p.Issued, p.Expires = t0.Add(-2*time.Hour), t0 }), ErrExpired},
		{"issued in the future", mk(9, func(p *Params) { p.Issued, p.Expires = t0.Add(time.Hour), t0.Add(2*time.Hour) }), ErrExpired},
	}
	for _, s := range steps {
		err := r.Check(s.m, now)
		if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
			t.Errorf("%s: %v, want %v", s.name, err, s.want)
		}
	}
	// Bounded: many URLs do not grow it past the cap.
	for i := range maxReplayEntries + 10 {
		m := *steps[0].m
		m.URL = "/u/" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		r.Check(&m, now)
	}
	if len(r.seen) > maxReplayEntries {
		t.Fatalf("%d entries", len(r.seen))
	}
}

func TestDecodeRefuses(t *testing.T) {
	key := testKey(t, 1)
	m, _ := build(t, object(100, 7), testParams(t), key)
	for _, c := range []struct {
		name string
		mod  func(*Manifest)
	}{
		{"relative URL", func(m *Manifest) { m.URL = "video" }},
		{"URL with space", func(m *Manifest) { m.URL = "/a b" }},
		{"URL too long", func(m *Manifest) { m.URL = "/" + string(bytes.Repeat([]byte{'a'}, MaxURL)) }},
		{"control in type", func(m *Manifest) { m.ContentType = "text/\n" }},
		{"expires before issued", func(m *Manifest) { m.Expires = m.Issued }},
		{"TOI 0", func(m *Manifest) { m.TOI = 0 }},
		{"TOI with the hash-list bit", func(m *Manifest) { m.TOI |= HashListBit }},
		{"group not multicast", func(m *Manifest) { m.Channel.Group = m.Channel.Source }},
		{"mixed families", func(m *Manifest) { m.Channel.Source = netip.MustParseAddr("192.0.2.1") }},
		{"port 0", func(m *Manifest) { m.Channel.Port = 0 }},
		{"encoding ID 5", func(m *Manifest) { m.FEC.EncodingID = 5 }},
		{"other instance", func(m *Manifest) { m.FEC.InstanceID++ }},
		{"symbol too big", func(m *Manifest) { m.FEC.SymbolLen = alc.MaxSymbolSize + 1 }},
		{"block + parity over 256", func(m *Manifest) { m.FEC.MaxParity = 57 }},
		{"too many chunks", func(m *Manifest) { m.ContentLength = 1 << 45 }},
	} {
		c2 := *m
		c.mod(&c2)
		if _, err := c2.MarshalBinary(); !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: encoded: %v", c.name, err)
		}
	}
	b, _ := m.MarshalBinary()
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"truncated", b[:len(b)-1]},
		{"trailing byte", append(append([]byte(nil), b...), 0)},
		{"version 2", func() []byte { c := append([]byte(nil), b...); c[2] = 2; return c }()},
		{"family 5", func() []byte { c := append([]byte(nil), b...); c[3] = 5; return c }()},
		{"too long", make([]byte, MaxSize+1)},
	} {
		if got, err := Decode(c.b); !errors.Is(err, ErrMalformed) || got != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestGolden pins the encodings of a manifest and a hash part (made from a
// fixed key and object; ed25519 signatures are deterministic).
func TestGolden(t *testing.T) {
	m, lists := build(t, object(70000, 8), testParams(t), testKey(t, 9))
	mb, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	hb, err := lists[0].Parts()[0].MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string][]byte{"manifest": mb, "hash_part": hb} {
		path := filepath.Join("testdata", name+".hex")
		if *goldenhex.Update {
			if err := os.WriteFile(path, goldenhex.Format(name, got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		want, err := goldenhex.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s:\ngot\n%s", name, path, hex.Dump(got))
		}
	}
	gm, err := Decode(mb)
	if err != nil || !reflect.DeepEqual(gm, m) {
		t.Fatalf("golden manifest decodes to %+v, %v", gm, err)
	}
	if err := gm.Verify(testKey(t, 9).Public()); err != nil {
		t.Fatal(err)
	}
	gh, err := DecodeHashPart(hb)
	if err != nil || gh.Verify(m) != nil {
		t.Fatalf("golden hash part: %v", err)
	}
}

// TestOverhead measures manifest + hash-part bytes on the wire against the
// object's size: built for real for 1 KB, 1 MB and 20 MB (and compared
// with Overhead's count), computed by Overhead for 1 GB.
func TestOverhead(t *testing.T) {
	key := testKey(t, 1)
	for _, c := range []struct {
		name  string
		size  int64
		build bool
		limit float64
	}{
		{"1 KB", 1 << 10, true, 0},
		{"1 MB", 1 << 20, true, 0.03},
		{"20 MB", 20 << 20, !testing.Short(), 0.03},
		{"1 GB", 1 << 30, false, 0.03},
	} {
		var m *Manifest
		if c.build {
			var lists []*HashList
			p := testParams(t)
			p.MaxBlockLen = 0 // the defaults
			m, lists = build(t, object(int(c.size), 9), p, key)
			mp, _ := m.Packet()
			wire := int64(mp.Len())
			for _, hl := range lists {
				for _, h := range hl.Parts() {
					p, err := h.Packet(m)
					if err != nil {
						t.Fatal(err)
					}
					b, err := p.AppendTo(nil)
					if err != nil {
						t.Fatal(err)
					}
					wire += int64(len(b))
				}
			}
			if got, err := Overhead(m); err != nil || got != wire {
				t.Fatalf("%s: Overhead = %d, %v; packets sum to %d", c.name, got, err, wire)
			}
		} else {
			p := testParams(t)
			m = &Manifest{Sequence: p.Sequence, Issued: p.Issued, Expires: p.Expires, URL: p.URL, ContentType: p.ContentType,
				ETag: p.ETag, LastModified: p.LastModified, TSI: p.TSI, TOI: p.TOI, Channel: p.Channel, ContentLength: uint64(c.size),
				FEC: FEC{EncodingID: fec.EncodingID, InstanceID: fec.InstanceID, SymbolLen: alc.MaxSymbolSize, MaxBlockLen: DefaultMaxBlockLen, MaxParity: DefaultMaxParity}}
		}
		o, err := Overhead(m)
		if err != nil {
			t.Fatal(err)
		}
		ratio := float64(o) / float64(c.size)
		t.Logf("%s: %d bytes of manifest + hash lists = %.2f%% of the object", c.name, o, 100*ratio)
		if c.limit > 0 && ratio > c.limit {
			t.Errorf("%s: overhead %.2f%% above %.0f%%", c.name, 100*ratio, 100*c.limit)
		}
		if c.limit == 0 && o > 2*alc.MaxPacketSize {
			// A 1 KB object cannot meet 3%: one signature alone is 64
			// bytes. It costs one manifest and one hash-part packet.
			t.Errorf("%s: %d bytes, more than two packets", c.name, o)
		}
	}
}

package objrecv

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
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

func object(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// shape is an object's coding: symbol length, k, parity.
type shape struct{ e, k, mp int }

var (
	small = shape{e: 256, k: 16, mp: 8}                  // structural tests: fast
	full  = shape{e: alc.MaxSymbolSize, k: 200, mp: 56}  // the defaults
	heavy = shape{e: alc.MaxSymbolSize, k: 128, mp: 128} // 20% loss
	codec = fec.NewCodec()                               // shared encoder cache
)

// sender is the sending side of one object: every packet it can send,
// made with shared/manifest, shared/fec and shared/alc as castd does.
type sender struct {
	t     testing.TB
	obj   []byte
	m     *manifest.Manifest
	part  fec.Blocks
	key   *identity.Keypair
	lists []*manifest.HashList
	syms  [][][]byte // [sbn][esi] as sent (last source symbol short)
}

func newSender(t testing.TB, obj []byte, s shape, tsi, toi uint32, key *identity.Keypair) *sender {
	t.Helper()
	ch, err := manifest.ChannelOf("192.0.2.1", "232.1.2.3", 5001)
	if err != nil {
		t.Fatal(err)
	}
	m, lists, err := manifest.Build(bytes.NewReader(obj), int64(len(obj)), manifest.Params{
		URL: "/obj", ContentType: "application/octet-stream", Sequence: 1, Issued: t0, Expires: t0.Add(time.Hour),
		TSI: tsi, TOI: toi, Channel: ch, SymbolLen: s.e, MaxBlockLen: s.k, MaxParity: s.mp,
	}, key, codec)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := fec.Partition(m.ContentLength, s.e, s.k)
	sd := &sender{t: t, obj: obj, m: m, part: part, key: key, lists: lists}
	for sbn := range part.N {
		src, err := part.Source(obj, sbn)
		if err != nil {
			t.Fatal(err)
		}
		k := len(src)
		parity, err := codec.Parity(src, k, k+s.mp)
		if err != nil {
			t.Fatal(err)
		}
		var all [][]byte
		for esi, sym := range src {
			all = append(all, sym[:part.SymbolLen(sbn, esi)])
		}
		sd.syms = append(sd.syms, append(all, parity...))
	}
	return sd
}

func (s *sender) data(sbn uint32, esi int) []byte {
	s.t.Helper()
	p := alc.Packet{TSI: uint64(s.m.TSI), TOI: uint64(s.m.TOI), SBN: sbn, SBL: uint16(s.part.BlockLen(sbn)), ESI: uint16(esi), Payload: s.syms[sbn][esi]}
	b, err := p.AppendTo(nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *sender) hashPart(sbn uint32, chunk int) []byte {
	s.t.Helper()
	h := s.lists[sbn].Parts()[chunk]
	p, err := h.Packet(s.m)
	if err != nil {
		s.t.Fatal(err)
	}
	b, err := p.AppendTo(nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// pass returns one carousel pass over blocks from..N-1: each block's hash
// parts, then its k source and parity symbols, dropping with probability
// loss (seeded). On a lossy path the hash parts go three times, as the
// sender repeats them: a lost chunk leaves 64 symbols unverifiable.
func (s *sender) pass(from uint32, parity int, loss float64, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var out [][]byte
	for sbn := from; sbn < s.part.N; sbn++ {
		reps := 1
		if loss > 0 {
			reps = 3
		}
		for range reps {
			for c := range s.lists[sbn].Parts() {
				if r.Float64() >= loss {
					out = append(out, s.hashPart(sbn, c))
				}
			}
		}
		for esi := range s.part.BlockLen(sbn) + parity {
			if r.Float64() >= loss {
				out = append(out, s.data(sbn, esi))
			}
		}
	}
	return out
}

func (s *sender) assembler(w *bytes.Buffer, cfg Config) *Assembler {
	s.t.Helper()
	a, err := New(s.m, s.key.Public(), w, cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return a
}

// repair answers a NACK as castd would: the hash chunks asked for, and for
// symbol ranges the source symbols asked for.
func (s *sender) repair(rs []Range) [][]byte {
	var out [][]byte
	for _, r := range rs {
		for i := int(r.First); i < int(r.First)+int(r.Count); i++ {
			if r.Kind == HashChunk {
				out = append(out, s.hashPart(r.SBN, i))
			} else {
				out = append(out, s.data(r.SBN, i))
			}
		}
	}
	return out
}

func feedAll(t testing.TB, a *Assembler, pkts [][]byte, label string) {
	t.Helper()
	for _, p := range pkts {
		if err := a.Feed(p, label); err != nil && !errors.Is(err, ErrDuplicate) && !errors.Is(err, ErrRejected) {
			t.Fatalf("feed: %v", err)
		}
		if n := len(a.blocks); n > a.cfg.MaxBlocks {
			t.Fatalf("%d blocks in memory, bound %d", n, a.cfg.MaxBlocks)
		}
		if len(a.held) > a.cfg.MaxHeld {
			t.Fatalf("%d symbols held, bound %d", len(a.held), a.cfg.MaxHeld)
		}
	}
}

func sameObject(t testing.TB, got, want []byte) {
	t.Helper()
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Fatalf("object differs: %d bytes, want %d", len(got), len(want))
	}
}

func TestNoLoss(t *testing.T) {
	obj := object(3*200*alc.MaxSymbolSize+777, 1)
	s := newSender(t, obj, full, 9, 5, testKey(t, 1))
	var out bytes.Buffer
	a := s.assembler(&out, Config{})
	feedAll(t, a, s.pass(0, 0, 0, 1), "multicast")
	if !a.Done() {
		t.Fatal("not done")
	}
	sameObject(t, out.Bytes(), obj)
	st := a.Stats()
	if st.Bytes["multicast"] != uint64(len(obj)) || st.ParityUsed != 0 || st.Blocks != s.part.N || len(st.Rejected) != 0 {
		t.Fatalf("stats %+v", st)
	}
	if rs := a.Missing(100); len(rs) != 0 || len(a.Fallback()) != 0 {
		t.Fatalf("done but missing %v", rs)
	}
}

func TestRandomLoss(t *testing.T) {
	for _, tc := range []struct {
		name   string
		loss   float64
		s      shape
		parity int
	}{
		{"1%", 0.01, full, 10},
		{"5%", 0.05, full, 30},
		{"20%", 0.20, heavy, 96},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := object(4*tc.s.k*tc.s.e-1000, 2)
			s := newSender(t, obj, tc.s, 9, 5, testKey(t, 1))
			var out bytes.Buffer
			a := s.assembler(&out, Config{MaxBlocks: 3})
			feedAll(t, a, s.pass(0, tc.parity, tc.loss, 42), "multicast")
			if !a.Done() {
				t.Fatalf("not done: missing %v", a.Missing(20))
			}
			sameObject(t, out.Bytes(), obj)
			st := a.Stats()
			if st.ParityUsed == 0 {
				t.Fatal("no parity used")
			}
			t.Logf("loss %v: parity used %d symbols (%d bytes), %d duplicates", tc.loss, st.ParityUsed, st.ParityByte, st.Duplicates)
		})
	}
}

// TestLossBeyondParity: Missing names exactly the source ESIs lost and how
// many symbols each block still needs; repairs of those complete it.
func TestLossBeyondParity(t *testing.T) {
	obj := object(3*small.k*small.e-5, 3)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	var out bytes.Buffer
	a := s.assembler(&out, Config{})
	lost := map[uint32][]int{0: {3, 4, 5, 9}, 1: {0, 15}, 2: {7}}
	const parity = 1
	for sbn := range s.part.N {
		for c := range s.lists[sbn].Parts() {
			feedAll(t, a, [][]byte{s.hashPart(sbn, c)}, "multicast")
		}
		for esi := range s.part.BlockLen(sbn) + parity {
			if !slices.Contains(lost[sbn], esi) {
				feedAll(t, a, [][]byte{s.data(sbn, esi)}, "multicast")
			}
		}
	}
	// Block 2 lost one source symbol and got one parity: decoded, yet
	// waits behind the others.
	if a.Done() || out.Len() != 0 {
		t.Fatalf("done %v, %d bytes written", a.Done(), out.Len())
	}
	rs := a.Missing(100)
	got := map[uint32][]int{}
	for _, r := range rs {
		if r.Kind != Symbols {
			t.Fatalf("range %+v: hash lists were all received", r)
		}
		for e := int(r.First); e < int(r.First)+int(r.Count); e++ {
			got[r.SBN] = append(got[r.SBN], e)
		}
		if want := uint16(len(lost[r.SBN]) - parity); r.Need != want {
			t.Fatalf("block %d needs %d, want %d", r.SBN, r.Need, want)
		}
	}
	want := map[uint32][]int{0: lost[0], 1: lost[1]}
	if len(got) != len(want) || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
		t.Fatalf("missing %v, want %v", got, want)
	}
	if rs := a.Missing(1); len(rs) != 1 {
		t.Fatalf("Missing(1) gave %d ranges", len(rs))
	}
	feedAll(t, a, s.repair(rs), "repair")
	if !a.Done() {
		t.Fatalf("not done after repairs: %v", a.Missing(10))
	}
	sameObject(t, out.Bytes(), obj)
	st := a.Stats()
	if st.Bytes["repair"] == 0 || st.ParityUsed != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestForgedFlood: packets with the right header and wrong bytes, ten for
// each honest packet, interleaved: every one is rejected and counted and
// the object is byte-identical.
func TestForgedFlood(t *testing.T) {
	obj := object(3*small.k*small.e+100, 4)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	var out bytes.Buffer
	a := s.assembler(&out, Config{})
	r := rand.New(rand.NewPCG(4, 4))
	forged, forgedParts := 0, 0
	for sbn := range s.part.N {
		for c := range s.lists[sbn].Parts() {
			// A hash part with one digest flipped: its Merkle path fails.
			h := s.lists[sbn].Parts()[c]
			h.Digests = slices.Clone(h.Digests)
			h.Digests[r.IntN(len(h.Digests))][r.IntN(manifest.DigestLen)] ^= 1
			p, _ := h.Packet(s.m)
			b, _ := p.AppendTo(nil)
			feedAll(t, a, [][]byte{b}, "attacker")
			forgedParts++
			feedAll(t, a, [][]byte{s.hashPart(sbn, c)}, "multicast")
		}
		k := s.part.BlockLen(sbn)
		for esi := range k + 2 {
			for range 10 {
				// Forge a symbol not yet held (so it reaches the digest check).
				p, _ := alc.Decode(s.data(sbn, esi))
				p.Payload = slices.Clone(p.Payload)
				if r.IntN(2) == 0 {
					p.Payload[r.IntN(len(p.Payload))] ^= byte(1 + r.IntN(255))
				} else {
					for i := range p.Payload {
						p.Payload[i] = byte(r.Uint32())
					}
				}
				b, _ := p.AppendTo(nil)
				err := a.Feed(b, "attacker")
				if esi < k {
					if !errors.Is(err, ErrRejected) {
						t.Fatalf("forged block %d ESI %d: %v", sbn, esi, err)
					}
					forged++
				}
			}
			feedAll(t, a, [][]byte{s.data(sbn, esi)}, "multicast")
		}
	}
	if !a.Done() {
		t.Fatal("not done")
	}
	sameObject(t, out.Bytes(), obj)
	st := a.Stats()
	if st.Rejected[RejectDigest] != uint64(forged) || st.Rejected[RejectHashPart] != uint64(forgedParts) || st.Bytes["attacker"] != 0 {
		t.Fatalf("rejected %v, want %d digest and %d hashpart; bytes %v", st.Rejected, forged, forgedParts, st.Bytes)
	}

	// Forgeries that arrive before their hash list are held, never
	// trusted: checked on its arrival, and the honest copy still wins.
	var out2 bytes.Buffer
	a2 := s.assembler(&out2, Config{MaxHeld: 64})
	var pkts [][]byte
	for _, honest := range s.pass(0, 2, 0, 5) {
		p, _ := alc.Decode(honest)
		if p.TOI == uint64(s.m.TOI) {
			p.Payload = slices.Clone(p.Payload)
			p.Payload[0] ^= 0x80
			b, _ := p.AppendTo(nil)
			pkts = append(pkts, b)
		}
	}
	feedAll(t, a2, pkts, "attacker")
	feedAll(t, a2, s.pass(0, 2, 0, 5), "multicast")
	if !a2.Done() {
		t.Fatal("not done")
	}
	sameObject(t, out2.Bytes(), obj)
	st = a2.Stats()
	if st.Rejected[RejectDigest] == 0 || st.Bytes["attacker"] != 0 || st.Held != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOtherObjects: packets of another session, another object, another
// version of the same object (same TSI and TOI, other bytes and root) and
// its hash list are all rejected before they touch a block.
func TestOtherObjects(t *testing.T) {
	obj := object(2*small.k*small.e, 5)
	key := testKey(t, 1)
	s := newSender(t, obj, small, 9, 5, key)
	otherTSI := newSender(t, obj, small, 10, 5, key)
	otherTOI := newSender(t, obj, small, 9, 6, key)
	otherObj := newSender(t, object(len(obj), 6), small, 9, 5, key)
	var out bytes.Buffer
	a := s.assembler(&out, Config{})
	cases := []struct {
		pkts   [][]byte
		reason Reason
	}{
		{otherTSI.pass(0, 0, 0, 1), RejectTSI},
		{otherTOI.pass(0, 0, 0, 1), RejectTOI},
	}
	for _, c := range cases {
		for _, p := range c.pkts {
			if err := a.Feed(p, "x"); !errors.Is(err, ErrRejected) {
				t.Fatalf("%s: %v", c.reason, err)
			}
		}
		if got := a.Stats().Rejected[c.reason]; got != uint64(len(c.pkts)) {
			t.Fatalf("%s: %d counted of %d", c.reason, got, len(c.pkts))
		}
	}
	// Another object's hash list under our TSI/TOI: not under our root.
	for sbn := range otherObj.part.N {
		for c := range otherObj.lists[sbn].Parts() {
			if err := a.Feed(otherObj.hashPart(sbn, c), "x"); !errors.Is(err, ErrRejected) {
				t.Fatalf("foreign hash part: %v", err)
			}
		}
	}
	if n := len(a.blocks); n != 0 {
		t.Fatalf("foreign hash parts took %d slots", n)
	}
	// Our hash list, then the other object's symbols: wrong digests.
	for sbn := range s.part.N {
		for c := range s.lists[sbn].Parts() {
			feedAll(t, a, [][]byte{s.hashPart(sbn, c)}, "multicast")
		}
		for esi := range s.part.BlockLen(sbn) {
			if err := a.Feed(otherObj.data(sbn, esi), "x"); !errors.Is(err, ErrRejected) {
				t.Fatalf("foreign symbol: %v", err)
			}
		}
	}
	// Header fields out of range.
	bad := func(mut func(p *alc.Packet)) []byte {
		p, _ := alc.Decode(s.data(0, 1))
		mut(p)
		b, _ := p.AppendTo(nil)
		return b
	}
	for _, c := range []struct {
		b      []byte
		reason Reason
	}{
		{bad(func(p *alc.Packet) { p.SBN = s.part.N }), RejectSBN},
		{bad(func(p *alc.Packet) { p.SBL = 99 }), RejectSBL},
		{bad(func(p *alc.Packet) { p.ESI = uint16(small.k + small.mp) }), RejectESI},
		{bad(func(p *alc.Packet) { p.Payload = p.Payload[1:] }), RejectLength},
		{bad(func(p *alc.Packet) { p.Payload = append(p.Payload, 0) }), RejectLength},
		{bad(func(p *alc.Packet) { p.TOI = manifest.ManifestTOI }), RejectManifest},
		{[]byte{0x10, 0, 1}, RejectMalformed},
	} {
		before := a.Stats().Rejected[c.reason]
		if err := a.Feed(c.b, "x"); !errors.Is(err, ErrRejected) || a.Stats().Rejected[c.reason] != before+1 {
			t.Fatalf("%s: %v", c.reason, err)
		}
	}
	if out.Len() != 0 || a.Stats().Bytes["x"] != 0 {
		t.Fatal("foreign bytes accepted")
	}
	feedAll(t, a, s.pass(0, 0, 0, 1), "multicast")
	if !a.Done() {
		t.Fatal("not done")
	}
	sameObject(t, out.Bytes(), obj)
}

// TestJoinHalfway: a receiver that joins at the middle block gets the
// rest by multicast and the start by repair, never holding more than
// MaxBlocks blocks, and writes the object in order.
func TestJoinHalfway(t *testing.T) {
	obj := object(10*small.k*small.e-77, 7)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	var out bytes.Buffer
	a := s.assembler(&out, Config{MaxBlocks: 4})
	feedAll(t, a, s.pass(s.part.N/2, 0, 0, 1), "multicast")
	if out.Len() != 0 {
		t.Fatal("wrote before block 0")
	}
	if a.Stats().Rejected[RejectNoRoom] == 0 {
		t.Fatal("10 blocks fitted in 4 slots")
	}
	for round := 0; !a.Done(); round++ {
		if round > 50 {
			t.Fatalf("no progress: %v", a.Missing(10))
		}
		rs := a.Missing(8)
		if len(rs) == 0 {
			t.Fatal("incomplete but nothing missing")
		}
		feedAll(t, a, s.repair(rs), "repair")
	}
	sameObject(t, out.Bytes(), obj)
	st := a.Stats()
	if st.Bytes["multicast"] == 0 || st.Bytes["repair"] == 0 {
		t.Fatalf("bytes by path %v", st.Bytes)
	}
}

// orderWriter records what was written when.
type orderWriter struct {
	buf    bytes.Buffer
	writes int
}

func (w *orderWriter) Write(b []byte) (int, error) { w.writes++; return w.buf.Write(b) }

func TestOutOfOrderBlocks(t *testing.T) {
	obj := object(5*small.k*small.e+3, 8)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	var w orderWriter
	a, err := New(s.m, s.key.Public(), &w, Config{MaxBlocks: 8})
	if err != nil {
		t.Fatal(err)
	}
	for i := int(s.part.N) - 1; i >= 0; i-- {
		var pkts [][]byte
		sbn := uint32(i)
		for c := range s.lists[sbn].Parts() {
			pkts = append(pkts, s.hashPart(sbn, c))
		}
		perm := rand.New(rand.NewPCG(uint64(i), 9)).Perm(s.part.BlockLen(sbn) + small.mp)
		for _, esi := range perm {
			pkts = append(pkts, s.data(sbn, esi))
		}
		feedAll(t, a, pkts, "multicast")
		if i > 0 && w.writes != 0 {
			t.Fatalf("block %d decoded: wrote before block 0", i)
		}
	}
	if !a.Done() {
		t.Fatal("not done")
	}
	sameObject(t, w.buf.Bytes(), obj)
}

// TestStallAndFallback: no progress for Stall: Stalled, and Fallback's
// byte ranges fetched and handed to Fill finish the object; bytes that do
// not match a held hash list are refused.
func TestStallAndFallback(t *testing.T) {
	obj := object(4*small.k*small.e-9, 9)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	now := t0
	var out bytes.Buffer
	a := s.assembler(&out, Config{Stall: time.Minute, Now: func() time.Time { return now }})
	pkts := s.pass(0, 0, 0, 1)
	var kept [][]byte
	for _, b := range pkts {
		p, _ := alc.Decode(b)
		if p.TOI == uint64(s.m.TOI) && (p.SBN == 1 || p.SBN == 3) && p.ESI%3 == 0 {
			continue // blocks 1 and 3 lose symbols, no parity
		}
		kept = append(kept, b)
	}
	feedAll(t, a, kept, "multicast")
	now = now.Add(59 * time.Second)
	if a.Stalled() {
		t.Fatal("stalled early")
	}
	now = now.Add(time.Second)
	if !a.Stalled() {
		t.Fatal("not stalled")
	}
	fb := a.Fallback()
	want := []ByteRange{
		{Off: s.part.Offset(1), Len: uint64(s.part.Bytes(1))}, // block 2 is decoded, waiting behind 1
		{Off: s.part.Offset(3), Len: uint64(s.part.Bytes(3))},
	}
	if !slices.Equal(fb, want) {
		t.Fatalf("fallback %v, want %v", fb, want)
	}
	// Tampered bytes for block 1, whose hash list is held: refused.
	bad := slices.Clone(obj[fb[0].Off : fb[0].Off+fb[0].Len])
	bad[10] ^= 1
	if err := a.Fill(fb[0].Off, bad, "fallback"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("tampered fill: %v", err)
	}
	for _, r := range fb {
		if err := a.Fill(r.Off, obj[r.Off:r.Off+r.Len], "fallback"); err != nil {
			t.Fatal(err)
		}
	}
	if !a.Done() || a.Stalled() {
		t.Fatal("not done")
	}
	sameObject(t, out.Bytes(), obj)
	if a.Stats().Bytes["fallback"] != uint64(s.part.Bytes(1)+s.part.Bytes(3)) {
		t.Fatalf("bytes %v", a.Stats().Bytes)
	}
}

type failWriter struct{}

var errDisk = errors.New("disk full")

func (failWriter) Write([]byte) (int, error) { return 0, errDisk }

func TestWriterFails(t *testing.T) {
	obj := object(2*small.k*small.e, 10)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	a, err := New(s.m, s.key.Public(), failWriter{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for _, p := range s.pass(0, 0, 0, 1) {
		if err := a.Feed(p, "multicast"); errors.Is(err, ErrWriter) {
			last = err
		}
	}
	if !errors.Is(last, errDisk) || !errors.Is(a.Err(), ErrWriter) || a.Done() {
		t.Fatalf("last %v, Err %v", last, a.Err())
	}
	if err := a.Feed(s.data(1, 0), "multicast"); !errors.Is(err, ErrRejected) {
		t.Fatalf("after failure: %v", err)
	}
}

func TestNewRefusesUnsigned(t *testing.T) {
	s := newSender(t, object(1000, 11), small, 9, 5, testKey(t, 1))
	if _, err := New(s.m, testKey(t, 2).Public(), &bytes.Buffer{}, Config{}); !errors.Is(err, manifest.ErrSignature) {
		t.Fatalf("wrong key: %v", err)
	}
	m := *s.m
	m.ContentLength++
	if _, err := New(&m, s.key.Public(), &bytes.Buffer{}, Config{}); !errors.Is(err, manifest.ErrSignature) {
		t.Fatalf("tampered manifest: %v", err)
	}
	if _, err := New(s.m, s.key.Public(), &bytes.Buffer{}, Config{MaxBlocks: 1}); err == nil {
		t.Fatal("MaxBlocks 1 accepted")
	}
}

func TestEmptyObject(t *testing.T) {
	s := newSender(t, nil, small, 9, 5, testKey(t, 1))
	a := s.assembler(&bytes.Buffer{}, Config{})
	if !a.Done() || a.Stalled() || len(a.Missing(10)) != 0 {
		t.Fatal("empty object not done")
	}
}

// TestReplayedHashPartsCannotHogSlots: anyone on the segment can replay
// genuine hash parts of far-off blocks ahead of time. They must not keep
// the blocks needed next out of memory: the farthest block gives way.
func TestReplayedHashPartsCannotHogSlots(t *testing.T) {
	obj := object(10*small.k*small.e, 14)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	var out bytes.Buffer
	a := s.assembler(&out, Config{MaxBlocks: 3})
	for sbn := uint32(7); sbn < s.part.N; sbn++ {
		for c := range s.lists[sbn].Parts() {
			a.Feed(s.hashPart(sbn, c), "attacker")
		}
	}
	// The honest pass loses two symbols of block 0 (no parity): blocks 1
	// and 2 must wait in memory meanwhile.
	var pkts [][]byte
	for _, b := range s.pass(0, 0, 0, 1) {
		if p, _ := alc.Decode(b); p.TOI == uint64(s.m.TOI) && p.SBN == 0 && p.ESI < 2 {
			continue
		}
		pkts = append(pkts, b)
	}
	feedAll(t, a, pkts, "multicast")
	rs := a.Missing(10)
	if len(rs) != 1 || rs[0] != (Range{SBN: 0, Kind: Symbols, First: 0, Count: 2, Need: 2}) {
		t.Fatalf("missing %+v, want block 0 ESIs 0-1", rs)
	}
	feedAll(t, a, s.repair(rs), "repair")
	if want := s.part.Offset(3); uint64(out.Len()) != want {
		t.Fatalf("wrote %d bytes after the repair, want blocks 0-2 (%d)", out.Len(), want)
	}
}

// TestConcurrentPaths: multicast and repair feed from their own
// goroutines while the caller polls; run with -race.
func TestConcurrentPaths(t *testing.T) {
	obj := object(6*small.k*small.e+1, 15)
	s := newSender(t, obj, small, 9, 5, testKey(t, 1))
	var out bytes.Buffer
	a := s.assembler(&out, Config{MaxBlocks: 3})
	done := make(chan struct{})
	for i, label := range []string{"multicast", "repair"} {
		pkts := s.pass(0, small.mp, 0.3, uint64(i))
		go func() {
			defer func() { done <- struct{}{} }()
			for _, p := range pkts {
				a.Feed(p, label)
				a.Missing(4)
				a.Stats()
			}
		}()
	}
	<-done
	<-done
	for round := 0; !a.Done(); round++ {
		if round > 50 {
			t.Fatalf("no progress: %v", a.Missing(10))
		}
		feedAll(t, a, s.repair(a.Missing(64)), "repair")
	}
	sameObject(t, out.Bytes(), obj)
}

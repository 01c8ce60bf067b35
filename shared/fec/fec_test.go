package fec

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestPartition(t *testing.T) {
	tests := []struct {
		name           string
		l              uint64
		e, b           int
		t              uint64
		n              uint32
		large, small   int
		numLarge       uint32
		lastBlockBytes int
	}{
		{"empty", 0, 1344, 200, 0, 0, 0, 0, 0, 0},
		{"one byte", 1, 1344, 200, 1, 1, 1, 1, 0, 1},
		{"one symbol exactly", 1344, 1344, 200, 1, 1, 1, 1, 0, 1344},
		{"one block exactly", 1344 * 200, 1344, 200, 200, 1, 200, 200, 0, 1344 * 200},
		{"one symbol over a block", 1344*200 + 1, 1344, 200, 201, 2, 101, 100, 1, 1344*100 - 1343},
		// RFC 5052 §9.1 arithmetic by hand: T = 1000, N = 5, A = 200.
		{"five even blocks", 1000 * 10, 10, 200, 1000, 5, 200, 200, 0, 2000},
		// T = 1001, N = 6, A_large = 167, A_small = 166, I = 1001-996 = 5.
		{"uneven", 1001*10 - 3, 10, 200, 1001, 6, 167, 166, 5, 166*10 - 3},
		{"1 MB", 1 << 20, 1344, 200, 781, 4, 196, 195, 1, 195*1344 - (781*1344 - 1<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Partition(tt.l, tt.e, tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if p.T != tt.t || p.N != tt.n || p.LargeLen != tt.large || p.SmallLen != tt.small || p.NumLarge != tt.numLarge {
				t.Fatalf("got %+v", p)
			}
			// The blocks tile the object exactly, in order, none above B.
			var total uint64
			var syms uint64
			for sbn := uint32(0); sbn < p.N; sbn++ {
				if p.Offset(sbn) != total {
					t.Fatalf("block %d at %d, want %d", sbn, p.Offset(sbn), total)
				}
				k := p.BlockLen(sbn)
				if k < 1 || k > tt.b {
					t.Fatalf("block %d has %d symbols", sbn, k)
				}
				var sum int
				for esi := 0; esi < k; esi++ {
					sum += p.SymbolLen(sbn, esi)
				}
				if sum != p.Bytes(sbn) {
					t.Fatalf("block %d: symbols sum to %d bytes, block is %d", sbn, sum, p.Bytes(sbn))
				}
				total += uint64(p.Bytes(sbn))
				syms += uint64(k)
			}
			if total != tt.l || syms != tt.t {
				t.Fatalf("blocks cover %d bytes / %d symbols, want %d / %d", total, syms, tt.l, tt.t)
			}
			if p.N > 0 && p.Bytes(p.N-1) != tt.lastBlockBytes {
				t.Fatalf("last block %d bytes, want %d", p.Bytes(p.N-1), tt.lastBlockBytes)
			}
			if p.BlockLen(p.N) != 0 || p.Bytes(p.N) != 0 || p.SymbolLen(p.N, 0) != 0 {
				t.Fatal("block past the end is not empty")
			}
		})
	}
}

func TestPartitionErrors(t *testing.T) {
	for _, c := range []struct {
		l    uint64
		e, b int
	}{
		{1, 0, 200}, {1, 1 << 16, 200}, {1, 1344, 0}, {1, 1344, 256},
		{MaxTransferLength + 1, 1344, 200},
		{MaxTransferLength, 1, 1}, // 2^48 blocks: SBN overflows
	} {
		if _, err := Partition(c.l, c.e, c.b); !errors.Is(err, ErrParams) {
			t.Errorf("Partition(%d, %d, %d) = %v, want ErrParams", c.l, c.e, c.b, err)
		}
	}
}

func randomObject(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestErasurePatterns encodes blocks and decodes them from every class of
// what may arrive: everything, only source (all parity lost), exactly k
// with all parity used, k random of k+m, parity made later on demand.
func TestErasurePatterns(t *testing.T) {
	c := NewCodec()
	const e = 64
	for _, shape := range []struct {
		name string
		l    int
		b, m int
	}{
		{"one symbol object", 5, 200, 3},
		{"one full symbol", e, 200, 1},
		{"short last symbol", 10*e + 7, 200, 4},
		{"several blocks", 3*20*e + 33, 20, 5},
		{"(200,20)", 200 * e, 200, 20},
		{"k+m = 256", 200*e - 1, 200, 56},
	} {
		obj := randomObject(shape.l, uint64(shape.l))
		p, err := Partition(uint64(len(obj)), e, shape.b)
		if err != nil {
			t.Fatal(err)
		}
		for sbn := uint32(0); sbn < p.N; sbn++ {
			src, err := p.Source(obj, sbn)
			if err != nil {
				t.Fatal(err)
			}
			k, m := len(src), shape.m
			parity, err := c.Parity(src, k, k+m)
			if err != nil {
				t.Fatal(err)
			}
			all := append(append([][]byte{}, src...), parity...)
			r := rand.New(rand.NewPCG(uint64(sbn), 7))
			patterns := map[string][]int{
				"no loss":           seq(0, k+m),
				"only parity lost":  seq(0, k),
				"m (the most) lost": seq(m, k+m),
				"random k":          r.Perm(k + m)[:k],
			}
			if m >= k {
				patterns["only parity"] = seq(k, 2*k)
			}
			for pname, esis := range patterns {
				if len(esis) < k {
					continue
				}
				d, err := c.NewDecoder(k, m, e)
				if err != nil {
					t.Fatal(err)
				}
				for _, esi := range esis {
					if _, err := d.Add(esi, all[esi]); err != nil {
						t.Fatal(err)
					}
				}
				got, err := d.Decode()
				if err != nil {
					t.Fatalf("%s block %d %s: %v", shape.name, sbn, pname, err)
				}
				var out []byte
				for _, s := range got {
					out = append(out, s...)
				}
				want := obj[p.Offset(sbn) : p.Offset(sbn)+uint64(p.Bytes(sbn))]
				if !bytes.Equal(out[:len(want)], want) || bytes.ContainsFunc(out[len(want):], func(r rune) bool { return r != 0 }) {
					t.Fatalf("%s block %d %s: decoded bytes differ", shape.name, sbn, pname)
				}
			}
		}
	}
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// TestParityOnDemand checks the property senders rely on to make more
// parity later: parity ESI r is the same whichever encoder made it, so
// symbols from [k, k+20) sent first and [k+20, k+56) made on demand
// decode together, and match one (k, 56) encoding.
func TestParityOnDemand(t *testing.T) {
	c := NewCodec()
	const k, e = 200, 32
	src, _ := Partition(k*e, e, k)
	obj := randomObject(k*e, 3)
	syms, _ := src.Source(obj, 0)
	first, err := c.Parity(syms, k, k+20)
	if err != nil {
		t.Fatal(err)
	}
	later, err := c.Parity(syms, k+20, k+56)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := c.Parity(syms, k, k+56)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range append(first, later...) {
		if !bytes.Equal(s, whole[i]) {
			t.Fatalf("parity ESI %d depends on the encoder's m", k+i)
		}
	}
	// Decode from 150 source symbols, the last 20 first parity and 30 later.
	d, _ := c.NewDecoder(k, 56, e)
	for i := 0; i < 150; i++ {
		d.Add(i, syms[i])
	}
	for i := 0; i < 20; i++ {
		d.Add(k+i, first[i])
	}
	for i := 0; i < 30; i++ {
		d.Add(k+20+i, later[i])
	}
	got, err := d.Decode()
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !bytes.Equal(got[i], syms[i]) {
			t.Fatalf("symbol %d differs", i)
		}
	}
}

func TestDecoderRefuses(t *testing.T) {
	c := NewCodec()
	d, err := c.NewDecoder(3, 2, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Decode(); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("decode with nothing: %v", err)
	}
	for _, bad := range []struct {
		esi int
		n   int
	}{{-1, 8}, {5, 8}, {0, 7}, {0, 9}, {1, 0}} {
		if _, err := d.Add(bad.esi, make([]byte, bad.n)); !errors.Is(err, ErrSymbol) {
			t.Errorf("Add(%d, %d bytes) = %v, want ErrSymbol", bad.esi, bad.n, err)
		}
	}
	if ok, _ := d.Add(0, make([]byte, 8)); !ok {
		t.Fatal("first symbol not kept")
	}
	if ok, _ := d.Add(0, make([]byte, 8)); ok {
		t.Fatal("duplicate kept")
	}
	if d.Count() != 1 || !d.Has(0) || d.Has(1) {
		t.Fatalf("count %d", d.Count())
	}
	for _, kp := range [][2]int{{0, 1}, {1, 256}, {200, 57}, {-1, 2}} {
		if _, err := c.NewDecoder(kp[0], kp[1], 8); !errors.Is(err, ErrParams) {
			t.Errorf("NewDecoder(%d, %d) = %v", kp[0], kp[1], err)
		}
	}
	if _, err := c.Parity([][]byte{make([]byte, 4), make([]byte, 5)}, 2, 3); !errors.Is(err, ErrParams) {
		t.Errorf("ragged source accepted: %v", err)
	}
	if _, err := c.Parity([][]byte{make([]byte, 4)}, 0, 3); !errors.Is(err, ErrParams) {
		t.Errorf("parity ESI inside the source range accepted: %v", err)
	}
}

func TestCodecCacheBounded(t *testing.T) {
	c := NewCodec()
	for k := 1; k <= maxCached+10; k++ {
		if _, err := c.Encoder(k, 2); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.enc) > maxCached {
		t.Fatalf("%d encoders cached, bound %d", len(c.enc), maxCached)
	}
	a, _ := c.Encoder(200, 20)
	b, _ := c.Encoder(200, 20)
	if a != b {
		t.Fatal("encoder not cached")
	}
}

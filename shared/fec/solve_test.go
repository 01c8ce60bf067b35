package fec

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// checkSolve encodes k random source symbols of e bytes with m parity
// (reedsolomon, Cauchy), drops the ESIs in lose (and any parity beyond
// the first k survivors, as the Decoder holds only k), and checks that
// solve rebuilds exactly what reedsolomon's ReconstructData rebuilds,
// which is the original data.
func checkSolve(t *testing.T, k, m, e int, lose []int, seed uint64) {
	t.Helper()
	enc, err := NewEncoder(k, m)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	shards := make([][]byte, k+m)
	for i := range shards {
		shards[i] = make([]byte, e)
		if i < k {
			for j := range shards[i] {
				shards[i][j] = byte(r.Uint32())
			}
		}
	}
	if err := enc.Encode(shards); err != nil {
		t.Fatal(err)
	}
	held := make([][]byte, k+m)
	for i, s := range shards {
		held[i] = bytes.Clone(s)
	}
	for _, i := range lose {
		held[i] = nil
	}
	n := 0
	for i := range held { // the Decoder keeps the first k symbols it gets
		if held[i] != nil {
			if n == k {
				held[i] = nil
			} else {
				n++
			}
		}
	}
	theirs := make([][]byte, k+m)
	copy(theirs, held)
	ours := make([][]byte, k+m)
	copy(ours, held)
	errTheirs := enc.ReconstructData(theirs)
	errOurs := solve(ours, k, e)
	if (errTheirs == nil) != (errOurs == nil) {
		t.Fatalf("(k, m, e) = (%d, %d, %d) lose %v: reedsolomon %v, solve %v", k, m, e, lose, errTheirs, errOurs)
	}
	if errOurs != nil {
		return
	}
	for i := range k {
		if !bytes.Equal(ours[i], theirs[i]) || !bytes.Equal(ours[i], shards[i]) {
			t.Fatalf("(k, m, e) = (%d, %d, %d) lose %v: source symbol %d differs from reedsolomon's", k, m, e, lose, i)
		}
	}
}

func TestSolveMatchesReedSolomon(t *testing.T) {
	for _, tc := range []struct {
		k, m, e int
		lose    []int
	}{
		{1, 1, 1, []int{0}},
		{1, 255, 3, []int{0, 1, 2}},
		{2, 1, 5, []int{1}},
		{10, 4, 7, []int{0, 3, 9, 10}},
		{10, 4, 64, []int{0, 1, 2, 3}},
		{10, 4, 64, []int{0, 1, 2, 3, 4}}, // too many lost: both fail
		{200, 20, 1344, []int{0}},
		{200, 20, 1344, seq(0, 20)},
		{200, 20, 1344, seq(180, 200)},
		{200, 56, 33, seq(100, 156)},
		{128, 128, 9, seq(0, 128)}, // only parity
	} {
		t.Run(fmt.Sprintf("%d,%d,%d,lost=%d", tc.k, tc.m, tc.e, len(tc.lose)), func(t *testing.T) {
			checkSolve(t, tc.k, tc.m, tc.e, tc.lose, uint64(tc.k*1000+len(tc.lose)))
		})
	}
}

// FuzzSolve: any shape, any loss pattern, any symbol length: solve and
// reedsolomon agree byte for byte (and fail together).
func FuzzSolve(f *testing.F) {
	f.Add(uint8(10), uint8(4), uint16(7), []byte{0, 3, 9, 10}, uint64(1))
	f.Add(uint8(200), uint8(20), uint16(100), []byte{5, 6, 7, 8, 199}, uint64(2))
	f.Add(uint8(1), uint8(0), uint16(1), []byte{}, uint64(3))
	f.Fuzz(func(t *testing.T, k, m uint8, e uint16, lose []byte, seed uint64) {
		kk, mm, ee := int(k)%200+1, int(m)%56, int(e)%1500+1
		var l []int
		for _, b := range lose {
			if int(b) < kk+mm {
				l = append(l, int(b))
			}
		}
		checkSolve(t, kk, mm, ee, l, seed)
	})
}

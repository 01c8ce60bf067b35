package fec

import (
	"fmt"
	"sync"
)

// The decoder solves only for the missing source symbols. klauspost's
// ReconstructData inverts the whole k×k submatrix of the surviving rows
// (8 M multiplies for k = 200, whatever the loss: ~150 M instructions on
// a MIPS router) and then rebuilds; with a systematic Cauchy code the
// t missing source symbols are the solution of a t×t system instead:
//
//	for each of t parity rows r held:  Σ_{i lost} C[r][i]·d_i = p_r ⊕ Σ_{i held} C[r][i]·d_i
//
// Every square submatrix of a Cauchy matrix is invertible, so the system
// always has one solution; it costs t·(k−t)·e + t²·e multiply-adds plus a
// t³ inversion, and gives the same bytes as reedsolomon (tested against
// it, table-driven and fuzzed).

// GF(2^8) with reedsolomon's field polynomial x^8+x^4+x^3+x^2+1 (0x11d)
// and generator 2.
var gfExp, gfLog = func() (exp [510]byte, log [256]byte) {
	x := 1
	for i := range 255 {
		exp[i], exp[i+255] = byte(x), byte(x)
		log[x] = byte(i)
		x <<= 1
		if x&0x100 != 0 {
			x ^= 0x11d
		}
	}
	return exp, log
}()

func gfMul(a, b byte) byte {
	if a == 0 || b == 0 {
		return 0
	}
	return gfExp[int(gfLog[a])+int(gfLog[b])]
}

func gfInv(a byte) byte { return gfExp[255-int(gfLog[a])] } // a != 0

// cauchy is the generator's coefficient of source symbol c in parity row
// r (k <= r < 256, c < k), as reedsolomon.WithCauchyMatrix builds it.
func cauchy(r, c int) byte { return gfInv(byte(r ^ c)) }

// mulTable[c][x] = c·x. 64 KB, built on the first decode that needs it
// (~0.5 M instructions on MIPS) rather than held in flash: the multiply-add
// loop then costs one table load a byte.
var (
	mulOnce  sync.Once
	mulTable *[256][256]byte
)

func mulTab() *[256][256]byte {
	mulOnce.Do(func() {
		t := new([256][256]byte)
		for c := 1; c < 256; c++ {
			lc := int(gfLog[c])
			for x := 1; x < 256; x++ {
				t[c][x] = gfExp[lc+int(gfLog[x])]
			}
		}
		mulTable = t
	})
	return mulTable
}

// mulAdd sets dst ^= c·src (len(src) >= len(dst)).
func mulAdd(tab *[256][256]byte, dst, src []byte, c byte) {
	switch c {
	case 0:
		return
	case 1:
		src = src[:len(dst)]
		for i := range dst {
			dst[i] ^= src[i]
		}
		return
	}
	row := &tab[c]
	src = src[:len(dst)]
	i := 0
	// Unrolled by 16 through array pointers (one bounds check each): on
	// MIPS the loop's checks otherwise cost as much as the work.
	for ; i+16 <= len(dst); i += 16 {
		d, s := (*[16]byte)(dst[i:]), (*[16]byte)(src[i:])
		d[0] ^= row[s[0]]
		d[1] ^= row[s[1]]
		d[2] ^= row[s[2]]
		d[3] ^= row[s[3]]
		d[4] ^= row[s[4]]
		d[5] ^= row[s[5]]
		d[6] ^= row[s[6]]
		d[7] ^= row[s[7]]
		d[8] ^= row[s[8]]
		d[9] ^= row[s[9]]
		d[10] ^= row[s[10]]
		d[11] ^= row[s[11]]
		d[12] ^= row[s[12]]
		d[13] ^= row[s[13]]
		d[14] ^= row[s[14]]
		d[15] ^= row[s[15]]
	}
	for ; i < len(dst); i++ {
		dst[i] ^= row[src[i]]
	}
}

// invert inverts the t×t matrix a in place (Gauss–Jordan). It fails only
// on a singular matrix, which a Cauchy submatrix never is.
func invert(a [][]byte) ([][]byte, error) {
	t := len(a)
	inv := make([][]byte, t)
	for i := range inv {
		inv[i] = make([]byte, t)
		inv[i][i] = 1
	}
	for col := range t {
		p := col
		for p < t && a[p][col] == 0 {
			p++
		}
		if p == t {
			return nil, fmt.Errorf("fec: singular %d×%d system", t, t)
		}
		a[col], a[p] = a[p], a[col]
		inv[col], inv[p] = inv[p], inv[col]
		if s := gfInv(a[col][col]); s != 1 {
			for j := range t {
				a[col][j] = gfMul(a[col][j], s)
				inv[col][j] = gfMul(inv[col][j], s)
			}
		}
		for r := range t {
			if f := a[r][col]; r != col && f != 0 {
				for j := range t {
					a[r][j] ^= gfMul(f, a[col][j])
					inv[r][j] ^= gfMul(f, inv[col][j])
				}
			}
		}
	}
	return inv, nil
}

// solve fills shards[i] for each missing source symbol i < k from the
// held ones (k in all, each e bytes; the rest nil), for the systematic
// Cauchy code of NewEncoder. Parity shards stay as they are.
func solve(shards [][]byte, k, e int) error {
	var lost, rows []int
	for i := range k {
		if shards[i] == nil {
			lost = append(lost, i)
		}
	}
	t := len(lost)
	if t == 0 {
		return nil
	}
	for r := k; r < len(shards) && len(rows) < t; r++ {
		if shards[r] != nil {
			rows = append(rows, r)
		}
	}
	if len(rows) < t {
		return fmt.Errorf("%w: %d source symbols lost, %d parity held", ErrNotEnough, t, len(rows))
	}
	tab := mulTab()
	// Syndromes: each parity row minus the held source symbols' share.
	syn := make([]byte, t*e)
	a := make([][]byte, t)
	for x, r := range rows {
		s := syn[x*e : (x+1)*e : (x+1)*e]
		copy(s, shards[r])
		for i := range k {
			if shards[i] != nil {
				mulAdd(tab, s, shards[i], cauchy(r, i))
			}
		}
		a[x] = make([]byte, t)
		for y, i := range lost {
			a[x][y] = cauchy(r, i)
		}
	}
	inv, err := invert(a)
	if err != nil {
		return err
	}
	out := make([]byte, t*e)
	for y, i := range lost {
		o := out[y*e : (y+1)*e : (y+1)*e]
		for x := range rows {
			mulAdd(tab, o, syn[x*e:(x+1)*e], inv[y][x])
		}
		shards[i] = o
	}
	return nil
}

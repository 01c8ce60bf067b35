package fec

import (
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// maxCached bounds the encoders a Codec keeps: one per (k, m) seen, and a
// sender sees few shapes (full blocks, the two RFC 5052 block lengths,
// the parity counts it uses), so a small bound never churns in practice
// and a hostile mix of shapes cannot grow memory without limit.
const maxCached = 64

// Codec makes and caches one Reed–Solomon encoder per (k, m). Building one
// with the Cauchy matrix is cheap (~0.6 M instructions on MIPS for
// (200,20)) but not free, and the default Vandermonde-derived matrix
// costs ~2000 times more, so encoders are always Cauchy and always
// cached. A Codec is safe for concurrent use; the zero value is not
// usable, call NewCodec.
type Codec struct {
	mu  sync.Mutex
	enc map[[2]int]reedsolomon.Encoder
}

// NewCodec returns an empty encoder cache.
func NewCodec() *Codec {
	return &Codec{enc: make(map[[2]int]reedsolomon.Encoder)}
}

// NewEncoder builds a (k, m) Reed–Solomon encoder the way Codec does,
// uncached. The inversion cache is off: it keeps one k×k matrix per loss
// pattern ever decoded (40 KB each for k = 200), which grows without bound
// on a long-running receiver.
func NewEncoder(k, m int) (reedsolomon.Encoder, error) {
	if k < 1 || m < 0 || k+m > MaxSymbols {
		return nil, fmt.Errorf("%w: (k, m) = (%d, %d), want k >= 1, m >= 0, k+m <= %d", ErrParams, k, m, MaxSymbols)
	}
	enc, err := reedsolomon.New(k, m, reedsolomon.WithCauchyMatrix(), reedsolomon.WithInversionCache(false))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParams, err)
	}
	return enc, nil
}

// Encoder returns the cached (k, m) encoder, building it on first use.
func (c *Codec) Encoder(k, m int) (reedsolomon.Encoder, error) {
	key := [2]int{k, m}
	c.mu.Lock()
	enc, ok := c.enc[key]
	c.mu.Unlock()
	if ok {
		return enc, nil
	}
	enc, err := NewEncoder(k, m)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.enc[key]; ok {
		return prev, nil
	}
	if len(c.enc) >= maxCached {
		for k := range c.enc { // evict one at random
			delete(c.enc, k)
			break
		}
	}
	c.enc[key] = enc
	return enc, nil
}

// Parity makes the parity symbols with ESIs from..to-1 of a block whose k
// source symbols are src (each the same length). The generator's parity
// row r depends only on r and k, not on how many parity rows the encoder
// was built with, so parity made later on demand (a larger to) extends
// what was sent before and never contradicts it.
func (c *Codec) Parity(src [][]byte, from, to int) ([][]byte, error) {
	k := len(src)
	if k < 1 || from < k || to < from || to > MaxSymbols {
		return nil, fmt.Errorf("%w: parity ESIs [%d, %d) for k = %d, want k <= from <= to <= %d", ErrParams, from, to, k, MaxSymbols)
	}
	if from == to {
		return nil, nil
	}
	e := len(src[0])
	for i, s := range src {
		if len(s) != e || e == 0 {
			return nil, fmt.Errorf("%w: source symbol %d is %d bytes, symbol 0 is %d", ErrParams, i, len(s), e)
		}
	}
	enc, err := c.Encoder(k, to-k)
	if err != nil {
		return nil, err
	}
	shards := make([][]byte, to)
	copy(shards, src)
	buf := make([]byte, (to-k)*e)
	for i := k; i < to; i++ {
		shards[i] = buf[(i-k)*e : (i-k+1)*e : (i-k+1)*e]
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("fec: encode (%d, %d): %w", k, to-k, err)
	}
	return shards[from:to], nil
}

// Decoder rebuilds one source block from any k of its encoding symbols
// (source or parity, ESI below k+maxParity). Hand it only symbols that
// were verified against the manifest: the code corrects erasures, not
// errors, and one wrong symbol silently corrupts the whole block.
type Decoder struct {
	k, n, e int
	shards  [][]byte
	have    int
	done    bool
}

// NewDecoder returns a Decoder for a block of k source symbols of e bytes
// whose ESIs run up to k+maxParity-1.
func (c *Codec) NewDecoder(k, maxParity, e int) (*Decoder, error) {
	if e < 1 {
		return nil, fmt.Errorf("%w: symbol length %d", ErrParams, e)
	}
	// The decoder solves with the code's coefficients directly (solve.go):
	// no encoder to build.
	if k < 1 || maxParity < 0 || k+maxParity > MaxSymbols {
		return nil, fmt.Errorf("%w: (k, m) = (%d, %d), want k >= 1, m >= 0, k+m <= %d", ErrParams, k, maxParity, MaxSymbols)
	}
	return &Decoder{k: k, n: k + maxParity, e: e, shards: make([][]byte, k+maxParity)}, nil
}

// Add stores a copy of symbol esi. It reports whether the symbol was
// kept: a duplicate ESI, or any symbol once k are held, is not. A symbol
// of the wrong length or ESI is an error wrapping ErrSymbol.
func (d *Decoder) Add(esi int, sym []byte) (bool, error) {
	if esi < 0 || esi >= d.n {
		return false, fmt.Errorf("%w: ESI %d not below %d", ErrSymbol, esi, d.n)
	}
	if len(sym) != d.e {
		return false, fmt.Errorf("%w: ESI %d is %d bytes, want %d", ErrSymbol, esi, len(sym), d.e)
	}
	if d.have >= d.k || d.shards[esi] != nil {
		return false, nil
	}
	d.shards[esi] = append(make([]byte, 0, d.e), sym...)
	d.have++
	return true, nil
}

// Has reports whether symbol esi is held.
func (d *Decoder) Has(esi int) bool { return esi >= 0 && esi < d.n && d.shards[esi] != nil }

// Count returns how many distinct symbols are held (at most k).
func (d *Decoder) Count() int { return d.have }

// Ready reports whether k distinct symbols are held.
func (d *Decoder) Ready() bool { return d.have >= d.k }

// Decode returns the block's k source symbols, each e bytes (the object's
// last symbol still carries its zero padding). It fails with ErrNotEnough
// before k symbols are held.
func (d *Decoder) Decode() ([][]byte, error) {
	if !d.Ready() {
		return nil, fmt.Errorf("%w: have %d of %d", ErrNotEnough, d.have, d.k)
	}
	if !d.done {
		if err := solve(d.shards, d.k, d.e); err != nil {
			return nil, fmt.Errorf("fec: reconstruct (%d, %d): %w", d.k, d.n-d.k, err)
		}
		d.done = true
	}
	return d.shards[:d.k:d.k], nil
}

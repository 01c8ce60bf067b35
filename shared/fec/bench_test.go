package fec

import (
	"fmt"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"
)

const benchE = 1344

func benchBlock(b *testing.B) (*Codec, [][]byte) {
	c := NewCodec()
	obj := randomObject(200*benchE, 1)
	p, _ := Partition(uint64(len(obj)), benchE, 200)
	src, _ := p.Source(obj, 0)
	return c, src
}

// BenchmarkEncode makes the 20 parity symbols of a (200,20) block;
// MB/s counts source bytes.
func BenchmarkEncode(b *testing.B) {
	c, src := benchBlock(b)
	b.SetBytes(200 * benchE)
	for range b.N {
		if _, err := c.Parity(src, 200, 220); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode rebuilds a (200,20) block that lost 1 or 20 source
// symbols (20: every parity symbol used); MB/s counts source bytes. The
// Decoder solves only for the lost symbols (solve.go): a t×t inversion and
// t·k·e multiply-adds, not klauspost's 200×200 inversion for any loss.
func BenchmarkDecode(b *testing.B) {
	c, src := benchBlock(b)
	parity, _ := c.Parity(src, 200, 220)
	all := append(append([][]byte{}, src...), parity...)
	for _, lost := range []int{1, 20} {
		b.Run(fmt.Sprintf("lost=%d", lost), func(b *testing.B) {
			b.SetBytes(200 * benchE)
			for range b.N {
				d, _ := c.NewDecoder(200, 20, benchE)
				for esi := lost; esi < 200+lost; esi++ {
					d.Add(esi, all[esi])
				}
				if _, err := d.Decode(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewEncoder compares building a (200,20) encoder with the
// Cauchy matrix against the default one and prints the ratio.
func BenchmarkNewEncoder(b *testing.B) {
	measure := func(opts ...reedsolomon.Option) time.Duration {
		const n = 3
		start := time.Now()
		for range n {
			if _, err := reedsolomon.New(200, 20, opts...); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start) / n
	}
	var cauchy, dflt time.Duration
	b.Run("cauchy", func(b *testing.B) {
		for range b.N {
			if _, err := NewEncoder(200, 20); err != nil {
				b.Fatal(err)
			}
		}
		cauchy = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("default", func(b *testing.B) {
		for range b.N {
			if _, err := reedsolomon.New(200, 20, reedsolomon.WithInversionCache(false)); err != nil {
				b.Fatal(err)
			}
		}
		dflt = b.Elapsed() / time.Duration(b.N)
	})
	if cauchy == 0 {
		cauchy = measure(reedsolomon.WithCauchyMatrix())
	}
	if dflt == 0 {
		dflt = measure()
	}
	// Printed, not logged, so that a plain -bench run shows it.
	fmt.Printf("New(200,20): Cauchy %v, default %v: the default matrix costs %.0fx the Cauchy one\n", cauchy, dflt, float64(dflt)/float64(cauchy))
}

package router

import (
	"math/rand"
	"testing"
)

func TestV4Filter(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	var f v4Filter
	in := map[uint32]uint32{}
	// Grow through several sizes, removing some along the way.
	for i := 0; i < 200_000; i++ {
		ip := rng.Uint32()
		if _, ok := in[ip]; ok {
			continue
		}
		in[ip] = 0
		f.add(ip, in)
		if i%4 == 0 {
			for k := range in {
				delete(in, k)
				f.remove(k)
				break
			}
		}
	}
	if f.n != len(in) {
		t.Fatalf("filter counts %d addresses, want %d", f.n, len(in))
	}
	for ip := range in {
		if !f.mayHave(ip) {
			t.Fatalf("false negative for %08x", ip)
		}
	}
	fp := 0
	const probes = 100_000
	for i := 0; i < probes; i++ {
		ip := rng.Uint32()
		if _, ok := in[ip]; !ok && f.mayHave(ip) {
			fp++
		}
	}
	// Eight or more bits per address: at most about 1 - e^(-1/8) = 11.8%.
	if rate := float64(fp) / probes; rate > 0.13 {
		t.Errorf("false positive rate %.3f with %d bits for %d addresses", rate, len(f.counts), f.n)
	}
	for ip := range in {
		f.remove(ip)
	}
	for i, w := range f.bits {
		if w != 0 {
			t.Fatalf("bits left in word %d after removing everything", i)
		}
	}
	if f.mayHave(rng.Uint32()) {
		t.Error("empty filter may have an address")
	}
}

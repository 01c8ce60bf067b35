package objrecv

import (
	"io"
	"os"
	"strconv"
	"testing"
)

// benchBlock feeds one block of k = 200 symbols of 1344 bytes per
// iteration (its 4 hash parts, then lost source symbols replaced by as
// many parity symbols) and reports the cost per packet. lost = 0 never
// runs the Reed–Solomon decode (systematic: the source is the block);
// lost = 20 decodes 20 erasures.
func benchBlock(b *testing.B, lost int) {
	obj := object(full.k*full.e, 13)
	s := newSender(b, obj, full, 9, 5, testKey(b, 1))
	var pkts [][]byte
	for c := range s.lists[0].Parts() {
		pkts = append(pkts, s.hashPart(0, c))
	}
	for esi := lost; esi < full.k+lost; esi++ {
		pkts = append(pkts, s.data(0, esi))
	}
	b.SetBytes(int64(len(obj)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a, err := newAssembler(s.m, io.Discard, Config{Codec: codec})
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range pkts {
			if err := a.Feed(p, "multicast"); err != nil {
				b.Fatal(err)
			}
		}
		if !a.Done() {
			b.Fatal("not done")
		}
	}
	perPkt := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(len(pkts))
	b.ReportMetric(perPkt, "ns/pkt")
	b.ReportMetric(1e9/perPkt, "pkt/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/block")
}

// Measured (2026-12-04, k = 200, E = 1344): amd64 (EPYC, 2 shared cores)
// 1.3 µs/packet (775k pkt/s) with no loss, 8.2 µs/packet (1.68 ms a block)
// with 20 source symbols rebuilt from parity; refusing a forged packet
// 1.2 µs. mipsle under qemu (instructions, TestCountInstructions): 63 M a
// block of 204 packets with no loss, ~0.31 M a packet, of which SHA-256
// is ~0.19 M: ~2,800 pkt/s at 880 MHz and one instruction a cycle, below
// the ~4,650 pkt/s of 50 Mbit/s.
func BenchmarkBlockNoLoss(b *testing.B)   { benchBlock(b, 0) }
func BenchmarkBlockParity20(b *testing.B) { benchBlock(b, 20) }

// BenchmarkRejectForged: the cost of refusing one forged data packet (right
// header, wrong bytes): parse, range checks, one SHA-256.
func BenchmarkRejectForged(b *testing.B) {
	obj := object(full.k*full.e, 13)
	s := newSender(b, obj, full, 9, 5, testKey(b, 1))
	a, err := newAssembler(s.m, io.Discard, Config{Codec: codec})
	if err != nil {
		b.Fatal(err)
	}
	for c := range s.lists[0].Parts() {
		if err := a.Feed(s.hashPart(0, c), "multicast"); err != nil {
			b.Fatal(err)
		}
	}
	forged := s.data(0, 7)
	forged[len(forged)-1] ^= 1
	b.SetBytes(int64(full.e))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := a.Feed(forged, "attacker"); err == nil {
			b.Fatal("accepted")
		}
	}
}

// TestCountInstructions runs one block through an Assembler
// $OBJRECV_COUNT_N times, for counting guest instructions under qemu user
// emulation (as test/wirebench does): run it with N = 0 and N = 2 and
// halve the difference in "Trace" lines; setup cancels out.
//
//	GOARCH=mipsle GOMIPS=softfloat go test -c -o objrecv.mipsle ./shared/objrecv
//	OBJRECV_COUNT_N=2 OBJRECV_COUNT_LOST=20 qemu-mipsel-static -singlestep -d exec,nochain \
//	  ./objrecv.mipsle -test.run CountInstructions 2>&1 | grep -c Trace
func TestCountInstructions(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("OBJRECV_COUNT_N"))
	if err != nil {
		t.Skip("set OBJRECV_COUNT_N (and OBJRECV_COUNT_LOST) to count instructions under qemu")
	}
	lost, _ := strconv.Atoi(os.Getenv("OBJRECV_COUNT_LOST"))
	sh := shape{e: full.e, k: full.k, mp: max(lost, 1)} // parity only as needed: cheap setup
	s := newSender(t, object(sh.k*sh.e, 13), sh, 9, 5, testKey(t, 1))
	var pkts [][]byte
	for c := range s.lists[0].Parts() {
		pkts = append(pkts, s.hashPart(0, c))
	}
	for esi := lost; esi < sh.k+lost; esi++ {
		pkts = append(pkts, s.data(0, esi))
	}
	if _, err := codec.NewDecoder(sh.k, sh.mp, sh.e); err != nil { // warm the encoder cache
		t.Fatal(err)
	}
	for range n {
		a, err := newAssembler(s.m, io.Discard, Config{Codec: codec})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			if err := a.Feed(p, "multicast"); err != nil {
				t.Fatal(err)
			}
		}
		if !a.Done() {
			t.Fatal("not done")
		}
	}
}

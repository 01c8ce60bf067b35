package mcsend

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkFigures prints the figures (make bench): for N
// receivers on a native segment and independent loss, the bytes castd puts
// on the segment (data + parity, and with the manifest and hash lists)
// and sends by unicast (early media + repairs), each over the object's
// size, next to N (what unicast to every receiver costs), and the time the
// last receiver finished over one unicast download at the same rate.
// It runs the real sender and real objrecv assemblers in one process over
// the in-memory segment (sim_test.go), with a fake clock: deterministic.
func BenchmarkFigures(b *testing.B) {
	size := 4 << 20
	if s := os.Getenv("MCSEND_FIGURES_SIZE"); s != "" {
		fmt.Sscan(s, &size)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nmulticast object transport, %d-byte object, 50 Mbit/s channel, repair budget 2 Mbit/s a node\n", size)
	fmt.Fprintf(&out, "%5s %6s %12s %10s %9s %9s %8s %s\n", "N", "loss", "segment", "+auth", "unicast", "complete", "unicast", "wall")
	for range b.N {
		for _, n := range []int{10, 50, 200} {
			for _, loss := range []float64{0, 0.01, 0.05} {
				start := time.Now()
				r := runSim(b, simConfig{n: n, size: size, loss: loss, seed: 1, repairRate: 2e6 / 8})
				fmt.Fprintf(&out, "%5d %5.0f%% %12.3f %10.3f %9.3f %8.2fx %7dx %v\n", n, loss*100, r.dataPar, r.segment, r.unicast,
					float64(r.complete)/float64(r.unicastT), n, time.Since(start).Round(time.Millisecond))
			}
		}
	}
	fmt.Print(out.String())
}

func BenchmarkSimProfile(b *testing.B) {
	for range b.N {
		runSim(b, simConfig{n: 100, size: 2 << 20, loss: 0, seed: 1})
	}
}

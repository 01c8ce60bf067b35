package mcsend

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/manifest"
)

var figures = flag.Bool("mcsend.figures", false, "run BenchmarkFigures (about a minute of CPU)")

// BenchmarkFigures prints the figures (make bench): for N
// receivers on a native segment and independent loss, the bytes castd puts
// on the segment (data + parity, and with the manifest and hash lists)
// and sends by unicast (early media + repairs), each over the object's
// size, next to N (what unicast to every receiver costs), and the time the
// last receiver finished over one unicast download at the same rate.
// It runs the real sender and real objrecv assemblers in one process over
// the in-memory segment (sim_test.go), with a fake clock: deterministic.
func BenchmarkFigures(b *testing.B) {
	if !*figures {
		b.Skip("the figures run under make bench (-mcsend.figures)")
	}
	size := 4 << 20
	if s := os.Getenv("MCSEND_FIGURES_SIZE"); s != "" {
		fmt.Sscan(s, &size)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\nmulticast object transport, %d-byte object, 50 Mbit/s channel, repair budget 2 Mbit/s a node\n", size)
	fmt.Fprintf(&out, "segment = bytes castd put on the multicast segment, unicast = early media + repairs, each / object size;\n")
	fmt.Fprintf(&out, "complete = last receiver done / one unicast download at the channel rate; last unicast column = N (unicast to all)\n")
	fmt.Fprintf(&out, "%5s %6s %12s %10s %9s %9s %8s %s\n", "N", "loss", "data+parity", "+auth", "unicast", "complete", "unicast", "wall")
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

// cpuTime is the process's user + system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSend is castd's CPU per Gbit/s sent: a session over a 16 MB
// object, one carousel pass (source, 5% proactive parity, manifest and
// hash lists) into a sink that only counts, unpaced; building the
// manifest (reading the object, all its parity, every digest, the
// signature) is measured apart, as it is paid once per object and not
// per byte sent. CPU time (getrusage), not wall time: the machine is
// shared.
func BenchmarkSend(b *testing.B) {
	b.Run("sink=memory", func(b *testing.B) { benchSend(b, nil) })
	b.Run("sink=udp-loopback", func(b *testing.B) {
		// Every datagram through the kernel to a socket on loopback
		// that does not read (the kernel drops what overflows it).
		rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer rx.Close()
		tx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer tx.Close()
		to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
		benchSend(b, func(pkt []byte) error { _, err := tx.WriteToUDPAddrPort(pkt, to); return err })
	})
}

type funcSink struct {
	countSink
	f func([]byte) error
}

func (s *funcSink) Send(ch manifest.Channel, pkt []byte) error {
	s.countSink.Send(ch, pkt)
	return s.f(pkt)
}

func benchSend(b *testing.B, f func([]byte) error) {
	obj := testObject(16<<20, 1)
	var sink Sink = &countSink{}
	count := sink.(*countSink)
	if f != nil {
		fs := &funcSink{f: f}
		sink, count = fs, &fs.countSink
	}
	clk := t0
	snd, err := New(Options{Key: testKey(b, 1), Alloc: testPool(b), Native: sink, Idle: time.Millisecond,
		Now: func() time.Time { return clk }, Sleep: func(ctx context.Context, d time.Duration) error { clk = clk.Add(d); return ctx.Err() }})
	if err != nil {
		b.Fatal(err)
	}
	defer snd.Close()
	var build, send time.Duration
	b.ResetTimer()
	for i := range b.N {
		c0 := cpuTime()
		ss, err := snd.Offer(context.Background(), Object{Key: fmt.Sprint("k", i), URL: "/k", R: bytes.NewReader(obj), Size: int64(len(obj))})
		if err != nil {
			b.Fatal(err)
		}
		c1 := cpuTime()
		<-ss.Done()
		build, send = build+c1-c0, send+cpuTime()-c1
	}
	b.StopTimer()
	gbit := float64(count.bytes) * 8 / 1e9
	b.ReportMetric(send.Seconds()/gbit, "cpu-s/Gbit")
	b.ReportMetric(build.Seconds()/(float64(len(obj))*float64(b.N)*8/1e9), "build-cpu-s/Gbit")
	b.SetBytes(int64(len(obj)))
}

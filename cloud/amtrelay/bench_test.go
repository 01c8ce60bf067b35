package amtrelay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"golang.org/x/net/ipv4"
)

const sinkEnv = "AMTRELAY_BENCH_SINK"

// TestMain doubles as the benchmark's traffic sink when run as a child.
func TestMain(m *testing.M) {
	if n := os.Getenv(sinkEnv); n != "" {
		runSink(n)
		return
	}
	os.Exit(m.Run())
}

// runSink opens n UDP sockets on 127.0.0.1, prints their ports, and reads
// and discards whatever arrives, in batches, until stdin closes.
func runSink(nStr string) {
	n, err := strconv.Atoi(nStr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ports := make([]string, n)
	for i := range ports {
		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = uc.SetReadBuffer(1 << 20)
		ports[i] = strconv.Itoa(uc.LocalAddr().(*net.UDPAddr).Port)
		go func() {
			pc := ipv4.NewPacketConn(uc)
			ms := make([]ipv4.Message, 32)
			for i := range ms {
				ms[i].Buffers = [][]byte{make([]byte, 2048)}
			}
			for {
				if _, err := pc.ReadBatch(ms, 0); err != nil {
					return
				}
			}
		}()
	}
	fmt.Println(strings.Join(ports, " "))
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// startSink runs the sink in a child process, so that its reading does not
// count in this process's CPU time, and returns its ports.
func startSink(b *testing.B, n int) []uint16 {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sinkEnv+"="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("sink: %v", err)
	}
	var ports []uint16
	for _, f := range strings.Fields(line) {
		p, err := strconv.Atoi(f)
		if err != nil {
			b.Fatal(err)
		}
		ports = append(ports, uint16(p))
	}
	if len(ports) != n {
		b.Fatalf("sink opened %d ports, want %d", len(ports), n)
	}
	return ports
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// udpRcvbufErrors is the kernel's count of datagrams dropped at full
// receive buffers.
func udpRcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var head []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, h := range head {
			if h == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// meter accumulates one sender's wall time, CPU time and copies.
type meter struct {
	wall, cpu time.Duration
	copies    uint64
}

func (m *meter) run(copies int, f func()) {
	c0, t0 := cpuTime(), time.Now()
	f()
	m.wall += time.Since(t0)
	m.cpu += cpuTime() - c0
	m.copies += uint64(copies)
}

func (m *meter) pps() float64 { return float64(m.copies) / m.wall.Seconds() }

// cpuPerGbps is CPU seconds per gigabit of tunnelled output: the cores it
// takes to sustain 1 Gbit/s (UDP payload, i.e. AMT messages).
func (m *meter) cpuPerGbps(msgLen int) float64 {
	return m.cpu.Seconds() / (float64(m.copies) * float64(msgLen) * 8 / 1e9)
}

// BenchmarkFanout1000 relays one 8 Mbit/s MPEG-TS channel (1316-byte
// payloads, 7 × 188) to 1,000 gateways on loopback, each a UDP socket that
// a child process reads and discards, and in the same run sends the same
// AMT packets to the same sockets with a bare WriteBatch (sendmmsg, 64 per
// call) loop: the raw baseline. One op is one inner packet, 1,000 copies.
// At 8 Mbit/s the channel is ~760 packets/s in, ~760k copies/s out.
//
// Sub-benchmarks: "bound" binds the relay to 127.0.0.1; "wildcard" binds
// 0.0.0.0 and so names the source address of each copy (IP_PKTINFO).
//
// Metrics: copies/s of relay and raw, their ratio (relay/raw), CPU seconds
// per Gbit of output for both, inner packets/s the relay sustains, and the
// fraction of copies the sink's kernel dropped (both senders alike).
func BenchmarkFanout1000(b *testing.B) {
	for _, v := range []struct{ name, listen string }{
		{"bound", "127.0.0.1:0"},
		{"wildcard", "0.0.0.0:0"},
	} {
		b.Run(v.name, func(b *testing.B) { benchFanout(b, v.listen, 1000) })
	}
}

func benchFanout(b *testing.B, listen string, gateways int) {
	ports := startSink(b, gateways)
	r, err := New(Options{Listen: listen, Logger: testLogger(b), MaxGateways: gateways})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	now := time.Now()
	dsts := make([]*net.UDPAddr, len(ports))
	for i, p := range ports {
		gw := netip.AddrPortFrom(lo4, p)
		r.handle(r.conns[0], authUpdate(b, r, gw, 1, amt.ChangeRecords([]amt.Channel{chA}, nil)), nil, gw, lo4, 0, now)
		dsts[i] = udpAddr(gw)
	}
	if s := r.Stats(); s.Gateways != gateways || s.Channels != 1 {
		b.Fatalf("setup: %+v", s)
	}

	payload := bytes.Repeat([]byte{0x47}, 7*188)
	inner, err := amt.AppendInnerUDP(nil, amt.Datagram{Src: chA.Source, Dst: chA.Group, SrcPort: 5000, DstPort: 5001, Payload: payload})
	if err != nil {
		b.Fatal(err)
	}
	msg := amt.AppendData(nil, inner)

	// The raw baseline: a socket like the relay's, the same packet and
	// destinations, the same batching.
	raw, err := listenOne(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		b.Fatal(err)
	}
	defer raw.close()
	ms := make([]ipv4.Message, 64)
	bufs := [][]byte{msg}
	rawSend := func() {
		for i := 0; i < len(dsts); i += len(ms) {
			batch := ms[:min(len(ms), len(dsts)-i)]
			for j := range batch {
				batch[j].Buffers, batch[j].Addr = bufs, dsts[i+j]
			}
			for done := 0; done < len(batch); {
				k, err := raw.writeBatch(batch[done:])
				if err != nil {
					b.Fatal(err)
				}
				done += k
			}
		}
	}

	var relay, base meter
	drops0 := udpRcvbufErrors()
	out0 := r.Stats().PacketsOut
	chunk := max(1, b.N/50) // fine interleaving: both see the same load
	b.ResetTimer()
	for done, k := 0, 0; done < b.N; done, k = done+chunk, k+1 {
		n := min(chunk, b.N-done)
		relayRun := func() {
			relay.run(n*gateways, func() {
				for i := 0; i < n; i++ {
					if err := r.Inject(inner); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		rawRun := func() {
			base.run(n*gateways, func() {
				for i := 0; i < n; i++ {
					rawSend()
				}
			})
		}
		// Alternate who goes first: the second one meets a sink still
		// draining the first one's copies.
		if k%2 == 0 {
			relayRun()
			rawRun()
		} else {
			rawRun()
			relayRun()
		}
	}
	b.StopTimer()
	if got := r.Stats().PacketsOut - out0; got != relay.copies {
		b.Fatalf("relay sent %d copies, want %d (stats %+v)", got, relay.copies, r.Stats().Drops)
	}
	drops := udpRcvbufErrors() - drops0
	b.ReportMetric(relay.pps(), "relay_copies/s")
	b.ReportMetric(base.pps(), "raw_copies/s")
	b.ReportMetric(relay.pps()/base.pps(), "relay/raw")
	b.ReportMetric(relay.cpuPerGbps(len(msg)), "relay_cpu-s/Gbit")
	b.ReportMetric(base.cpuPerGbps(len(msg)), "raw_cpu-s/Gbit")
	b.ReportMetric(relay.pps()/float64(gateways), "relay_in_pkts/s")
	b.ReportMetric(float64(drops)/float64(relay.copies+base.copies), "sink_drop_frac")
}

// BenchmarkInjectNoReceiver is the data path's fixed cost: parse, look up.
func BenchmarkInjectNoReceiver(b *testing.B) {
	r, err := New(Options{Listen: "127.0.0.1:0", Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	inner := datagram(b, chA, 5001, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Inject(inner); err != nil {
			b.Fatal(err)
		}
	}
}

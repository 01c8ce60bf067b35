package monitor_test

// BenchmarkIngest10kNodes measures castd's side of the control plane at
// fleet scale: the embedded broker and the monitor in this process, 10,000
// simulated nodes in a child process (this test binary re-executed), each
// on its own TCP connection with a wallet login, a signed last-will and a
// retained online status, sending signed health reports. Running the nodes
// in another process makes this process's rusage castd's own CPU.
//
//	go test -run '^$' -bench Ingest10k -benchtime 1x ./cloud/monitor/
//
// It reports:
//   - cpu%/core: castd's CPU, as a share of one core, while every node
//     reports once per interval (30 s, as deployed), over two intervals
//     after one of warm-up;
//   - stack_after_gc: connection goroutines' stacks after a GC as a share
//     of before (1: the GC did not shrink what the next report regrows);
//   - reports/s and µs/report: the rate castd ingests when the nodes send
//     as fast as they can;
//   - death_ms: from closing a node's connection (RST, as a crash) to
//     OnChange(offline), the router's cue, for 20 nodes under the load;
//   - base_cpu%/core and open_cpu%/core, the baselines, measured first in
//     the same run with the same connections and the same paced traffic:
//     a bare Go TCP server (a goroutine per connection, as mochi has) that
//     only reads the PUBLISH packets and acknowledges them (the nodes
//     report at QoS 1, as the agent does), and the same server verifying and
//     decoding each one (ctrlmsg.Open, Msg.Health), the least any castd
//     must do. On a VM, waking up for every report can cost more than the
//     work; the baselines show how much, and x_open is castd's CPU as a
//     multiple of the second.
//
// The broker runs as castd runs it, reads coalesced (broker.DefaultReadCoalesce;
// MONITOR_BENCH_COALESCE=-1ns turns that off, another duration sets it).
// MONITOR_BENCH_NODES and MONITOR_BENCH_INTERVAL (a Go duration) change the
// fleet size and interval, MONITOR_BENCH_ROUNDS the measured intervals;
// MONITOR_BENCH_CPUPROFILE names a file for a CPU profile of the paced phase.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

const (
	roleEnv     = "MONITOR_BENCH_ROLE" // "fleet" or "baseline": what a child process is
	verifyEnv   = "MONITOR_BENCH_VERIFY"
	roundsEnv   = "MONITOR_BENCH_ROUNDS"
	addrEnv     = "MONITOR_BENCH_ADDR"
	nodesEnv    = "MONITOR_BENCH_NODES"
	intervalEnv = "MONITOR_BENCH_INTERVAL"
	profileEnv  = "MONITOR_BENCH_CPUPROFILE" // write castd's CPU profile of the paced phase here
	blastPer    = 5                          // reports per node in the max-rate phase
	deaths      = 20                         // nodes killed in the death phase
)

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "fleet":
		os.Exit(benchChild())
	case "baseline":
		os.Exit(baselineServer())
	}
	os.Exit(m.Run())
}

// benchKey derives simulated node i's key, the same in both processes.
func benchKey(i int) *identity.Keypair {
	seed := sha256.Sum256([]byte("blockcast-bench-node-" + strconv.Itoa(i)))
	kp, err := identity.FromSeed(seed[:])
	if err != nil {
		panic(err)
	}
	return kp
}

func benchParams() (nodes int, interval time.Duration) {
	nodes, interval = 10000, 30*time.Second
	if v, err := strconv.Atoi(os.Getenv(nodesEnv)); err == nil && v > deaths {
		nodes = v
	}
	if v, err := time.ParseDuration(os.Getenv(intervalEnv)); err == nil && v > 0 {
		interval = v
	}
	return nodes, interval
}

// benchRounds is how many intervals the paced phases measure, after one
// interval of warm-up (MONITOR_BENCH_ROUNDS, default 2).
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv(roundsEnv)); err == nil && n > 0 {
		return n
	}
	return 2
}

func benchWorkers() int {
	n, _ := strconv.Atoi(os.Getenv("MONITOR_BENCH_WORKERS"))
	return n
}

func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

func cpuTime() time.Duration {
	u, s := cpuSplit()
	return u + s
}

// ctxSwitches is how often this process's threads have been switched
// out: to sleep, and preempted.
func ctxSwitches() (sleeps, preempted int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Nvcsw, ru.Nivcsw
}

// cpuSplit returns this process's user and system CPU time.
func cpuSplit() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func BenchmarkIngest10kNodes(b *testing.B) {
	if testing.Short() {
		b.Skip("fleet-scale benchmark; not under -short")
	}
	nodes, interval := benchParams()
	rounds := benchRounds()
	if err := raiseFileLimit(); err != nil {
		b.Fatal(err)
	}
	var lim syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	if lim.Cur < uint64(nodes)+1000 {
		b.Skipf("RLIMIT_NOFILE %d is too low for %d connections", lim.Cur, nodes)
	}

	known := make(map[string]int, nodes)
	for i := 0; i < nodes; i++ {
		known[benchKey(i).ID()] = i
	}
	isKnown := func(id string) bool { _, ok := known[id]; return ok }
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))

	// MONITOR_BENCH_COALESCE sets the broker's ReadCoalesce (e.g. -1ns: off).
	coalesce, _ := time.ParseDuration(os.Getenv("MONITOR_BENCH_COALESCE"))
	// The whole fleet dials from one address: lift the per-address bounds.
	brk, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Known: isKnown, MaxClients: nodes + 100, ReadCoalesce: coalesce, Logger: quiet,
		MaxHandshakesPerAddr: broker.DefaultMaxHandshakes, ConnectRate: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := brk.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer brk.Close()

	var offMu sync.Mutex
	offlineAt := map[string]time.Time{}
	bus := brk.Bus()
	defer bus.Close()
	mon, err := monitor.New(monitor.Options{
		Bus: bus, Known: isKnown, Logger: quiet,
		ReplayCacheSize: nodes * (blastPer + 4),
		Workers:         benchWorkers(),
		OnChange: func(id string, s monitor.State, _ float64) {
			if s == monitor.StateOffline {
				now := time.Now()
				offMu.Lock()
				offlineAt[id] = now
				offMu.Unlock()
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := mon.Start(ctx); err != nil {
		b.Fatal(err)
	}

	fleet := startProc(b, "fleet", roleEnv+"=fleet", addrEnv+"="+brk.Addr(),
		nodesEnv+"="+strconv.Itoa(nodes), intervalEnv+"="+interval.String())
	defer fleet.stop()
	tell, expect := fleet.tell, fleet.expect
	waitAccepted := func(target uint64, what string) {
		deadline := time.Now().Add(2 * time.Minute)
		for mon.Stats().Accepted < target {
			if time.Now().After(deadline) {
				b.Fatalf("%s: accepted %d of %d; dropped %v", what, mon.Stats().Accepted, target, mon.Stats().Dropped)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	b.ResetTimer()
	// Baselines, each in a fresh process (as castd's phases are in this
	// one, before anything else ran in it): the same paced traffic into a
	// bare TCP server, first only read, then also verified and decoded.
	var basePct [2]float64
	for k, verify := range []bool{false, true} {
		srv := startProc(b, "baseline", roleEnv+"=baseline", verifyEnv+"="+strconv.FormatBool(verify))
		addr := strings.Fields(srv.expect("ADDR", time.Minute))[1]
		tell("RAW " + addr)
		expect("RAW_READY", 5*time.Minute)
		tell(fmt.Sprintf("RAW_GO %d", 1+rounds))
		expect("ROUND_DONE", interval+time.Minute) // warm-up
		srv.tell("MEASURE")
		srv.expect("MEASURING", time.Minute)
		for r := 0; r < rounds; r++ {
			expect("ROUND_DONE", interval+time.Minute)
		}
		srv.tell(fmt.Sprintf("STOP %d", (1+rounds)*nodes))
		f := strings.Fields(srv.expect("CPU", 2*time.Minute))
		srv.stop()
		if len(f) != 4 || f[3] != "0" {
			b.Fatalf("baseline said %q; want no reports that failed to open", f)
		}
		basePct[k], _ = strconv.ParseFloat(f[1], 64)
	}
	b.Logf("baselines, %d connections, one report each per %s, %d intervals after one of warm-up: bare TCP reader %.2f%% of one core, reader + ctrlmsg.Open + Health %.2f%%",
		nodes, interval, rounds, basePct[0], basePct[1])

	tell("FLEET")
	connectStart := time.Now()
	expect("READY", 5*time.Minute)
	waitAccepted(uint64(nodes), "online statuses")
	b.Logf("%d nodes connected and online in %s", nodes, time.Since(connectStart).Round(time.Millisecond))
	if st := mon.Stats(); st.Online != nodes {
		b.Fatalf("online %d of %d", st.Online, nodes)
	}

	// Idle: connected, nothing sent; what castd spends just holding the
	// fleet (broker housekeeping, timeouts, the runtime). The garbage of the
	// connection storm is collected first: it is not the steady state.
	runtime.GC()
	cpu0, t0 := cpuTime(), time.Now()
	time.Sleep(5 * time.Second)
	idlePct := 100 * (cpuTime() - cpu0).Seconds() / time.Since(t0).Seconds()
	b.Logf("idle: %d nodes connected, castd CPU %.2f%% of one core", nodes, idlePct)

	// Paced: every node once per interval, as deployed; measured over
	// rounds intervals after one of warm-up. The warm-up absorbs the
	// forced GC above, after which every connection's goroutine regrows
	// its stack once; the measured intervals see what a running castd
	// sees, GCs included (the runtime forces one every two minutes).
	acc0 := mon.Stats().Accepted
	tell(fmt.Sprintf("PACED %d", 1+rounds))
	expect("ROUND_DONE", interval+time.Minute)
	if path := os.Getenv(profileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer f.Close()
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	acc1, rounds0 := mon.Stats().Accepted, brk.Stats().ReadRounds
	u0, s0 := cpuSplit()
	sl0, pre0 := ctxSwitches()
	cpu0, t0 = u0+s0, time.Now()
	for r := 0; r < rounds; r++ {
		expect("ROUND_DONE", interval+time.Minute)
	}
	u1, s1 := cpuSplit()
	sl1, pre1 := ctxSwitches()
	cpu, wall := u1+s1-cpu0, time.Since(t0)
	acc2, readRounds := mon.Stats().Accepted, brk.Stats().ReadRounds-rounds0
	pprof.StopCPUProfile()
	runtime.ReadMemStats(&ms1)
	expect("PACED_DONE", time.Minute)
	waitAccepted(acc0+uint64((1+rounds)*nodes), "paced reports")
	pacedRate := float64(acc2-acc1) / wall.Seconds()
	cpuPct := 100 * cpu.Seconds() / wall.Seconds()
	b.Logf("paced: %d nodes every %s: %.0f reports/s, castd CPU %.2f%% of one core (%s user + %s system over %s; %.0f read wake-ups/s; threads slept %.0f/s, preempted %.0f/s; %d GCs, %.1f KiB allocated per report, heap %d MiB, stacks %d→%d MiB); %.2f× the verifying baseline",
		nodes, interval, pacedRate, cpuPct, (u1 - u0).Round(time.Millisecond), (s1 - s0).Round(time.Millisecond),
		wall.Round(time.Millisecond), float64(readRounds)/wall.Seconds(), float64(sl1-sl0)/wall.Seconds(), float64(pre1-pre0)/wall.Seconds(), ms1.NumGC-ms0.NumGC, float64(ms1.TotalAlloc-ms0.TotalAlloc)/1024/float64(acc2-acc1),
		ms1.HeapAlloc>>20, ms0.StackInuse>>20, ms1.StackInuse>>20, cpuPct/basePct[1])
	// Whether a GC leaves the connections' stacks at their working size
	// (see broker's handshakeConn.Read): shrinking them only makes every
	// node's next report grow them back.
	runtime.GC()
	var ms2 runtime.MemStats
	runtime.ReadMemStats(&ms2)
	b.Logf("a GC after the paced phase: stacks %d→%d MiB", ms1.StackInuse>>20, ms2.StackInuse>>20)
	b.ReportMetric(float64(ms2.StackInuse)/float64(ms1.StackInuse), "stack_after_gc")

	// Max rate.
	expect("BLAST_READY", 5*time.Minute)
	acc0, cpu0, t0 = mon.Stats().Accepted, cpuTime(), time.Now()
	tell("BLAST")
	expect("BLAST_DONE", 5*time.Minute)
	waitAccepted(acc0+uint64(nodes*blastPer), "blast reports")
	cpu, wall = cpuTime()-cpu0, time.Since(t0)
	n := float64(nodes * blastPer)
	blastRate := n / wall.Seconds()
	perReport := cpu / time.Duration(n)
	b.Logf("max rate: %.0f reports in %s: %.0f reports/s, %s CPU per report", n, wall.Round(time.Millisecond), blastRate, perReport)

	// Deaths.
	tell("KILL")
	kills := map[string]time.Time{}
	for len(kills) < deaths {
		f := strings.Fields(expect("KILL", time.Minute))
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		kills[f[1]] = time.Unix(0, ns)
	}
	var lat []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for len(lat) < deaths && time.Now().Before(deadline) {
		lat = lat[:0]
		offMu.Lock()
		for id, k := range kills {
			if at, ok := offlineAt[id]; ok {
				lat = append(lat, at.Sub(k))
			}
		}
		offMu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if len(lat) < deaths {
		b.Fatalf("only %d of %d killed nodes went offline", len(lat), deaths)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.Logf("death → OnChange(offline): median %s, max %s (%d nodes)", lat[len(lat)/2], lat[len(lat)-1], len(lat))
	b.StopTimer()

	st := mon.Stats()
	var dropped uint64
	for _, v := range st.Dropped {
		dropped += v
	}
	if dropped != 0 {
		b.Errorf("dropped %v", st.Dropped)
	}
	b.ReportMetric(cpuPct, "cpu%/core")
	b.ReportMetric(idlePct, "idle_cpu%/core")
	b.ReportMetric(basePct[0], "base_cpu%/core")
	b.ReportMetric(basePct[1], "open_cpu%/core")
	b.ReportMetric(cpuPct/basePct[1], "x_open")
	b.ReportMetric(blastRate, "reports/s")
	b.ReportMetric(float64(perReport.Nanoseconds())/1e3, "µs/report")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "death_ms_median")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1e3, "death_ms_max")
}

// rawIngest is the baseline server: a goroutine per TCP connection reading
// MQTT PUBLISH packets (no handshake) and acknowledging those sent at QoS 1,
// as the beacons' reports are, and, when verify is set, opening and
// decoding each report as castd must; nothing more.
type rawIngest struct {
	ln     net.Listener
	log    *slog.Logger
	verify atomic.Bool
	got    atomic.Uint64
	bad    atomic.Uint64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startRawIngest(log *slog.Logger) (*rawIngest, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &rawIngest{ln: ln, log: log, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns[c] = struct{}{}
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c)
				r.mu.Lock()
				delete(r.conns, c)
				r.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return r, nil
}

func (r *rawIngest) Addr() string { return r.ln.Addr().String() }

func (r *rawIngest) serve(c net.Conn) {
	br := bufio.NewReader(c)
	var buf []byte
	ack := []byte{0x40, 2, 0, 0}
	for {
		h, err := br.ReadByte() // PUBLISH
		if err != nil {
			return
		}
		n, shift := 0, 0
		for {
			d, err := br.ReadByte()
			if err != nil || shift > 21 {
				return
			}
			n |= int(d&0x7f) << shift
			shift += 7
			if d&0x80 == 0 {
				break
			}
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil || n < 2 {
			return
		}
		tl := int(binary.BigEndian.Uint16(buf))
		body := 2 + tl
		if h&0x06 != 0 {
			body += 2 // packet identifier
		}
		if body > n {
			return
		}
		if h&0x06 != 0 {
			copy(ack[2:], buf[2+tl:body])
			if _, err := c.Write(ack); err != nil {
				return
			}
		}
		if r.verify.Load() {
			m, err := ctrlmsg.Open(buf[body:], string(buf[2:2+tl]), nil, monitor.DefaultWindow, time.Now(), nil)
			if err == nil {
				_, err = m.Health()
			}
			if err != nil {
				r.log.Error("baseline: report did not open", "err", err)
				r.bad.Add(1)
			}
		}
		r.got.Add(1)
	}
}

func (r *rawIngest) Close() {
	r.ln.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// baselineServer is a baseline child process: a rawIngest that measures
// its own CPU between MEASURE and "STOP n", then waits until n reports
// arrived in all and answers "CPU <percent of one core> BAD <reports that
// failed to open>".
func baselineServer() int {
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "baseline: rlimit:", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	r, err := startRawIngest(log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	defer r.Close()
	r.verify.Store(os.Getenv(verifyEnv) == "true")
	fmt.Println("ADDR", r.Addr())
	in := bufio.NewScanner(os.Stdin)
	var (
		cpu0 time.Duration
		t0   time.Time
	)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 1 && f[0] == "MEASURE":
			cpu0, t0 = cpuTime(), time.Now()
			fmt.Println("MEASURING")
		case len(f) == 2 && f[0] == "STOP":
			pct := 100 * (cpuTime() - cpu0).Seconds() / time.Since(t0).Seconds()
			total, _ := strconv.ParseUint(f[1], 10, 64)
			for deadline := time.Now().Add(time.Minute); r.got.Load() < total; {
				if time.Now().After(deadline) {
					fmt.Fprintf(os.Stderr, "baseline: received %d of %d\n", r.got.Load(), total)
					return 1
				}
				time.Sleep(5 * time.Millisecond)
			}
			fmt.Printf("CPU %.3f BAD %d\n", pct, r.bad.Load())
		}
	}
	return 0
}

// benchProc is a child process of the benchmark (this test binary, in a
// role), spoken to by lines on stdin and stdout.
type benchProc struct {
	b     *testing.B
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startProc(b *testing.B, name string, env ...string) *benchProc {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &benchProc{b: b, name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

func (p *benchProc) tell(cmd string) {
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		p.b.Fatalf("%s: %v", p.name, err)
	}
}

// expect returns the process's next line, which must start with prefix.
func (p *benchProc) expect(prefix string, timeout time.Duration) string {
	p.b.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.b.Fatalf("%s exited while waiting for %s", p.name, prefix)
		}
		if !strings.HasPrefix(l, prefix) {
			p.b.Fatalf("%s said %q, want %s", p.name, l, prefix)
		}
		return l
	case <-time.After(timeout):
		p.b.Fatalf("%s: no %s within %s", p.name, prefix, timeout)
	}
	return ""
}

// stop closes stdin, which ends the process, and waits for it.
func (p *benchProc) stop() {
	p.stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// --- the simulated fleet (child process) ---

// simNode is one raw MQTT 3.1.1 client: enough protocol to log in with a
// will, publish at QoS 1 as the agent does, and die. It never reads the
// acknowledgements and is not woken for them (RawClient.Deafen): on this
// host its wake-ups would preempt castd, which nodes across a network
// do not.
type simNode struct {
	kp    *identity.Keypair
	c     *brokertest.RawClient
	topic string
}

// publish sends a report at QoS 1.
func (s *simNode) publish(topic string, payload []byte, retain bool) error {
	return s.c.Publish(topic, payload, 1, retain)
}

func benchChild() int {
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "child: rlimit:", err)
		return 1
	}
	addr := os.Getenv(addrEnv)
	nodes, interval := benchParams()
	out := bufio.NewWriter(os.Stdout)
	say := func(s string) { fmt.Fprintln(out, s); out.Flush() }
	in := bufio.NewReader(os.Stdin)
	// await waits for the parent's go-ahead, so that its counters start
	// exactly with the phase.
	await := func(cmd string) bool {
		l, err := in.ReadString('\n')
		return err == nil && strings.TrimSpace(l) == cmd
	}
	// awaitN is await for "cmd <n>".
	awaitN := func(cmd string) (int, bool) {
		l, err := in.ReadString('\n')
		f := strings.Fields(l)
		if err != nil || len(f) != 2 || f[0] != cmd {
			return 0, false
		}
		n, err := strconv.Atoi(f[1])
		return n, err == nil && n > 0
	}

	keys := make([]*identity.Keypair, nodes)
	forEach(nodes, func(i int) error { keys[i] = benchKey(i); return nil })
	health := func(kp *identity.Keypair, topic string, now time.Time) []byte {
		p, err := ctrlmsg.Seal(kp, topic, ctrlmsg.KindHealth, ctrlmsg.Health{
			UptimeS: 86400, Version: "1.0.0", CacheObjects: 12345, CacheBytes: 3 << 30, HitRatio: 0.83,
			BytesServed: 987654321, UpstreamBytes: 123456789, Load: 0.27, MemFree: 48 << 20,
			StorageFree: 20 << 30, PublicIP: "198.51.100.23",
		}, now)
		if err != nil {
			panic(err)
		}
		return p
	}

	// report makes every node report once per interval for rounds intervals.
	report := func(nodes []*simNode, rounds int) {
		pace(len(nodes), interval, rounds, func(i int, now time.Time) error {
			s := nodes[i]
			return s.publish(s.topic, health(s.kp, s.topic, now), false)
		}, func() { say("ROUND_DONE") })
	}

	// Baselines: plain TCP connections to a bare server, the same packets
	// at the same pace, as often as the parent asks.
	var rawConns []*simNode
	closeRaw := func() {
		for _, c := range rawConns {
			if c != nil {
				c.c.Close()
			}
		}
		rawConns = nil
	}
	for {
		l, err := in.ReadString('\n')
		if err != nil {
			return 1
		}
		f := strings.Fields(l)
		if len(f) == 1 && f[0] == "FLEET" {
			break
		}
		if len(f) != 2 || f[0] != "RAW" {
			fmt.Fprintf(os.Stderr, "child: unexpected %q\n", l)
			return 1
		}
		closeRaw()
		rawConns = make([]*simNode, nodes)
		if err := forEach(nodes, func(i int) error {
			c, err := net.DialTimeout("tcp", f[1], 10*time.Second)
			if err != nil {
				return err
			}
			rc := &brokertest.RawClient{Conn: c}
			if err := rc.Deafen(); err != nil {
				c.Close()
				return err
			}
			rawConns[i] = &simNode{kp: keys[i], c: rc, topic: ctrlmsg.Topic(keys[i].ID(), ctrlmsg.LeafHealth)}
			return nil
		}); err != nil {
			fmt.Fprintln(os.Stderr, "child: raw dial:", err)
			return 1
		}
		say("RAW_READY")
		n, ok := awaitN("RAW_GO")
		if !ok {
			return 1
		}
		report(rawConns, n)
	}
	closeRaw()

	sims := make([]*simNode, nodes)
	if err := forEach(nodes, func(i int) (err error) {
		sims[i], err = dialSim(addr, keys[i], interval)
		if err != nil {
			err = fmt.Errorf("node %d: %w", i, err)
		}
		return err
	}); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	say("READY")

	// Paced: node i reports at i/nodes of each interval.
	n, ok := awaitN("PACED")
	if !ok {
		return 1
	}
	report(sims, n)
	say("PACED_DONE")

	// Max rate: pre-signed, so that the child's signing does not pace it.
	batches := make([][][]byte, nodes)
	now := time.Now()
	for i, s := range sims {
		for k := 0; k < blastPer; k++ {
			batches[i] = append(batches[i], health(s.kp, s.topic, now))
		}
	}
	say("BLAST_READY")
	if !await("BLAST") {
		return 1
	}
	const workers = 16
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := 0; k < blastPer; k++ {
				for i := w; i < nodes; i += workers {
					if err := sims[i].publish(sims[i].topic, batches[i][k], false); err != nil {
						fmt.Fprintln(os.Stderr, "child: blast publish:", err)
					}
				}
			}
		}(w)
	}
	wg.Wait()
	say("BLAST_DONE")

	// Deaths, spread out, while the others stay connected.
	if !await("KILL") {
		return 1
	}
	for k := 0; k < deaths; k++ {
		s := sims[k*(nodes/deaths)]
		tc := s.c.Conn.(*net.TCPConn)
		_ = tc.SetLinger(0)
		say(fmt.Sprintf("KILL %s %d", s.kp.ID(), time.Now().UnixNano()))
		tc.Close()
		time.Sleep(100 * time.Millisecond)
	}
	// Until the parent is done.
	_, _ = io.Copy(io.Discard, in)
	return 0
}

// forEach runs fn for 0..n-1 on 32 goroutines and returns the first error.
func forEach(n int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	return first
}

// pace calls send for every node once per interval, node i at i/nodes of
// it, for rounds intervals back to back, and calls done as each ends.
func pace(nodes int, interval time.Duration, rounds int, send func(i int, now time.Time) error, done func()) {
	const workers = 16
	start := time.Now()
	for r := 0; r < rounds; r++ {
		base := start.Add(time.Duration(r) * interval)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < nodes; i += workers {
					time.Sleep(time.Until(base.Add(time.Duration(int64(interval) * int64(i) / int64(nodes)))))
					if err := send(i, time.Now()); err != nil {
						fmt.Fprintln(os.Stderr, "child: paced publish:", err)
					}
				}
			}(w)
		}
		wg.Wait()
		time.Sleep(time.Until(base.Add(interval)))
		done()
	}
}

func dialSim(addr string, kp *identity.Keypair, iv time.Duration) (*simNode, error) {
	id := kp.ID()
	now := time.Now()
	statusTopic := ctrlmsg.Topic(id, ctrlmsg.LeafStatus)
	will, err := ctrlmsg.Seal(kp, statusTopic, ctrlmsg.KindStatus, ctrlmsg.Status{State: ctrlmsg.StateOffline, Version: "1.0.0", Interval: iv.Seconds()}, now)
	if err != nil {
		return nil, err
	}
	online, err := ctrlmsg.Seal(kp, statusTopic, ctrlmsg.KindStatus, ctrlmsg.Status{State: ctrlmsg.StateOnline, Version: "1.0.0", Interval: iv.Seconds()}, now)
	if err != nil {
		return nil, err
	}
	tok, err := ctrlmsg.MakeToken(kp, now)
	if err != nil {
		return nil, err
	}
	// As the agent: QoS 1 retained will, login, retained online status.
	c, err := brokertest.DialRaw(addr, id, id, tok, 300,
		&brokertest.Will{Topic: statusTopic, Payload: will, QoS: 1, Retain: true}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if err := c.Deafen(); err != nil {
		c.Close()
		return nil, err
	}
	s := &simNode{kp: kp, c: c, topic: ctrlmsg.Topic(id, ctrlmsg.LeafHealth)}
	if err := s.publish(statusTopic, online, true); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

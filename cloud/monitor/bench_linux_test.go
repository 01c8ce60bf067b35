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
//     reports once per interval (30 s, as deployed) for one interval;
//   - reports/s and µs/report: the rate castd ingests when the nodes send
//     as fast as they can;
//   - death_ms: from closing a node's connection (RST, as a crash) to
//     OnChange(offline), the router's cue, for 20 nodes under the load.
//
// MONITOR_BENCH_NODES and MONITOR_BENCH_INTERVAL (a Go duration) change the
// fleet size and interval; MONITOR_BENCH_CPUPROFILE names a file for a CPU
// profile of the paced phase.

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
	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

const (
	childEnv    = "MONITOR_BENCH_CHILD" // set: this process is the simulated fleet
	addrEnv     = "MONITOR_BENCH_ADDR"
	nodesEnv    = "MONITOR_BENCH_NODES"
	intervalEnv = "MONITOR_BENCH_INTERVAL"
	profileEnv  = "MONITOR_BENCH_CPUPROFILE" // write castd's CPU profile of the paced phase here
	blastPer    = 5                          // reports per node in the max-rate phase
	deaths      = 20                         // nodes killed in the death phase
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(benchChild())
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

	brk, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Known: isKnown, MaxClients: nodes + 100, Logger: quiet})
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

	child := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	child.Env = append(os.Environ(), childEnv+"=1", addrEnv+"="+brk.Addr(),
		nodesEnv+"="+strconv.Itoa(nodes), intervalEnv+"="+interval.String())
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = child.Wait()
	}()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	tell := func(cmd string) {
		if _, err := fmt.Fprintln(stdin, cmd); err != nil {
			b.Fatal(err)
		}
	}
	expect := func(prefix string, timeout time.Duration) string {
		b.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				b.Fatalf("child exited while waiting for %s", prefix)
			}
			if !strings.HasPrefix(l, prefix) {
				b.Fatalf("child said %q, want %s", l, prefix)
			}
			return l
		case <-time.After(timeout):
			b.Fatalf("child: no %s within %s", prefix, timeout)
		}
		return ""
	}
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

	// Paced: every node once per interval, for one interval.
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
	acc0 := mon.Stats().Accepted
	u0, s0 := cpuSplit()
	cpu0, t0 = u0+s0, time.Now()
	tell("PACED")
	expect("PACED_DONE", interval+time.Minute)
	pprof.StopCPUProfile()
	waitAccepted(acc0+uint64(nodes), "paced reports")
	u1, s1 := cpuSplit()
	cpu, wall := u1+s1-cpu0, time.Since(t0)
	pacedRate := float64(mon.Stats().Accepted-acc0) / wall.Seconds()
	cpuPct := 100 * cpu.Seconds() / wall.Seconds()
	runtime.ReadMemStats(&ms1)
	b.Logf("paced: %d nodes every %s: %.0f reports/s, castd CPU %.2f%% of one core (%s user + %s system over %s; %d GCs, heap %d MiB)",
		nodes, interval, pacedRate, cpuPct, (u1 - u0).Round(time.Millisecond), (s1 - s0).Round(time.Millisecond),
		wall.Round(time.Millisecond), ms1.NumGC-ms0.NumGC, ms1.HeapAlloc>>20)

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
	b.ReportMetric(blastRate, "reports/s")
	b.ReportMetric(float64(perReport.Nanoseconds())/1e3, "µs/report")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1e3, "death_ms_median")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1e3, "death_ms_max")
}

// --- the simulated fleet (child process) ---

// simNode is one raw MQTT 3.1.1 client: enough protocol to log in with a
// will, publish at QoS 0, and die.
type simNode struct {
	kp    *identity.Keypair
	conn  net.Conn
	topic string
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

	sims := make([]*simNode, nodes)
	var failed atomic.Int32
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s, err := dialSim(addr, benchKey(i), interval)
				if err != nil {
					fmt.Fprintf(os.Stderr, "child: node %d: %v\n", i, err)
					failed.Add(1)
					continue
				}
				sims[i] = s
			}
		}()
	}
	for i := 0; i < nodes; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if failed.Load() > 0 {
		return 1
	}
	say("READY")

	health := func(s *simNode, now time.Time) []byte {
		p, err := ctrlmsg.Seal(s.kp, s.topic, ctrlmsg.KindHealth, ctrlmsg.Health{
			UptimeS: 86400, Version: "1.0.0", CacheObjects: 12345, CacheBytes: 3 << 30, HitRatio: 0.83,
			BytesServed: 987654321, UpstreamBytes: 123456789, Load: 0.27, MemFree: 48 << 20,
			StorageFree: 20 << 30, PublicIP: "198.51.100.23",
		}, now)
		if err != nil {
			panic(err)
		}
		return p
	}

	// Paced: node i reports at i/nodes of the interval, once.
	if !await("PACED") {
		return 1
	}
	start := time.Now()
	const workers = 16
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < nodes; i += workers {
				at := start.Add(time.Duration(int64(interval) * int64(i) / int64(nodes)))
				time.Sleep(time.Until(at))
				s := sims[i]
				if err := publishRaw(s.conn, s.topic, health(s, time.Now()), false); err != nil {
					fmt.Fprintln(os.Stderr, "child: paced publish:", err)
				}
			}
		}(w)
	}
	wg.Wait()
	time.Sleep(time.Until(start.Add(interval)))
	say("PACED_DONE")

	// Max rate: pre-signed, so that the child's signing does not pace it.
	batches := make([][][]byte, nodes)
	now := time.Now()
	for i, s := range sims {
		for k := 0; k < blastPer; k++ {
			batches[i] = append(batches[i], health(s, now))
		}
	}
	say("BLAST_READY")
	if !await("BLAST") {
		return 1
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for k := 0; k < blastPer; k++ {
				for i := w; i < nodes; i += workers {
					if err := publishRaw(sims[i].conn, sims[i].topic, batches[i][k], false); err != nil {
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
		tc := s.conn.(*net.TCPConn)
		_ = tc.SetLinger(0)
		say(fmt.Sprintf("KILL %s %d", s.kp.ID(), time.Now().UnixNano()))
		tc.Close()
		time.Sleep(100 * time.Millisecond)
	}
	// Until the parent is done.
	_, _ = io.Copy(io.Discard, in)
	return 0
}

func dialSim(addr string, kp *identity.Keypair, iv time.Duration) (*simNode, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
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
	// CONNECT, MQTT 3.1.1: clean session, QoS 1 retained will, login.
	var vh []byte
	vh = appendStr(vh, "MQTT")
	vh = append(vh, 4, 0x80|0x40|0x20|0x08|0x04|0x02)
	vh = binary.BigEndian.AppendUint16(vh, 300) // keepalive
	vh = appendStr(vh, id)
	vh = appendStr(vh, statusTopic)
	vh = binary.BigEndian.AppendUint16(vh, uint16(len(will)))
	vh = append(vh, will...)
	vh = appendStr(vh, id)
	vh = appendStr(vh, tok)
	if _, err := c.Write(appendPacket(nil, 0x10, vh)); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		c.Close()
		return nil, fmt.Errorf("connack: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("connack % x", ack)
	}
	_ = c.SetReadDeadline(time.Time{})
	if err := publishRaw(c, statusTopic, online, true); err != nil {
		c.Close()
		return nil, err
	}
	return &simNode{kp: kp, conn: c, topic: ctrlmsg.Topic(id, ctrlmsg.LeafHealth)}, nil
}

func publishRaw(c net.Conn, topic string, payload []byte, retain bool) error {
	h := byte(0x30)
	if retain {
		h |= 1
	}
	body := appendStr(make([]byte, 0, 2+len(topic)+len(payload)), topic)
	body = append(body, payload...)
	_, err := c.Write(appendPacket(nil, h, body))
	return err
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendPacket appends a fixed header (type byte, variable-length
// remaining length) and the rest.
func appendPacket(b []byte, typ byte, rest []byte) []byte {
	b = append(b, typ)
	n := len(rest)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			break
		}
	}
	return append(b, rest...)
}

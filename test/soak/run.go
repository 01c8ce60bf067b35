package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// Options configure a soak run. Zero durations are scaled from Duration.
type Options struct {
	Duration    time.Duration
	Out         string // directory for the CSV, the chart, the report and the logs
	BinDir      string // castd and beacon already built there ("" builds them into Out)
	Broker      string // "embedded" (castd's own) or "mosquitto" (--mqtt-broker, restarted as a fault)
	Rate        float64
	Clients     int
	Beacons     int
	ColdKeys    int
	Warmup      time.Duration // judged from here on (default Duration/12, at least 90s, at most Duration/4)
	SampleEvery time.Duration // default 10s; shorter for runs under 10 minutes
	FaultPeriod time.Duration // one fault every period (default Duration/6)
	OriginPhase time.Duration // how long the origin is slow, then failing
	SlowDelay   time.Duration // the slow origin's delay before each answer
	Grace       time.Duration // errors this long after a fault still belong to it; users must be served by then
	CmdEvery    time.Duration // one purge or prefetch through castd's command API
	Bounds      bounds
	NoAMT       bool    // leave out the AMT channel (it needs root for its namespaces)
	AMTRate     float64 // the AMT source's datagrams a second, per channel (default 100)
	// AMTGrace is Grace for the AMT channel (default 30 s): a gateway
	// notices a relay that restarted (and lost its tunnels) only when
	// the tunnel has been silent for half of amtgw's NoDataTimeout
	// (15 s) and it probes it with a new Request; at NoDataTimeout
	// (30 s) it gives the relay up and finds one again.
	AMTGrace time.Duration
}

func (o *Options) setDefaults() {
	d := o.Duration
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	// castd's heap settles about 90 s after it starts under this load:
	// a level taken earlier would judge the warm-up, not a leak.
	def(&o.Warmup, min(max(d/12, 90*time.Second), d/4))
	if d >= 10*time.Minute {
		def(&o.SampleEvery, 10*time.Second)
	} else {
		def(&o.SampleEvery, max(d/40, time.Second))
	}
	def(&o.FaultPeriod, d/6)
	def(&o.OriginPhase, min(max(o.FaultPeriod/4, 3*time.Second), time.Minute))
	def(&o.SlowDelay, 2*time.Second)
	def(&o.Grace, 10*time.Second)
	def(&o.CmdEvery, 3*time.Second)
	def(&o.AMTGrace, 30*time.Second)
	// A level is a median over a span, not one sample: a Go process's RSS
	// swings by a tenth with the collector's phase. Two minutes of samples
	// in an hour's run (12), three in a short one.
	def(&o.Bounds.Baseline, max(3*o.SampleEvery, min(2*time.Minute, d/30)))
	if o.Broker == "" {
		o.Broker = "embedded"
	}
	if o.Rate <= 0 {
		o.Rate = 30
	}
	if o.Clients <= 0 {
		o.Clients = 12
	}
	if o.AMTRate <= 0 {
		o.AMTRate = 100
	}
	if o.Beacons <= 0 {
		o.Beacons = 3
	}
	if o.ColdKeys <= 0 {
		o.ColdKeys = 3000
	}
	bd := &o.Bounds
	if bd.RSS == 0 {
		// A quick run's warm-up mark comes before a restarted castd's
		// heap has settled (about 90 s after it starts, ~1 MiB above its
		// level at 75 s): 10% would judge that, not a leak.
		bd.RSS = 0.10
		if d < 30*time.Minute {
			bd.RSS = 0.25
		}
	}
	if bd.FDAbs == 0 {
		bd.FDAbs, bd.FDRel = 10, 0.10
	}
	if bd.GorAbs == 0 {
		bd.GorAbs, bd.GorRel = 15, 0.10
	}
}

// Result is a finished run.
type Result struct {
	Verdict verdict
	Summary string // the report, as printed
	CSV     string
	Chart   string
}

// ErrFailed is returned when the run completed and its verdict is a fail.
var ErrFailed = errors.New("soak failed")

// Run runs the soak and judges it. The error is ErrFailed (wrapped, with
// the reasons) when the system misbehaved, another error when the soak
// itself could not run.
func Run(ctx context.Context, o Options, log *slog.Logger) (*Result, error) {
	o.setDefaults()
	if o.Duration < time.Minute {
		return nil, fmt.Errorf("--duration %s: at least 1m (warm-up, a fault of each kind, a quiet end)", o.Duration)
	}
	if o.Broker != "embedded" && o.Broker != "mosquitto" {
		return nil, fmt.Errorf("--broker %q: embedded or mosquitto", o.Broker)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	bin := harness.Binaries{Castd: filepath.Join(o.BinDir, "castd"), Beacon: filepath.Join(o.BinDir, "beacon")}
	if o.BinDir == "" {
		log.Info("building castd and beacon")
		var err error
		if bin, err = harness.Build(filepath.Join(o.Out, "bin")); err != nil {
			return nil, err
		}
	}
	cat, err := newCatalog(o.ColdKeys)
	if err != nil {
		return nil, err
	}
	sys := &system{dir: o.Out, bin: bin, start: 20 * time.Second}
	defer func() {
		if err := sys.stop(); err != nil {
			log.Warn("stopping the system", "err", err)
		}
		// The namespaces go after the processes that use their veths.
		if err := sys.amt.close(); err != nil {
			log.Warn("removing the AMT namespaces", "err", err)
		}
	}()
	amtSkipped := ""
	if o.NoAMT {
		amtSkipped = "off (--amt=false)"
	} else if err := netns.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			return nil, fmt.Errorf("the AMT channel: %w", err)
		}
		amtSkipped = err.Error()
		log.Warn("the AMT channel is skipped", "err", err)
	} else {
		a, err := startAMT(o.Beacons, o.AMTRate, log)
		sys.amt = a
		if err != nil {
			return nil, fmt.Errorf("the AMT channel: %w", err)
		}
	}
	if sys.origin, err = startOrigin(o.SlowDelay); err != nil {
		return nil, err
	}
	if sys.castdAddr, err = harness.FreeAddr(); err != nil {
		return nil, err
	}
	if sys.mqttAddr, err = harness.FreeAddr(); err != nil {
		return nil, err
	}
	if o.Broker == "mosquitto" {
		if _, err := os.Stat(mosquittoPath); err != nil {
			return nil, fmt.Errorf("--broker mosquitto: %w", err)
		}
		if err := sys.startMosquitto(); err != nil {
			return nil, err
		}
	}
	if err := sys.startCastd(); err != nil {
		return nil, err
	}
	for i := 0; i < o.Beacons; i++ {
		n := &node{idx: i, name: "beacon" + strconv.Itoa(i+1), stateDir: filepath.Join(o.Out, "beacon"+strconv.Itoa(i+1))}
		if n.listen, err = harness.FreeAddr(); err != nil {
			return nil, err
		}
		if n.admin, err = harness.FreeAddr(); err != nil {
			return nil, err
		}
		if n.fwd, err = startForwarder(hostIP(i), sys.castdAddr); err != nil {
			return nil, err
		}
		sys.nodes = append(sys.nodes, n)
		if err := sys.startBeacon(n); err != nil {
			return nil, err
		}
	}
	for _, n := range sys.nodes {
		if err := harness.WaitRegistered(n.admin, sys.start); err != nil {
			return nil, err
		}
		st, err := harness.BeaconStatus(n.admin)
		if err != nil {
			return nil, err
		}
		n.id, _ = st["node_id"].(string)
	}
	if err := sys.waitRouted(sys.start); err != nil {
		return nil, err
	}
	amtCtx, amtStop := context.WithCancel(ctx)
	defer amtStop()
	if a := sys.amt; a != nil {
		a.t0 = time.Now()
		go a.run(amtCtx)
		if err := a.waitFresh(ctx, a.t0, time.Now().Add(sys.start)); err != nil {
			return nil, fmt.Errorf("the AMT channel does not flow: %w", err)
		}
		log.Info("AMT channel flowing", "relay", a.relay, "native_iface", a.nativeIf, "channels", len(a.chans), "rate", o.AMTRate)
	}
	log.Info("system up", "castd", sys.castdURL(), "origin", sys.origin.URL, "broker", o.Broker, "beacons", len(sys.nodes))

	start := time.Now()
	watch := []watched{{name: "castd", pid: sys.pidOf(func() *harness.Proc { return sys.castd }), metrics: sys.castdURL() + protocol.PathMetrics}}
	for _, n := range sys.nodes {
		watch = append(watch, watched{name: n.name, pid: sys.pidOf(func() *harness.Proc { return n.proc }), metrics: "http://" + n.admin + protocol.PathMetrics})
	}
	if o.Broker == "mosquitto" {
		watch = append(watch, watched{name: "mosquitto", pid: sys.pidOf(func() *harness.Proc { return sys.mosq })})
	}
	watch = append(watch, watched{name: "soak", pid: func() (int, bool) { return os.Getpid(), true }})
	csvPath := filepath.Join(o.Out, "samples.csv")
	smp, err := newSampler(csvPath, start, watch)
	if err != nil {
		return nil, err
	}
	led := newLedger(len(sys.nodes), func(e reqError) {
		log.Debug("request failed", "kind", e.Kind, "beacon", e.Beacon, "detail", e.Detail)
	})
	ld := &loader{cat: cat, castdURL: sys.castdURL(), led: led}
	for i := range sys.nodes {
		ld.clients = append(ld.clients, endUser(hostIP(i), 30*time.Second))
	}

	runCtx, cancel := context.WithDeadline(ctx, start.Add(o.Duration))
	defer cancel()
	var amtSamples []amtSample
	takeAMT := func() {
		if sys.amt != nil {
			amtSamples = append(amtSamples, sys.amt.sample(start)...)
		}
	}
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); heapProfiles(runCtx, sys, start, o.Warmup, o.Out, log) }()
	go func() { defer wg.Done(); ld.run(runCtx, o.Rate, o.Clients) }()
	go func() { defer wg.Done(); commands(runCtx, sys, cat, led, o.CmdEvery, log) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(o.SampleEvery)
		defer t.Stop()
		smp.take()
		takeAMT()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				smp.take()
				takeAMT()
			}
		}
	}()
	// The origin fault comes first and a castd restart soon after: the
	// connections castd opened while the origin was slow stay in its idle
	// pool for 90 s, which a short run's quiet end would read as growth.
	cycle := []string{faultOrigin, faultBeacon, faultCastd}
	if o.Broker == "mosquitto" {
		cycle = []string{faultOrigin, faultCastd, faultBroker, faultBeacon}
	}
	inj := &injector{sys: sys, ld: ld, log: log, phase: o.OriginPhase, ready: 30 * time.Second, grace: o.Grace, amtGrace: o.AMTGrace}
	var windows []window
	plan := schedule(o.Duration, o.Warmup+o.FaultPeriod/2, o.FaultPeriod, cycle)
	plan = settleTail(plan, o.Duration, 2*o.OriginPhase, 2*time.Minute)
	log.Info("soak running", "duration", o.Duration, "warmup", o.Warmup, "faults", len(plan), "sample_every", o.SampleEvery, "rate", o.Rate, "out", o.Out)
	for _, f := range plan {
		sleepCtx(runCtx, time.Until(start.Add(f.At)))
		if runCtx.Err() != nil {
			break
		}
		log.Info("fault", "name", f.Name, "at", time.Since(start).Round(time.Second))
		windows = append(windows, inj.inject(runCtx, f.Name))
	}
	<-runCtx.Done()
	wg.Wait()
	saveHeap(sys, start, o.Out, "end", log)
	smp.take()
	amtStop()
	var amtRes amtResult
	if a := sys.amt; a != nil {
		<-a.done
		time.Sleep(time.Second) // the last datagrams in flight
		takeAMT()
		amtRes = a.account(start, o.Warmup, o.Grace, o.AMTGrace, windows)
		amtRes.Figures = append(amtRes.Figures, a.where(sys, smp))
		if err := writeAMTCSV(filepath.Join(o.Out, "amt.csv"), amtSamples); err != nil {
			return nil, err
		}
	} else {
		amtRes.Figures = []string{"amt: skipped: " + amtSkipped}
	}
	allErrs := append(led.errors(), amtRes.Errors...)
	sort.SliceStable(allErrs, func(i, j int) bool { return allErrs[i].At.Before(allErrs[j].At) })
	if err := smp.close(); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("soak interrupted: %w", ctx.Err())
	}

	noGor := map[string]bool{"mosquitto": true}
	v := judge(judgeInput{Start: start, Warmup: o.Warmup, Grace: o.Grace, Errors: allErrs, Windows: windows,
		Samples: smp.all(), Bounds: o.Bounds, Unjudged: map[string]bool{"soak": true}, NoGoroutines: noGor})
	v.Figures = append(v.Figures, amtRes.Figures...)
	if len(plan) == 0 {
		v.failf("no fault was scheduled (duration %s, warm-up %s, period %s)", o.Duration, o.Warmup, o.FaultPeriod)
	}
	res := &Result{Verdict: v, CSV: csvPath, Chart: filepath.Join(o.Out, "chart.svg")}
	if err := writeErrorsCSV(filepath.Join(o.Out, "errors.csv"), start, allErrs, windows, o.Grace); err != nil {
		return nil, err
	}
	res.Summary = summary(o, sys, led, v, res, start)
	notes := strings.Split(strings.TrimSpace(res.Summary), "\n")
	var cb bytes.Buffer
	if err := writeChart(&cb, chartInput{Title: fmt.Sprintf("soak %s, %s broker, %d beacons, %.0f req/s", o.Duration, o.Broker, len(sys.nodes), o.Rate),
		Duration: o.Duration, Warmup: o.Warmup, Samples: withoutSoak(smp.all()), Windows: windows, Start: start, Notes: notes, AMT: amtSamples}); err != nil {
		return nil, err
	}
	if err := os.WriteFile(res.Chart, cb.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, "report.txt"), []byte(res.Summary), 0o644); err != nil {
		return nil, err
	}
	if !v.Pass {
		// A failed run is worth the processes' stacks: a hang (an API
		// that stopped answering) is diagnosed from them.
		for _, w := range watch {
			if pid, ok := w.pid(); ok && w.name != "soak" && w.name != "mosquitto" {
				syscall.Kill(pid, syscall.SIGQUIT)
			}
		}
		time.Sleep(time.Second)
		log.Error("soak failed: goroutine dumps are at the end of each process's log", "dir", o.Out)
		return res, fmt.Errorf("%w: %s", ErrFailed, strings.Join(v.Reasons, "; "))
	}
	return res, nil
}

func (s *system) pidOf(get func() *harness.Proc) func() (int, bool) {
	return func() (int, bool) {
		s.mu.Lock()
		p := get()
		s.mu.Unlock()
		if p == nil || p.Exited() {
			return 0, false
		}
		return p.Pid(), true
	}
}

// commands sends the operator's purges and prefetches through castd's
// command API (POST /v1/nodes/{id}/commands, bearer admin token), each to
// one beacon in turn: purges of hot objects (the next fetch is a miss
// again) and prefetches of cold ones.
func commands(ctx context.Context, sys *system, cat *catalog, led *ledger, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	c := http.Client{Timeout: 10 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b := i % len(sys.nodes)
		op, arg := "purge", cat.Hot[(i/2)%len(cat.Hot)].Path
		if i%2 == 1 {
			op, arg = "prefetch", cat.Cold((i*7919)%cat.ColdN).Path
		}
		led.count("cmd_" + op)
		body := fmt.Sprintf(`{"op":%q,"arg":%q}`, op, arg)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sys.castdURL()+protocol.PathNodes+"/"+sys.nodes[b].id+protocol.PathCommandsSuffix, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := c.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				led.fail(reqError{At: time.Now(), Kind: kindCommand, Beacon: b, Detail: fmt.Sprintf("%s %s: %v", op, arg, err)})
			}
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			led.fail(reqError{At: time.Now(), Kind: kindCommand, Beacon: b, Detail: fmt.Sprintf("%s %s: %s", op, arg, resp.Status)})
			continue
		}
		led.ok("cmd_"+op, -1)
	}
}

func writeErrorsCSV(path string, start time.Time, errs []reqError, ws []window, grace time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"t_seconds", "kind", "beacon", "fault_window", "detail"})
	for _, e := range errs {
		win := ""
		if i := windowOf(e.At, ws, grace); i >= 0 {
			win = ws[i].Name
		}
		w.Write([]string{strconv.FormatFloat(e.At.Sub(start).Seconds(), 'f', 2, 64), e.Kind, strconv.Itoa(e.Beacon + 1), win, e.Detail})
	}
	w.Flush()
	return errors.Join(w.Error(), f.Close())
}

func summary(o Options, sys *system, led *ledger, v verdict, res *Result, start time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak %s (%s broker, %d beacons, %.0f req/s, %d clients), warm-up %s, samples every %s\n",
		o.Duration, o.Broker, len(sys.nodes), o.Rate, o.Clients, o.Warmup, o.SampleEvery)
	led.mu.Lock()
	var ops []string
	for op := range led.byOp {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	var parts []string
	for _, op := range ops {
		parts = append(parts, fmt.Sprintf("%s %d/%d", op, led.okByOp[op], led.byOp[op]))
	}
	fmt.Fprintf(&b, "requests ok/sent: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(&b, "answers: %d x 304, %d x 206 checked, %d ranges answered whole; %.1f MiB checked; %d ticks shed (all clients busy)\n",
		led.notMod, led.partial, led.ranged, mib(led.bytes.Load()), led.shed.Load())
	if led.dropped > 0 {
		fmt.Fprintf(&b, "(%d further failures counted but not kept)\n", led.dropped)
	}
	led.mu.Unlock()
	fmt.Fprintf(&b, "origin: %d requests, %d refused while failing\n", sys.origin.requests.Load(), sys.origin.refused.Load())
	fmt.Fprintf(&b, "castd command results: %s\n", commandResults(filepath.Join(sys.dir, "castd.log")))
	fmt.Fprintf(&b, "errors inside fault windows %v, outside after warm-up %v, in warm-up %v\n", v.Inside, v.Outside, v.Warmup)
	for _, f := range v.Figures {
		b.WriteString(f + "\n")
	}
	if v.Pass {
		b.WriteString("PASS\n")
	} else {
		for _, r := range v.Reasons {
			b.WriteString("FAIL: " + r + "\n")
		}
	}
	fmt.Fprintf(&b, "csv %s\nchart %s\n", res.CSV, res.Chart)
	fmt.Fprintf(&b, "soak process: %d goroutines at the end\n", runtime.NumGoroutine())
	return b.String()
}

// commandResults counts the command results castd logged, by outcome.
func commandResults(logPath string) string {
	data, err := os.ReadFile(logPath)
	if err != nil {
		return err.Error()
	}
	okN, failN := 0, 0
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `msg="command result"`) {
			continue
		}
		if strings.Contains(line, " ok=true") {
			okN++
		} else {
			failN++
		}
	}
	return fmt.Sprintf("%d ok, %d failed (a prefetch while the origin fails, or a purge of what was not cached)", okN, failN)
}

// withoutSoak leaves the soak program's own samples out of the chart (they
// are in the CSV): its in-memory content would flatten the other lines.
func withoutSoak(ss []sample) []sample {
	out := ss[:0:0]
	for _, s := range ss {
		if s.Process != "soak" {
			out = append(out, s)
		}
	}
	return out
}

// heapProfiles saves castd's live heap (pprof format) at the warm-up mark
// and every 15 minutes after it, so that growth the chart shows can be
// read as "what holds it" with go tool pprof -diff_base.
func heapProfiles(ctx context.Context, sys *system, start time.Time, warmup time.Duration, out string, log *slog.Logger) {
	for at := warmup; ; at += 15 * time.Minute {
		sleepCtx(ctx, time.Until(start.Add(at)))
		if ctx.Err() != nil {
			return
		}
		saveHeap(sys, start, out, fmt.Sprintf("%03dm", int(at.Minutes())), log)
	}
}

// saveHeap writes castd-heap-LABEL.pb.gz; a castd between restarts is
// noted in the log and skipped.
func saveHeap(sys *system, start time.Time, out, label string, log *slog.Logger) {
	req, _ := http.NewRequest(http.MethodGet, sys.castdURL()+protocol.PathDebugProfile+"heap?gc=1", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("castd heap profile: %s", resp.Status)
		}
	}
	var b []byte
	if err == nil {
		b, err = io.ReadAll(resp.Body)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(out, "castd-heap-"+label+".pb.gz"), b, 0o644)
	}
	if err != nil {
		log.Warn("castd heap profile not saved", "label", label, "at", time.Since(start).Round(time.Second), "err", err)
	}
}

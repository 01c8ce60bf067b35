// Command bench measures the system against baselines run on the same
// machine in the same run, and prints ratios (the machine is shared and
// noisy, so absolute figures mean little alone):
//
//   - cache-hit throughput and latency of the beacon for 1 KiB and 1 MiB
//     objects, against nginx with proxy_cache serving the same objects, both
//     loaded by wrk with the same settings;
//   - the beacon's peak RSS under that load.
//
// `make bench` runs it after the Go micro-benchmarks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

func main() {
	bin := flag.String("bin", "", "directory holding built castd and beacon (default: build)")
	dur := flag.Duration("duration", 10*time.Second, "wrk run length per measurement")
	conns := flag.Int("connections", 64, "wrk connections")
	rounds := flag.Int("rounds", 1, "measurements per object, alternating which server goes first; more than one adds the median and range of the ratio (the machine is noisy)")
	flag.Parse()
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "bench: --rounds must be at least 1")
		os.Exit(2)
	}
	if err := run(*bin, *dur, *conns, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type wrkResult struct {
	RPS        float64
	MBps       float64
	P50, P99   time.Duration
	Errors     int
	Requests   int
	CPUus      float64 // server CPU (user+system) per request
	rawSummary string
}

func run(binDir string, dur time.Duration, conns, rounds int) error {
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + tool); err2 != nil {
				return fmt.Errorf("%s is not installed (run ./test/install-deps.sh as root)", tool)
			}
		}
	}
	dir, err := os.MkdirTemp("", "blockcast-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx workers run as an unprivileged user and must reach their cache.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	var bins harness.Binaries
	if binDir == "" {
		if bins, err = harness.Build(dir); err != nil {
			return err
		}
	} else {
		bins = harness.Binaries{Castd: filepath.Join(binDir, "castd"), Beacon: filepath.Join(binDir, "beacon")}
	}
	sys, err := harness.NewSystem(dir, bins)
	if err != nil {
		return err
	}
	sys.BeaconCacheSize = "256MiB"
	defer sys.Close()
	if err := sys.Start(); err != nil {
		return err
	}
	ng, err := startNginx(dir, sys.Origin.URL)
	if err != nil {
		return err
	}
	defer ng.Stop(10 * time.Second)

	objects := []struct {
		name, path string
	}{
		{"1 KiB", "/obj/1024/bench-small"},
		{"1 MiB", "/obj/1M/bench-large"},
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "object\tserver\treq/s\tMB/s\tp50\tp99\tCPU µs/req\terrors\tratio (beacon/nginx req/s)\n")
	var peak int64
	var summary []string
	for _, o := range objects {
		beaconURL := "http://" + sys.BeaconAddr + o.path
		nginxURL := "http://" + ng.addr + o.path
		// Prime both caches and check that each then answers from cache.
		for _, u := range []string{beaconURL, nginxURL} {
			for i := 0; i < 2; i++ {
				if _, err := harness.Fetch(context.Background(), u, nil); err != nil {
					return fmt.Errorf("priming %s: %w", u, err)
				}
			}
		}
		if err := expectHit(beaconURL, "X-Cache", "HIT"); err != nil {
			return err
		}
		if err := expectHit(nginxURL, "X-Cache", "HIT"); err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "nginx", "error.log"))
			return fmt.Errorf("%w\nnginx error log:\n%s", err, b)
		}
		before := sys.Origin.Hits(o.path)
		var ratios []float64
		for round := 0; round < rounds; round++ {
			// Alternate the order so neither side always runs on a warmer machine.
			var nr, br wrkResult
			var err error
			for i := 0; i < 2; i++ {
				if (i+round)%2 == 0 {
					c0 := cpuSeconds(ng.pids())
					nr, err = runWrk(nginxURL, dur, conns)
					nr.CPUus = (cpuSeconds(ng.pids()) - c0) * 1e6 / float64(max(nr.Requests, 1))
				} else {
					c0 := cpuSeconds([]int{sys.Beacon.Pid()})
					br, err = runWrk(beaconURL, dur, conns)
					br.CPUus = (cpuSeconds([]int{sys.Beacon.Pid()}) - c0) * 1e6 / float64(max(br.Requests, 1))
				}
				if err != nil {
					return err
				}
			}
			if hwm, err := peakRSS(sys.Beacon.Pid()); err == nil && hwm > peak {
				peak = hwm
			}
			fmt.Fprintf(tw, "%s\tnginx proxy_cache\t%.0f\t%.1f\t%s\t%s\t%.1f\t%d\t\n", o.name, nr.RPS, nr.MBps, nr.P50, nr.P99, nr.CPUus, nr.Errors)
			fmt.Fprintf(tw, "%s\tbeacon\t%.0f\t%.1f\t%s\t%s\t%.1f\t%d\t%.2f\n", o.name, br.RPS, br.MBps, br.P50, br.P99, br.CPUus, br.Errors, br.RPS/nr.RPS)
			ratios = append(ratios, br.RPS/nr.RPS)
		}
		if after := sys.Origin.Hits(o.path); after != before {
			return fmt.Errorf("%s: origin was asked %d times during the hit benchmark", o.name, after-before)
		}
		if rounds > 1 {
			sort.Float64s(ratios)
			med := ratios[len(ratios)/2]
			if len(ratios)%2 == 0 {
				med = (ratios[len(ratios)/2-1] + med) / 2
			}
			summary = append(summary, fmt.Sprintf("%s: ratio median %.2f, range %.2f-%.2f over %d rounds", o.name, med, ratios[0], ratios[len(ratios)-1], rounds))
		}
	}
	tw.Flush()
	if len(summary) > 0 {
		fmt.Printf("\n%s\n", strings.Join(summary, "\n"))
	}
	fmt.Printf("\nbeacon peak RSS (VmHWM) under load: %.1f MB\n", float64(peak)/1e6)
	fmt.Printf("(wrk -t2 -c%d -d%s on %d-core loopback; targets: 1 MiB ratio >= 1.0, 1 KiB >= 0.8, RSS < 40 MB)\n", conns, dur, numCPU())
	return nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

func expectHit(url, header, want string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if got := resp.Header.Get(header); got != want {
		return fmt.Errorf("%s: %s is %q, want %q (cache not primed); status %s, headers %v", url, header, got, want, resp.Status, resp.Header)
	}
	return nil
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reXfer    = regexp.MustCompile(`Transfer/sec:\s+([\d.]+)([KMG]?B)`)
	reLat     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)`)
	reReqs    = regexp.MustCompile(`(\d+) requests in`)
	reErrs    = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func runWrk(url string, dur time.Duration, conns int) (wrkResult, error) {
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+dur.String(), "--latency", url).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	s := string(out)
	var r wrkResult
	r.rawSummary = s
	m := reRPS.FindStringSubmatch(s)
	if m == nil {
		return r, fmt.Errorf("wrk output has no Requests/sec:\n%s", s)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reXfer.FindStringSubmatch(s); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		switch m[2] {
		case "KB":
			v /= 1024
		case "GB":
			v *= 1024
		case "B":
			v /= 1 << 20
		}
		r.MBps = v * 1.048576
	}
	for _, m := range reLat.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		d := time.Duration(v * float64(map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]))
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := reReqs.FindStringSubmatch(s); m != nil {
		r.Requests, _ = strconv.Atoi(m[1])
	}
	if m := reErrs.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		r.Errors += n
	}
	if m := reSockErr.FindStringSubmatch(s); m != nil {
		for _, x := range m[1:] {
			n, _ := strconv.Atoi(x)
			r.Errors += n
		}
	}
	return r, nil
}

func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM")
}

type nginx struct {
	addr string
	proc *harness.Proc
}

func (n *nginx) Stop(d time.Duration) error { return n.proc.Stop(d) }

// startNginx runs nginx with proxy_cache in front of origin, as the
// baseline a CDN operator would otherwise deploy.
func startNginx(dir, origin string) (*nginx, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, err
	}
	nd := filepath.Join(dir, "nginx")
	for _, d := range []string{nd, filepath.Join(nd, "cache"), filepath.Join(nd, "tmp")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			return nil, err
		}
		os.Chmod(d, 0o777)
	}
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path %[1]s/tmp;
  proxy_temp_path %[1]s/tmp;
  fastcgi_temp_path %[1]s/tmp;
  uwsgi_temp_path %[1]s/tmp;
  scgi_temp_path %[1]s/tmp;
  proxy_cache_path %[1]s/cache levels=1:2 keys_zone=bench:10m max_size=1g inactive=60m use_temp_path=off;
  server {
    listen %[2]s;
    location / {
      proxy_pass %[3]s;
      proxy_cache bench;
      proxy_cache_lock on;
      add_header X-Cache $upstream_cache_status;
    }
  }
}
`, nd, addr, origin)
	cf := filepath.Join(nd, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
	}
	p, err := harness.Start("nginx", filepath.Join(nd, "stdout.log"), bin, "-c", cf, "-p", nd)
	if err != nil {
		return nil, err
	}
	if !harness.WaitFor(10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/obj/1/probe")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	}) {
		p.Kill()
		b, _ := os.ReadFile(filepath.Join(nd, "error.log"))
		return nil, fmt.Errorf("nginx did not start:\n%s", b)
	}
	return &nginx{addr: addr, proc: p}, nil
}

// cpuSeconds is the user+system CPU time of pids (Linux, 100 ticks/s).
func cpuSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			k, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + k
		}
	}
	return float64(ticks) / 100
}

// pids are nginx's master and workers.
func (n *nginx) pids() []int {
	pids := []int{n.proc.Pid()}
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", n.proc.Pid(), n.proc.Pid()))
	for _, f := range strings.Fields(string(raw)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

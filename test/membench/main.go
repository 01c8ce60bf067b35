// Command membench measures the beacon's memory where a 128 MB router
// feels it: resident set idle, and its peak while 200 clients fetch from
// the cache at once. With --arch it cross-builds the beacon and runs it
// under qemu user emulation (the figure then includes qemu's own memory, so
// it is an upper bound). `make bench` runs it for amd64, arm64 and armv6;
// the figure with 10 AMT channels joined comes from test/amtnet's
// BenchmarkBeaconRSS.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

func main() {
	arch := flag.String("arch", "", "cross-build the beacon for this target and run it under qemu: arm64 or armv6 (default: native)")
	dur := flag.Duration("duration", 10*time.Second, "load duration")
	clients := flag.Int("clients", 200, "concurrent clients")
	limit := flag.Float64("limit-mb", 25, "fail when a figure (native runs) exceeds this many MB")
	flag.Parse()
	if err := run(*arch, *dur, *clients, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "membench:", err)
		os.Exit(1)
	}
}

func run(arch string, dur time.Duration, clients int, limitMB float64) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return fmt.Errorf("wrk is not installed (run ./test/install-deps.sh as root)")
	}
	dir, err := os.MkdirTemp("", "blockcast-membench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	binDir := filepath.Join(dir, "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		return err
	}
	bins, err := harness.Build(binDir)
	if err != nil {
		return err
	}
	sys, err := harness.NewSystem(dir, bins)
	if err != nil {
		return err
	}
	label := "amd64 (native)"
	if arch != "" {
		qemu, err := crossBeacon(binDir, arch, &bins)
		if err != nil {
			return err
		}
		sys.Bin = bins
		sys.BeaconExec = []string{qemu}
		label = arch + " under " + filepath.Base(qemu) + " (includes the emulator)"
	}
	// The router profile: a small cache and the memory limit the OpenWrt
	// package sets.
	sys.BeaconCacheSize = "64MiB"
	sys.BeaconArgs = []string{"--memory-limit", "20MiB", "--log-level", "info"}
	defer sys.Close()
	if err := sys.Start(); err != nil {
		return err
	}
	pid := sys.Beacon.Pid()
	time.Sleep(3 * time.Second)
	idle, _ := harness.RSS(pid)

	urls := []string{"/obj/1024/mem-small", "/obj/1M/mem-large"}
	for _, p := range urls {
		for i := 0; i < 2; i++ {
			if _, err := harness.Fetch(context.Background(), "http://"+sys.BeaconAddr+p, nil); err != nil {
				return err
			}
		}
	}
	var under int64
	for _, p := range urls {
		stop := make(chan struct{})
		peak := make(chan int64)
		go func() {
			var max int64
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					peak <- max
					return
				case <-t.C:
					if r, err := harness.RSS(pid); err == nil && r > max {
						max = r
					}
				}
			}
		}()
		out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(clients), "-d"+dur.String(), "http://"+sys.BeaconAddr+p).CombinedOutput()
		close(stop)
		m := <-peak
		if err != nil {
			return fmt.Errorf("wrk: %w\n%s", err, out)
		}
		if m > under {
			under = m
		}
		rps := ""
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "Requests/sec:") {
				rps = strings.TrimSpace(strings.TrimPrefix(l, "Requests/sec:"))
			}
		}
		fmt.Printf("  %d clients on %s: %s req/s, peak RSS %.1f MB\n", clients, p, rps, mb(m))
	}
	hwm := vmHWM(pid)
	fmt.Printf("beacon %s: RSS idle %.1f MB, peak under %d clients %.1f MB (VmHWM %.1f MB); target < %.0f MB on amd64\n",
		label, mb(idle), clients, mb(under), mb(hwm), limitMB)
	if arch == "" && (mb(idle) > limitMB || mb(under) > limitMB) {
		return fmt.Errorf("over the %.0f MB target", limitMB)
	}
	return nil
}

func mb(b int64) float64 { return float64(b) / 1e6 }

func vmHWM(pid int) int64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// crossBeacon builds the beacon for arch and returns the qemu to run it.
func crossBeacon(dir, arch string, bins *harness.Binaries) (string, error) {
	env := []string{"CGO_ENABLED=0", "GOOS=linux"}
	var qemu string
	switch arch {
	case "arm64":
		env, qemu = append(env, "GOARCH=arm64"), "qemu-aarch64-static"
	case "armv6":
		env, qemu = append(env, "GOARCH=arm", "GOARM=6"), "qemu-arm-static"
	case "mipsle":
		env, qemu = append(env, "GOARCH=mipsle", "GOMIPS=softfloat"), "qemu-mipsel-static"
	default:
		return "", fmt.Errorf("--arch %q: want arm64, armv6 or mipsle", arch)
	}
	q, err := exec.LookPath(qemu)
	if err != nil {
		return "", fmt.Errorf("%s not installed (qemu-user-static)", qemu)
	}
	root, err := harness.ModuleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "beacon-"+arch)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=membench", "-o", out, "./firmware/cmd/beacon")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("cross build: %w\n%s", err, o)
	}
	bins.Beacon = out
	return q, nil
}

// Command soak runs castd, three beacons and an origin on loopback for a
// long time at a steady mixed load of end users (hits and misses, small
// and large objects, Range and conditional requests, purges and prefetches
// through castd's command API, and an AMT channel per beacon from an SSM
// source through castd's relay to a listener on the beacon's LAN, every
// datagram checked), restarts castd (and so its broker and relay), kills
// a beacon with SIGKILL and makes the origin slow then failing on a
// schedule, checks every byte served against the origin's, samples each
// process's RSS, open fds and goroutines, and judges the run: no wrong
// byte, errors only inside fault windows, every fault recovered without a
// hand, memory, fds and goroutines flat after the warm-up.
//
//	go run ./test/soak --duration 1h --out DIR
//
// It writes DIR/samples.csv, DIR/amt.csv, DIR/chart.svg, DIR/errors.csv,
// DIR/report.txt and every process's log, and exits 1 when the verdict is
// a fail. The AMT channel needs root (two network namespaces and veths);
// without root it is left out with a line in the report, or the run fails
// when CI=true.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	var o Options
	var verbose bool
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.DurationVar(&o.Duration, "duration", time.Hour, "how long the load runs (at least 1m)")
	fs.StringVar(&o.Out, "out", "", "directory for the CSV, the chart, the report and the logs (default: a new temporary directory)")
	fs.StringVar(&o.BinDir, "bin", "", "directory holding built castd and beacon binaries (default: build them)")
	fs.StringVar(&o.Broker, "broker", "embedded", "control-plane broker: embedded (castd's; restarted with castd) or mosquitto (a separate process, restarted as its own fault)")
	fs.Float64Var(&o.Rate, "rate", 30, "end users' requests a second, in total")
	fs.IntVar(&o.Clients, "clients", 12, "end users' requests in flight at most")
	fs.DurationVar(&o.Warmup, "warmup", 0, "judge from this point on (default: duration/12, at least 90s, at most duration/4)")
	fs.DurationVar(&o.SampleEvery, "sample-every", 0, "sampling period (default 10s; shorter for runs under 10m)")
	fs.DurationVar(&o.FaultPeriod, "fault-period", 0, "one fault every period after the warm-up (default duration/6)")
	fs.Float64Var(&o.Bounds.RSS, "rss-slack", 0, "anonymous RSS may grow by this fraction of its warm-up level (default 0.10; 0.25 for runs under 30m)")
	fs.BoolFunc("amt", "include the AMT channel with LAN listeners (default true; needs root for its network namespaces)", func(v string) error {
		on, err := strconv.ParseBool(v)
		o.NoAMT = !on
		return err
	})
	fs.Float64Var(&o.AMTRate, "amt-rate", 100, "AMT source datagrams a second, per channel (one channel per beacon)")
	fs.BoolVar(&verbose, "v", false, "log every failed request")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if o.Out == "" {
		dir, err := os.MkdirTemp("", "soak-")
		if err != nil {
			log.Error("soak", "err", err)
			os.Exit(2)
		}
		o.Out = dir
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, o, log)
	if res != nil {
		fmt.Print(res.Summary)
	}
	if err != nil {
		log.Error("soak", "err", err)
		os.Exit(1)
	}
}

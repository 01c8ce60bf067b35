// Command beacon is the Blockcast Beacon firmware: a home router's or a
// Raspberry Pi's personal CDN cache that castd redirects nearby users to.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/blockcast/beacon/firmware/beacon"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/identity"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const intro = `beacon — Blockcast Beacon, a personal CDN cache for your home network.

castd redirects people on your public IP to this beacon; it serves them from
its cache and fills misses from castd. The node is identified by a Solana
wallet key (created on first start; back it up).

Usage:
  beacon [run] --cast-url http://castd.example:8080 [flags]   serve (default)
  beacon keygen [--key PATH]      create a node wallet (never overwrites)
  beacon id [--key PATH]          print the node ID (base58 public key)
  beacon --version

`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "run":
			return serve(args[1:], stdout, stderr)
		case "keygen":
			return keygen(args[1:], stdout, stderr)
		case "id":
			return showID(args[1:], stdout, stderr)
		case "help":
			return serve([]string{"--help"}, stdout, stderr)
		}
	}
	return serve(args, stdout, stderr)
}

const defaultStateDir = "/var/lib/blockcast"

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts        beacon.Options
		logOpts     cli.LogOptions
		cacheSize   = cli.Size(256 << 20)
		memLimit    = cli.Size(0)
		showVersion bool
	)
	fs.StringVar(&opts.Listen, "listen", ":8081", "HTTP address end users are served on")
	fs.StringVar(&opts.AdminListen, "admin-listen", "127.0.0.1:8082", "local status endpoint (empty to disable)")
	fs.StringVar(&opts.LANURL, "lan-url", "", "URL end users reach this beacon at (default: made from --listen or the LAN address)")
	fs.StringVar(&opts.CastURL, "cast-url", "", "base URL of castd (required)")
	fs.StringVar(&opts.StateDir, "state-dir", defaultStateDir, "directory for the cache file (and the wallet, unless --key)")
	fs.StringVar(&opts.KeyFile, "key", "", "node wallet file, Solana keypair format (default STATE-DIR/wallet.json)")
	fs.StringVar(&opts.DelegationFile, "delegation", "", "owner wallet delegation file (JSON), optional")
	fs.Var(&cacheSize, "cache-size", "bound on cached bytes, e.g. 64MiB")
	fs.DurationVar(&opts.CheckInterval, "check-interval", time.Minute, "how often to check that the registration (public IP, LAN URL) is current")
	fs.Var(&memLimit, "memory-limit", "soft memory limit for the Go runtime, e.g. 24MiB (0: GOMEMLIMIT or none)")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	logOpts.AddFlags(fs)
	fs.Usage = cli.Usage(fs, "BEACON", intro)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if showVersion {
		fmt.Fprintln(stdout, "beacon", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "beacon: unexpected arguments %q (see beacon --help)\n", fs.Args())
		return 2
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	log, err := logOpts.NewLogger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	if memLimit > 0 {
		// A router has no swap: make the GC work harder before the OOM killer does.
		debug.SetMemoryLimit(int64(memLimit))
	}
	opts.CacheSize = int64(cacheSize)
	opts.Version = version
	opts.Logger = log
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := beacon.Run(ctx, opts); err != nil {
		log.Error("beacon stopped", "err", err)
		return 1
	}
	return 0
}

// keyFlags parses the --key / --state-dir pair the key subcommands share.
func keyFlags(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet("beacon "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "node wallet file (default STATE-DIR/wallet.json)")
	stateDir := fs.String("state-dir", defaultStateDir, "state directory")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return "", false
	}
	if *key == "" {
		*key = filepath.Join(*stateDir, "wallet.json")
	}
	return *key, true
}

func keygen(args []string, stdout, stderr io.Writer) int {
	path, ok := keyFlags("keygen", args, stderr)
	if !ok {
		return 2
	}
	kp, err := identity.CreateFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "beacon keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote node wallet %s (mode 0600); back it up: it is this node's identity\n", path)
	fmt.Fprintln(stdout, kp.ID())
	return 0
}

func showID(args []string, stdout, stderr io.Writer) int {
	path, ok := keyFlags("id", args, stderr)
	if !ok {
		return 2
	}
	kp, err := identity.LoadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "beacon id: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, kp.ID())
	return 0
}

// Command beacon is the Blockcast Beacon firmware: a home router's or a
// Raspberry Pi's personal CDN cache that castd redirects nearby users to.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/firmware/beacon"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/protocol"
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
  beacon status [--admin-listen ADDR] [--json]
                                  print the running beacon's state
  beacon delegate --owner WALLET  step 1: the text your owner wallet signs
  beacon delegate --signature SIG step 2: store the owner's signature
  beacon register --onchain --solana-rpc URL [--fee-payer OWNER]
                                  record the registration on chain
  beacon verify-cast --solana-rpc URL [--cast-sig SIG | --cast-url URL]
                                  check the CAST key against its on-chain record
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
		case "status":
			return status(args[1:], stdout, stderr)
		case "delegate":
			return delegate(args[1:], stdout, stderr)
		case "register":
			return register(args[1:], stdout, stderr)
		case "verify-cast":
			return verifyCast(args[1:], stdout, stderr)
		case "help":
			return serve([]string{"--help"}, stdout, stderr)
		}
	}
	return serve(args, stdout, stderr)
}

const defaultStateDir = beacon.DefaultStateDir

func serve(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts        beacon.Options
		logOpts     cli.LogOptions
		cacheSize   = cli.Size(beacon.DefaultCacheSize)
		memLimit    = cli.Size(0)
		showVersion bool
	)
	fs.StringVar(&opts.Listen, "listen", beacon.DefaultListen, "HTTP address end users are served on")
	fs.StringVar(&opts.AdminListen, "admin-listen", beacon.DefaultAdminListen, "local status endpoint (empty to disable)")
	fs.StringVar(&opts.LANURL, "lan-url", "", "URL end users reach this beacon at (default: made from --listen or the LAN address)")
	fs.StringVar(&opts.CastURL, "cast-url", "", "base URL of castd (required)")
	fs.StringVar(&opts.StateDir, "state-dir", defaultStateDir, "directory for the cache file (and the wallet, unless --key)")
	fs.StringVar(&opts.KeyFile, "key", "", "node wallet file, Solana keypair format (default STATE-DIR/wallet.json)")
	fs.StringVar(&opts.DelegationFile, "delegation", "", "owner wallet delegation file (default STATE-DIR/delegation.json when present)")
	fs.Var(&cacheSize, "cache-size", "bound on cached bytes, e.g. 64MiB")
	fs.DurationVar(&opts.CheckInterval, "check-interval", beacon.DefaultCheckInterval, "how often to check that the registration (public IP, LAN URL) is current")
	fs.StringVar(&opts.MQTTURL, "mqtt-url", "", "control-plane MQTT broker (default: the one castd names at registration)")
	fs.StringVar(&opts.CastKey, "cast-key", "", "CAST key (base58) that must sign castd's commands (default: learned at first registration, then pinned)")
	fs.DurationVar(&opts.HealthInterval, "health-interval", beacon.DefaultHealthInterval, "how often a health report is sent to castd")
	fs.DurationVar(&opts.ReceiptInterval, "receipt-interval", beacon.DefaultReceiptInterval, "how often a signed delivery receipt of what was served is made for castd")
	fs.DurationVar(&opts.ReceiptResend, "receipt-resend", beacon.DefaultReceiptResend, "how often receipts castd has not acknowledged are sent again (also after each reconnect)")
	fs.StringVar(&opts.AMTRelay, "amt-relay", "", "AMT relay HOST[:PORT] or ADDR[:PORT] for channels whose join names none; a name is resolved at join time and again when the relay stops answering (default: DRIAD)")
	fs.IntVar(&opts.MaxConns, "max-conns", beacon.DefaultMaxConns, "end users' connections open at once; more wait in the backlog")
	fs.DurationVar(&opts.WriteStall, "write-stall-timeout", beacon.DefaultWriteStall, "drop a client that accepts no response byte for this long")
	fs.DurationVar(&opts.BodyTimeout, "body-timeout", beacon.DefaultBodyTimeout, "drop a request whose body takes longer than this to arrive")
	fs.BoolVar(&opts.AMTDRIAD, "amt-driad", true, "find AMT relays by DRIAD (DNS AMTRELAY records) when --amt-relay is empty")
	fs.BoolVar(&opts.AMTAnycast, "amt-anycast", false, "fall back to the AMT relay discovery anycast address 192.52.193.1 / 2001:3::1")
	fs.Func("amt-join", "join an SSM channel at start: 'SOURCE@GROUP [relay=ADDR] [reemit]' (repeatable, or ';'-separated)", func(v string) error {
		for _, s := range strings.Split(v, ";") {
			if s = strings.TrimSpace(s); s != "" {
				opts.AMTJoins = append(opts.AMTJoins, s)
			}
		}
		return nil
	})
	fs.StringVar(&opts.LANInterface, "lan-iface", "", "LAN interface where channels joined with 'reemit' are sent as native multicast (needs CAP_NET_RAW)")
	fs.Func("amt-reemit-ttl", "TTL of re-emitted multicast (default: received TTL minus 1)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 8)
		opts.AMTReemitTTL = uint8(n)
		return err
	})
	fs.StringVar(&opts.MulticastReceive, "multicast-receive", beacon.DefaultMulticastReceive, "receive objects castd sends by multicast: auto (native, else through the AMT gateway), native, amt or off (always unicast)")
	fs.StringVar(&opts.MulticastIface, "multicast-iface", "", "WAN interface for native multicast joins (default: the one the kernel routes the group to, the default route's)")
	fs.BoolVar(&opts.StatusPage, "status-page", true, "serve the owner's read-only status page at / on --listen (its JSON at /v1/status)")
	fs.Func("allow-host", "host name the status page and the local API answer to besides IP addresses, localhost and --lan-url's host (repeatable, or ','-separated)", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				opts.AllowHosts = append(opts.AllowHosts, s)
			}
		}
		return nil
	})
	fs.StringVar(&opts.SolanaRPC, "solana-rpc", "", "Solana JSON-RPC endpoint for on-chain registration and the CAST key check")
	fs.BoolVar(&opts.OnchainRegister, "onchain-register", false, "record the registration on chain at start when it has no record (the node key pays; needs --solana-rpc)")
	fs.BoolVar(&opts.RequireOnchain, "require-onchain", false, "refuse a CAST key that is not recorded on chain (needs --solana-rpc)")
	fs.StringVar(&opts.CastSig, "cast-sig", "", "transaction that records the CAST key (default: castd says where, and the beacon checks it on chain)")
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
		if oe := (*beacon.OptionError)(nil); errors.As(err, &oe) && fieldFlags[oe.Field] != "" {
			fmt.Fprintf(stderr, "beacon: --%s: %v\n", fieldFlags[oe.Field], strings.TrimPrefix(oe.Err.Error(), "is "))
			return 2
		}
		log.Error("beacon stopped", "err", err)
		return 1
	}
	return 0
}

// fieldFlags names the flag of each Options field beacon's errors name.
var fieldFlags = map[string]string{
	"CastURL": "cast-url", "StateDir": "state-dir", "CacheSize": "cache-size", "CheckInterval": "check-interval",
	"HealthInterval": "health-interval", "MaxConns": "max-conns", "WriteStall": "write-stall-timeout",
	"BodyTimeout": "body-timeout", "LANURL": "lan-url", "AllowHosts": "allow-host", "AMTRelay": "amt-relay",
	"AMTJoins": "amt-join", "MulticastReceive": "multicast-receive", "SolanaRPC": "solana-rpc", "OnchainRegister": "onchain-register",
	"RequireOnchain": "require-onchain", "CastSig": "cast-sig",
	"ReceiptInterval": "receipt-interval", "ReceiptResend": "receipt-resend",
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

func status(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin-listen", beacon.DefaultAdminListen, "the running beacon's local status address")
	asJSON := fs.Bool("json", false, "print the raw JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	client := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + *admin + protocol.PathStatus
	resp, err := client.Get(url)
	if err != nil {
		fmt.Fprintf(stderr, "beacon status: is the beacon running? %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode != http.StatusOK:
		fmt.Fprintf(stderr, "beacon status: %s answered %s: is --admin-listen %s a beacon's status address?\n", url, resp.Status, *admin)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "beacon status: reading %s: %v\n", url, err)
		return 1
	}
	if *asJSON {
		stdout.Write(raw)
		return 0
	}
	var st beacon.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		fmt.Fprintf(stderr, "beacon status: bad answer: %v\n", err)
		return 1
	}
	st.WriteText(stdout)
	return 0
}

// delegate links the node to its owner's wallet without the owner key ever
// touching the router: step 1 prints the text to sign with the solana CLI
// (or a wallet), step 2 checks the signature and stores the delegation.
func delegate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("beacon delegate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	key := fs.String("key", "", "node wallet file (default STATE-DIR/wallet.json)")
	stateDir := fs.String("state-dir", defaultStateDir, "state directory")
	owner := fs.String("owner", "", "step 1: the owner wallet's address (base58)")
	sig := fs.String("signature", "", "step 2: the signature the owner's wallet printed (base58)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := cli.ApplyEnv(fs, "BEACON", nil); err != nil {
		fmt.Fprintln(stderr, "beacon:", err)
		return 2
	}
	if *key == "" {
		*key = filepath.Join(*stateDir, "wallet.json")
	}
	kp, err := identity.LoadFile(*key)
	if err != nil {
		fmt.Fprintf(stderr, "beacon delegate: %v\n", err)
		return 1
	}
	pending := filepath.Join(*stateDir, "delegation-request.txt")
	out := filepath.Join(*stateDir, "delegation.json")
	switch {
	case *owner != "" && *sig == "":
		o, err := identity.ParsePublicKey(*owner)
		if err != nil {
			fmt.Fprintf(stderr, "beacon delegate: --owner: %v\n", err)
			return 2
		}
		text := offchain.DelegationText(o, kp.Public(), time.Now())
		if err := os.WriteFile(pending, []byte(text), 0o600); err != nil {
			fmt.Fprintf(stderr, "beacon delegate: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "Sign this text with the owner wallet %s, e.g.:\n\n  solana sign-offchain-message -k <owner keypair or usb://ledger> '%s'\n\nthen run:\n\n  beacon delegate --signature <the printed signature>\n", o, text)
		return 0
	case *sig != "":
		text, err := os.ReadFile(pending)
		if err != nil {
			fmt.Fprintf(stderr, "beacon delegate: no pending request (run step 1 with --owner first): %v\n", err)
			return 1
		}
		o, _, _, err := offchain.ParseDelegationText(string(text))
		if err != nil {
			fmt.Fprintf(stderr, "beacon delegate: %s: %v\n", pending, err)
			return 1
		}
		d, err := offchain.AssembleDelegation(o, string(text), *sig)
		if err == nil {
			_, err = offchain.VerifyDelegation(d, kp.Public())
		}
		if err != nil {
			fmt.Fprintf(stderr, "beacon delegate: the signature does not verify: %v\n", err)
			return 1
		}
		raw, _ := json.MarshalIndent(d, "", "  ")
		if err := os.WriteFile(out, append(raw, '\n'), 0o600); err != nil {
			fmt.Fprintf(stderr, "beacon delegate: %v\n", err)
			return 1
		}
		os.Remove(pending)
		fmt.Fprintf(stdout, "node %s is now delegated by owner %s (%s); it is sent with the next registration\n", kp.ID(), o, out)
		return 0
	}
	fmt.Fprintln(stderr, "beacon delegate: give --owner WALLET (step 1) or --signature SIG (step 2)")
	return 2
}

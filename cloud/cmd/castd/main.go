// Command castd runs the CAST node of a Blockcast network: node registry,
// request router and mid-tier cache in front of an HTTP origin.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/blockcast/beacon/cloud/castd"
	"github.com/blockcast/beacon/cloud/clientip"
	"github.com/blockcast/beacon/cloud/contractcmd"
	"github.com/blockcast/beacon/cloud/receiptcmd"
	"github.com/blockcast/beacon/cloud/relayadmin"
	"github.com/blockcast/beacon/cloud/report"
	"github.com/blockcast/beacon/shared/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const intro = `castd — the CAST node of a Blockcast Beacon network.

It keeps the registry of beacons and relays (nodes sign their requests with
their wallet key), redirects end users to the beacon on their own public IP,
to the relay whose subnet covers them, or to the origin, and runs the
mid-tier cache that beacons fill from.

Usage:
  castd --origin http://origin.example --state-dir /var/lib/castd [flags]

The dashboard is at http://CASTD/ (sign in with --admin-token to see
nodes; without it, fleet totals only) and the node API at /v1/nodes; nodes
report health over MQTT to the embedded broker (--mqtt-listen) or to an
external one (--mqtt-broker); only nodes heard online are routed to.

Relays are routed to only for the prefixes the operator approves
(castd relays list|approve|revoke, see castd relays --help) or assigns in
the --coverage-zone file.

Delivery receipts: with --solana-rpc and --receipt-anchor daily, castd
anchors each closed UTC day's receipts root on chain; castd receipts prove
prints one receipt's proof (see castd receipts --help).

Node owners sign in on the dashboard with their wallet, see their own
nodes and offer capacity contracts; castd report (see castd report
--help) gives per node, per owner and per contract figures as CSV.
With --solana-rpc castd anchors each accepted contract on chain (memo
blockcast:contract:v1:ID, paid by the CAST key); castd contracts verify
checks it (see castd contracts --help).

Content URLs: GET http://CASTD/<path> answers 302 to where the user should
fetch <path>. Upstream CDNs that redirect themselves ask
GET /v1/route?path=/<path>&client=<ip> for the same decision as JSON.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "relays" {
		return relayadmin.Run(args[1:], stdout, stderr, nil)
	}
	if len(args) > 0 && args[0] == "receipts" {
		return receiptcmd.Run(args[1:], stdout, stderr, nil)
	}
	if len(args) > 0 && args[0] == "contracts" {
		return contractcmd.Run(args[1:], stdout, stderr, nil)
	}
	if len(args) > 0 && args[0] == "report" {
		return report.Run(args[1:], stdout, stderr, nil)
	}
	fs := flag.NewFlagSet("castd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		opts         castd.Options
		logOpts      cli.LogOptions
		cacheSize    = cli.Size(castd.DefaultCacheSize)
		trusted      string
		amtAdvertise string
		showVersion  bool
	)
	fs.StringVar(&opts.Listen, "listen", castd.DefaultListen, "HTTP address for the API, the request router and node fetches")
	fs.StringVar(&opts.StateDir, "state-dir", castd.DefaultStateDir, "directory for the CAST key, node registry and mid-tier cache")
	fs.StringVar(&opts.Origin, "origin", "", "base URL of the HTTP origin (required), e.g. http://origin.example")
	fs.Var(&cacheSize, "cache-size", "disk bound of the mid-tier cache, e.g. 10GiB")
	fs.StringVar(&trusted, "trusted-proxy", "", "comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed")
	fs.DurationVar(&opts.SignWindow, "sign-window", castd.DefaultSignWindow, "accepted clock skew of nodes' signed requests")
	fs.BoolVar(&opts.RequireDelegation, "require-delegation", false, "refuse nodes that carry no owner wallet delegation")
	fs.StringVar(&opts.MQTTListen, "mqtt-listen", castd.DefaultMQTTListen, "address of the embedded MQTT broker nodes report to (empty: no control plane)")
	fs.StringVar(&opts.MQTTBroker, "mqtt-broker", "", "use this external MQTT broker instead (tcp://host:1883 or tls://host:8883)")
	fs.StringVar(&opts.MQTTUser, "mqtt-user", "", "login on the external broker (default: castd's wallet token); an extra admin login on the embedded one")
	fs.StringVar(&opts.MQTTPassword, "mqtt-password", "", "password for --mqtt-user")
	fs.StringVar(&opts.MQTTPublicURL, "mqtt-public-url", "", "broker URL given to nodes (default: castd's host with the broker's port)")
	fs.StringVar(&opts.MQTTTLSCert, "mqtt-tls-cert", "", "PEM certificate for the embedded broker (with --mqtt-tls-key: TLS)")
	fs.StringVar(&opts.MQTTTLSKey, "mqtt-tls-key", "", "PEM key for the embedded broker")
	fs.DurationVar(&opts.MQTTCoalesce, "mqtt-coalesce", castd.DefaultMQTTCoalesce, "how long nodes' packets may wait so that the embedded broker reads many per wake-up (Linux; 0: read each at once)")
	fs.DurationVar(&opts.ProbeInterval, "probe-interval", castd.DefaultProbeInterval, "how often relays' health endpoints are probed")
	fs.IntVar(&opts.ProbeConcurrency, "probe-concurrency", castd.DefaultProbeConcurrency, "relay health probes in flight at most (each has a deadline of half the interval, at most 5s)")
	fs.BoolVar(&opts.AllowPrivateNodes, "allow-private-nodes", false, "let relays register and be probed at loopback, private, link-local and other non-public addresses (labs and tests only)")
	fs.StringVar(&opts.AdminToken, "admin-token", "", "operator's bearer token: the dashboard's node list, GET /v1/nodes/{id}, POST /v1/nodes/{id}/commands, relay approvals (empty: operator API off, totals only)")
	fs.StringVar(&opts.RouteToken, "route-token", "", "bearer token upstream CDNs send to ask GET /v1/route?client=<ip> about addresses other than their own (the admin token works too)")
	fs.DurationVar(&opts.WriteStall, "write-stall-timeout", castd.DefaultWriteStall, "drop a client that accepts no response byte for this long")
	fs.DurationVar(&opts.BodyTimeout, "body-timeout", castd.DefaultBodyTimeout, "drop a request whose body takes longer than this to arrive")
	fs.Float64Var(&opts.RegistrationRate, "registration-rate", castd.DefaultRegistrationRate, "new nodes one source address may register a minute once --registration-burst is spent (negative: no limit)")
	fs.IntVar(&opts.RegistrationBurst, "registration-burst", castd.DefaultRegistrationBurst, "new nodes one source address (IPv6: /64) may register at once")
	fs.DurationVar(&opts.RegistrationTTL, "registration-ttl", castd.DefaultRegistrationTTL, "remove a registration the control plane has not seen online this long after it was made (0: never)")
	fs.StringVar(&opts.SolanaRPC, "solana-rpc", "", "Solana JSON-RPC endpoint: registrations that reference a Memo transaction are checked there, and the CAST key is recorded there at start (paid by the CAST key)")
	fs.BoolVar(&opts.RequireOnchain, "require-onchain", false, "refuse registrations not recorded on chain (beacon register --onchain); needs --solana-rpc")
	fs.StringVar(&opts.ReceiptAnchor, "receipt-anchor", castd.AnchorOff, "daily: publish each closed UTC day's receipts root on --solana-rpc (a Memo transaction the CAST key signs and pays, 5000 lamports); off: do not")
	fs.DurationVar(&opts.ReceiptDay, "receipt-day", 24*time.Hour, "length of the day a receipts root covers (shorter only in tests)")
	fs.StringVar(&opts.CoverageZone, "coverage-zone", "", "Apache Traffic Control coverage-zone JSON file assigning client prefixes to relays (reloaded when it changes)")
	fs.DurationVar(&opts.CoverageZoneInterval, "coverage-zone-interval", castd.DefaultCoverageZoneInterval, "how often the --coverage-zone file is checked for changes")
	fs.StringVar(&opts.AMTListen, "amt-listen", castd.DefaultAMTListen, "UDP address of the AMT relay (RFC 7450) gateways join through (empty: off)")
	fs.StringVar(&amtAdvertise, "amt-advertise", "", "address the relay advertises to gateways (behind cloud NAT; default: the address discovery reached)")
	fs.StringVar(&opts.AMTNativeInterface, "amt-native-iface", "", "interface where native SSM is received for joined channels (relays third-party streams)")
	fs.DurationVar(&opts.AMTQueryInterval, "amt-query-interval", castd.DefaultAMTQueryInterval, "query interval gateways refresh their joins at")
	fs.BoolVar(&opts.AMTGatewayAddr, "amt-gateway-addr", false, "tell gateways the address the relay sees (G flag; some gateways, e.g. VLC, do not expect it)")
	fs.IntVar(&opts.AMTMaxGateways, "amt-max-gateways", castd.DefaultAMTMaxGateways, "tunnels the relay accepts before it sets the L flag")
	fs.DurationVar(&opts.OwnerSessionTTL, "owner-session-ttl", castd.DefaultOwnerSessionTTL, "how long an owner's wallet sign-in (dashboard, /v1/owner/...) lasts")
	fs.DurationVar(&opts.HistoryInterval, "history-interval", castd.DefaultHistoryInterval, "how often node availability is sampled for capacity contracts (castd report)")
	finishMulticast := multicastFlags(fs, &opts)
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	logOpts.AddFlags(fs)
	fs.Usage = cli.Usage(fs, "CASTD", intro)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if showVersion {
		fmt.Fprintln(stdout, "castd", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "castd: unexpected arguments %q (see castd --help)\n", fs.Args())
		return 2
	}
	if err := cli.ApplyEnv(fs, "CASTD", nil); err != nil {
		fmt.Fprintln(stderr, "castd:", err)
		return 2
	}
	log, err := logOpts.NewLogger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "castd:", err)
		return 2
	}
	if opts.TrustedProxies, err = clientip.ParsePrefixes(trusted); err != nil {
		fmt.Fprintln(stderr, "castd: --trusted-proxy:", err)
		return 2
	}
	if amtAdvertise != "" {
		if opts.AMTAdvertise, err = netip.ParseAddr(amtAdvertise); err != nil {
			fmt.Fprintln(stderr, "castd: --amt-advertise:", err)
			return 2
		}
	}
	if err := finishMulticast(); err != nil {
		fmt.Fprintln(stderr, "castd:", err)
		return 2
	}
	opts.CacheSize = int64(cacheSize)
	// The flags keep their documented "0: off"; in Options zero is the
	// default and negative is off.
	offAtZero(&opts.MQTTCoalesce)
	offAtZero(&opts.RegistrationTTL)
	opts.Version = version
	opts.Logger = log
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := castd.Run(ctx, opts); err != nil {
		if oe := (*castd.OptionError)(nil); errors.As(err, &oe) && fieldFlags[oe.Field] != "" {
			fmt.Fprintf(stderr, "castd: --%s: %v\n", fieldFlags[oe.Field], strings.TrimPrefix(oe.Err.Error(), "is "))
			return 2
		}
		log.Error("castd stopped", "err", err)
		return 1
	}
	return 0
}

// offAtZero turns a flag's "0: off" into Options' negative.
func offAtZero(d *time.Duration) {
	if *d == 0 {
		*d = -1
	}
}

// fieldFlags names the flag of each Options field castd's errors name.
var fieldFlags = map[string]string{
	"SolanaRPC": "solana-rpc", "RequireOnchain": "require-onchain",
	"ReceiptAnchor": "receipt-anchor", "ReceiptDay": "receipt-day",
	"StateDir": "state-dir", "Origin": "origin", "CacheSize": "cache-size", "SignWindow": "sign-window",
	"ProbeInterval": "probe-interval", "ProbeConcurrency": "probe-concurrency",
	"CoverageZoneInterval": "coverage-zone-interval", "AMTQueryInterval": "amt-query-interval",
	"AMTMaxGateways": "amt-max-gateways", "WriteStall": "write-stall-timeout", "BodyTimeout": "body-timeout",
	"RegistrationBurst": "registration-burst", "RegistrationRate": "registration-rate",
	"MulticastThreshold": "multicast-threshold", "MulticastWindow": "multicast-window", "MulticastPaths": "multicast-path",
	"MulticastRanges": "multicast-range", "MulticastRate": "multicast-rate", "MulticastRateTotal": "multicast-rate-total",
	"MulticastIface": "multicast-iface", "MulticastSources": "multicast-source", "DTLSListen": "dtls-listen",
	"DTLSPublic": "dtls-public", "RepairRate": "repair-rate",
}

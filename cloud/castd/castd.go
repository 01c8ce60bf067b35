// Package castd is the CAST node service: it registers nodes, routes end
// users to the beacon or relay that serves their network (or to the origin),
// and runs the mid-tier cache that beacons fill from. cmd/castd parses flags
// into Options and calls Run.
package castd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/cloud/amtrelay"
	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/cloud/clientip"
	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/cloud/probe"
	"github.com/blockcast/beacon/cloud/receipts"
	"github.com/blockcast/beacon/cloud/registry"
	"github.com/blockcast/beacon/cloud/router"
	"github.com/blockcast/beacon/cloud/web"
	"github.com/blockcast/beacon/shared/connguard"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/httpcache"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/objstore"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/ratelimit"
	"github.com/blockcast/beacon/shared/signedreq"
)

// Defaults of Options: ensureDefaults gives them to zero fields, and the
// castd command's flags start from them. Each is defined here once (or
// named here after the package that owns it).
const (
	DefaultListen           = ":8080"
	DefaultCacheSize        = 1 << 30
	DefaultSignWindow       = time.Minute
	DefaultMQTTCoalesce     = broker.DefaultReadCoalesce
	DefaultProbeInterval    = 10 * time.Second
	DefaultProbeConcurrency = probe.DefaultMaxInFlight
	DefaultWriteStall       = connguard.DefaultWriteStall
	DefaultBodyTimeout      = connguard.DefaultBodyTimeout
	DefaultAMTQueryInterval = amtrelay.DefaultQueryInterval
	DefaultAMTMaxGateways   = amtrelay.DefaultMaxGateways
)

// The castd command's defaults for what Options leave off when empty: the
// embedded broker's and the AMT relay's addresses, and the state directory.
const (
	DefaultStateDir   = "/var/lib/castd"
	DefaultMQTTListen = ":1883"
	DefaultAMTListen  = amtrelay.DefaultListen
)

// Refusals are logged at most refusalLogRate lines a second after a burst
// of refusalLogBurst; the rest are counted (castd_requests_refused_total)
// and the next line says how many it left out.
const (
	refusalLogRate  = 20
	refusalLogBurst = 200
)

// Options configure castd. cmd/castd fills them from flags and environment.
// A zero field means its Default* constant (one meaning of zero in every
// package); where a feature can be turned off, a negative value or an
// empty address does it, as the field says.
type Options struct {
	Listen            string // HTTP listen address for API, router and node fetches (DefaultListen)
	StateDir          string // holds the CAST key, the registry and the mid-tier cache (required)
	Origin            string // base URL of the origin (traditional delivery and cache fills; required)
	CacheSize         int64  // mid-tier cache bound in bytes (DefaultCacheSize)
	TrustedProxies    []netip.Prefix
	SignWindow        time.Duration // accepted clock skew of signed requests (DefaultSignWindow)
	RequireDelegation bool          // refuse nodes without an owner wallet delegation

	// Control plane. MQTTListen runs the embedded broker there; MQTTBroker
	// (tcp:// or tls://) uses an external one instead; with neither, nodes
	// are routed to without health monitoring.
	MQTTListen    string
	MQTTBroker    string
	MQTTUser      string // external broker login, or an extra admin login on the embedded one
	MQTTPassword  string
	MQTTPublicURL string // broker URL told to nodes (default: castd's host with the broker port)
	MQTTTLSCert   string // embedded broker TLS certificate and key (PEM files)
	MQTTTLSKey    string
	// MQTTCoalesce is how long nodes' packets may wait so that the embedded
	// broker reads many at one wake-up (see package coalesce); zero means
	// DefaultMQTTCoalesce, negative reads each as it arrives (as the
	// broker's ReadCoalesce).
	MQTTCoalesce  time.Duration
	ProbeInterval time.Duration // how often RELAY nodes' health endpoints are probed (DefaultProbeInterval)
	AdminToken    string        // bearer token for the operator API: node list, node views, commands ("" = off)
	// RouteToken lets upstream CDNs ask GET /v1/route for clients other
	// than themselves ("" = only the admin token may).
	RouteToken string

	// Relay coverage: an Apache Traffic Control coverage-zone file that
	// assigns prefixes to relays, checked for changes every
	// CoverageZoneInterval (default DefaultCoverageZoneInterval).
	CoverageZone         string
	CoverageZoneInterval time.Duration

	// Relay health probes. ProbeConcurrency bounds the probes in flight
	// (DefaultProbeConcurrency). AllowPrivateNodes lets relays
	// register and be probed at loopback, private, link-local and other
	// non-public addresses: for labs and tests, never on the internet.
	ProbeConcurrency  int
	AllowPrivateNodes bool

	// AMT relay (RFC 7450). AMTListen "" turns it off.
	AMTListen          string
	AMTAdvertise       netip.Addr    // address in Relay Advertisements (default: the one discovery reached)
	AMTNativeInterface string        // receive native SSM here for joined channels
	AMTQueryInterval   time.Duration // query interval told to gateways (DefaultAMTQueryInterval)
	AMTGatewayAddr     bool          // G flag: tell gateways their address as seen
	AMTMaxGateways     int           // tunnels before the L flag is set (DefaultAMTMaxGateways)

	// Slow clients (see package connguard): a write that makes no progress
	// for WriteStall fails, a request body must arrive within BodyTimeout
	// (DefaultWriteStall, DefaultBodyTimeout).
	WriteStall  time.Duration
	BodyTimeout time.Duration
	// Registrations (see register.go and expiry.go). RegistrationRate is
	// new nodes a minute per source address once RegistrationBurst is
	// spent (zero: the defaults; a negative rate: no limit).
	// RegistrationTTL removes a registration that the control plane has
	// not seen online this long after it was made (zero:
	// DefaultRegistrationTTL; negative: never).
	RegistrationRate  float64
	RegistrationBurst int
	RegistrationTTL   time.Duration

	// On-chain anchoring (onchain.go). SolanaRPC is a JSON-RPC endpoint:
	// registrations that reference a Memo transaction are checked on it,
	// and the CAST key is recorded there at start. RequireOnchain refuses
	// registrations without one. OnchainPoll is how often a sent
	// transaction's status is asked for (zero: 1 s).
	SolanaRPC      string
	RequireOnchain bool
	OnchainPoll    time.Duration
	// The daily anchor of receipts (anchor.go): ReceiptAnchor "daily"
	// publishes each closed day's receipts root on SolanaRPC, "" or "off"
	// does not. ReceiptDay is the length of that day (zero: 24 h; shorter
	// in tests).
	ReceiptAnchor string
	ReceiptDay    time.Duration
	// Owners and capacity contracts (owners.go). OwnerSessionTTL is how
	// long an owner's wallet sign-in lasts (DefaultOwnerSessionTTL);
	// HistoryInterval is how often the monitor is sampled into the
	// availability history contracts are measured against
	// (DefaultHistoryInterval).
	OwnerSessionTTL time.Duration
	HistoryInterval time.Duration
	// Multicast object transport (multicast.go): answer a multicast-capable
	// beacon's miss of a popular object with an offer, and send the object
	// once on an SSM channel. Off unless Multicast is set.
	Multicast          bool
	MulticastThreshold int           // distinct beacons within MulticastWindow (DefaultMulticastThreshold; negative: only MulticastPaths)
	MulticastWindow    time.Duration // DefaultMulticastWindow
	MulticastPaths     []string      // patterns always sent by multicast (popularity.ParsePattern)
	MulticastRanges    string        // SSM ranges groups come from ("" means channels.DefaultRanges)
	MulticastRate      float64       // bytes a second per channel (DefaultMulticastRate; negative: no cap)
	MulticastRateTotal float64       // bytes a second over all channels (DefaultMulticastRateTotal; negative: no cap)
	MulticastIface     string        // send natively on this interface ("": only into the AMT relay)
	MulticastSources   []netip.Addr  // SSM source addresses when there is no MulticastIface (one per family)
	DTLSListen         string        // UDP address of the DTLS channel (DefaultDTLSListen)
	DTLSPublic         string        // host:port beacons reach it at ("" = DTLSListen, which must then name a host)
	RepairRate         float64       // bytes a second of early media and repairs per node (DefaultRepairRate; negative: no cap)

	Version string
	Logger  *slog.Logger
}

// ensureDefaults gives every zero field its default. New calls it once,
// before check.
func (o *Options) ensureDefaults() {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.SignWindow == 0 {
		o.SignWindow = DefaultSignWindow
	}
	if o.MQTTCoalesce == 0 {
		o.MQTTCoalesce = DefaultMQTTCoalesce
	}
	if o.ProbeInterval == 0 {
		o.ProbeInterval = DefaultProbeInterval
	}
	if o.ProbeConcurrency == 0 {
		o.ProbeConcurrency = DefaultProbeConcurrency
	}
	if o.CoverageZoneInterval == 0 {
		o.CoverageZoneInterval = DefaultCoverageZoneInterval
	}
	if o.AMTQueryInterval == 0 {
		o.AMTQueryInterval = DefaultAMTQueryInterval
	}
	if o.AMTMaxGateways == 0 {
		o.AMTMaxGateways = DefaultAMTMaxGateways
	}
	if o.WriteStall == 0 {
		o.WriteStall = DefaultWriteStall
	}
	if o.BodyTimeout == 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.RegistrationRate == 0 {
		o.RegistrationRate = DefaultRegistrationRate
	}
	if o.RegistrationBurst == 0 {
		o.RegistrationBurst = DefaultRegistrationBurst
	}
	if o.RegistrationTTL == 0 {
		o.RegistrationTTL = DefaultRegistrationTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.multicastDefaults()
}

// check validates the options after ensureDefaults. Its errors name the
// field; cmd/castd names the flag instead.
func (o *Options) check() error {
	if o.StateDir == "" {
		return fieldError("StateDir", errors.New("is required"))
	}
	if o.Origin == "" {
		return fieldError("Origin", errors.New("is required (the HTTP origin that content is pulled from)"))
	}
	if _, err := protocol.ParseBaseURL(o.Origin); err != nil {
		return fieldError("Origin", err)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{{"SignWindow", o.SignWindow}, {"ProbeInterval", o.ProbeInterval}, {"CoverageZoneInterval", o.CoverageZoneInterval},
		{"AMTQueryInterval", o.AMTQueryInterval}, {"WriteStall", o.WriteStall}, {"BodyTimeout", o.BodyTimeout}} {
		if d.v < 0 {
			return fieldError(d.field, errors.New("must not be negative"))
		}
	}
	if o.CacheSize < 0 {
		return fieldError("CacheSize", errors.New("must be positive"))
	}
	if o.ProbeConcurrency < 0 {
		return fieldError("ProbeConcurrency", errors.New("must be positive"))
	}
	if o.AMTMaxGateways < 0 {
		return fieldError("AMTMaxGateways", errors.New("must be positive"))
	}
	if err := o.checkOnchain(); err != nil {
		return err
	}
	if err := o.checkMulticast(); err != nil {
		return err
	}
	return o.checkRegistration()
}

// OptionError is a refused Options field. Field is the Go field's name, so
// that a program filling Options from its own flags can name the flag.
type OptionError struct {
	Field string
	Err   error
}

func (e *OptionError) Error() string {
	msg := e.Err.Error()
	if strings.HasPrefix(msg, "is ") || strings.HasPrefix(msg, "must ") {
		return "castd: Options." + e.Field + " " + msg
	}
	return "castd: Options." + e.Field + ": " + msg
}

func (e *OptionError) Unwrap() error { return e.Err }

func fieldError(field string, err error) error { return &OptionError{Field: field, Err: err} }

// Server is a running castd: state opened, handlers ready.
type Server struct {
	opts     Options
	log      *slog.Logger
	key      *identity.Keypair
	reg      *registry.Registry
	router   *router.Router
	store    *objstore.Store
	cache    *httpcache.Cache
	verifier *signedreq.Verifier
	ips      *clientip.Resolver
	origin   *url.URL
	metrics  *metrics.Registry
	refused  atomic.Int64 // requests answered 4xx
	// refusalLog bounds the lines fail writes; refusalsUnlogged counts
	// what it left out since the last line.
	refusalLog       *ratelimit.Bucket
	refusalsUnlogged atomic.Int64
	admin            adminGate
	relayNodes       relayNodeCoverage // operator-approved relay prefixes (relays.go)

	dashboard *web.Dashboard
	control   *control        // nil until started, and without a control plane
	amtRelay  *amtrelay.Relay // nil without --amt-listen

	regLimit    *ratelimit.PerAddr // new registrations per source address; nil: off
	regLimited  atomic.Uint64      // registrations answered 429
	regLimitLog summaryLog
	expiry      atomic.Pointer[expiry]

	onchain       *onchainState        // nil without --solana-rpc (onchain.go)
	receipts      *receipts.Book       // delivery receipts (receipts.go)
	receiptReplay *ctrlmsg.ReplayCache // their envelopes' nonces
	owners        owners               // owners' sign-in, capacity contracts, history (owners.go)
	mc            *multicast           // nil unless Options.Multicast (multicast.go)
	history       *byteHistory         // per-minute bytes by path (history.go)
}

// New opens castd's state under opts.StateDir (creating the CAST key on
// first start) and loads the registry into the router.
func New(opts Options) (*Server, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("castd: state dir: %w", err)
	}
	s := &Server{opts: opts, log: log, ips: clientip.New(opts.TrustedProxies), admin: newAdminGate(),
		refusalLog: ratelimit.NewBucket(refusalLogRate, refusalLogBurst, time.Now())}
	s.origin, _ = url.Parse(opts.Origin)
	s.regLimit = opts.registrationLimit()
	keyPath := filepath.Join(opts.StateDir, "cast-key.json")
	key, created, err := identity.LoadOrCreate(keyPath)
	if err != nil {
		return nil, fmt.Errorf("castd: CAST key: %w", err)
	}
	if created {
		log.Info("created CAST key", "path", keyPath, "id", key.ID())
	}
	s.key = key
	if err := s.openOnchain(); err != nil {
		return nil, err
	}
	s.reg, err = registry.Open(filepath.Join(opts.StateDir, "registry.db"), log)
	if err != nil {
		s.closeOnchain()
		return nil, fmt.Errorf("castd: %w", err)
	}
	s.router, err = router.New(router.Options{Origin: s.origin, Logger: log, NewIneligible: s.controlEnabled()})
	if err != nil {
		s.reg.Close()
		return nil, fmt.Errorf("castd: %w", err)
	}
	// Damaged records are skipped (and logged) by ForEach: one of them
	// must not keep every other node from being served.
	if err := s.reg.ForEach(func(n registry.Node) error { s.router.Upsert(n); return nil }); err != nil {
		s.reg.Close()
		return nil, fmt.Errorf("castd: loading registry: %w", err)
	}
	if err := s.initRelayNodes(); err != nil {
		s.reg.Close()
		return nil, err
	}
	s.store, err = objstore.Open(filepath.Join(opts.StateDir, "midcache.db"), objstore.Options{MaxBytes: opts.CacheSize, Logger: log})
	if err != nil {
		s.reg.Close()
		return nil, fmt.Errorf("castd: mid-tier cache: %w", err)
	}
	up, err := newOriginUpstream(opts.Origin)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("castd: %w", err)
	}
	s.cache, err = httpcache.New(httpcache.Options{
		Store:    s.store,
		Upstream: up,
		Logger:   log.With("cache", "mid-tier"),
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("castd: %w", err)
	}
	if err := s.openReceipts(); err != nil {
		s.Close()
		return nil, err
	}
	s.verifier = signedreq.NewVerifier(signedreq.Options{Window: opts.SignWindow})
	if s.mc, err = s.newMulticast(); err != nil {
		s.Close()
		return nil, err
	}
	s.history = newByteHistory(time.Now())
	s.metrics = s.newMetrics()
	s.dashboard = web.New(web.Options{List: s.nodeViews, CastID: key.ID(), Version: opts.Version, Logger: log})
	if err := s.initOwners(); err != nil {
		s.Close()
		return nil, err
	}
	if opts.AdminToken == "" {
		log.Warn("no --admin-token: the operator API is off, and the dashboard and GET /v1/nodes show only fleet totals; the node list needs --admin-token")
	} else if len(opts.AdminToken) < minAdminToken {
		log.Warn("--admin-token is short: anyone who guesses it sees every home's address; use 16 or more random characters", "length", len(opts.AdminToken))
	}
	b, r, p := s.router.Len()
	log.Info("castd state loaded", "id", key.ID(), "beacons", b, "relays", r, "prefixes", p, "origin", opts.Origin)
	if d := s.reg.Damaged(); d > 0 {
		log.Error("registry has damaged records: they are not routed to (castd_registry_damaged_records)", "count", d)
	}
	return s, nil
}

// ID is the CAST node's base58 public key.
func (s *Server) ID() string { return s.key.ID() }

// Close releases the state files.
func (s *Server) Close() error {
	var errs []error
	if s.mc != nil {
		errs = append(errs, s.mc.sender.Close())
	}
	if s.cache != nil {
		errs = append(errs, s.cache.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.reg != nil {
		errs = append(errs, s.reg.Close())
	}
	errs = append(errs, s.closeOnchain())
	if s.receipts != nil {
		errs = append(errs, s.receipts.Close())
	}
	errs = append(errs, s.closeOwners())
	return errors.Join(errs...)
}

// Run serves on opts.Listen until ctx ends, then shuts down cleanly.
func Run(ctx context.Context, opts Options) error {
	s, err := New(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("castd: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve answers HTTP on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           connguard.Body(s.Handler(), s.opts.BodyTimeout),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(ctx)
	// However Serve ends, the context is cancelled first and then the AMT
	// relay and the control plane are waited for: nothing they run may
	// outlive Serve and race Close.
	var amtRelayDone, multicastDone <-chan struct{}
	var bg sync.WaitGroup // castd's own loops (coverage-zone watcher)
	defer func() {
		cancel()
		bg.Wait()
		if multicastDone != nil {
			<-multicastDone // before the AMT relay its sessions inject into
		}
		if amtRelayDone != nil {
			<-amtRelayDone
		}
		if s.control != nil {
			s.control.wait()
		}
	}()
	if err := s.startControl(ctx); err != nil {
		return err
	}
	if err := s.startExpiry(ctx); err != nil {
		return err
	}
	var err error
	if amtRelayDone, err = s.startAMTRelay(ctx); err != nil {
		return err
	}
	if multicastDone, err = s.startMulticast(ctx); err != nil {
		return err
	}
	bg.Add(1)
	go func() {
		defer bg.Done()
		s.recordByteHistory(ctx)
	}()
	bg.Add(1)
	go func() {
		defer bg.Done()
		s.watchCoverageZone(ctx)
	}()
	s.startCastRecord(ctx, &bg)
	s.startAnchor(ctx, &bg)
	s.startContractAnchor(ctx, &bg)
	bg.Add(1)
	go func() {
		defer bg.Done()
		s.sampleHistory(ctx)
	}()
	s.log.Info("castd serving", "addr", ln.Addr().String(), "version", s.opts.Version)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(connguard.Listener(ln, s.opts.WriteStall, 0)) }()
	select {
	case err := <-errc:
		// The listener failed under us: drop the connections it
		// accepted too, then stop the rest (deferred above).
		srv.Close()
		s.log.Error("castd: HTTP serving failed; shutting down", "err", err)
		return fmt.Errorf("castd: serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("castd shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("shutdown: closing remaining connections", "err", err)
		srv.Close()
	}
	return nil
}

func (s *Server) newMetrics() *metrics.Registry {
	m := metrics.NewRegistry()
	m.RegisterProcess()
	s.cache.RegisterMetrics(m, "castd_midcache")
	m.Collect("castd_router_entries", "Routable entries in the request router.", metrics.Gauge, func() []metrics.Sample {
		b, r, p := s.router.Len()
		return []metrics.Sample{
			{Labels: []string{"kind", "beacon"}, Value: float64(b)},
			{Labels: []string{"kind", "relay"}, Value: float64(r)},
			{Labels: []string{"kind", "prefix"}, Value: float64(p)},
		}
	})
	m.Func("castd_registered_nodes", "Nodes in the registry.", metrics.Gauge, func() float64 { return float64(s.reg.Len()) })
	m.Func("castd_registry_damaged_records", "Registry records that cannot be decoded: skipped (not routed to), logged, left in the file.", metrics.Gauge, func() float64 { return float64(s.reg.Damaged()) })
	m.Collect("castd_nodes", "Registered nodes by control-plane state.", metrics.Gauge, func() []metrics.Sample {
		if s.control == nil {
			return nil
		}
		st := s.control.monitor.Stats()
		return []metrics.Sample{
			{Labels: []string{"state", "online"}, Value: float64(st.Online)},
			{Labels: []string{"state", "stale"}, Value: float64(st.Stale)},
			{Labels: []string{"state", "offline"}, Value: float64(st.Offline)},
		}
	})
	m.Func("castd_control_messages_accepted_total", "Signed control-plane messages accepted.", metrics.Counter, func() float64 {
		if s.control == nil {
			return 0
		}
		return float64(s.control.monitor.Stats().Accepted)
	})
	m.Collect("castd_control_messages_dropped_total", "Control-plane messages dropped, by reason.", metrics.Counter, func() []metrics.Sample {
		if s.control == nil {
			return nil
		}
		st := s.control.monitor.Stats()
		out := make([]metrics.Sample, 0, len(monitor.DropReasons))
		for _, r := range monitor.DropReasons {
			out = append(out, metrics.Sample{Labels: []string{"reason", r}, Value: float64(st.Dropped[r])})
		}
		return out
	})
	m.Collect("castd_mqtt_clients", "Clients connected to the embedded broker.", metrics.Gauge, func() []metrics.Sample {
		if s.control == nil || s.control.broker == nil {
			return nil
		}
		return []metrics.Sample{{Value: float64(s.control.broker.Stats().Connected)}}
	})
	m.Collect("castd_mqtt_read_rounds_total", "Wake-ups in which the embedded broker read nodes' packets (coalesced, --mqtt-coalesce).", metrics.Counter, func() []metrics.Sample {
		if s.control == nil || s.control.broker == nil {
			return nil
		}
		return []metrics.Sample{{Value: float64(s.control.broker.Stats().ReadRounds)}}
	})
	amtRelayStat := func(name, help string, kind metrics.Kind, get func(amtrelay.Stats) float64) {
		m.Collect("castd_amt_"+name, help, kind, func() []metrics.Sample {
			if s.amtRelay == nil {
				return nil
			}
			return []metrics.Sample{{Value: get(s.amtRelay.Stats())}}
		})
	}
	amtRelayStat("gateways", "AMT tunnels to gateways.", metrics.Gauge, func(st amtrelay.Stats) float64 { return float64(st.Gateways) })
	amtRelayStat("channels", "(S,G) channels with at least one gateway.", metrics.Gauge, func(st amtrelay.Stats) float64 { return float64(st.Channels) })
	amtRelayStat("packets_in_total", "Multicast datagrams to relay.", metrics.Counter, func(st amtrelay.Stats) float64 { return float64(st.PacketsIn) })
	amtRelayStat("packets_out_total", "Multicast Data messages sent to gateways.", metrics.Counter, func(st amtrelay.Stats) float64 { return float64(st.PacketsOut) })
	amtRelayStat("bytes_out_total", "Multicast Data payload bytes sent to gateways.", metrics.Counter, func(st amtrelay.Stats) float64 { return float64(st.BytesOut) })
	m.Collect("castd_amt_refused_total", "AMT messages the relay refused and copies it dropped, by reason (see amtrelay.RefusalReasons).", metrics.Counter, func() []metrics.Sample {
		if s.amtRelay == nil {
			return nil
		}
		rs := s.amtRelay.Stats().Drops.ByReason()
		out := make([]metrics.Sample, len(rs))
		for i, rf := range rs {
			out[i] = metrics.Sample{Labels: []string{"reason", rf.Reason}, Value: float64(rf.Count)}
		}
		return out
	})
	s.registerGuardMetrics(m)
	s.receiptMetrics(m)
	s.multicastMetrics(m)
	s.relayNodeMetrics(m)
	m.Func("castd_requests_refused_total", "API and router requests refused with a 4xx.", metrics.Counter, func() float64 { return float64(s.refused.Load()) })
	return m
}

// startAMTRelay runs the AMT relay until ctx ends; the channel closes when it
// has stopped.
func (s *Server) startAMTRelay(ctx context.Context) (<-chan struct{}, error) {
	done := make(chan struct{})
	if s.opts.AMTListen == "" {
		close(done)
		return done, nil
	}
	r, err := amtrelay.New(amtrelay.Options{
		Listen:          s.opts.AMTListen,
		Advertise:       s.opts.AMTAdvertise,
		NativeInterface: s.opts.AMTNativeInterface,
		QueryInterval:   s.opts.AMTQueryInterval,
		// RFC 7450's default is 10 s; it may not exceed a short query
		// interval (tests, lossy links).
		QueryResponseInterval: queryResponseInterval(s.opts.AMTQueryInterval),
		SendGatewayAddr:       s.opts.AMTGatewayAddr,
		MaxGateways:           s.opts.AMTMaxGateways,
		Logger:                s.log.With("component", "amt-relay"),
	})
	if err != nil {
		close(done)
		return done, fmt.Errorf("castd: AMT relay: %w", err)
	}
	s.amtRelay = r
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			s.log.Error("AMT relay stopped", "err", err)
		}
	}()
	s.log.Info("AMT relay listening", "addr", r.Addr().String(), "native_iface", s.opts.AMTNativeInterface)
	return done, nil
}

func queryResponseInterval(qi time.Duration) time.Duration {
	if qi > 0 && qi < 10*time.Second {
		return qi
	}
	return 10 * time.Second
}

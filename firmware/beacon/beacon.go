// Package beacon is the beacon daemon: it serves redirected end users from
// the personal cache, fills misses from castd with signed requests, and keeps
// its registration current. cmd/beacon parses flags into Options and calls Run.
package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/firmware/castclient"
	"github.com/blockcast/beacon/firmware/mcrecv"
	"github.com/blockcast/beacon/firmware/receipts"
	"github.com/blockcast/beacon/shared/cli"
	"github.com/blockcast/beacon/shared/connguard"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/httpcache"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/objstore"
	"github.com/blockcast/beacon/shared/protocol"
)

// Options configure a beacon. A zero field means its Default* constant;
// an empty AdminListen turns the local API off.
type Options struct {
	Listen         string        // where end users are served (DefaultListen)
	AdminListen    string        // local status endpoint ("" to disable)
	LANURL         string        // URL end users reach Listen at; derived when empty
	CastURL        string        // castd base URL
	KeyFile        string        // node wallet (Solana keypair file), created on first start
	DelegationFile string        // optional owner delegation (JSON protocol.Delegation)
	StateDir       string        // cache file lives here
	CacheSize      int64         // bound on cached bytes (DefaultCacheSize)
	CheckInterval  time.Duration // how often registration is checked (public IP, LAN URL; DefaultCheckInterval)
	MQTTURL        string        // control-plane broker; default: the one castd names at registration
	CastKey        string        // CAST key commands must be signed by; default: learned at first registration, then pinned
	HealthInterval time.Duration // health report interval (DefaultHealthInterval)

	// Slow and hostile clients (see package connguard).
	MaxConns    int           // open connections on Listen at once (DefaultMaxConns; the admin listener has its own few)
	WriteStall  time.Duration // a write to a client that accepts no byte for this long fails (DefaultWriteStall)
	BodyTimeout time.Duration // time a request body may take to arrive (DefaultBodyTimeout)

	// AMT gateway (RFC 7450).
	AMTRelay     string   // relay ADDR[:PORT] for channels whose join names none
	AMTDRIAD     bool     // find relays by DRIAD when AMTRelay is empty
	AMTAnycast   bool     // fall back to the relay discovery anycast address
	AMTJoins     []string // channels joined at start: "SOURCE@GROUP [relay=ADDR] [reemit]"
	LANInterface string   // re-emit channels joined with reemit as native multicast here
	AMTReemitTTL uint8    // TTL of re-emitted datagrams (0: received TTL - 1)
	Version      string
	Logger       *slog.Logger

	// The owner's status page, and the names the beacon answers to.
	StatusPage bool     // serve the read-only status page (GET / and /v1/status) on Listen
	AllowHosts []string // Host names the status page and the local API answer to besides IP literals, localhost and --lan-url's host

	// Objects castd sends by multicast (firmware/mcrecv).
	MulticastReceive string // auto (default), native, amt or off
	MulticastIface   string // WAN interface for native joins ("": the default route's)
	// On-chain anchoring (onchain.go). SolanaRPC is the JSON-RPC endpoint;
	// OnchainRegister records the registration there when it has no record
	// (the node key pays); RequireOnchain refuses a CAST key not recorded
	// on chain (CastSig names its transaction; default: castd says where).
	SolanaRPC       string
	OnchainRegister bool
	RequireOnchain  bool
	CastSig         string
	OnchainPoll     time.Duration // status polling of a sent transaction (default 1 s)
	// Delivery receipts (see package receipts): one signed receipt per
	// ReceiptInterval (DefaultReceiptInterval); unacknowledged ones are
	// sent again every ReceiptResend (DefaultReceiptResend).
	ReceiptInterval time.Duration
	ReceiptResend   time.Duration
}

// Defaults of Options: ensureDefaults gives them to zero fields, and the
// beacon command's flags start from them.
const (
	DefaultListen         = ":8081"
	DefaultCacheSize      = 256 << 20
	DefaultCheckInterval  = time.Minute
	DefaultHealthInterval = agent.DefaultInterval
	DefaultWriteStall     = connguard.DefaultWriteStall
	DefaultBodyTimeout    = connguard.DefaultBodyTimeout
	// DefaultMaxConns: a router has a few thousand file descriptors and
	// little RAM, and a home's devices need far fewer.
	DefaultMaxConns = 256

	DefaultReceiptInterval = receipts.DefaultInterval
	DefaultReceiptResend   = receipts.DefaultResendEvery
)

// The beacon command's defaults for what Options leave off when empty: the
// local API's address and the state directory.
const (
	DefaultAdminListen = "127.0.0.1:8082"
	DefaultStateDir    = "/var/lib/blockcast"
)

// ensureDefaults gives every zero field its default, and the key and
// delegation files their places in StateDir. New calls it once, before
// check.
func (o *Options) ensureDefaults() {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.CheckInterval == 0 {
		o.CheckInterval = DefaultCheckInterval
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.MaxConns == 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.WriteStall == 0 {
		o.WriteStall = DefaultWriteStall
	}
	if o.BodyTimeout == 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.KeyFile == "" && o.StateDir != "" {
		o.KeyFile = filepath.Join(o.StateDir, "wallet.json")
	}
	if o.DelegationFile == "" && o.StateDir != "" {
		if p := filepath.Join(o.StateDir, "delegation.json"); fileExists(p) {
			o.DelegationFile = p
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// check validates the options after ensureDefaults. Its errors name the
// field (an *OptionError); cmd/beacon names the flag instead.
func (o *Options) check() error {
	if o.CastURL == "" {
		return fieldError("CastURL", errors.New("is required (the castd this beacon belongs to)"))
	}
	if o.StateDir == "" {
		return fieldError("StateDir", errors.New("is required"))
	}
	for _, f := range []struct {
		name string
		neg  bool
	}{
		{"CacheSize", o.CacheSize < 0}, {"CheckInterval", o.CheckInterval < 0}, {"HealthInterval", o.HealthInterval < 0},
		{"MaxConns", o.MaxConns < 0}, {"WriteStall", o.WriteStall < 0}, {"BodyTimeout", o.BodyTimeout < 0},
		{"ReceiptInterval", o.ReceiptInterval < 0}, {"ReceiptResend", o.ReceiptResend < 0},
	} {
		if f.neg {
			return fieldError(f.name, errors.New("must not be negative"))
		}
	}
	if o.LANURL != "" {
		if _, err := protocol.ParseBaseURL(o.LANURL); err != nil {
			return fieldError("LANURL", fmt.Errorf("(e.g. http://192.168.1.1:8081): %w", err))
		}
	}
	if o.AMTRelay != "" {
		if _, err := ctrlmsg.ParseAMTRelayTarget(o.AMTRelay); err != nil {
			return fieldError("AMTRelay", err)
		}
	}
	for _, s := range o.AMTJoins {
		spec, err := ctrlmsg.ParseChannelSpec(s)
		if err != nil {
			return fieldError("AMTJoins", err)
		}
		if spec.Reemit && o.LANInterface == "" {
			return fieldError("AMTJoins", fmt.Errorf("%q: reemit needs LANInterface", s))
		}
	}
	if _, err := mcrecv.ParseMode(o.multicastMode()); err != nil {
		return fieldError("MulticastReceive", err)
	}
	if err := o.checkOnchain(); err != nil {
		return err
	}
	return checkAllowHosts(o.AllowHosts)
}

// OptionError is a refused Options field. Field is the Go field's name, so
// that a program filling Options from its own flags can name the flag.
type OptionError struct {
	Field string
	Err   error
}

func (e *OptionError) Error() string {
	msg := e.Err.Error()
	if strings.HasPrefix(msg, "is ") || strings.HasPrefix(msg, "must ") || strings.HasPrefix(msg, "(") || strings.HasPrefix(msg, "\"") {
		return "beacon: Options." + e.Field + " " + msg
	}
	return "beacon: Options." + e.Field + ": " + msg
}

func (e *OptionError) Unwrap() error { return e.Err }

func fieldError(field string, err error) error { return &OptionError{Field: field, Err: err} }

// adminMaxConns caps the local status and API listener.
const adminMaxConns = 16

// Beacon is a running beacon.
type Beacon struct {
	opts  Options
	log   *slog.Logger
	key   *identity.Keypair
	cast  *castclient.Client
	gw    *amtgw.Gateway
	store *objstore.Store
	cache *httpcache.Cache
	deleg *protocol.Delegation
	mc    *mcrecv.Receiver // nil: multicast reception off
	// castKey caches the configured or pinned CAST key (pinnedCastKey).
	castKey atomic.Pointer[identity.PublicKey]
	book    *receipts.Book // delivery receipts (receipts.go)

	started    time.Time
	reregister chan struct{}
	hosts      *hostGuard   // the Host names the status page and local API answer to
	problems   *problemRing // recent warnings and errors, for the status

	// Registrations: one at a time (regSem); forceRegister's rate limit.
	regSem  chan struct{}
	regLast time.Time     // regSem
	regWait time.Duration // regSem
	regErr  error         // regSem

	mu         sync.Mutex
	agent      *agent.Agent
	agentURL   string
	stopAgent  func()
	registered bool
	regAt      time.Time // last successful registration
	view       *CastdView
	reply      protocol.RegistrationReply
	lanURL     string
	lastErr    string
	addr       net.Addr     // the end users' listener, once serving
	public     net.Listener // the same, guarded (connguard)

	castVerified identity.PublicKey // the CAST key verified on chain (onchain.go)
}

// New loads (or creates) the node key and opens the cache.
func New(opts Options) (*Beacon, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("beacon: state dir: %w", err)
	}
	key, created, err := identity.LoadOrCreate(opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("beacon: node key: %w", err)
	}
	var deleg *protocol.Delegation
	if opts.DelegationFile != "" {
		if deleg, err = LoadDelegation(opts.DelegationFile); err != nil {
			return nil, err
		}
	}
	// Everything logged from here on is also kept for the status page,
	// with the wallet's secret and the delegation signature cut out.
	pl := newProblemLog(log.Handler(), secretStrings(key, deleg))
	log = slog.New(pl)
	opts.Logger = log
	if created {
		log.Info("created node wallet; back it up", "path", opts.KeyFile, "id", key.ID())
	} else if err := identity.CheckPermissions(opts.KeyFile); err != nil {
		log.Warn("node key file permissions", "err", err)
	}
	b := &Beacon{opts: opts, log: log, key: key, deleg: deleg, started: time.Now(), reregister: make(chan struct{}, 1),
		regSem: make(chan struct{}, 1), regWait: minReregister,
		hosts: newHostGuard(log, opts.allowHosts()), problems: pl.ring}
	if b.cast, err = castclient.New(opts.CastURL, key); err != nil {
		return nil, fmt.Errorf("beacon: %w", err)
	}
	b.cast.SetReregister(b.forceRegister)
	if b.gw, err = b.newGateway(); err != nil {
		if oe := (*OptionError)(nil); errors.As(err, &oe) {
			return nil, err
		}
		return nil, fmt.Errorf("beacon: AMT gateway: %w", err)
	}
	if b.mc, err = b.newMulticast(); err != nil {
		return nil, fmt.Errorf("beacon: multicast: %w", err)
	}
	b.store, err = objstore.Open(filepath.Join(opts.StateDir, "cache.db"), objstore.Options{MaxBytes: opts.CacheSize, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("beacon: cache: %w", err)
	}
	b.cache, err = httpcache.New(httpcache.Options{Store: b.store, Upstream: b.cast, Logger: log.With("cache", "personal")})
	if err != nil {
		b.store.Close()
		return nil, fmt.Errorf("beacon: %w", err)
	}
	if err := b.openReceipts(); err != nil {
		b.cache.Close()
		b.store.Close()
		return nil, err
	}
	return b, nil
}

// LoadDelegation reads an owner delegation file (JSON).
func LoadDelegation(path string) (*protocol.Delegation, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("beacon: delegation: %w", err)
	}
	var d protocol.Delegation
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("beacon: delegation file %s: %w", path, err)
	}
	return &d, nil
}

// ID is the node ID (base58 public key).
func (b *Beacon) ID() string { return b.key.ID() }

// Close flushes and closes the cache.
func (b *Beacon) Close() error {
	return errors.Join(b.cache.Close(), b.store.Close(), b.book.Close())
}

// Run serves until ctx ends.
func Run(ctx context.Context, opts Options) error {
	b, err := New(opts)
	if err != nil {
		return err
	}
	defer b.Close()
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("beacon: listen: %w", err)
	}
	var admin net.Listener
	if opts.AdminListen != "" {
		if admin, err = net.Listen("tcp", opts.AdminListen); err != nil {
			ln.Close()
			return fmt.Errorf("beacon: admin listen: %w", err)
		}
	}
	return b.Serve(ctx, ln, admin)
}

// Serve answers end users on ln (and local status on admin, if not nil),
// registers with castd and keeps the registration current, until ctx ends.
func (b *Beacon) Serve(ctx context.Context, ln, admin net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := b.checkCastKeyAtStart(ctx); err != nil {
		ln.Close()
		if admin != nil {
			admin.Close()
		}
		return err
	}
	b.log.Info("beacon serving", "id", b.key.ID(), "addr", ln.Addr().String(), "castd", b.opts.CastURL, "version", b.opts.Version)
	servers := []*http.Server{b.newServer(b.book.Wrap(b.publicHandler()))}
	// Each listener has its own cap, so that end users holding every
	// public slot cannot starve the local status and API.
	lns := []net.Listener{connguard.Listener(ln, b.opts.WriteStall, b.opts.MaxConns)}
	b.mu.Lock()
	b.public = lns[0]
	b.mu.Unlock()
	if admin != nil {
		servers = append(servers, b.newServer(b.adminHandler()))
		lns = append(lns, connguard.Listener(admin, b.opts.WriteStall, adminMaxConns))
		b.log.Info("local status endpoint", "addr", admin.Addr().String())
	}
	errc := make(chan error, len(servers)+1)
	for i, srv := range servers {
		go func(srv *http.Server, ln net.Listener) { errc <- srv.Serve(ln) }(srv, lns[i])
	}
	b.mu.Lock()
	b.addr = ln.Addr()
	b.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); b.book.Run(ctx) }()
	go func() { defer wg.Done(); b.registerLoop(ctx, ln.Addr()) }()
	go func() {
		defer wg.Done()
		if err := b.runGateway(ctx); err != nil {
			errc <- fmt.Errorf("AMT gateway: %w", err)
		}
	}()

	var err error
	select {
	case err = <-errc:
		err = fmt.Errorf("beacon: serve: %w", err)
	case <-ctx.Done():
	}
	b.log.Info("beacon shutting down")
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	for _, srv := range servers {
		if e := srv.Shutdown(sctx); e != nil {
			srv.Close()
		}
	}
	wg.Wait()
	b.mu.Lock()
	stop := b.stopAgent
	b.mu.Unlock()
	if stop != nil {
		stop() // publishes the offline status and disconnects
	}
	return err
}

func (b *Beacon) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           connguard.Body(h, b.opts.BodyTimeout),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
}

// Status is what the local status endpoint and the owner's status page
// report. It holds no secret: it is served to the LAN.
type Status struct {
	NodeID     string          `json:"node_id"`
	Version    string          `json:"version"`
	Registered bool            `json:"registered"`
	PublicIP   string          `json:"public_ip,omitempty"`
	Owner      string          `json:"owner,omitempty"`
	LANURL     string          `json:"lan_url,omitempty"`
	CastURL    string          `json:"cast_url"`
	LastError  string          `json:"last_error,omitempty"`
	Cache      httpcache.Stats `json:"cache"`
	Control    *ControlStatus  `json:"control,omitempty"`

	Started      time.Time      `json:"started"`
	UptimeS      int64          `json:"uptime_s"`
	RegisteredAt time.Time      `json:"registered_at,omitzero"` // last successful registration
	CastdView    *CastdView     `json:"castd_view,omitempty"`   // castd's answer to the last check
	CheckEvery   string         `json:"check_every"`            // how often castd is asked
	CacheMax     int64          `json:"cache_max_bytes"`        // --cache-size
	HitRatio     float64        `json:"hit_ratio"`              // hits / (hits + misses)
	AMT          AMTStatus      `json:"amt"`
	Problems     []Problem      `json:"problems,omitempty"` // recent warnings and errors, newest first
	Wallet       string         `json:"wallet"`             // the wallet file's path (never its contents)
	Receipts     receipts.Stats `json:"receipts"`           // delivery receipts: sealed, sent, waiting for castd
}

// ControlStatus is the MQTT agent's side of Status.
type ControlStatus struct {
	Broker string `json:"broker"`
	agent.AgentStatus
}

// Status reports the beacon's state.
func (b *Beacon) Status() Status {
	amt := b.amtStatus()
	rst := b.book.Stats()
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Status{
		NodeID: b.key.ID(), Version: b.opts.Version, Registered: b.registered,
		PublicIP: b.reply.PublicIP, Owner: b.reply.Owner, LANURL: b.lanURL, CastURL: b.opts.CastURL,
		LastError: b.lastErr, Cache: b.cache.Stats(), Control: b.controlStatus(),
		Started: b.started, UptimeS: int64(time.Since(b.started).Seconds()), RegisteredAt: b.regAt,
		CheckEvery: b.opts.CheckInterval.String(), CacheMax: b.opts.CacheSize, AMT: amt, Wallet: b.opts.KeyFile,
		Receipts: rst,
	}
	if b.view != nil {
		v := *b.view
		st.CastdView = &v
	}
	if n := st.Cache.Hits + st.Cache.Misses; n > 0 {
		st.HitRatio = float64(st.Cache.Hits) / float64(n)
	}
	if b.problems != nil {
		st.Problems = b.problems.recent()
	}
	return st
}

// controlStatus must be called with b.mu held.
func (b *Beacon) controlStatus() *ControlStatus {
	if b.agent == nil {
		return nil
	}
	return &ControlStatus{Broker: redactURL(b.agentURL), AgentStatus: b.agent.Status()}
}

// WriteText prints the status for people on the router's shell.
func (st Status) WriteText(w io.Writer) {
	yesno := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	ratio := 0.0
	if st.Cache.Hits+st.Cache.Misses > 0 {
		ratio = float64(st.Cache.Hits) / float64(st.Cache.Hits+st.Cache.Misses)
	}
	fmt.Fprintf(w, "node        %s (version %s, up %s)\n", st.NodeID, st.Version, time.Duration(st.UptimeS)*time.Second)
	fmt.Fprintf(w, "castd       %s\n", st.CastURL)
	fmt.Fprintf(w, "registered  %s", yesno(st.Registered))
	if st.Registered {
		fmt.Fprintf(w, " (public IP %s, LAN URL %s)", st.PublicIP, st.LANURL)
	}
	fmt.Fprintln(w)
	if v := st.CastdView; v != nil {
		fmt.Fprintf(w, "castd says  %s\n", v.describe())
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "last error  %s\n", st.LastError)
	}
	if c := st.Control; c != nil {
		state := "disconnected"
		if c.Connected {
			state = "connected since " + c.ConnectedSince.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "broker      %s (%s)\n", c.Broker, state)
		if !c.Connected && c.LastError != "" {
			fmt.Fprintf(w, "            last error: %s\n", c.LastError)
		}
		fmt.Fprintf(w, "reports     %d sent, %d queued, %d dropped; %d commands run, %d refused\n", c.HealthSent, c.Queued, c.Dropped, c.CommandsRun, c.CommandsRefused)
	} else {
		fmt.Fprintln(w, "broker      not connected (no control plane yet)")
	}
	c := st.Cache
	fmt.Fprintf(w, "cache       %d objects, %s\n", c.Objects, cli.FormatBytes(c.Bytes))
	if !c.StoreFullSince.IsZero() {
		fmt.Fprintf(w, "            STORAGE FULL since %s: misses pass through uncached, castd routes users elsewhere\n", c.StoreFullSince.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "hit ratio   %.1f%% (%d hits, %d misses)\n", 100*ratio, c.Hits, c.Misses)
	fmt.Fprintf(w, "served      %s to users, %s from upstream\n", cli.FormatBytes(c.BytesServed), cli.FormatBytes(c.UpstreamBytes))
	fmt.Fprintf(w, "AMT         %d tunnels, %d channels\n", len(st.AMT.Tunnels), len(st.AMT.Channels))
	fmt.Fprintf(w, "receipts    %d sealed (%d requests), %d waiting for castd\n", st.Receipts.Sealed, st.Receipts.Requests, st.Receipts.Pending)
	fmt.Fprintf(w, "wallet      %s (back it up)\n", st.Wallet)
}

func (b *Beacon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(protocol.PathHealthz, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	m := metrics.NewRegistry()
	m.RegisterProcess()
	b.cache.RegisterMetrics(m, "beacon_cache")
	if b.mc != nil {
		b.mc.RegisterMetrics(m, "beacon_multicast")
	}
	m.Func("beacon_registered", "1 while castd has this beacon's current registration.", metrics.Gauge, func() float64 {
		if b.Status().Registered {
			return 1
		}
		return 0
	})
	listenerStat := func(name, help string, kind metrics.Kind, get func(net.Listener) float64) {
		m.Func(name, help, kind, func() float64 {
			b.mu.Lock()
			ln := b.public
			b.mu.Unlock()
			if ln == nil {
				return 0
			}
			return get(ln)
		})
	}
	listenerStat("beacon_http_connections", "End users' connections open (at most --max-conns).", metrics.Gauge,
		func(ln net.Listener) float64 { return float64(connguard.InUse(ln)) })
	listenerStat("beacon_http_write_stalls_total", "Responses cut off because the client accepted no byte for --write-stall-timeout.", metrics.Counter,
		func(ln net.Listener) float64 { return float64(connguard.Stalls(ln)) })
	m.Func("beacon_receipts_pending", "Signed delivery receipts on disk that castd has not acknowledged.", metrics.Gauge, func() float64 {
		return float64(b.book.Stats().Pending)
	})
	mux.Handle(protocol.PathMetrics, m)
	mux.HandleFunc(protocol.PathAMT, b.handleAMT)
	mux.HandleFunc(protocol.PathAMT+"/", b.handleAMT)
	mux.HandleFunc(protocol.PathStatus, b.serveStatusJSON)
	return b.hosts.wrap(jsonOnly(b.log, mux))
}

// registerLoop registers at start (retrying with backoff) and again whenever
// the LAN URL or the public IP castd sees changes.
func (b *Beacon) registerLoop(ctx context.Context, addr net.Addr) {
	backoff := time.Second
	for {
		wait := b.opts.CheckInterval
		b.regSem <- struct{}{}
		err := b.checkRegistration(ctx, addr)
		<-b.regSem
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			b.mu.Lock()
			b.lastErr = err.Error()
			b.mu.Unlock()
			wait = retryWait(err, backoff)
			b.log.Warn("registration", "err", err, "retry_in", wait.Round(time.Millisecond))
			backoff = min(backoff*2, 2*time.Minute)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-b.reregister:
			b.mu.Lock()
			b.registered = false // forces a registration, not just a check
			b.mu.Unlock()
		}
	}
}

// retryWait is how long to wait after a failed registration: the backoff
// with jitter, or, when castd asked with Retry-After (it limits
// registrations per address: 429), at least that long plus up to a quarter
// more, so that beacons refused together do not return together.
func retryWait(err error, backoff time.Duration) time.Duration {
	wait := backoff + rand.N(backoff/2+1)
	if after, ok := castclient.RetryAfter(err); ok {
		wait = max(wait, after+rand.N(after/4+1))
	}
	return wait
}

func (b *Beacon) checkRegistration(ctx context.Context, addr net.Addr) error {
	lan, err := b.currentLANURL(addr)
	if err != nil {
		return err
	}
	b.mu.Lock()
	registered, lastIP, lastLAN := b.registered, b.reply.PublicIP, b.lanURL
	b.mu.Unlock()
	if registered && lan == lastLAN {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		who, err := b.cast.Check(cctx)
		cancel()
		if err != nil {
			return err
		}
		b.noteCastdView(who)
		switch {
		case who.Registered != nil && !*who.Registered:
			// castd's registry lost this node (restored from an old
			// backup, or started empty).
			b.log.Warn("castd does not know this node; registering again")
		case who.IP == lastIP:
			return nil
		default:
			b.log.Info("public IP changed; registering again", "old", lastIP, "new", who.IP)
		}
	} else if registered {
		b.log.Info("LAN URL changed; registering again", "old", lastLAN, "new", lan)
	}
	reg := Registration(b.opts.Version, b.deleg)
	reg.LANURL = lan
	if reg.OnchainSig, err = b.onchainSig(ctx, reg); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reply, err := b.cast.Register(cctx, reg)
	if err != nil {
		return err
	}
	if k, err := identity.ParsePublicKey(reply.CastKey); err == nil {
		if err := b.verifyCastKey(ctx, k); err != nil {
			return fmt.Errorf("--require-onchain: not trusting castd's CAST key %s: %w", k, err)
		}
	}
	castKey, err := b.checkCastKey(reply.CastKey)
	if err != nil {
		return err
	}
	b.castKey.Store(&castKey)
	b.mu.Lock()
	b.registered, b.reply, b.lanURL, b.lastErr = true, reply, lan, ""
	b.regAt = time.Now()
	b.mu.Unlock()
	b.ensureAgent(ctx, reply.MQTT, castKey)
	b.log.Info("registered with castd", "id", reply.NodeID, "public_ip", reply.PublicIP, "lan_url", lan, "cast_key", reply.CastKey)
	return nil
}

// currentLANURL is the configured LAN URL, or one made from the listen
// address (or, when that is a wildcard, the first private address found).
func (b *Beacon) currentLANURL(addr net.Addr) (string, error) {
	if b.opts.LANURL != "" {
		return b.opts.LANURL, nil
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return "", fmt.Errorf("listen address %s: %w", addr, err)
	}
	ip := ap.Addr().Unmap()
	if ip.IsUnspecified() {
		ip, err = lanAddr()
		if err != nil {
			return "", err
		}
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(int(ap.Port()))), nil
}

// lanAddr finds the first private IPv4 address on an up interface.
func lanAddr() (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsPrivate() {
				return p.Addr(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("no private LAN address found: set --lan-url")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

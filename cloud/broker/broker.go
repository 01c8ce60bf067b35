// Package broker is castd's embedded MQTT broker (mochi-mqtt v2, MQTT 3.1.1
// and 5) and the Bus interface through which castd's topology monitor
// publishes and subscribes, on the embedded broker or on an external one
// (Mosquitto, or a cluster) alike.
//
// The embedded broker authenticates every client by wallet: the username is
// the node ID and the password a fresh token signed by the node key
// (ctrlmsg.MakeToken), accepted once within a window. A node may publish
// only under blockcast/v1/node/<its id>/ (never to its cmd topic), may
// subscribe only to its own cmd topic, may leave a last-will only on its own
// status topic, and must use its node ID as MQTT client ID (so that it
// cannot take over another node's session). castd itself uses the broker's
// inline client, which bypasses all of this; an admin login (a fixed
// username/password, or a token signed by the CAST key) may do anything.
//
// The broker bounds what a flood can cost: connected clients, unfinished
// handshakes (in total and per source address, with a short deadline),
// each source address's rate of new connections, packet size, per-client
// queues and in-flight messages, and each node's publish rate.
package broker

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

// Bus is castd's view of the control plane, the same on the embedded broker
// and on an external one.
type Bus interface {
	// Subscribe calls fn for every message on topics matching filter,
	// retained ones included. retained is true for a message the broker
	// kept (it may be old); fn must not keep payload after it returns, and
	// may be called from several goroutines at once.
	Subscribe(filter string, fn func(topic string, payload []byte, retained bool)) error
	// Publish sends payload to topic (QoS 1).
	Publish(topic string, payload []byte, retain bool) error
	// Close ends the bus's subscriptions (and its connection, if any).
	Close() error
}

// Defaults for Options.
const (
	DefaultAddr             = "127.0.0.1:1883"
	DefaultTokenWindow      = 2 * time.Minute
	DefaultMaxClients       = 20000
	DefaultMaxHandshakes    = 1024
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultPublishRate      = 5   // messages per second per node, sustained
	DefaultPublishBurst     = 100 // enough for an agent flushing its queue
	// DefaultReadCoalesce lets nodes' packets gather for this long before
	// the broker reads them: at most ten wake-ups a second for a fleet
	// instead of one per report, at the cost of that much latency.
	DefaultReadCoalesce = 100 * time.Millisecond
	// DefaultMaxPacketSize fits the largest control payload plus the MQTT
	// header and a topic.
	DefaultMaxPacketSize = ctrlmsg.MaxPayload + 1024
)

// Per-address defaults for Options: enough for a fleet behind one
// carrier-grade NAT reconnecting together (a node's handshake holds a slot
// for about one round trip), far from the global bound.
const (
	DefaultMaxHandshakesPerAddr = 32
	DefaultConnectRate          = 20 // new connections per second per address, sustained
	DefaultConnectBurst         = 200
)

// housekeepingEvery is how often mochi expires sessions, in-flight and
// retained messages (see slowHousekeeping).
const housekeepingEvery = time.Minute

// Options configure a Broker.
type Options struct {
	// Addr is the TCP listen address (DefaultAddr if empty; ":0" picks a
	// port, see Broker.Addr).
	Addr string
	// TLSCertFile and TLSKeyFile, both set, make the listener TLS.
	TLSCertFile, TLSKeyFile string
	// Known, if set, must accept a node ID for the node to connect (the
	// node registry); unknown nodes are refused before any signature is
	// checked.
	Known func(id string) bool
	// AdminUser and AdminPassword, if set, are a login with full access
	// (castd components connecting over TCP, operators' tools). AdminUser
	// must not look like a node ID.
	AdminUser, AdminPassword string
	// AdminKey, if set (the CAST key), makes a token signed by it, with its
	// base58 form as username, a login with full access.
	AdminKey identity.PublicKey
	// TokenWindow is how far a token's time may be from the broker's clock
	// (DefaultTokenWindow).
	TokenWindow time.Duration
	// MaxClients bounds connected clients (DefaultMaxClients).
	MaxClients int
	// MaxHandshakes bounds connections that have not yet sent CONNECT;
	// more are closed at once (DefaultMaxHandshakes).
	MaxHandshakes int
	// HandshakeTimeout is how long a new connection has to send CONNECT
	// (DefaultHandshakeTimeout: a real client sends it at once).
	HandshakeTimeout time.Duration
	// MaxHandshakesPerAddr bounds the connections one source address
	// (IPv6: one /64) has in the handshake; more are closed at once
	// (DefaultMaxHandshakesPerAddr).
	MaxHandshakesPerAddr int
	// ConnectRate and ConnectBurst limit how fast one source address may
	// open connections (a token bucket); excess ones are closed at once.
	// Zero means the default; a negative ConnectRate disables the limit.
	ConnectRate  float64
	ConnectBurst int
	// MaxPacketSize bounds any MQTT packet (DefaultMaxPacketSize).
	MaxPacketSize uint32
	// ReadCoalesce is how long clients' packets may wait so that the
	// broker reads many at one wake-up (see package coalesce; Linux only).
	// Zero means DefaultReadCoalesce; negative reads each packet as it
	// arrives.
	ReadCoalesce time.Duration
	// PublishRate and PublishBurst limit each node's publishes (a token
	// bucket); excess is acknowledged and dropped. Zero means the default;
	// a negative PublishRate disables the limit.
	PublishRate  float64
	PublishBurst int
	// Logger receives the broker's logs (slog.Default if nil). mochi's
	// own logging goes to it too, under component=mqtt.
	Logger *slog.Logger
	// Now is the clock tokens are checked against (time.Now if nil).
	Now func() time.Time
}

// Broker is a running embedded broker.
type Broker struct {
	opts  Options
	log   *slog.Logger
	srv   *mqtt.Server
	ln    *listener
	hook  *authHook
	subID atomic.Int64

	startOnce sync.Once
	closeOnce sync.Once
	started   atomic.Bool
}

// Stats are the broker's counters.
type Stats struct {
	Connected   int64  // clients connected now (the inline client excluded)
	AuthOK      uint64 // logins accepted
	AuthRefused uint64 // logins refused
	ACLDenied   uint64 // publishes and subscriptions refused by the ACL
	RateLimited uint64 // publishes dropped by the per-node rate limit
	Shed        uint64 // connections closed in or before the handshake, every reason
	ReadRounds  uint64 // wake-ups that read clients' packets, when coalesced

	// ShedBy splits Shed by reason (every one of ShedReasons present).
	ShedBy map[string]uint64
}

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.TokenWindow == 0 {
		o.TokenWindow = DefaultTokenWindow
	}
	if o.MaxClients == 0 {
		o.MaxClients = DefaultMaxClients
	}
	if o.MaxHandshakes == 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxHandshakesPerAddr == 0 {
		o.MaxHandshakesPerAddr = DefaultMaxHandshakesPerAddr
	}
	if o.ConnectRate == 0 {
		o.ConnectRate = DefaultConnectRate
	}
	if o.ConnectBurst == 0 {
		o.ConnectBurst = DefaultConnectBurst
	}
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	if o.ReadCoalesce == 0 {
		o.ReadCoalesce = DefaultReadCoalesce
	}
	if o.PublishRate == 0 {
		o.PublishRate = DefaultPublishRate
	}
	if o.PublishBurst == 0 {
		o.PublishBurst = DefaultPublishBurst
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// check validates the options after ensureDefaults; its errors name the
// fields.
func (o *Options) check() error {
	for _, f := range []struct {
		name string
		neg  bool
	}{
		{"TokenWindow", o.TokenWindow < 0}, {"MaxClients", o.MaxClients < 0}, {"MaxHandshakes", o.MaxHandshakes < 0},
		{"HandshakeTimeout", o.HandshakeTimeout < 0}, {"MaxHandshakesPerAddr", o.MaxHandshakesPerAddr < 0},
		{"ConnectBurst", o.ConnectBurst < 0}, {"PublishBurst", o.PublishBurst < 0},
	} {
		if f.neg {
			return fmt.Errorf("broker: Options.%s must not be negative", f.name)
		}
	}
	if (o.AdminUser == "") != (o.AdminPassword == "") {
		return errors.New("broker: Options.AdminUser and AdminPassword go together")
	}
	if o.AdminUser != "" {
		if _, err := identity.ParsePublicKey(o.AdminUser); err == nil {
			return errors.New("broker: Options.AdminUser must not be a node ID")
		}
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return errors.New("broker: Options.TLSCertFile and TLSKeyFile go together")
	}
	return nil
}

// New checks opts and builds a broker; Start makes it listen.
func New(opts Options) (*Broker, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if opts.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCertFile, opts.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker: TLS key pair: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(opts.MaxClients)
	caps.MaximumPacketSize = opts.MaxPacketSize
	// A node has a handful of messages in flight at most; these bound what
	// a slow or hostile client can make the broker queue for it.
	caps.MaximumClientWritesPending = 256
	caps.ReceiveMaximum = 64
	caps.MaximumInflight = 256
	caps.TopicAliasMaximum = 16
	// Sessions are not kept long after a disconnect: nodes re-announce.
	caps.MaximumSessionExpiryInterval = 300
	caps.MaximumMessageExpiryInterval = 3600

	log := opts.Logger
	b := &Broker{opts: opts, log: log}
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		Logger:       log.With("component", "mqtt"),
		// $SYS topics are published to nobody who may read them; keep
		// their cost down.
		SysTopicResendInterval: 60,
	})
	if !slowHousekeeping(b.srv, housekeepingEvery) {
		log.Warn("mqtt: cannot slow mochi's housekeeping; idle CPU grows with clients")
	}
	b.hook = &authHook{b: b, replay: ctrlmsg.NewReplayCache(opts.TokenWindow, 1<<16)}
	if err := b.srv.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b.ln = &listener{
		id:      "tcp",
		addr:    opts.Addr,
		tlsConf: tlsConf,
		timeout: opts.HandshakeTimeout,
		gate:    newGate(&opts, log),
		log:     log,
		batch:   opts.ReadCoalesce,
	}
	return b, nil
}

// Start binds the listener and serves until ctx ends or Close is called.
func (b *Broker) Start(ctx context.Context) error {
	err := errors.New("broker: already started")
	b.startOnce.Do(func() {
		if err = b.srv.AddListener(b.ln); err != nil { // binds
			err = fmt.Errorf("broker: listen %s: %w", b.opts.Addr, err)
			return
		}
		if err = b.srv.Serve(); err != nil {
			err = fmt.Errorf("broker: serve: %w", err)
			return
		}
		b.started.Store(true)
		b.log.Info("mqtt broker listening", "addr", b.ln.Address(), "tls", b.ln.tlsConf != nil)
		go func() {
			<-ctx.Done()
			b.Close()
		}()
	})
	return err
}

// Addr returns the address the broker listens on (useful with ":0").
func (b *Broker) Addr() string { return b.ln.Address() }

// Close disconnects every client (whose last-wills are then sent) and stops
// listening.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		if b.started.Load() {
			_ = b.srv.Close()
		} else {
			b.ln.Close(func(string) {})
		}
	})
	return nil
}

// Disconnect closes every session the node holds (the operator removed
// it): its connection ends now, and since the node is no longer known its
// next CONNECT is refused. It returns how many sessions were closed.
func (b *Broker) Disconnect(nodeID string) int {
	n := 0
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || string(cl.Properties.Username) != nodeID {
			continue
		}
		_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		n++
	}
	return n
}

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	h := b.hook
	by, shed := b.ln.gate.stats()
	return Stats{
		Connected:   atomic.LoadInt64(&b.srv.Info.ClientsConnected),
		AuthOK:      h.authOK.Load(),
		AuthRefused: h.authRefused.Load(),
		ACLDenied:   h.aclDenied.Load(),
		RateLimited: h.rateLimited.Load(),
		Shed:        shed,
		ShedBy:      by,
		ReadRounds:  b.ln.rounds(),
	}
}

// Bus returns a Bus on the broker's inline client: no network, no
// authentication, no ACL. Its handlers run on the publishing client's
// goroutine, so ingest scales with connections.
func (b *Broker) Bus() Bus { return &embeddedBus{b: b} }

type embeddedBus struct {
	b      *Broker
	mu     sync.Mutex
	subs   []inlineSub
	closed bool
}

type inlineSub struct {
	filter string
	id     int
}

func (e *embeddedBus) Subscribe(filter string, fn func(topic string, payload []byte, retained bool)) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return net.ErrClosed
	}
	id := int(e.b.subID.Add(1) % math.MaxInt32)
	err := e.b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
	})
	if err != nil {
		return fmt.Errorf("broker: subscribe %q: %w", filter, err)
	}
	e.subs = append(e.subs, inlineSub{filter, id})
	return nil
}

func (e *embeddedBus) Publish(topic string, payload []byte, retain bool) error {
	if err := e.b.srv.Publish(topic, payload, retain, 1); err != nil {
		return fmt.Errorf("broker: publish %s: %w", topic, err)
	}
	return nil
}

func (e *embeddedBus) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	for _, s := range e.subs {
		_ = e.b.srv.Unsubscribe(s.filter, s.id)
	}
	e.subs = nil
	return nil
}

// checkAdmin compares in constant time, so that the password cannot be
// guessed byte by byte from response times.
func (b *Broker) checkAdmin(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(b.opts.AdminUser))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(b.opts.AdminPassword))
	return b.opts.AdminUser != "" && u&p == 1
}

// Package agent is the beacon's MQTT control-plane agent: it keeps a
// connection to castd's broker, announces the beacon (a retained signed
// "online" status, with a pre-signed "offline" last-will), sends a signed
// health report every interval, and runs commands that the CAST key signed,
// publishing their results.
//
// It never blocks the beacon: it runs on its own goroutines, reconnects by
// itself with exponential backoff and jitter while the broker is away, and
// keeps the reports it could not send in a bounded queue (oldest dropped
// first) that it flushes after reconnecting.
//
// Firmware budget: this package imports paho and the shared packages only.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

// Defaults for Options.
const (
	DefaultInterval   = 30 * time.Second
	DefaultQueueLimit = 64
	DefaultKeepAlive  = 30 * time.Second
	DefaultWindow     = 2 * time.Minute
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 2 * time.Minute
)

// Options configure an Agent.
type Options struct {
	// BrokerURL is castd's broker: tcp://host:port or tls://host:port.
	BrokerURL string
	// Key is the node key: the MQTT username is its ID, the password a
	// fresh token it signs, and it signs every message.
	Key *identity.Keypair
	// CastKey is the only key whose commands are run (see SetCastKey).
	CastKey identity.PublicKey
	// Interval between health reports (DefaultInterval). castd calls the
	// node stale after two missed reports.
	Interval time.Duration
	// Version is the beacon's version, announced in status and health.
	Version string
	// Health returns the numbers for a report; the agent fills in the
	// version if empty. Nil sends reports with only the version.
	Health func() ctrlmsg.Health
	// Handle runs a command whose op is known (purge, prefetch,
	// reregister); the agent itself refuses unknown ops. Nil refuses all.
	Handle func(context.Context, ctrlmsg.Command) ctrlmsg.Result
	// Logger (slog.Default if nil).
	Logger *slog.Logger
	// QueueLimit bounds the reports and results kept while the broker is
	// away (DefaultQueueLimit); past it the oldest are dropped.
	QueueLimit int
	// TLSConfig for tls:// (system roots if nil).
	TLSConfig *tls.Config
	// Dial opens the TCP connection (a net.Dialer if nil); for binding to
	// an interface, or for tests that cut the connection.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// KeepAlive is the MQTT keepalive (DefaultKeepAlive): the broker sends
	// the last-will about 1.5 keepalives after the beacon goes silent.
	KeepAlive time.Duration
	// Window is how far a command's timestamp may be from the beacon's
	// clock (DefaultWindow).
	Window time.Duration
	// MinBackoff and MaxBackoff bound the wait between connection attempts.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// OnRefused, if set, is called (from Run; it must not block) when the
	// broker refuses a connection as not authorised: castd's broker does
	// so for a node its registry does not know, which registering again
	// mends.
	OnRefused func(err error)
	// OnConnect, if set, is called (from Run; it must not block) after
	// each connection is up: the receipts loop sends what waits on disk.
	OnConnect func()
}

// AgentStatus is what `beacon status` shows.
type AgentStatus struct {
	Connected       bool
	ConnectedSince  time.Time // zero when not connected
	LastError       string
	LastErrorAt     time.Time
	Connects        uint64 // successful connections
	HealthSent      uint64
	Queued          int    // reports and results waiting for the broker
	Dropped         uint64 // dropped from a full queue
	CommandsRun     uint64
	CommandsRefused uint64 // unsigned, forged, stale, replayed, malformed or unknown
}

// Agent is the beacon's control-plane client.
type Agent struct {
	opts    Options
	log     *slog.Logger
	id      string
	topics  struct{ status, health, cmd, result string }
	castKey atomic.Pointer[identity.PublicKey]
	replay  *ctrlmsg.ReplayCache
	cmds    chan ctrlmsg.Command

	mu      sync.Mutex
	cur     paho.Client // nil while disconnected
	curLost chan error  // cur's connection-lost signal
	since   time.Time
	queue   []queued
	seq     uint64
	lastErr string
	lastAt  time.Time
	running bool

	connects, healthSent, dropped, cmdRun, cmdRefused atomic.Uint64
}

// queued is a report or result waiting for the broker. It is sealed when
// sent, so its signature is fresh; a health report says when it was taken.
type queued struct {
	health *ctrlmsg.Health
	result *ctrlmsg.Result
	at     time.Time
	seq    uint64 // identifies it in the queue
}

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.QueueLimit == 0 {
		o.QueueLimit = DefaultQueueLimit
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		o.Dial = d.DialContext
	}
}

// check validates the options after ensureDefaults; its errors name the
// fields.
func (o *Options) check() error {
	if o.Key == nil {
		return errors.New("agent: Options.Key is required (the node key)")
	}
	u, err := url.Parse(o.BrokerURL)
	if err != nil {
		return fmt.Errorf("agent: Options.BrokerURL: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "tls", "ssl", "mqtts":
	default:
		return fmt.Errorf("agent: Options.BrokerURL %q: scheme must be tcp:// or tls://", o.BrokerURL)
	}
	if u.Host == "" {
		return fmt.Errorf("agent: Options.BrokerURL %q has no host", o.BrokerURL)
	}
	if o.Interval > ctrlmsg.MaxInterval {
		return fmt.Errorf("agent: Options.Interval %s over %s", o.Interval, ctrlmsg.MaxInterval)
	}
	for _, f := range []struct {
		name string
		neg  bool
	}{
		{"Interval", o.Interval < 0}, {"QueueLimit", o.QueueLimit < 0}, {"KeepAlive", o.KeepAlive < 0},
		{"Window", o.Window < 0}, {"MinBackoff", o.MinBackoff < 0},
	} {
		if f.neg {
			return fmt.Errorf("agent: Options.%s must not be negative", f.name)
		}
	}
	if o.MaxBackoff < o.MinBackoff {
		return fmt.Errorf("agent: Options.MaxBackoff %s is under MinBackoff %s", o.MaxBackoff, o.MinBackoff)
	}
	return nil
}

// New checks opts and returns an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	a := &Agent{
		opts:   opts,
		id:     opts.Key.ID(),
		log:    opts.Logger.With("component", "mqtt-agent"),
		replay: ctrlmsg.NewReplayCache(opts.Window, 1024),
		cmds:   make(chan ctrlmsg.Command, 16),
	}
	a.topics.status = ctrlmsg.Topic(a.id, ctrlmsg.LeafStatus)
	a.topics.health = ctrlmsg.Topic(a.id, ctrlmsg.LeafHealth)
	a.topics.cmd = ctrlmsg.Topic(a.id, ctrlmsg.LeafCmd)
	a.topics.result = ctrlmsg.Topic(a.id, ctrlmsg.LeafResult)
	a.SetCastKey(opts.CastKey)
	return a, nil
}

// SetCastKey changes the key commands must be signed by (as learned at
// registration). A zero key refuses every command.
func (a *Agent) SetCastKey(k identity.PublicKey) { a.castKey.Store(&k) }

// Status returns the agent's state; it never blocks on the network.
func (a *Agent) Status() AgentStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return AgentStatus{
		Connected:       a.cur != nil,
		ConnectedSince:  a.since,
		LastError:       a.lastErr,
		LastErrorAt:     a.lastAt,
		Connects:        a.connects.Load(),
		HealthSent:      a.healthSent.Load(),
		Queued:          len(a.queue),
		Dropped:         a.dropped.Load(),
		CommandsRun:     a.cmdRun.Load(),
		CommandsRefused: a.cmdRefused.Load(),
	}
}

// Run connects and keeps the agent going until ctx ends; then it publishes
// an "offline" status and disconnects cleanly, and returns nil. An Agent
// runs once: a second call returns an error.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.running {
		a.mu.Unlock()
		return errors.New("agent: already running")
	}
	a.running = true
	a.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(2)
	go func() { defer wg.Done(); a.healthLoop(ctx) }()
	go func() { defer wg.Done(); a.commandLoop(ctx) }()

	failures := 0
	for {
		c, lost, err := a.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.setErr(err)
			if a.opts.OnRefused != nil && Refused(err) {
				a.opts.OnRefused(err)
			}
			wait := a.backoff(failures)
			failures++
			a.log.Warn("mqtt connect failed", "broker", a.opts.BrokerURL, "err", err, "retry_in", wait.Round(time.Millisecond))
			if !sleep(ctx, wait) {
				return nil
			}
			continue
		}
		up := a.opts.Now()
		a.serve(ctx, c, lost)
		if ctx.Err() != nil {
			return nil
		}
		// A connection that lasted counts as a success; one the broker
		// drops at once keeps backing off.
		if a.opts.Now().Sub(up) > a.opts.MaxBackoff {
			failures = 0
		}
		wait := a.backoff(failures)
		failures++
		a.log.Warn("mqtt connection lost", "retry_in", wait.Round(time.Millisecond))
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// Refused reports whether err is the broker refusing the node's
// credentials (CONNACK "not authorized" or "bad user name or password").
func Refused(err error) bool {
	return errors.Is(err, packets.ErrorRefusedNotAuthorised) || errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword)
}

// backoff returns the wait before attempt n+1: exponential from MinBackoff
// to MaxBackoff, with jitter over its upper half so that a fleet cut off
// together does not come back together.
func (a *Agent) backoff(n int) time.Duration {
	d := a.opts.MinBackoff
	for i := 0; i < n && d < a.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, a.opts.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (a *Agent) setErr(err error) {
	a.mu.Lock()
	a.lastErr = err.Error()
	a.lastAt = a.opts.Now()
	a.mu.Unlock()
}

func (a *Agent) status(state string, now time.Time) ([]byte, error) {
	return ctrlmsg.Seal(a.opts.Key, a.topics.status, ctrlmsg.KindStatus, ctrlmsg.Status{
		State: state, Version: a.opts.Version, Interval: a.opts.Interval.Seconds(),
	}, now)
}

// connect makes one connection: the will is the "offline" status signed now,
// and the "online" status published after connecting carries the same
// timestamp. castd accepts an offline status only if it is no older than the
// last online one, so this connection's will beats every earlier online
// status but an older connection's will (replayed, or sent late by the
// broker) cannot undo this connection's online.
func (a *Agent) connect(ctx context.Context) (paho.Client, chan error, error) {
	now := a.opts.Now()
	will, err := a.status(ctrlmsg.StateOffline, now)
	if err != nil {
		return nil, nil, err
	}
	online, err := a.status(ctrlmsg.StateOnline, now)
	if err != nil {
		return nil, nil, err
	}
	lost := make(chan error, 1)
	po := paho.NewClientOptions().
		AddBroker(a.opts.BrokerURL).
		SetClientID(a.id).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(a.opts.KeepAlive).
		SetPingTimeout(min(a.opts.KeepAlive, 10*time.Second)).
		SetConnectTimeout(10*time.Second).
		SetWriteTimeout(10*time.Second).
		SetBinaryWill(a.topics.status, will, 1, true).
		SetCredentialsProvider(func() (string, string) {
			tok, err := ctrlmsg.MakeToken(a.opts.Key, a.opts.Now())
			if err != nil {
				a.log.Error("mqtt token", "err", err)
			}
			return a.id, tok
		}).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			return a.dial(ctx, u)
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	c := paho.NewClient(po)
	if err := wait(ctx, c.Connect(), 15*time.Second); err != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	if err := wait(ctx, c.Subscribe(a.topics.cmd, 1, a.onCommand), 10*time.Second); err != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("subscribe %s: %w", a.topics.cmd, err)
	}
	if err := wait(ctx, c.Publish(a.topics.status, 1, true, online), 10*time.Second); err != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("publish online status: %w", err)
	}
	a.connects.Add(1)
	a.log.Info("mqtt connected", "broker", a.opts.BrokerURL, "node", a.id)
	return c, lost, nil
}

func (a *Agent) dial(ctx context.Context, u *url.URL) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := a.opts.Dial(dctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "tls", "ssl", "mqtts":
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.opts.TLSConfig != nil {
			conf = a.opts.TLSConfig.Clone()
		}
		if conf.ServerName == "" {
			conf.ServerName = u.Hostname()
		}
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return conn, nil
}

// wait waits for a paho token, ctx, or the timeout.
func wait(ctx context.Context, tok paho.Token, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("timed out")
	}
}

// serve runs one connection until it is lost or ctx ends.
func (a *Agent) serve(ctx context.Context, c paho.Client, lost chan error) {
	a.mu.Lock()
	a.cur, a.curLost = c, lost
	a.since = a.opts.Now()
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.cur, a.curLost = nil, nil
		a.since = time.Time{}
		a.mu.Unlock()
	}()

	a.flush(c, lost)
	if a.opts.OnConnect != nil {
		a.opts.OnConnect()
	}
	select {
	case err := <-lost:
		a.setErr(fmt.Errorf("connection lost: %w", err))
		c.Disconnect(0)
	case <-ctx.Done():
		// Say goodbye: a clean DISCONNECT discards the will, so the
		// offline status is published explicitly first.
		if p, err := a.status(ctrlmsg.StateOffline, a.opts.Now()); err == nil {
			if err := wait(context.Background(), c.Publish(a.topics.status, 1, true, p), 2*time.Second); err != nil {
				a.log.Warn("mqtt offline status", "err", err)
			}
		}
		c.Disconnect(250)
		a.log.Info("mqtt disconnected")
	}
}

// healthLoop sends a report every interval, the first after a random part of
// one (a fleet restarted together spreads out), whether or not the broker is
// there: what cannot be sent is queued.
func (a *Agent) healthLoop(ctx context.Context) {
	if !sleep(ctx, rand.N(a.opts.Interval)+1) {
		return
	}
	t := time.NewTicker(a.opts.Interval)
	defer t.Stop()
	for {
		a.sendHealth()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (a *Agent) sendHealth() {
	var h ctrlmsg.Health
	if a.opts.Health != nil {
		h = a.opts.Health()
	}
	if h.Version == "" {
		h.Version = a.opts.Version
	}
	a.send(queued{health: &h, at: a.opts.Now()})
}

// send publishes q now if connected, or queues it.
func (a *Agent) send(q queued) {
	a.mu.Lock()
	c, lost := a.cur, a.curLost
	a.mu.Unlock()
	if c != nil {
		err := a.publish(c, q, false)
		if err == nil {
			return
		}
		a.log.Debug("mqtt publish failed; queued", "err", err)
		signalClosed(err, lost)
	}
	a.enqueue(q)
}

func (a *Agent) enqueue(q queued) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	q.seq = a.seq
	if len(a.queue) >= a.opts.QueueLimit {
		copy(a.queue, a.queue[1:])
		a.queue = a.queue[:len(a.queue)-1]
		a.dropped.Add(1)
	}
	a.queue = append(a.queue, q)
}

// publish seals q now and sends it, waiting for the broker's
// acknowledgement so that a report lost with the connection is queued. A
// report from the queue says when it was taken.
func (a *Agent) publish(c paho.Client, q queued, fromQueue bool) error {
	now := a.opts.Now()
	var (
		payload []byte
		topic   string
		err     error
	)
	switch {
	case q.health != nil:
		h := *q.health
		if fromQueue {
			h.MeasuredAt = q.at.UnixMilli()
		}
		topic = a.topics.health
		payload, err = ctrlmsg.Seal(a.opts.Key, topic, ctrlmsg.KindHealth, h, now)
	case q.result != nil:
		topic = a.topics.result
		payload, err = ctrlmsg.Seal(a.opts.Key, topic, ctrlmsg.KindResult, *q.result, now)
	default:
		return nil
	}
	if err != nil {
		// Not the broker's fault: queuing would not help.
		a.log.Error("mqtt seal", "err", err)
		return nil
	}
	if err := wait(context.Background(), c.Publish(topic, 1, false, payload), min(a.opts.Interval, 10*time.Second)); err != nil {
		return err
	}
	if q.health != nil {
		a.healthSent.Add(1)
	}
	return nil
}

// ErrNotConnected is Publish's error while the broker is away.
var ErrNotConnected = errors.New("agent: not connected")

// Publish seals body as a message of kind on the node's receipt topic and
// sends it now, waiting for the broker's acknowledgement. Unlike health
// reports nothing is queued here: the caller keeps what must not be lost
// (on disk) and sends it again.
func (a *Agent) Publish(kind ctrlmsg.Kind, body any) error {
	a.mu.Lock()
	c, lost := a.cur, a.curLost
	a.mu.Unlock()
	if c == nil {
		return ErrNotConnected
	}
	topic := ctrlmsg.Topic(a.id, ctrlmsg.LeafReceipt)
	payload, err := ctrlmsg.Seal(a.opts.Key, topic, kind, body, a.opts.Now())
	if err != nil {
		return err
	}
	if err := wait(context.Background(), c.Publish(topic, 1, false, payload), 10*time.Second); err != nil {
		signalClosed(err, lost)
		return fmt.Errorf("agent: publish %s: %w", kind, err)
	}
	return nil
}

// signalClosed reports a publish that failed on a closed socket as a lost
// connection: paho takes a closed socket for its own doing and would notice
// only at the next keepalive.
func signalClosed(err error, lost chan error) {
	if errors.Is(err, net.ErrClosed) {
		select {
		case lost <- err:
		default:
		}
	}
}

// flush sends what was queued, oldest first, until the queue is empty or a
// publish fails.
func (a *Agent) flush(c paho.Client, lost chan error) {
	for {
		a.mu.Lock()
		if len(a.queue) == 0 {
			a.mu.Unlock()
			return
		}
		q := a.queue[0]
		a.mu.Unlock()
		if err := a.publish(c, q, true); err != nil {
			a.log.Debug("mqtt flush stopped", "err", err)
			signalClosed(err, lost)
			return
		}
		a.mu.Lock()
		// Unless a full queue dropped it meanwhile, q is still the head.
		if len(a.queue) > 0 && a.queue[0].seq == q.seq {
			a.queue = a.queue[1:]
		}
		a.mu.Unlock()
	}
}

// onCommand verifies a command as paho delivers it and hands it to the
// command loop; it never blocks paho.
func (a *Agent) onCommand(_ paho.Client, m paho.Message) {
	now := a.opts.Now()
	key := a.castKey.Load()
	msg, err := ctrlmsg.Open(m.Payload(), m.Topic(), key, a.opts.Window, now, a.replay)
	if err == nil && msg.NodeID != a.id {
		err = fmt.Errorf("%w: command for %s", ctrlmsg.ErrWrongSigner, msg.NodeID)
	}
	if err != nil {
		// Unsigned, forged, stale or replayed: no answer, which would only
		// help whoever sent it.
		a.cmdRefused.Add(1)
		a.log.Warn("mqtt command refused", "topic", m.Topic(), "err", err)
		return
	}
	cmd, err := msg.Command()
	if err != nil {
		a.cmdRefused.Add(1)
		a.log.Warn("mqtt command refused", "err", err)
		return
	}
	if !ctrlmsg.KnownOp(cmd.Op) || a.opts.Handle == nil {
		a.cmdRefused.Add(1)
		a.log.Warn("mqtt command refused: unknown op", "id", cmd.ID, "op", cmd.Op)
		go a.send(queued{result: &ctrlmsg.Result{ID: cmd.ID, Error: "unknown op " + cmd.Op}, at: now})
		return
	}
	select {
	case a.cmds <- cmd:
	default:
		a.cmdRefused.Add(1)
		a.log.Warn("mqtt command refused: busy", "id", cmd.ID, "op", cmd.Op)
		go a.send(queued{result: &ctrlmsg.Result{ID: cmd.ID, Error: "busy"}, at: now})
	}
}

// commandLoop runs commands one at a time and sends their results.
func (a *Agent) commandLoop(ctx context.Context) {
	for {
		select {
		case cmd := <-a.cmds:
			a.log.Info("mqtt command", "id", cmd.ID, "op", cmd.Op, "arg", cmd.Arg)
			r := a.opts.Handle(ctx, cmd)
			r.ID = cmd.ID
			a.cmdRun.Add(1)
			a.send(queued{result: &r, at: a.opts.Now()})
		case <-ctx.Done():
			return
		}
	}
}

// Package monitor is castd's topology monitor: it follows every node's
// control-plane messages on the MQTT bus (retained status, last-will, health
// reports, command results), verifies each one's signature, and keeps each
// node's state (online, stale, offline), version, load and last health for
// the request router, the dashboard and /metrics. It also sends nodes
// commands signed with the CAST key.
//
// # States
//
// A node is online after a fresh signed "online" status or health report. It
// is stale when two report intervals (the interval its status announced,
// DefaultInterval until it says) have passed without a report, and offline
// on a signed "offline" status (its last-will, sent by the broker when its
// connection dies, or its goodbye on a clean shutdown) or when three
// intervals plus Grace have passed. OnChange is called on every state change
// and whenever a report changes a node's load; the router makes only online
// nodes eligible and weighs them by load.
//
// # Last-wills and replays
//
// A will is signed when the connection is made, so by the time the broker
// sends it, it is usually older than the freshness window that every other
// message must meet. An "offline" status is therefore accepted at any age
// (not from the future) when its timestamp is no older than the node's
// latest accepted "online" status and newer than any "offline" already
// accepted. The agent gives each connection's will and online status the
// same timestamp, so: a connection's will beats its own online status; a
// will of an earlier connection (replayed by someone on a weak-ACL broker,
// or sent late by the broker after a session takeover) cannot undo a later
// online; and replaying the same will again changes nothing. What a replay
// can do is mark a node offline that the monitor knows nothing newer about
// (just after a castd restart); the node's next health report, which must be
// fresh, brings it back. Replays can never make a dead node look alive.
//
// # Restarts
//
// Node state is not persisted. On an embedded broker, a castd restart
// restarts the broker: every agent reconnects by itself and publishes a
// fresh online status. On an external broker, the monitor subscribes and
// receives each node's retained status. A retained "online" within the
// window makes the node online; an older one (the broker's word, unprovable)
// makes it stale, known but not routed, until its next health report (at
// most one interval away) proves it alive, or until the offline timeout. A
// retained "offline" is a will and follows the rule above.
package monitor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

// State is a node's liveness as the monitor sees it.
type State string

// Node states.
const (
	StateOnline  State = "online"
	StateStale   State = "stale"
	StateOffline State = "offline"
)

// Defaults for Options.
const (
	DefaultWindow          = 2 * time.Minute
	DefaultInterval        = 30 * time.Second
	DefaultGrace           = 5 * time.Second
	DefaultMaxNodes        = 100000
	DefaultMaxResults      = 16
	DefaultReplayCacheSize = 1 << 17
	DefaultSweepEvery      = time.Second
	maxPending             = 64 // unanswered commands remembered per node
)

// Errors Command returns.
var (
	ErrNoCastKey   = errors.New("monitor: no CAST key to sign commands")
	ErrUnknownNode = errors.New("monitor: unknown node")
)

// Options configure a Monitor.
type Options struct {
	// Bus carries the control plane (broker.Broker.Bus or
	// broker.DialExternal). The monitor does not close it.
	Bus broker.Bus
	// CastKey signs commands; without it Command fails.
	CastKey *identity.Keypair
	// Known, if set, must accept a node ID for its messages to count (the
	// node registry); others are dropped as unknown_node.
	Known func(id string) bool
	// OnChange is called on every state change and on load changes, in
	// order, never concurrently. It must not call Start.
	OnChange func(id string, state State, load float64)
	// OnResult is called with each accepted command result, like OnChange.
	OnResult func(id string, r Result)
	// Logger (slog.Default if nil).
	Logger *slog.Logger
	// Window is how far a message's timestamp may be from castd's clock
	// (DefaultWindow).
	Window time.Duration
	// DefaultInterval is a node's report interval until its status says
	// otherwise (DefaultInterval).
	DefaultInterval time.Duration
	// Grace is added to three intervals before a silent node is offline
	// (DefaultGrace).
	Grace time.Duration
	// MaxNodes bounds the nodes tracked (DefaultMaxNodes), for when Known
	// is nil.
	MaxNodes int
	// MaxResults bounds the results kept per node (DefaultMaxResults).
	MaxResults int
	// ReplayCacheSize bounds the replay cache (DefaultReplayCacheSize);
	// it should hold a window's worth of messages.
	ReplayCacheSize int
	// SweepEvery is how often timeouts are checked (DefaultSweepEvery);
	// negative: never by itself (tests call Sweep).
	SweepEvery time.Duration
	// Workers, if positive, is the number of goroutines that verify and
	// apply messages, each node always on the same one so that its
	// messages stay in order. By default messages are handled on the bus's
	// own goroutines, which measured cheaper at fleet scale (no hand-off
	// per message): the embedded broker's, one per connection, or paho's
	// single one for an external broker; either keeps a node's order.
	Workers int
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// NodeState is a snapshot of one node.
type NodeState struct {
	ID       string        `json:"id"`
	State    State         `json:"state"`
	Since    time.Time     `json:"since"`     // when State last changed (castd clock)
	LastSeen time.Time     `json:"last_seen"` // last accepted status or report (castd clock)
	OnlineAt time.Time     `json:"online_at"` // timestamp of the node's latest online status: its connection time (node clock)
	Version  string        `json:"version,omitempty"`
	Interval time.Duration `json:"interval"`
	Load     float64       `json:"load"`
	// Health is the latest report's numbers, nil before the first;
	// HealthAt is when they were taken (node clock).
	Health   *ctrlmsg.Health `json:"health,omitempty"`
	HealthAt time.Time       `json:"health_at,omitempty"`
}

// Result is a command's outcome as the node reported it.
type Result struct {
	ctrlmsg.Result
	Op     string    `json:"op"`
	Arg    string    `json:"arg,omitempty"`
	SentAt time.Time `json:"sent_at"`
	At     time.Time `json:"at"` // when castd received it
}

// Drop reasons, the keys of Stats.Dropped.
const (
	ReasonMalformed   = "malformed"
	ReasonTooLarge    = "too_large"
	ReasonBadTopic    = "bad_topic"
	ReasonBadSig      = "bad_sig"
	ReasonWrongSigner = "wrong_signer"
	ReasonStale       = "stale"
	ReasonReplay      = "replay"
	ReasonBadBody     = "bad_body"
	ReasonUnknownNode = "unknown_node"
	ReasonTooMany     = "too_many_nodes"
	ReasonSuperseded  = "superseded"  // validly signed but older than what is known
	ReasonUnsolicited = "unsolicited" // a result for no command we sent
)

// DropReasons lists every drop reason, for exporting zeros too.
var DropReasons = [...]string{
	ReasonMalformed, ReasonTooLarge, ReasonBadTopic, ReasonBadSig, ReasonWrongSigner, ReasonStale,
	ReasonReplay, ReasonBadBody, ReasonUnknownNode, ReasonTooMany, ReasonSuperseded, ReasonUnsolicited,
}

// Stats are the monitor's counters, for /metrics.
type Stats struct {
	Accepted               uint64
	Dropped                map[string]uint64 // by reason; every reason present
	Online, Stale, Offline int
}

// Monitor tracks node states. Its methods are safe for concurrent use.
type Monitor struct {
	opts   Options
	log    *slog.Logger
	replay *ctrlmsg.ReplayCache

	done   <-chan struct{}
	queues []chan job
	wg     sync.WaitGroup // the goroutines Start began

	mu      sync.Mutex
	nodes   map[string]*node
	pending map[string][]pendingCmd
	started bool
	stopped atomic.Bool

	// Callbacks are queued under mu and delivered, in order, by one
	// goroutine at a time (the one that found the queue idle), outside
	// mu: a callback may call the getters, which take mu.
	notifyQueue []notification
	notifying   bool

	accepted atomic.Uint64
	dropped  [len(DropReasons)]atomic.Uint64
}

type node struct {
	NodeState
	onlineTS  int64 // ms, node clock: latest accepted online status
	offlineTS int64 // ms, node clock: latest accepted offline status
	measured  int64 // ms, node clock: when the kept health was taken
	results   []Result
}

type pendingCmd struct {
	id, op, arg string
	sent        time.Time
}

type event struct {
	id    string
	state State
	load  float64
}

type job struct {
	topic    string
	payload  []byte
	retained bool
}

// workerQueue is each worker's backlog before publishers wait.
const workerQueue = 256

type resultEvent struct {
	id string
	r  Result
}

// ensureDefaults gives every zero field its default.
func (o *Options) ensureDefaults() {
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	if o.DefaultInterval == 0 {
		o.DefaultInterval = DefaultInterval
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.MaxNodes == 0 {
		o.MaxNodes = DefaultMaxNodes
	}
	if o.MaxResults == 0 {
		o.MaxResults = DefaultMaxResults
	}
	if o.ReplayCacheSize == 0 {
		o.ReplayCacheSize = DefaultReplayCacheSize
	}
	if o.SweepEvery == 0 {
		o.SweepEvery = DefaultSweepEvery
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
	if o.Bus == nil {
		return errors.New("monitor: Options.Bus is required")
	}
	for _, f := range []struct {
		name string
		neg  bool
	}{
		{"Window", o.Window < 0}, {"DefaultInterval", o.DefaultInterval < 0}, {"Grace", o.Grace < 0},
		{"MaxNodes", o.MaxNodes < 0}, {"MaxResults", o.MaxResults < 0}, {"ReplayCacheSize", o.ReplayCacheSize < 0},
	} {
		if f.neg {
			return fmt.Errorf("monitor: Options.%s must not be negative", f.name)
		}
	}
	return nil
}

// New checks opts and returns a monitor; Start subscribes it.
func New(opts Options) (*Monitor, error) {
	opts.ensureDefaults()
	if err := opts.check(); err != nil {
		return nil, err
	}
	return &Monitor{
		opts:    opts,
		log:     opts.Logger.With("component", "monitor"),
		replay:  ctrlmsg.NewReplayCache(opts.Window, opts.ReplayCacheSize),
		nodes:   make(map[string]*node),
		pending: make(map[string][]pendingCmd),
	}, nil
}

// Start subscribes to the nodes' status, health and result topics and checks
// timeouts until ctx ends. Retained statuses arrive during or soon after
// Start (see the package comment).
func (m *Monitor) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("monitor: already started")
	}
	m.started = true
	m.mu.Unlock()
	m.done = ctx.Done()
	handler := m.Handle
	if m.opts.Workers > 0 {
		handler = m.dispatch
	}
	m.queues = make([]chan job, max(m.opts.Workers, 0))
	for i := range m.queues {
		q := make(chan job, workerQueue)
		m.queues[i] = q
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for {
				select {
				case j := <-q:
					m.Handle(j.topic, j.payload, j.retained)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for _, leaf := range []ctrlmsg.Leaf{ctrlmsg.LeafStatus, ctrlmsg.LeafHealth, ctrlmsg.LeafResult} {
		if err := m.opts.Bus.Subscribe(ctrlmsg.Filter(leaf), handler); err != nil {
			m.stopped.Store(true)
			return fmt.Errorf("monitor: %w", err)
		}
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		var tick <-chan time.Time
		if m.opts.SweepEvery > 0 {
			t := time.NewTicker(m.opts.SweepEvery)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-tick:
				m.Sweep()
			case <-ctx.Done():
				m.stopped.Store(true)
				return
			}
		}
	}()
	return nil
}

// Wait returns when the goroutines Start began have ended, which they do
// once Start's ctx is done (at once if Start was never called).
func (m *Monitor) Wait() { m.wg.Wait() }

// dispatch hands a message from the bus to its node's worker. When the
// workers are busy it waits, which slows the publishers down: the broker
// reads no more from a connection whose message is waiting here.
func (m *Monitor) dispatch(topic string, payload []byte, retained bool) {
	if m.stopped.Load() {
		return
	}
	j := job{topic: topic, payload: append([]byte(nil), payload...), retained: retained}
	select {
	case m.queues[shard(topic)%uint32(len(m.queues))] <- j:
	case <-m.done:
	}
}

// shard hashes the node ID part of a topic (FNV-1a), so that one node's
// messages always go to one worker.
func shard(topic string) uint32 {
	id := strings.TrimPrefix(topic, ctrlmsg.TopicPrefix)
	if i := strings.IndexByte(id, '/'); i >= 0 {
		id = id[:i]
	}
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return h
}

// Handle processes one message synchronously. Start subscribes the
// monitor's workers, which call it; it is exported for feeding messages
// from elsewhere (and for tests).
func (m *Monitor) Handle(topic string, payload []byte, retained bool) {
	if m.stopped.Load() {
		return
	}
	now := m.opts.Now()
	id, leaf, err := ctrlmsg.ParseTopic(topic)
	if err != nil {
		m.drop(ReasonBadTopic, topic, err)
		return
	}
	// Registry first: an unknown node costs no signature check.
	if m.opts.Known != nil && !m.opts.Known(id) {
		m.drop(ReasonUnknownNode, topic, nil)
		return
	}
	window := m.opts.Window
	if leaf == ctrlmsg.LeafStatus {
		window = 0 // statuses follow their own rule; see onStatus
	}
	msg, err := ctrlmsg.Open(payload, topic, nil, window, now, m.replay)
	if err != nil {
		m.drop(reason(err), topic, err)
		return
	}
	switch leaf {
	case ctrlmsg.LeafStatus:
		st, err := msg.Status()
		if err != nil {
			m.drop(ReasonBadBody, topic, err)
			return
		}
		m.onStatus(&msg, st, retained, now)
	case ctrlmsg.LeafHealth:
		h, err := msg.Health()
		if err != nil {
			m.drop(ReasonBadBody, topic, err)
			return
		}
		m.onHealth(&msg, h, now)
	case ctrlmsg.LeafResult:
		r, err := msg.Result()
		if err != nil {
			m.drop(ReasonBadBody, topic, err)
			return
		}
		m.onResult(&msg, r, now)
	default:
		m.drop(ReasonBadTopic, topic, nil) // cmd or receipt: not ours to read
	}
}

func reason(err error) string {
	switch {
	case errors.Is(err, ctrlmsg.ErrTooLarge):
		return ReasonTooLarge
	case errors.Is(err, ctrlmsg.ErrBadTopic):
		return ReasonBadTopic
	case errors.Is(err, ctrlmsg.ErrBadSig):
		return ReasonBadSig
	case errors.Is(err, ctrlmsg.ErrWrongSigner):
		return ReasonWrongSigner
	case errors.Is(err, ctrlmsg.ErrStale):
		return ReasonStale
	case errors.Is(err, ctrlmsg.ErrReplay):
		return ReasonReplay
	case errors.Is(err, ctrlmsg.ErrBadBody):
		return ReasonBadBody
	}
	return ReasonMalformed
}

func (m *Monitor) drop(why, topic string, err error) {
	for i, r := range DropReasons {
		if r == why {
			m.dropped[i].Add(1)
			break
		}
	}
	// Debug only: a flood of junk must not become a flood of logs. The
	// counters show it.
	m.log.Debug("control message dropped", "reason", why, "topic", topic, "err", err)
}

// nodeLocked returns id's entry, creating it (offline) if there is room.
func (m *Monitor) nodeLocked(id string, now time.Time) *node {
	if n := m.nodes[id]; n != nil {
		return n
	}
	if len(m.nodes) >= m.opts.MaxNodes {
		return nil
	}
	n := &node{NodeState: NodeState{ID: id, State: StateOffline, Since: now, Interval: m.opts.DefaultInterval}}
	m.nodes[id] = n
	return n
}

// setState changes n's state, appending the event.
func (m *Monitor) setState(n *node, s State, now time.Time, evs []event) []event {
	if n.State == s {
		return evs
	}
	m.log.Info("node state", "node", n.ID, "from", n.State, "to", s)
	n.State, n.Since = s, now
	return append(evs, event{n.ID, s, n.Load})
}

func (m *Monitor) onStatus(msg *ctrlmsg.Msg, st ctrlmsg.Status, retained bool, now time.Time) {
	fresh := msg.Fresh(m.opts.Window, now)
	ts := msg.TS.UnixMilli()
	switch st.State {
	case ctrlmsg.StateOnline:
		if fresh {
			if err := m.replay.Check(msg.Signer, msg.Nonce, msg.TS, now); err != nil {
				m.drop(ReasonReplay, msg.Topic, err)
				return
			}
		} else if !retained || now.Before(msg.TS) {
			m.drop(ReasonStale, msg.Topic, nil)
			return
		}
	case ctrlmsg.StateOffline:
		if msg.TS.Sub(now) > m.opts.Window {
			m.drop(ReasonStale, msg.Topic, errors.New("offline status from the future"))
			return
		}
	}

	m.mu.Lock()
	n := m.nodeLocked(msg.NodeID, now)
	if n == nil {
		m.mu.Unlock()
		m.drop(ReasonTooMany, msg.Topic, nil)
		return
	}
	var evs []event
	switch st.State {
	case ctrlmsg.StateOnline:
		if ts <= n.offlineTS || ts < n.onlineTS {
			m.mu.Unlock()
			m.drop(ReasonSuperseded, msg.Topic, nil)
			return
		}
		n.onlineTS = ts
		n.OnlineAt = msg.TS
		if st.Version != "" {
			n.Version = st.Version
		}
		if iv := st.IntervalDuration(); iv > 0 {
			n.Interval = iv
		}
		if fresh {
			n.LastSeen = now
			evs = m.setState(n, StateOnline, now, evs)
		} else if n.State != StateOnline {
			// An old retained online: known, not yet proven alive.
			n.LastSeen = now
			evs = m.setState(n, StateStale, now, evs)
		}
	case ctrlmsg.StateOffline:
		if ts < n.onlineTS || ts <= n.offlineTS {
			m.mu.Unlock()
			m.drop(ReasonSuperseded, msg.Topic, nil)
			return
		}
		n.offlineTS = ts
		evs = m.setState(n, StateOffline, now, evs)
	}
	m.accepted.Add(1)
	m.unlockNotify(evs, nil)
}

func (m *Monitor) onHealth(msg *ctrlmsg.Msg, h ctrlmsg.Health, now time.Time) {
	ts := msg.TS.UnixMilli()
	m.mu.Lock()
	n := m.nodeLocked(msg.NodeID, now)
	if n == nil {
		m.mu.Unlock()
		m.drop(ReasonTooMany, msg.Topic, nil)
		return
	}
	if ts <= n.offlineTS {
		// Signed before the node's latest goodbye (or will).
		m.mu.Unlock()
		m.drop(ReasonSuperseded, msg.Topic, nil)
		return
	}
	var evs []event
	n.LastSeen = now
	measured := ts
	if h.MeasuredAt > 0 && h.MeasuredAt < ts {
		measured = h.MeasuredAt
	}
	// A queued report flushed after a reconnect proves the node alive but
	// does not replace newer numbers.
	loadChanged := false
	if measured >= n.measured {
		hc := h
		if h.AMT != nil {
			a := *h.AMT
			a.Channels = append([]string(nil), a.Channels...)
			hc.AMT = &a
		}
		full := n.Health != nil && n.Health.StorageFullSince != 0
		n.Health = &hc
		fullChanged := full != (h.StorageFullSince != 0)
		n.HealthAt = time.UnixMilli(measured)
		n.measured = measured
		if h.Version != "" {
			n.Version = h.Version
		}
		// A change in whether the node can store is a change the router
		// must hear of, like load.
		loadChanged = n.Load != h.Load || fullChanged
		n.Load = h.Load
	}
	before := len(evs)
	evs = m.setState(n, StateOnline, now, evs)
	if len(evs) == before && loadChanged {
		evs = append(evs, event{n.ID, n.State, n.Load})
	}
	m.accepted.Add(1)
	m.unlockNotify(evs, nil)
}

func (m *Monitor) onResult(msg *ctrlmsg.Msg, r ctrlmsg.Result, now time.Time) {
	m.mu.Lock()
	pend := m.pending[msg.NodeID]
	i := 0
	for i < len(pend) && pend[i].id != r.ID {
		i++
	}
	if i == len(pend) {
		m.mu.Unlock()
		m.drop(ReasonUnsolicited, msg.Topic, fmt.Errorf("result for command %q", r.ID))
		return
	}
	p := pend[i]
	m.pending[msg.NodeID] = append(pend[:i:i], pend[i+1:]...)
	if len(m.pending[msg.NodeID]) == 0 {
		delete(m.pending, msg.NodeID)
	}
	res := Result{Result: r, Op: p.op, Arg: p.arg, SentAt: p.sent, At: now}
	if n := m.nodeLocked(msg.NodeID, now); n != nil {
		n.results = append(n.results, res)
		if len(n.results) > m.opts.MaxResults {
			n.results = append(n.results[:0:0], n.results[len(n.results)-m.opts.MaxResults:]...)
		}
	}
	m.accepted.Add(1)
	m.log.Info("command result", "node", msg.NodeID, "id", r.ID, "op", p.op, "ok", r.OK, "err", r.Error)
	m.unlockNotify(nil, &resultEvent{msg.NodeID, res})
}

// notification is what one change has to tell the callbacks.
type notification struct {
	evs []event
	res *resultEvent
}

// unlockNotify releases mu and has the callbacks told what changed, in the
// order of the changes. Callbacks run outside mu, so that they may call
// the Monitor's getters; no lock is held across them that a change would
// wait for (holding one made a callback's Get and the next change's
// notification wait for each other for ever). If another goroutine is
// delivering already, it delivers these too, after what it has.
func (m *Monitor) unlockNotify(evs []event, res *resultEvent) {
	if (len(evs) == 0 || m.opts.OnChange == nil) && (res == nil || m.opts.OnResult == nil) {
		m.mu.Unlock()
		return
	}
	m.notifyQueue = append(m.notifyQueue, notification{evs, res})
	if m.notifying {
		m.mu.Unlock()
		return
	}
	m.notifying = true
	defer func() {
		if p := recover(); p != nil {
			// A callback panicked: let the next change deliver again.
			m.mu.Lock()
			m.notifying = false
			m.mu.Unlock()
			panic(p)
		}
	}()
	for len(m.notifyQueue) > 0 {
		q := m.notifyQueue
		m.notifyQueue = nil
		m.mu.Unlock()
		for _, n := range q {
			m.deliver(n)
		}
		m.mu.Lock()
	}
	m.notifying = false
	m.mu.Unlock()
}

func (m *Monitor) deliver(n notification) {
	if m.opts.OnChange != nil {
		for _, e := range n.evs {
			m.opts.OnChange(e.id, e.state, e.load)
		}
	}
	if n.res != nil && m.opts.OnResult != nil {
		m.opts.OnResult(n.res.id, n.res.r)
	}
}

// Sweep applies the timeouts at the clock's current time: stale after two
// intervals without a report, offline after three plus Grace. Start runs it
// every SweepEvery.
func (m *Monitor) Sweep() {
	now := m.opts.Now()
	m.mu.Lock()
	var evs []event
	for _, n := range m.nodes {
		if n.State == StateOffline {
			continue
		}
		silent := now.Sub(n.LastSeen)
		switch {
		case silent > 3*n.Interval+m.opts.Grace:
			evs = m.setState(n, StateOffline, now, evs)
		case silent > 2*n.Interval && n.State == StateOnline:
			evs = m.setState(n, StateStale, now, evs)
		}
	}
	m.unlockNotify(evs, nil)
}

// Get returns one node's state.
func (m *Monitor) Get(id string) (NodeState, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.nodes[id]
	if n == nil {
		return NodeState{}, false
	}
	return n.snapshot(), true
}

func (n *node) snapshot() NodeState {
	s := n.NodeState
	if s.Health != nil {
		h := *s.Health
		s.Health = &h // the AMT part is never modified in place
	}
	return s
}

// Nodes returns every tracked node, sorted by ID.
func (m *Monitor) Nodes() []NodeState {
	m.mu.Lock()
	out := make([]NodeState, 0, len(m.nodes))
	for _, n := range m.nodes {
		out = append(out, n.snapshot())
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Forget drops a node's state (when it leaves the registry).
func (m *Monitor) Forget(id string) {
	m.mu.Lock()
	delete(m.nodes, id)
	delete(m.pending, id)
	m.mu.Unlock()
}

// Results returns the latest results from a node, oldest first.
func (m *Monitor) Results(id string) []Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nodes[id]; n != nil {
		return append([]Result(nil), n.results...)
	}
	return nil
}

// Stats returns the counters and how many nodes are in each state.
func (m *Monitor) Stats() Stats {
	s := Stats{Accepted: m.accepted.Load(), Dropped: make(map[string]uint64, len(DropReasons))}
	for i, r := range DropReasons {
		s.Dropped[r] = m.dropped[i].Load()
	}
	m.mu.Lock()
	for _, n := range m.nodes {
		switch n.State {
		case StateOnline:
			s.Online++
		case StateStale:
			s.Stale++
		case StateOffline:
			s.Offline++
		}
	}
	m.mu.Unlock()
	return s
}

// Command sends node id a command signed with the CAST key and returns its
// ID; the node's answer shows up in Results (and OnResult).
func (m *Monitor) Command(id, op, arg string) (string, error) {
	if m.opts.CastKey == nil {
		return "", ErrNoCastKey
	}
	if _, err := identity.ParsePublicKey(id); err != nil {
		return "", fmt.Errorf("monitor: command: %w", err)
	}
	if m.opts.Known != nil && !m.opts.Known(id) {
		return "", fmt.Errorf("%w: %s", ErrUnknownNode, id)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("monitor: command id: %w", err)
	}
	cmd := ctrlmsg.Command{ID: hex.EncodeToString(b[:]), Op: op, Arg: arg}
	if op == "" {
		return "", fmt.Errorf("monitor: command: empty op")
	}
	if err := cmd.Validate(); err != nil {
		return "", fmt.Errorf("monitor: command: %w", err)
	}
	now := m.opts.Now()
	topic := ctrlmsg.Topic(id, ctrlmsg.LeafCmd)
	payload, err := ctrlmsg.Seal(m.opts.CastKey, topic, ctrlmsg.KindCmd, cmd, now)
	if err != nil {
		return "", fmt.Errorf("monitor: command: %w", err)
	}
	m.mu.Lock()
	pend := append(m.pending[id], pendingCmd{id: cmd.ID, op: op, arg: arg, sent: now})
	if len(pend) > maxPending {
		pend = pend[len(pend)-maxPending:]
	}
	m.pending[id] = pend
	m.mu.Unlock()
	if err := m.opts.Bus.Publish(topic, payload, false); err != nil {
		return "", fmt.Errorf("monitor: command: %w", err)
	}
	// The argument may be kilobytes an operator pasted; its head says which.
	logArg := arg
	if len(logArg) > 128 {
		logArg = strings.ToValidUTF8(logArg[:128], "") + "…"
	}
	m.log.Info("command sent", "node", id, "id", cmd.ID, "op", op, "arg", logArg, "arg_bytes", len(arg))
	return cmd.ID, nil
}

package monitor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newKey(t testing.TB) *identity.Keypair {
	t.Helper()
	kp, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// clock is a test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// changes records OnChange calls.
type changes struct {
	mu  sync.Mutex
	evs []string
}

func (c *changes) fn(id string, s State, load float64) {
	c.mu.Lock()
	c.evs = append(c.evs, fmt.Sprintf("%s %.2f", s, load))
	c.mu.Unlock()
}

// take returns and clears what was recorded.
func (c *changes) take() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.Join(c.evs, ", ")
	c.evs = nil
	return s
}

// nullBus is a Bus that goes nowhere, for state-machine tests that feed
// Handle directly.
type nullBus struct{ published [][]byte }

func (b *nullBus) Subscribe(string, func(string, []byte, bool)) error { return nil }
func (b *nullBus) Publish(_ string, p []byte, _ bool) error {
	b.published = append(b.published, p)
	return nil
}
func (b *nullBus) Close() error { return nil }

type fixture struct {
	t     *testing.T
	m     *Monitor
	clk   *clock
	ch    *changes
	node  *identity.Keypair
	bus   *nullBus
	known map[string]bool
}

const iv = 10 * time.Second // the nodes' interval in these tests

func newFixture(t *testing.T, mod func(*Options)) *fixture {
	f := &fixture{t: t, clk: &clock{now: time.Unix(1_700_000_000, 0)}, ch: &changes{}, node: newKey(t), bus: &nullBus{}}
	f.known = map[string]bool{f.node.ID(): true}
	opts := Options{
		Bus: f.bus, Known: func(id string) bool { return f.known[id] }, OnChange: f.ch.fn,
		Logger: testLogger(), Now: f.clk.Now, SweepEvery: -1, Grace: 2 * time.Second, Window: time.Minute,
	}
	if mod != nil {
		mod(&opts)
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

func (f *fixture) seal(kp *identity.Keypair, leaf ctrlmsg.Leaf, kind ctrlmsg.Kind, body any, at time.Time) []byte {
	f.t.Helper()
	p, err := ctrlmsg.Seal(kp, ctrlmsg.Topic(f.node.ID(), leaf), kind, body, at)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) status(state string, at time.Time) []byte {
	return f.seal(f.node, ctrlmsg.LeafStatus, ctrlmsg.KindStatus, ctrlmsg.Status{State: state, Version: "v1", Interval: iv.Seconds()}, at)
}

func (f *fixture) health(load float64, at time.Time) []byte {
	return f.seal(f.node, ctrlmsg.LeafHealth, ctrlmsg.KindHealth, ctrlmsg.Health{Load: load, CacheObjects: 3, Version: "v1"}, at)
}

func (f *fixture) feed(leaf ctrlmsg.Leaf, p []byte, retained bool) {
	f.m.Handle(ctrlmsg.Topic(f.node.ID(), leaf), p, retained)
}

func (f *fixture) state() State {
	f.t.Helper()
	n, ok := f.m.Get(f.node.ID())
	if !ok {
		return ""
	}
	return n.State
}

func (f *fixture) dropped(reason string) uint64 { return f.m.Stats().Dropped[reason] }

func TestLifecycle(t *testing.T) {
	f := newFixture(t, nil)
	now := f.clk.Now()
	f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, now), false)
	if got := f.ch.take(); got != "online 0.00" {
		t.Fatalf("changes %q", got)
	}
	n, _ := f.m.Get(f.node.ID())
	if n.Interval != iv || n.Version != "v1" || !n.OnlineAt.Equal(now) {
		t.Fatalf("node %+v", n)
	}

	f.clk.Add(iv)
	f.feed(ctrlmsg.LeafHealth, f.health(0.4, f.clk.Now()), false)
	if got := f.ch.take(); got != "online 0.40" {
		t.Fatalf("load change: %q", got)
	}
	f.clk.Add(iv)
	f.feed(ctrlmsg.LeafHealth, f.health(0.4, f.clk.Now()), false)
	if got := f.ch.take(); got != "" {
		t.Fatalf("same load: %q", got)
	}
	n, _ = f.m.Get(f.node.ID())
	if n.Health == nil || n.Health.CacheObjects != 3 || n.Load != 0.4 {
		t.Fatalf("health %+v", n)
	}

	// Two intervals of silence: still online; a moment more: stale.
	f.clk.Add(2 * iv)
	f.m.Sweep()
	if f.state() != StateOnline {
		t.Fatal("stale too early")
	}
	f.clk.Add(time.Millisecond)
	f.m.Sweep()
	if got := f.ch.take(); got != "stale 0.40" {
		t.Fatalf("changes %q", got)
	}
	// A report brings it back.
	f.feed(ctrlmsg.LeafHealth, f.health(0.5, f.clk.Now()), false)
	if got := f.ch.take(); got != "online 0.50" {
		t.Fatalf("changes %q", got)
	}
	// Three intervals plus grace: offline.
	f.clk.Add(3*iv + 2*time.Second)
	f.m.Sweep()
	if f.state() != StateStale {
		t.Fatal("offline too early")
	}
	f.clk.Add(time.Millisecond)
	f.m.Sweep()
	if got := f.ch.take(); got != "stale 0.50, offline 0.50" && got != "offline 0.50" {
		t.Fatalf("changes %q", got)
	}
	if f.state() != StateOffline {
		t.Fatal(f.state())
	}
	st := f.m.Stats()
	if st.Accepted != 4 || st.Offline != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWillRules: which "offline" statuses count (see the package comment).
func TestWillRules(t *testing.T) {
	t.Run("will of the current connection", func(t *testing.T) {
		f := newFixture(t, nil)
		conn := f.clk.Now()
		will := f.status(ctrlmsg.StateOffline, conn) // signed at connect
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, conn), false)
		f.clk.Add(time.Hour) // the will is sent much later: far outside the window
		f.feed(ctrlmsg.LeafHealth, f.health(0.1, f.clk.Now()), false)
		f.feed(ctrlmsg.LeafStatus, will, true)
		if f.state() != StateOffline {
			t.Fatal("will ignored")
		}
		// The same will again changes nothing.
		before := f.dropped(ReasonSuperseded)
		f.feed(ctrlmsg.LeafStatus, will, true)
		if f.dropped(ReasonSuperseded) != before+1 {
			t.Fatal("replayed will not counted as superseded")
		}
		// A report the node signed before its death does not revive it...
		f.feed(ctrlmsg.LeafHealth, f.health(0.1, conn), false)
		if f.state() != StateOffline {
			t.Fatal("old report revived the node")
		}
		// ...a fresh connection does.
		f.clk.Add(time.Second)
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now()), false)
		if f.state() != StateOnline {
			t.Fatal("new connection ignored")
		}
	})
	t.Run("old connection's will", func(t *testing.T) {
		f := newFixture(t, nil)
		oldWill := f.status(ctrlmsg.StateOffline, f.clk.Now())
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now()), false)
		f.clk.Add(time.Minute)
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now()), false) // reconnected
		f.feed(ctrlmsg.LeafStatus, oldWill, true)                                     // late or replayed
		if f.state() != StateOnline {
			t.Fatal("an earlier connection's will took the node offline")
		}
	})
	t.Run("online older than an offline", func(t *testing.T) {
		f := newFixture(t, nil)
		at := f.clk.Now()
		online := f.status(ctrlmsg.StateOnline, at)
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOffline, at), false)
		f.feed(ctrlmsg.LeafStatus, online, false) // delivered out of order
		if f.state() != StateOffline {
			t.Fatal("online of a dead connection accepted")
		}
	})
	t.Run("will after castd restart", func(t *testing.T) {
		f := newFixture(t, nil)
		will := f.status(ctrlmsg.StateOffline, f.clk.Now().Add(-24*time.Hour))
		f.feed(ctrlmsg.LeafStatus, will, true)
		if f.state() != StateOffline {
			t.Fatal("retained will ignored")
		}
		f.feed(ctrlmsg.LeafHealth, f.health(0.2, f.clk.Now()), false)
		if f.state() != StateOnline {
			t.Fatal("fresh report after a will did not revive the node")
		}
	})
	t.Run("offline from the future", func(t *testing.T) {
		f := newFixture(t, nil)
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOffline, f.clk.Now().Add(time.Hour)), false)
		if f.state() != "" || f.dropped(ReasonStale) != 1 {
			t.Fatalf("future will: state %q", f.state())
		}
	})
	t.Run("clean goodbye", func(t *testing.T) {
		f := newFixture(t, nil)
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now()), false)
		f.clk.Add(time.Second)
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOffline, f.clk.Now()), false)
		if f.state() != StateOffline {
			t.Fatal(f.state())
		}
	})
}

// TestRetainedAtStartup: how retained statuses seed state after a restart.
func TestRetainedAtStartup(t *testing.T) {
	f := newFixture(t, nil)
	old := f.status(ctrlmsg.StateOnline, f.clk.Now().Add(-time.Hour))
	f.feed(ctrlmsg.LeafStatus, old, true)
	if f.state() != StateStale {
		t.Fatalf("old retained online: %q, want stale", f.state())
	}
	if got := f.ch.take(); got != "stale 0.00" {
		t.Fatalf("changes %q", got)
	}
	n, _ := f.m.Get(f.node.ID())
	if n.Interval != iv || n.Version != "v1" {
		t.Fatalf("status not learned: %+v", n)
	}
	// Not retained and old: just stale.
	before := f.dropped(ReasonStale)
	f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now().Add(-time.Hour)), false)
	if f.dropped(ReasonStale) != before+1 {
		t.Fatal("old live online accepted")
	}
	// The next report proves it alive.
	f.clk.Add(iv / 2)
	f.feed(ctrlmsg.LeafHealth, f.health(0.3, f.clk.Now()), false)
	if f.state() != StateOnline {
		t.Fatal(f.state())
	}

	// A node whose retained online is never followed by a report goes
	// offline at the timeout.
	g := newFixture(t, nil)
	g.feed(ctrlmsg.LeafStatus, g.status(ctrlmsg.StateOnline, g.clk.Now().Add(-time.Hour)), true)
	g.clk.Add(3*iv + 3*time.Second)
	g.m.Sweep()
	if g.state() != StateOffline {
		t.Fatal(g.state())
	}
	// A fresh retained online (castd restarted within the window) is online.
	h := newFixture(t, nil)
	h.feed(ctrlmsg.LeafStatus, h.status(ctrlmsg.StateOnline, h.clk.Now().Add(-10*time.Second)), true)
	if h.state() != StateOnline {
		t.Fatal(h.state())
	}
}

func TestDrops(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxNodes = 2 })
	other := newKey(t)
	now := f.clk.Now()
	f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, now), false)
	f.feed(ctrlmsg.LeafHealth, f.health(0.1, now), false)
	f.ch.take()

	good := f.health(0.9, now)
	cases := []struct {
		name    string
		topic   string
		payload []byte
		reason  string
	}{
		{"forged by another key", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth),
			f.seal(other, ctrlmsg.LeafHealth, ctrlmsg.KindHealth, ctrlmsg.Health{Load: 0.9}, now), ReasonWrongSigner},
		{"tampered", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth), bytes.Replace(good, []byte(`"load":0.9`), []byte(`"load":0.8`), 1), ReasonBadSig},
		{"moved to another node", ctrlmsg.Topic(other.ID(), ctrlmsg.LeafHealth), good, ReasonUnknownNode},
		{"junk", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth), []byte("{{{"), ReasonMalformed},
		{"oversize", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth), make([]byte, ctrlmsg.MaxPayload+1), ReasonTooLarge},
		{"stale", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth), f.health(0.9, now.Add(-time.Hour)), ReasonStale},
		{"bad topic", "blockcast/v1/node/nope/health", good, ReasonBadTopic},
		{"bad body", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth),
			f.seal(f.node, ctrlmsg.LeafHealth, ctrlmsg.KindHealth, ctrlmsg.Health{Load: -1}, now), ReasonBadBody},
		{"health as status", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafStatus), good, ReasonMalformed},
		{"unsolicited result", ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafResult),
			f.seal(f.node, ctrlmsg.LeafResult, ctrlmsg.KindResult, ctrlmsg.Result{ID: "nope", OK: true}, now), ReasonUnsolicited},
	}
	for _, c := range cases {
		before := f.dropped(c.reason)
		f.m.Handle(c.topic, c.payload, false)
		if got := f.dropped(c.reason); got != before+1 {
			t.Errorf("%s: %s count %d → %d", c.name, c.reason, before, got)
		}
	}
	f.m.Handle(ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth), good, false)
	f.m.Handle(ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafHealth), good, false)
	if f.dropped(ReasonReplay) != 1 {
		t.Error("replay not dropped")
	}
	if n, _ := f.m.Get(f.node.ID()); n.Load != 0.9 {
		t.Errorf("load %v: only the genuine report may change it", n.Load)
	}
	if got := f.ch.take(); got != "online 0.90" {
		t.Errorf("changes %q", got)
	}

	// MaxNodes bounds the nodes tracked when anyone may report.
	g := newFixture(t, func(o *Options) { o.MaxNodes = 1; o.Known = nil })
	for i := 0; i < 3; i++ {
		kp := newKey(t)
		p, _ := ctrlmsg.Seal(kp, ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafHealth), ctrlmsg.KindHealth, ctrlmsg.Health{}, g.clk.Now())
		g.m.Handle(ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafHealth), p, false)
	}
	if n := len(g.m.Nodes()); n != 1 || g.dropped(ReasonTooMany) != 2 {
		t.Errorf("tracked %d nodes, dropped %d", n, g.dropped(ReasonTooMany))
	}
}

func TestQueuedReportKeepsNewerNumbers(t *testing.T) {
	f := newFixture(t, nil)
	now := f.clk.Now()
	f.feed(ctrlmsg.LeafHealth, f.health(0.7, now), false)
	// A report taken a minute ago, flushed now.
	old := f.seal(f.node, ctrlmsg.LeafHealth, ctrlmsg.KindHealth,
		ctrlmsg.Health{Load: 0.1, MeasuredAt: now.Add(-time.Minute).UnixMilli()}, now.Add(time.Second))
	f.clk.Add(time.Second)
	f.feed(ctrlmsg.LeafHealth, old, false)
	n, _ := f.m.Get(f.node.ID())
	if n.Load != 0.7 || !n.LastSeen.Equal(f.clk.Now()) {
		t.Fatalf("node %+v", n)
	}
}

func TestCommand(t *testing.T) {
	cast := newKey(t)
	var results []string
	f := newFixture(t, func(o *Options) {
		o.CastKey = cast
		o.OnResult = func(id string, r Result) { results = append(results, id+" "+r.ID+" "+r.Op) }
	})
	id, err := f.m.Command(f.node.ID(), ctrlmsg.OpPurge, "https://example.com/a")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.bus.published) != 1 {
		t.Fatal("not published")
	}
	castPub := cast.Public()
	msg, err := ctrlmsg.Open(f.bus.published[0], ctrlmsg.Topic(f.node.ID(), ctrlmsg.LeafCmd), &castPub, time.Minute, f.clk.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := msg.Command()
	if err != nil || cmd.ID != id || cmd.Op != ctrlmsg.OpPurge || cmd.Arg != "https://example.com/a" {
		t.Fatalf("command %+v %v", cmd, err)
	}
	f.feed(ctrlmsg.LeafResult, f.seal(f.node, ctrlmsg.LeafResult, ctrlmsg.KindResult, ctrlmsg.Result{ID: id, OK: true, Detail: "2"}, f.clk.Now()), false)
	rs := f.m.Results(f.node.ID())
	if len(rs) != 1 || !rs[0].OK || rs[0].Detail != "2" || rs[0].Op != ctrlmsg.OpPurge || rs[0].Arg != "https://example.com/a" {
		t.Fatalf("results %+v", rs)
	}
	if len(results) != 1 || results[0] != f.node.ID()+" "+id+" purge" {
		t.Fatalf("OnResult %q", results)
	}
	// The same answer twice is no longer solicited (and is a replay).
	f.feed(ctrlmsg.LeafResult, f.seal(f.node, ctrlmsg.LeafResult, ctrlmsg.KindResult, ctrlmsg.Result{ID: id, OK: true}, f.clk.Now()), false)
	if f.dropped(ReasonUnsolicited) != 1 {
		t.Fatal("second result accepted")
	}
	// Bounded results.
	for i := 0; i < 20; i++ {
		id, _ := f.m.Command(f.node.ID(), ctrlmsg.OpPrefetch, "x")
		f.feed(ctrlmsg.LeafResult, f.seal(f.node, ctrlmsg.LeafResult, ctrlmsg.KindResult, ctrlmsg.Result{ID: id, OK: true}, f.clk.Now()), false)
	}
	if n := len(f.m.Results(f.node.ID())); n != DefaultMaxResults {
		t.Fatalf("%d results kept", n)
	}

	if _, err := f.m.Command(newKey(t).ID(), ctrlmsg.OpPurge, "x"); err == nil {
		t.Fatal("command to an unknown node")
	}
	if _, err := f.m.Command("bogus", ctrlmsg.OpPurge, "x"); err == nil {
		t.Fatal("command to a bad ID")
	}
	if _, err := f.m.Command(f.node.ID(), "", "x"); err == nil {
		t.Fatal("empty op")
	}
	g := newFixture(t, nil)
	if _, err := g.m.Command(g.node.ID(), ctrlmsg.OpPurge, "x"); err != ErrNoCastKey {
		t.Fatalf("no CAST key: %v", err)
	}
}

// TestCallbacksMayReadMonitor: OnChange runs outside the lock.
func TestCallbacksMayReadMonitor(t *testing.T) {
	var m *Monitor
	var seen []State
	f := newFixture(t, func(o *Options) {
		o.OnChange = func(id string, s State, _ float64) {
			n, _ := m.Get(id)
			seen = append(seen, n.State)
		}
	})
	m = f.m
	f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now()), false)
	if len(seen) != 1 || seen[0] != StateOnline {
		t.Fatal(seen)
	}
}

// TestCallbackReadsWhileAnotherChangeWaits reproduces the deadlock that
// froze castd after a restart, when its beacons came back online at once:
// node A's OnChange reads the Monitor (Get, as castd's refresh does) while
// node B's change is being recorded on another worker. B's change must not
// wait for A's callback while holding the lock A's Get needs.
func TestCallbackReadsWhileAnotherChangeWaits(t *testing.T) {
	var m *Monitor
	entered, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f := newFixture(t, func(o *Options) {
		o.OnChange = func(id string, s State, _ float64) {
			once.Do(func() {
				close(entered)
				<-proceed
			})
			m.Get(id)
		}
	})
	m = f.m
	b := newKey(t)
	f.known[b.ID()] = true
	done := make(chan string, 2)
	go func() {
		f.feed(ctrlmsg.LeafStatus, f.status(ctrlmsg.StateOnline, f.clk.Now()), false)
		done <- "A"
	}()
	<-entered
	pb, err := ctrlmsg.Seal(b, ctrlmsg.Topic(b.ID(), ctrlmsg.LeafStatus), ctrlmsg.KindStatus,
		ctrlmsg.Status{State: ctrlmsg.StateOnline, Version: "v1", Interval: iv.Seconds()}, f.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		m.Handle(ctrlmsg.Topic(b.ID(), ctrlmsg.LeafStatus), pb, false)
		done <- "B"
	}()
	// Let B's change reach the callback queue (or, before the fix, block
	// on the callback lock with the Monitor's lock held).
	time.Sleep(100 * time.Millisecond)
	close(proceed)
	for i := 0; i < 2; i++ {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("deadlock: a callback reading the Monitor and a concurrent change wait for each other")
		}
	}
	for _, id := range []string{f.node.ID(), b.ID()} {
		if st, ok := m.Get(id); !ok || st.State != StateOnline {
			t.Errorf("%s: %+v, want online", id, st)
		}
	}
}

// TestStartOnEmbeddedBroker: Start subscribes through a real Bus and picks
// up retained statuses.
func TestStartOnEmbeddedBroker(t *testing.T) {
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	node := newKey(t)
	bus := b.Bus()
	defer bus.Close()
	p, _ := ctrlmsg.Seal(node, ctrlmsg.Topic(node.ID(), ctrlmsg.LeafStatus), ctrlmsg.KindStatus, ctrlmsg.Status{State: ctrlmsg.StateOnline}, time.Now())
	if err := bus.Publish(ctrlmsg.Topic(node.ID(), ctrlmsg.LeafStatus), p, true); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Bus: bus, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		if n, ok := m.Get(node.ID()); ok && n.State == StateOnline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retained status not seen at Start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := m.Start(ctx); err == nil {
		t.Fatal("second Start")
	}
	cancel()
	deadline = time.Now().Add(2 * time.Second)
	for !m.stopped.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !m.stopped.Load() {
		t.Fatal("monitor did not stop with its context")
	}
}

// TestWorkersKeepNodeOrder: with a worker pool, one node's messages are
// applied in the order the bus delivered them.
func TestWorkersKeepNodeOrder(t *testing.T) {
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bus := b.Bus()
	defer bus.Close()
	m, err := New(Options{Bus: bus, Logger: testLogger(), Workers: 3, SweepEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var nodes []*identity.Keypair
	for i := 0; i < 8; i++ {
		nodes = append(nodes, newKey(t))
	}
	// One timestamp for all: the report applied last is kept, so the end
	// state shows whether they were applied in order.
	now := time.Now()
	const reports = 50
	for i := 0; i < reports; i++ {
		for _, kp := range nodes {
			topic := ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafHealth)
			p, err := ctrlmsg.Seal(kp, topic, ctrlmsg.KindHealth, ctrlmsg.Health{UptimeS: uint64(i), Load: float64(i) / reports}, now)
			if err != nil {
				t.Fatal(err)
			}
			if err := bus.Publish(topic, p, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for m.Stats().Accepted < uint64(reports*len(nodes)) {
		if time.Now().After(deadline) {
			t.Fatalf("accepted %d; dropped %v", m.Stats().Accepted, m.Stats().Dropped)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, kp := range nodes {
		n, _ := m.Get(kp.ID())
		if n.Health == nil || n.Health.UptimeS != reports-1 {
			t.Fatalf("node %s ended with %+v, want the last report", kp.ID(), n.Health)
		}
	}
	if shard(ctrlmsg.Topic(nodes[0].ID(), ctrlmsg.LeafStatus)) != shard(ctrlmsg.Topic(nodes[0].ID(), ctrlmsg.LeafHealth)) {
		t.Fatal("one node's topics shard differently")
	}
}

// Callbacks that read the Monitor while other nodes' changes arrive on
// other goroutines: a lock held across the callbacks made a callback's Get
// and the next change's notification wait for each other for ever (castd
// stopped hearing nodes and could not shut down). Every change must still
// be delivered, in order per node.
func TestConcurrentChangesWithReadingCallbacks(t *testing.T) {
	var m *Monitor
	var mu sync.Mutex
	got := map[string][]State{}
	f := newFixture(t, func(o *Options) {
		o.Known = func(string) bool { return true }
		o.OnChange = func(id string, s State, _ float64) {
			n, _ := m.Get(id) // as castd's routable does
			time.Sleep(50 * time.Microsecond)
			mu.Lock()
			got[id] = append(got[id], n.State)
			mu.Unlock()
		}
	})
	m = f.m
	const nodes, rounds = 8, 50
	keys := make([]*identity.Keypair, nodes)
	for i := range keys {
		keys[i] = newKey(t)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, kp := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				topic := ctrlmsg.Topic(kp.ID(), ctrlmsg.LeafStatus)
				for r := 0; r < rounds; r++ {
					state := ctrlmsg.StateOnline
					if r%2 == 1 {
						state = ctrlmsg.StateOffline
					}
					p, err := ctrlmsg.Seal(kp, topic, ctrlmsg.KindStatus, ctrlmsg.Status{State: state, Version: "v1", Interval: iv.Seconds()}, f.clk.Now().Add(time.Duration(r)*time.Millisecond))
					if err != nil {
						t.Error(err)
						return
					}
					m.Handle(topic, p, false)
				}
			}()
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("changes and callbacks deadlocked")
	}
	// Deliveries may still be finishing on another goroutine.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, s := range got {
			total += len(s)
		}
		mu.Unlock()
		if total == nodes*rounds || time.Now().After(deadline) {
			if total != nodes*rounds {
				t.Fatalf("%d changes delivered, want %d", total, nodes*rounds)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

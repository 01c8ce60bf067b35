// Package controlplane_test runs castd's topology monitor and the beacon's
// MQTT agent together over real brokers: the embedded one and a Mosquitto
// process. It lives in test/ because it needs both firmware and cloud code.
package controlplane_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/blockcast/beacon/cloud/broker"
	"github.com/blockcast/beacon/cloud/broker/brokertest"
	"github.com/blockcast/beacon/cloud/monitor"
	"github.com/blockcast/beacon/firmware/agent"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
)

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func genKey(t testing.TB) *identity.Keypair {
	t.Helper()
	kp, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// registry is the set of known nodes.
type registry struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (r *registry) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	r.ids[id] = true
}

func (r *registry) known(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

// env is one broker under test.
type env struct {
	url string
	// bus returns a new Bus for a monitor (castd's side).
	bus func(t *testing.T) broker.Bus
	// restart stops the broker and starts it again on the same port. On
	// the embedded broker that is a castd restart: monitors on the old bus
	// see nothing more.
	restart func(t *testing.T)
	// inject publishes as someone who is not the node: past the broker's
	// checks (embedded: castd's inline client; Mosquitto: anonymous).
	inject func(t *testing.T, topic string, payload []byte)
	reg    *registry
	// castdRestarts: restarting the broker restarts castd (embedded).
	castdRestarts bool
}

func embeddedEnv(t *testing.T) *env {
	e := &env{reg: &registry{}, castdRestarts: true}
	var b *broker.Broker
	start := func(addr string) {
		var err error
		b, err = broker.New(broker.Options{Addr: addr, Known: e.reg.known, Logger: logger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	start("127.0.0.1:0")
	addr := b.Addr()
	t.Cleanup(func() { b.Close() })
	e.url = "tcp://" + addr
	e.bus = func(t *testing.T) broker.Bus {
		bus := b.Bus()
		t.Cleanup(func() { bus.Close() })
		return bus
	}
	e.restart = func(t *testing.T) {
		b.Close()
		start(addr)
	}
	e.inject = func(t *testing.T, topic string, payload []byte) {
		bus := b.Bus()
		defer bus.Close()
		if err := bus.Publish(topic, payload, false); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func mosquittoEnv(t *testing.T) *env {
	m := brokertest.StartMosquitto(t)
	e := &env{reg: &registry{}, url: m.URL()}
	e.bus = func(t *testing.T) broker.Bus {
		bus, err := broker.DialExternal(context.Background(), broker.ExternalOptions{URL: m.URL(), Logger: logger(), KeepAlive: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		return bus
	}
	e.restart = func(t *testing.T) { m.Stop(); m.Start() }
	e.inject = func(t *testing.T, topic string, payload []byte) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(m.URL()).SetClientID(fmt.Sprintf("intruder-%d", time.Now().UnixNano())))
		if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal("intruder connect:", tok.Error())
		}
		defer c.Disconnect(100)
		if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal("intruder publish:", tok.Error())
		}
	}
	return e
}

// recorder keeps OnChange calls.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) onChange(id string, s monitor.State, load float64) {
	r.mu.Lock()
	r.log = append(r.log, fmt.Sprintf("%s %.2f", s, load))
	r.mu.Unlock()
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, ", ")
}

func (r *recorder) has(s string) bool { return strings.Contains(r.String(), s) }

type world struct {
	t    *testing.T
	env  *env
	cast *identity.Keypair
	m    *monitor.Monitor
	rec  *recorder
}

// newMonitor starts a monitor on a fresh bus of the env.
func newMonitor(t *testing.T, e *env, cast *identity.Keypair, mod func(*monitor.Options)) (*monitor.Monitor, *recorder) {
	rec := &recorder{}
	opts := monitor.Options{
		Bus: e.bus(t), CastKey: cast, Known: e.reg.known, OnChange: rec.onChange, Logger: logger(),
		SweepEvery: 20 * time.Millisecond, Grace: 300 * time.Millisecond,
	}
	if mod != nil {
		mod(&opts)
	}
	m, err := monitor.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return m, rec
}

const interval = 200 * time.Millisecond

// startAgent runs an agent for a new registered node.
func startAgent(t *testing.T, e *env, cast *identity.Keypair, mod func(*agent.Options)) (*identity.Keypair, *agent.Agent, context.CancelFunc) {
	node := genKey(t)
	e.reg.add(node.ID())
	opts := agent.Options{
		BrokerURL: e.url, Key: node, CastKey: cast.Public(), Interval: interval, Version: "1.0-test",
		Health: func() ctrlmsg.Health {
			return ctrlmsg.Health{Load: 0.42, CacheObjects: 7, BytesServed: 1234, PublicIP: "203.0.113.9"}
		},
		Logger:     logger(),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}
	if mod != nil {
		mod(&opts)
	}
	a, err := agent.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop := func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("agent Run did not return")
		}
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(stop) })
	return node, a, func() { once.Do(stop) }
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stateIs(m *monitor.Monitor, id string, s monitor.State) func() bool {
	return func() bool { n, ok := m.Get(id); return ok && n.State == s }
}

func TestMonitorWithAgent(t *testing.T) {
	kinds := []struct {
		name string
		env  func(*testing.T) *env
	}{
		{"embedded", embeddedEnv},
		{"mosquitto", mosquittoEnv},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			e := k.env(t)
			cast := genKey(t)
			t.Run("online and reporting", func(t *testing.T) { testOnline(t, e, cast) })
			t.Run("commands", func(t *testing.T) { testCommands(t, e, cast) })
			t.Run("forgeries refused", func(t *testing.T) { testForgeries(t, e, cast) })
			t.Run("stale after two missed intervals", func(t *testing.T) { testStale(t, e, cast) })
			t.Run("connection killed: last-will", func(t *testing.T) { testKilled(t, e, cast) })
			t.Run("clean shutdown", func(t *testing.T) { testShutdown(t, e, cast) })
			t.Run("broker restart", func(t *testing.T) { testRestart(t, e, cast) })
		})
	}
}

func testOnline(t *testing.T, e *env, cast *identity.Keypair) {
	m, rec := newMonitor(t, e, cast, nil)
	node, _, _ := startAgent(t, e, cast, nil)
	eventually(t, 5*time.Second, "online with a report", func() bool {
		n, ok := m.Get(node.ID())
		return ok && n.State == monitor.StateOnline && n.Health != nil
	})
	n, _ := m.Get(node.ID())
	if n.Load != 0.42 || n.Health.CacheObjects != 7 || n.Health.BytesServed != 1234 || n.Health.PublicIP != "203.0.113.9" ||
		n.Version != "1.0-test" || n.Interval != interval {
		t.Fatalf("node %+v health %+v", n, n.Health)
	}
	if !rec.has("online 0.42") {
		t.Fatalf("OnChange: %s", rec)
	}
	if st := m.Stats(); st.Accepted < 2 || st.Online != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func testCommands(t *testing.T, e *env, cast *identity.Keypair) {
	results := make(chan monitor.Result, 8)
	m, _ := newMonitor(t, e, cast, func(o *monitor.Options) {
		o.OnResult = func(_ string, r monitor.Result) { results <- r }
	})
	var mu sync.Mutex
	var ran []string
	node, a, _ := startAgent(t, e, cast, func(o *agent.Options) {
		o.Handle = func(_ context.Context, c ctrlmsg.Command) ctrlmsg.Result {
			mu.Lock()
			ran = append(ran, c.Op+" "+c.Arg)
			mu.Unlock()
			return ctrlmsg.Result{OK: true, Detail: "purged 2 objects"}
		}
	})
	eventually(t, 5*time.Second, "online", stateIs(m, node.ID(), monitor.StateOnline))

	await := func(id string) monitor.Result {
		t.Helper()
		select {
		case r := <-results:
			if r.ID != id {
				t.Fatalf("result for %s, want %s", r.ID, id)
			}
			return r
		case <-time.After(5 * time.Second):
			t.Fatalf("no result for %s", id)
		}
		panic("unreachable")
	}
	id, err := m.Command(node.ID(), ctrlmsg.OpPurge, "https://example.com/v/")
	if err != nil {
		t.Fatal(err)
	}
	r := await(id)
	if !r.OK || r.Detail != "purged 2 objects" || r.Op != ctrlmsg.OpPurge {
		t.Fatalf("result %+v", r)
	}
	if rs := m.Results(node.ID()); len(rs) != 1 || rs[0].ID != id {
		t.Fatalf("Results %+v", rs)
	}
	// An op the beacon does not know: refused by the agent itself, and the
	// refusal comes back.
	id, err = m.Command(node.ID(), "reboot", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := await(id); r.OK || !strings.Contains(r.Error, "unknown op") {
		t.Fatalf("unknown op result %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != 1 || ran[0] != "purge https://example.com/v/" {
		t.Fatalf("handler ran %q", ran)
	}
	if st := a.Status(); st.CommandsRun != 1 || st.CommandsRefused != 1 {
		t.Fatalf("agent %+v", st)
	}
}

func testForgeries(t *testing.T, e *env, cast *identity.Keypair) {
	m, _ := newMonitor(t, e, cast, nil)
	var handled atomic.Int32
	victim, a, _ := startAgent(t, e, cast, func(o *agent.Options) {
		o.Handle = func(context.Context, ctrlmsg.Command) ctrlmsg.Result { handled.Add(1); return ctrlmsg.Result{OK: true} }
	})
	eventually(t, 5*time.Second, "victim reporting", func() bool {
		n, ok := m.Get(victim.ID())
		return ok && n.Health != nil
	})
	attacker := genKey(t)
	e.reg.add(attacker.ID()) // even a registered node may not speak for another

	// Health for the victim signed by the attacker: dropped and counted.
	topic := ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafHealth)
	forged, err := ctrlmsg.Seal(attacker, topic, ctrlmsg.KindHealth, ctrlmsg.Health{Load: 0.99}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := m.Stats().Dropped
	e.inject(t, topic, forged)
	// Tampered: a genuine-looking signer field, the attacker's signature.
	e.inject(t, topic, bytes.Replace(forged, []byte(attacker.ID()), []byte(victim.ID()), 1))
	eventually(t, 5*time.Second, "forgeries counted", func() bool {
		d := m.Stats().Dropped
		return d[monitor.ReasonWrongSigner] == before[monitor.ReasonWrongSigner]+1 && d[monitor.ReasonBadSig] == before[monitor.ReasonBadSig]+1
	})
	if n, _ := m.Get(victim.ID()); n.Load == 0.99 {
		t.Fatal("forged load accepted")
	}

	// Commands with a bad signature: refused by the agent, never run.
	cmdTopic := ctrlmsg.Topic(victim.ID(), ctrlmsg.LeafCmd)
	badCmd, _ := ctrlmsg.Seal(attacker, cmdTopic, ctrlmsg.KindCmd, ctrlmsg.Command{ID: "x1", Op: ctrlmsg.OpPurge, Arg: "/"}, time.Now())
	castCmd, _ := ctrlmsg.Seal(cast, cmdTopic, ctrlmsg.KindCmd, ctrlmsg.Command{ID: "x2", Op: ctrlmsg.OpPurge, Arg: "/a"}, time.Now())
	tampered := bytes.Replace(castCmd, []byte(`"/a"`), []byte(`"/*"`), 1)
	refusedBefore := a.Status().CommandsRefused
	e.inject(t, cmdTopic, badCmd)
	e.inject(t, cmdTopic, tampered)
	e.inject(t, cmdTopic, []byte(`{"id":"x3","op":"purge","arg":"/"}`))
	eventually(t, 5*time.Second, "commands refused", func() bool { return a.Status().CommandsRefused == refusedBefore+3 })
	if handled.Load() != 0 {
		t.Fatal("a forged command ran")
	}
}

func testStale(t *testing.T, e *env, cast *identity.Keypair) {
	m, rec := newMonitor(t, e, cast, nil)
	var hang atomic.Bool
	release := make(chan struct{})
	node, a, stop := startAgent(t, e, cast, func(o *agent.Options) {
		o.Health = func() ctrlmsg.Health {
			if hang.Load() {
				<-release // the beacon is stuck; the connection is fine
			}
			return ctrlmsg.Health{Load: 0.1}
		}
	})
	defer stop()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	eventually(t, 5*time.Second, "reporting", func() bool { n, _ := m.Get(node.ID()); return n.Health != nil })
	hang.Store(true)
	start := time.Now()
	eventually(t, 5*time.Second, "stale", stateIs(m, node.ID(), monitor.StateStale))
	staleAfter := time.Since(start)
	if staleAfter < interval {
		t.Fatalf("stale after %s: too early for two missed intervals of %s", staleAfter, interval)
	}
	if !a.Status().Connected {
		t.Fatal("agent disconnected: this test wants a silent but connected node")
	}
	eventually(t, 5*time.Second, "offline by timeout", stateIs(m, node.ID(), monitor.StateOffline))
	close(release)
	eventually(t, 5*time.Second, "back online", stateIs(m, node.ID(), monitor.StateOnline))
	if !rec.has("online 0.10, stale 0.10, offline 0.10, online 0.10") {
		t.Fatalf("OnChange: %s", rec)
	}
}

// cutter dials through a gate and can cut every connection it made.
type cutter struct {
	mu     sync.Mutex
	closed bool
	conns  []net.Conn
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("network down")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

// cut closes every connection (the broker sees the socket die, no
// DISCONNECT) and refuses new ones until open.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, conn := range c.conns {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, as a crashed peer
		}
		conn.Close()
	}
	c.conns = nil
}

func (c *cutter) open() {
	c.mu.Lock()
	c.closed = false
	c.mu.Unlock()
}

func testKilled(t *testing.T, e *env, cast *identity.Keypair) {
	offline := make(chan time.Time, 4)
	// A long grace: the timeout cannot be what marks the node offline.
	m, _ := newMonitor(t, e, cast, func(o *monitor.Options) {
		o.Grace = 10 * time.Second
		rec := o.OnChange
		o.OnChange = func(id string, s monitor.State, load float64) {
			rec(id, s, load)
			if s == monitor.StateOffline {
				offline <- time.Now()
			}
		}
	})
	cut := &cutter{}
	node, a, _ := startAgent(t, e, cast, func(o *agent.Options) { o.Dial = cut.dial })
	eventually(t, 5*time.Second, "online", stateIs(m, node.ID(), monitor.StateOnline))
	// The kill comes after the agent's set-up, not inside it: castd sees
	// the online status before the agent has its acknowledgement.
	eventually(t, 5*time.Second, "agent connected", func() bool { return a.Status().Connected })
	first, _ := m.Get(node.ID())

	killed := time.Now()
	cut.cut()
	select {
	case at := <-offline:
		t.Logf("death to offline (last-will): %s", at.Sub(killed).Round(time.Microsecond))
		if at.Sub(killed) > 3*time.Second {
			t.Fatalf("offline %s after the kill", at.Sub(killed))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("last-will did not mark the node offline")
	}
	// The network comes back: the agent reconnects by itself and
	// re-announces.
	cut.open()
	eventually(t, 5*time.Second, "online again", stateIs(m, node.ID(), monitor.StateOnline))
	n, _ := m.Get(node.ID())
	if !n.OnlineAt.After(first.OnlineAt) {
		t.Fatalf("no new announcement: %s vs %s", n.OnlineAt, first.OnlineAt)
	}
	// (The agent counts the connection once its online status is out, so
	// the monitor may see it first.)
	eventually(t, 5*time.Second, "agent reconnected", func() bool {
		st := a.Status()
		return st.Connects >= 2 && st.Connected
	})
}

func testShutdown(t *testing.T, e *env, cast *identity.Keypair) {
	m, _ := newMonitor(t, e, cast, func(o *monitor.Options) { o.Grace = 10 * time.Second })
	node, _, stop := startAgent(t, e, cast, nil)
	eventually(t, 5*time.Second, "online", stateIs(m, node.ID(), monitor.StateOnline))
	stop()
	eventually(t, 3*time.Second, "offline after goodbye", stateIs(m, node.ID(), monitor.StateOffline))
}

func testRestart(t *testing.T, e *env, cast *identity.Keypair) {
	m, _ := newMonitor(t, e, cast, func(o *monitor.Options) { o.Grace = 10 * time.Second })
	node, a, _ := startAgent(t, e, cast, nil)
	eventually(t, 5*time.Second, "online", stateIs(m, node.ID(), monitor.StateOnline))
	before, _ := m.Get(node.ID())

	e.restart(t)
	// A monitor started after the restart learns the node from its
	// (retained or fresh) online status. On the embedded broker this is the
	// castd restart itself.
	m2, _ := newMonitor(t, e, cast, func(o *monitor.Options) { o.Grace = 10 * time.Second })
	mons := []*monitor.Monitor{m2}
	if !e.castdRestarts {
		mons = append(mons, m) // its bus reconnects and re-subscribes by itself
	}
	for i, mon := range mons {
		eventually(t, 15*time.Second, fmt.Sprintf("re-announced to monitor %d", i), func() bool {
			n, ok := mon.Get(node.ID())
			return ok && n.State == monitor.StateOnline && n.OnlineAt.After(before.OnlineAt)
		})
	}
	eventually(t, 5*time.Second, "agent reconnected, queue flushed", func() bool {
		st := a.Status()
		return st.Connected && st.Connects >= 2 && st.Queued == 0
	})
	eventually(t, 5*time.Second, "reports reach the new monitor", func() bool {
		n, _ := m2.Get(node.ID())
		return n.Health != nil
	})
}

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

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

func TestNewRefuses(t *testing.T) {
	kp := newKey(t)
	for _, o := range []Options{
		{BrokerURL: "tcp://127.0.0.1:1"},
		{Key: kp, BrokerURL: "http://127.0.0.1:1"},
		{Key: kp, BrokerURL: "tcp://"},
		{Key: kp, BrokerURL: "::"},
		{Key: kp, BrokerURL: "tcp://127.0.0.1:1", Interval: 48 * time.Hour},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestBackoff(t *testing.T) {
	a, err := New(Options{Key: newKey(t), BrokerURL: "tcp://127.0.0.1:1", MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		n      int
		lo, hi time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{4, 500 * time.Millisecond, time.Second},
		{60, 500 * time.Millisecond, time.Second}, // no overflow
	}
	for _, c := range cases {
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			d := a.backoff(c.n)
			if d < c.lo || d > c.hi {
				t.Fatalf("backoff(%d) = %s, want %s..%s", c.n, d, c.lo, c.hi)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("backoff(%d) has no jitter: %d distinct values", c.n, len(seen))
		}
	}
}

func TestQueueDropsOldest(t *testing.T) {
	var up atomic.Uint64
	a, err := New(Options{Key: newKey(t), BrokerURL: "tcp://127.0.0.1:1", QueueLimit: 3, Logger: testLogger(),
		Health: func() ctrlmsg.Health { return ctrlmsg.Health{UptimeS: up.Add(1)} }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		a.sendHealth() // not connected: queued
	}
	st := a.Status()
	if st.Connected || st.Queued != 3 || st.Dropped != 2 {
		t.Fatalf("status %+v", st)
	}
	var got []uint64
	for _, q := range a.queue {
		got = append(got, q.health.UptimeS)
	}
	if fmt.Sprint(got) != "[3 4 5]" {
		t.Fatalf("queue keeps %v, want the newest [3 4 5]", got)
	}
}

// fakeMsg is a paho.Message delivered by hand.
type fakeMsg struct {
	topic   string
	payload []byte
}

func (m fakeMsg) Duplicate() bool   { return false }
func (m fakeMsg) Qos() byte         { return 1 }
func (m fakeMsg) Retained() bool    { return false }
func (m fakeMsg) Topic() string     { return m.topic }
func (m fakeMsg) MessageID() uint16 { return 1 }
func (m fakeMsg) Payload() []byte   { return m.payload }
func (m fakeMsg) Ack()              {}

// TestCommandVerification feeds commands straight to the handler paho
// would call: only CAST-signed, fresh, new commands for this node get
// through; signed unknown ops are answered with a refusal.
func TestCommandVerification(t *testing.T) {
	node, cast, other := newKey(t), newKey(t), newKey(t)
	now := time.Now()
	a, err := New(Options{Key: node, CastKey: cast.Public(), BrokerURL: "tcp://127.0.0.1:1", Logger: testLogger(),
		Now: func() time.Time { return now },
		Handle: func(context.Context, ctrlmsg.Command) ctrlmsg.Result {
			t.Error("handler called directly")
			return ctrlmsg.Result{}
		}})
	if err != nil {
		t.Fatal(err)
	}
	cmdTopic := ctrlmsg.Topic(node.ID(), ctrlmsg.LeafCmd)
	seal := func(kp *identity.Keypair, topic string, c ctrlmsg.Command, at time.Time) []byte {
		t.Helper()
		p, err := ctrlmsg.Seal(kp, topic, ctrlmsg.KindCmd, c, at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	purge := ctrlmsg.Command{ID: "c1", Op: ctrlmsg.OpPurge, Arg: "https://example.com/"}
	good := seal(cast, cmdTopic, purge, now)

	refused := []struct {
		name    string
		topic   string
		payload []byte
	}{
		{"signed by another key", cmdTopic, seal(other, cmdTopic, purge, now)},
		{"signed by the node itself", cmdTopic, seal(node, cmdTopic, purge, now)},
		{"tampered", cmdTopic, bytes.Replace(good, []byte("example.com"), []byte("evil.example"), 1)},
		{"unsigned", cmdTopic, []byte(`{"id":"c1","op":"purge","arg":"x"}`)},
		{"junk", cmdTopic, []byte("\x00\x01")},
		{"stale", cmdTopic, seal(cast, cmdTopic, purge, now.Add(-time.Hour))},
		{"for another node", ctrlmsg.Topic(other.ID(), ctrlmsg.LeafCmd), seal(cast, ctrlmsg.Topic(other.ID(), ctrlmsg.LeafCmd), purge, now)},
		{"bad id", cmdTopic, seal(cast, cmdTopic, ctrlmsg.Command{ID: "a b", Op: ctrlmsg.OpPurge}, now)},
	}
	for i, c := range refused {
		a.onCommand(nil, fakeMsg{c.topic, c.payload})
		if got := a.Status().CommandsRefused; got != uint64(i+1) {
			t.Fatalf("%s: refused count %d, want %d", c.name, got, i+1)
		}
	}
	if len(a.cmds) != 0 || a.Status().Queued != 0 {
		t.Fatal("a refused command was run or answered")
	}

	a.onCommand(nil, fakeMsg{cmdTopic, good})
	select {
	case c := <-a.cmds:
		if c != purge {
			t.Fatalf("got %+v", c)
		}
	default:
		t.Fatal("good command not accepted")
	}
	// The same bytes again: a replay.
	before := a.Status().CommandsRefused
	a.onCommand(nil, fakeMsg{cmdTopic, good})
	if a.Status().CommandsRefused != before+1 || len(a.cmds) != 0 {
		t.Fatal("replay accepted")
	}

	// Signed but unknown: refused, and answered so castd knows.
	a.onCommand(nil, fakeMsg{cmdTopic, seal(cast, cmdTopic, ctrlmsg.Command{ID: "c2", Op: "reboot"}, now)})
	deadline := time.Now().Add(2 * time.Second)
	for a.Status().Queued == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	a.mu.Lock()
	q := append([]queued(nil), a.queue...)
	a.mu.Unlock()
	if len(q) != 1 || q[0].result == nil || q[0].result.ID != "c2" || q[0].result.OK || !strings.Contains(q[0].result.Error, "unknown op") {
		t.Fatalf("queued %+v", q)
	}

	// A new CAST key (learned at registration) replaces the old one.
	newCast := newKey(t)
	a.SetCastKey(newCast.Public())
	before = a.Status().CommandsRefused
	a.onCommand(nil, fakeMsg{cmdTopic, seal(cast, cmdTopic, ctrlmsg.Command{ID: "c3", Op: ctrlmsg.OpPurge}, now)})
	if a.Status().CommandsRefused != before+1 {
		t.Fatal("old CAST key still accepted")
	}
	a.onCommand(nil, fakeMsg{cmdTopic, seal(newCast, cmdTopic, ctrlmsg.Command{ID: "c4", Op: ctrlmsg.OpPurge}, now)})
	if len(a.cmds) != 1 {
		t.Fatal("new CAST key refused")
	}
}

// mosquitto runs a real Mosquitto on port for this test. (The cloud side
// has a richer helper; firmware does not import cloud packages.)
type mosquitto struct {
	t    *testing.T
	port int
	conf string
	cmd  *exec.Cmd
	out  bytes.Buffer
	mu   sync.Mutex
}

func (m *mosquitto) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.out.Write(p)
}

func newMosquitto(t *testing.T) *mosquitto {
	const path = "/usr/sbin/mosquitto"
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto missing: %v", err)
		}
		t.Skipf("mosquitto missing: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{t: t, port: ln.Addr().(*net.TCPAddr).Port}
	ln.Close()
	m.conf = filepath.Join(t.TempDir(), "m.conf")
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", m.port)
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("mosquitto:\n%s", m.out.String())
		}
	})
	return m
}

func (m *mosquitto) addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command("/usr/sbin/mosquitto", "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m, m
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", m.addr()); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatal("mosquitto did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *mosquitto) stop() {
	if m.cmd != nil {
		_ = m.cmd.Process.Kill()
		_ = m.cmd.Wait()
		m.cmd = nil
	}
}

// observer subscribes to everything and collects it.
type observer struct {
	mu   sync.Mutex
	msgs []fakeMsg
}

func observe(t *testing.T, addr string) *observer {
	o := &observer{}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("observer"))
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("observer connect:", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	if tok := c.Subscribe("blockcast/#", 1, func(_ paho.Client, m paho.Message) {
		o.mu.Lock()
		o.msgs = append(o.msgs, fakeMsg{m.Topic(), append([]byte(nil), m.Payload()...)})
		o.mu.Unlock()
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal("observer subscribe:", tok.Error())
	}
	return o
}

// wait returns the first message on leaf for which ok is true.
func (o *observer) wait(t *testing.T, leaf ctrlmsg.Leaf, ok func(ctrlmsg.Msg) bool) ctrlmsg.Msg {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o.mu.Lock()
		msgs := append([]fakeMsg(nil), o.msgs...)
		o.mu.Unlock()
		for _, m := range msgs {
			if !strings.HasSuffix(m.topic, "/"+string(leaf)) {
				continue
			}
			msg, err := ctrlmsg.Open(m.payload, m.topic, nil, time.Minute, time.Now(), nil)
			if err != nil {
				t.Fatalf("agent published an invalid message on %s: %v", m.topic, err)
			}
			if ok(msg) {
				return msg
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching %s message among %d", leaf, len(msgs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAgentAgainstMosquitto: announce, report, and say goodbye on a real
// broker; then a broker that is away at first: reports are queued, and
// flushed once it comes.
func TestAgentAgainstMosquitto(t *testing.T) {
	m := newMosquitto(t)
	m.start()
	obs := observe(t, m.addr())
	node := newKey(t)
	a, err := New(Options{
		BrokerURL: "tcp://" + m.addr(), Key: node, Interval: 100 * time.Millisecond, Version: "9.9",
		Health: func() ctrlmsg.Health { return ctrlmsg.Health{CacheObjects: 11, Load: 0.25} },
		Logger: testLogger(), MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	online := obs.wait(t, ctrlmsg.LeafStatus, func(m ctrlmsg.Msg) bool {
		s, err := m.Status()
		return err == nil && s.State == ctrlmsg.StateOnline && s.Version == "9.9" && s.Interval == 0.1
	})
	h := obs.wait(t, ctrlmsg.LeafHealth, func(m ctrlmsg.Msg) bool { return true })
	hb, err := h.Health()
	if err != nil || hb.CacheObjects != 11 || hb.Load != 0.25 || hb.Version != "9.9" || hb.MeasuredAt != 0 {
		t.Fatalf("health %+v %v", hb, err)
	}
	if h.Signer != node.Public() || online.Signer != node.Public() {
		t.Fatal("signed by someone else")
	}
	if err := a.Run(ctx); err == nil {
		t.Fatal("second Run")
	}
	st := a.Status()
	if !st.Connected || st.Connects != 1 || st.ConnectedSince.IsZero() {
		t.Fatalf("status %+v", st)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	obs.wait(t, ctrlmsg.LeafStatus, func(m ctrlmsg.Msg) bool {
		s, _ := m.Status()
		return s.State == ctrlmsg.StateOffline && m.TS.After(online.TS)
	})
	if a.Status().Connected {
		t.Fatal("still connected")
	}
}

func TestAgentQueuesWhileBrokerAway(t *testing.T) {
	m := newMosquitto(t) // not started yet
	node := newKey(t)
	var n atomic.Uint64
	// The gate keeps the agent from connecting until the observer is in
	// place, so that it cannot miss the flush.
	var open atomic.Bool
	var d net.Dialer
	a, err := New(Options{
		BrokerURL: "tcp://" + m.addr(), Key: node, Interval: 50 * time.Millisecond, QueueLimit: 4,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if !open.Load() {
				return nil, errors.New("gate closed")
			}
			return d.DialContext(ctx, network, addr)
		},
		Health: func() ctrlmsg.Health { return ctrlmsg.Health{UptimeS: n.Add(1)} },
		Logger: testLogger(), MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(5 * time.Second)
	for a.Status().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := a.Status()
	if st.Connected || st.Queued != 4 || st.Dropped == 0 || st.LastError == "" {
		t.Fatalf("status while away %+v", st)
	}

	// Run kept going without a broker; now one appears on that port.
	m.start()
	obs := observe(t, m.addr())
	open.Store(true)
	queued := obs.wait(t, ctrlmsg.LeafHealth, func(m ctrlmsg.Msg) bool {
		h, _ := m.Health()
		return h.MeasuredAt != 0 && h.MeasuredAt < m.TS.UnixMilli()
	})
	if !queued.Fresh(time.Minute, time.Now()) {
		t.Fatal("flushed report not re-signed")
	}
	deadline = time.Now().Add(5 * time.Second)
	for a.Status().Queued != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := a.Status(); !st.Connected || st.Queued != 0 || st.HealthSent == 0 {
		t.Fatalf("status after reconnect %+v", st)
	}
}

// refusingBroker answers every CONNECT with CONNACK return code rc.
func refusingBroker(t *testing.T, rc byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Read(make([]byte, 4096)); err != nil {
					return
				}
				c.Write([]byte{0x20, 0x02, 0x00, rc})
				c.Read(make([]byte, 1)) // until the client hangs up
			}()
		}
	}()
	return "tcp://" + ln.Addr().String()
}

// A broker that refuses the node's login (castd no longer knows it) makes
// the agent say so, so that the beacon registers again; a broker that is
// merely unavailable does not.
func TestOnRefused(t *testing.T) {
	for _, tc := range []struct {
		rc   byte
		want bool
	}{
		{4, true},  // bad user name or password: what castd's broker answers an unknown node
		{5, true},  // not authorised
		{3, false}, // server unavailable
	} {
		refused := make(chan error, 16)
		a, err := New(Options{
			BrokerURL: refusingBroker(t, tc.rc), Key: newKey(t), Logger: testLogger(),
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			OnRefused: func(err error) {
				select {
				case refused <- err:
				default:
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); a.Run(ctx) }()
		var got bool
		select {
		case <-refused:
			got = true
		case <-time.After(time.Second):
		}
		cancel()
		<-done
		if got != tc.want {
			t.Errorf("CONNACK %d: OnRefused called %v, want %v (last error %q)", tc.rc, got, tc.want, a.Status().LastError)
		}
	}
}

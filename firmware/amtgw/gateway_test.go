package amtgw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/firmware/driad"
	"github.com/blockcast/beacon/shared/amt"
)

// fastOptions are timers scaled down so that the tests take milliseconds
// where the RFC defaults take seconds.
func fastOptions(t testing.TB, relays RelaySource) Options {
	return Options{
		Relays:            relays,
		Logger:            testLogger(t),
		LocalAddr:         "127.0.0.1:0",
		NoDataTimeout:     10 * time.Second,
		RetransmitInitial: 50 * time.Millisecond,
		RetransmitMax:     200 * time.Millisecond,
		ConnectAttempts:   3,
		BackoffInitial:    50 * time.Millisecond,
		BackoffMax:        100 * time.Millisecond,
		HoldDown:          time.Minute,
		ReportInterval:    20 * time.Millisecond,
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

// startGateway runs a gateway until the test ends. stop cancels it and
// waits for Run to return, reporting its error.
func startGateway(t testing.TB, opts Options) (g *Gateway, stop func() error) {
	t.Helper()
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-errc:
			case <-time.After(5 * time.Second):
				runErr = errors.New("Run did not return")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, 2*time.Second, "gateway running", func() bool { return g.State().Running })
	return g, stop
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// collector gathers what a subscriber receives.
type collector struct {
	mu  sync.Mutex
	got []amt.Datagram
}

func (c *collector) add(ch Channel, d amt.Datagram) {
	if ch != d.Channel() {
		panic(fmt.Sprintf("delivered for %v, datagram of %v", ch, d.Channel()))
	}
	d.Payload = bytes.Clone(d.Payload)
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
}

func (c *collector) all() []amt.Datagram {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func tunnelOf(s State, relay netip.AddrPort) *TunnelState {
	for i := range s.Tunnels {
		if s.Tunnels[i].Relay == relay {
			return &s.Tunnels[i]
		}
	}
	return nil
}

func channelState(s State, ch Channel) *ChannelState {
	for i := range s.Channels {
		if s.Channels[i].Channel() == ch {
			return &s.Channels[i]
		}
	}
	return nil
}

var (
	src4 = netip.MustParseAddr("192.0.2.10")
	src6 = netip.MustParseAddr("2001:db8::10")
	ch4  = Channel{Source: src4, Group: netip.MustParseAddr("232.1.2.3")}
	ch6  = Channel{Source: src6, Group: netip.MustParseAddr("ff3e::8000:1")}
)

func datagram(ch Channel, port uint16, payload string) amt.Datagram {
	return amt.Datagram{Src: ch.Source, Dst: ch.Group, SrcPort: 4000, DstPort: port, TTL: 64, Payload: []byte(payload)}
}

// TestHandshake runs the whole exchange over loopback for each family of
// tunnel and channel: Relay Discovery, Request with the right P flag,
// Membership Update with the relay's MAC, then data to the subscriber.
func TestHandshake(t *testing.T) {
	tests := []struct {
		name       string
		relayAddr  string
		local      string
		chans      []Channel
		wantP      []bool
		wantFamily string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0", []Channel{ch4}, []bool{false}, "udp4"},
		{"ipv6", "[::1]:0", "[::1]:0", []Channel{ch6}, []bool{true}, "udp6"},
		{"ipv4 channel over ipv6", "[::1]:0", ":0", []Channel{ch4}, []bool{false}, "udp6"},
		{"both families, one tunnel", "[::1]:0", ":0", []Channel{ch4, ch6}, []bool{false, true}, "udp6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relay := newTestRelay(t, "udp", tt.relayAddr)
			opts := fastOptions(t, Static{{Addr: relay.addr, Discover: true}})
			opts.LocalAddr = tt.local
			g, _ := startGateway(t, opts)
			var col collector
			defer g.Subscribe(col.add)()
			for _, ch := range tt.chans {
				if err := g.Join(ch, netip.AddrPort{}, false); err != nil {
					t.Fatal(err)
				}
			}
			for _, ch := range tt.chans {
				waitFor(t, 2*time.Second, "relay membership of "+ch.String(), func() bool { _, ok := relay.member(ch); return ok })
			}

			disc := relay.messages(amt.TypeRelayDiscovery)
			if len(disc) == 0 || disc[0].msg.(*amt.RelayDiscovery).Nonce == 0 {
				t.Fatalf("relay discoveries %v: want one with a non-zero nonce", disc)
			}
			var ps []bool
			for _, m := range relay.messages(amt.TypeRequest) {
				if p := m.msg.(*amt.Request).IPv6; !slices.Contains(ps, p) {
					ps = append(ps, p)
				}
			}
			slices.SortFunc(ps, func(a, b bool) int { return boolInt(a) - boolInt(b) })
			if !slices.Equal(ps, tt.wantP) {
				t.Errorf("requests with P flags %v, want %v", ps, tt.wantP)
			}
			for _, m := range relay.messages(amt.TypeMembershipUpdate) {
				if !m.macOK {
					t.Errorf("update from %v with a bad MAC", m.from)
				}
			}
			if first := relay.messages(0)[0]; first.msg.Type() != amt.TypeRelayDiscovery {
				t.Errorf("first message %v, want Relay Discovery", first.msg.Type())
			}

			for i, ch := range tt.chans {
				if n := relay.send(ch, datagram(ch, 5000+uint16(i), "hello "+ch.String())); n != 1 {
					t.Fatalf("relay sent to %d gateways", n)
				}
			}
			waitFor(t, 2*time.Second, "datagrams", func() bool { return col.count() == len(tt.chans) })
			for _, d := range col.all() {
				i := slices.Index(tt.chans, d.Channel())
				want := datagram(tt.chans[i], 5000+uint16(i), "hello "+tt.chans[i].String())
				if d.Src != want.Src || d.Dst != want.Dst || d.SrcPort != want.SrcPort || d.DstPort != want.DstPort || string(d.Payload) != string(want.Payload) {
					t.Errorf("received %+v, want %+v", d, want)
				}
			}
			s := g.State()
			if len(s.Tunnels) != 1 {
				t.Fatalf("tunnels %+v, want one", s.Tunnels)
			}
			ts := s.Tunnels[0]
			if ts.Phase != PhaseJoined || ts.Relay != relay.addr || ts.Discovery != relay.addr ||
				ts.Packets != uint64(len(tt.chans)) || ts.QueryInterval != 125*time.Second || ts.Robustness != 2 {
				t.Errorf("tunnel state %+v", ts)
			}
			for _, ch := range tt.chans {
				cs := channelState(s, ch)
				if cs == nil || cs.Status != StatusJoined || cs.Packets != 1 || cs.Relay != relay.addr {
					t.Errorf("channel state %+v", cs)
				}
			}
			if s.LocalAddr.Port() == 0 {
				t.Errorf("local address %v", s.LocalAddr)
			}
			// The health report is JSON.
			js, err := json.Marshal(s)
			if err != nil || !bytes.Contains(js, []byte(`"phase":"joined"`)) || !bytes.Contains(js, []byte(`"source":"`+tt.chans[0].Source.String()+`"`)) {
				t.Errorf("JSON state %s, %v", js, err)
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestRefresh: the relay's QQIC of 1 s schedules a new Request cycle (new
// nonce) every second, each answered with a current-state report.
func TestRefresh(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	relay.set(func(r *testRelay) { r.qqic = 1 })
	g, _ := startGateway(t, fastOptions(t, Static{{Addr: relay.addr}}))
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 4*time.Second, "three request cycles", func() bool { return len(relay.messages(amt.TypeRequest)) >= 3 })
	reqs := relay.messages(amt.TypeRequest)[:3]
	for i := 1; i < 3; i++ {
		if reqs[i].msg.(*amt.Request).Nonce == reqs[i-1].msg.(*amt.Request).Nonce {
			t.Errorf("request %d reuses the nonce of the previous cycle", i)
		}
		gap := reqs[i].at.Sub(reqs[i-1].at)
		if gap < 950*time.Millisecond || gap > 1500*time.Millisecond {
			t.Errorf("request %d came %v after the previous one, want the query interval, 1 s", i, gap)
		}
	}
	// Each cycle's query is answered with MODE_IS_INCLUDE{S} for G,
	// echoing that query's MAC and nonce.
	waitFor(t, time.Second, "third update", func() bool {
		n := 0
		for _, u := range relay.messages(amt.TypeMembershipUpdate) {
			if u.msg.(*amt.MembershipUpdate).Nonce == reqs[2].msg.(*amt.Request).Nonce {
				n++
			}
		}
		return n > 0
	})
	for i, q := range reqs {
		nonce := q.msg.(*amt.Request).Nonce
		var found bool
		for _, u := range relay.messages(amt.TypeMembershipUpdate) {
			m := u.msg.(*amt.MembershipUpdate)
			if m.Nonce != nonce {
				continue
			}
			if !u.macOK {
				t.Errorf("cycle %d: update MAC does not verify", i)
			}
			for _, rec := range u.report.Records {
				if rec.Type == amt.ModeIsInclude && rec.Group == ch4.Group && slices.Equal(rec.Sources, []netip.Addr{ch4.Source}) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("cycle %d: no MODE_IS_INCLUDE report of %v", i, ch4)
		}
	}
}

// TestRetransmit: a relay that never answers gets the same Discovery or
// Request again after random waits in [initial, min(initial·2ⁿ, max)],
// then the gateway gives up on it, backs off, and starts over with a new
// nonce.
func TestRetransmit(t *testing.T) {
	for _, discover := range []bool{true, false} {
		t.Run(fmt.Sprintf("discover=%v", discover), func(t *testing.T) {
			relay := newTestRelay(t, "udp", "127.0.0.1:0")
			relay.set(func(r *testRelay) { r.silent = true })
			opts := fastOptions(t, Static{{Addr: relay.addr, Discover: discover}})
			opts.ConnectAttempts = 4
			g, _ := startGateway(t, opts)
			if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
				t.Fatal(err)
			}
			typ := amt.TypeRequest
			if discover {
				typ = amt.TypeRelayDiscovery
			}
			nonceOf := func(m relayMsg) uint32 {
				if d, ok := m.msg.(*amt.RelayDiscovery); ok {
					return d.Nonce
				}
				return m.msg.(*amt.Request).Nonce
			}
			waitFor(t, 3*time.Second, "a second round", func() bool { return len(relay.messages(typ)) >= 5 })
			msgs := relay.messages(typ)
			for i := 1; i < 4; i++ {
				if nonceOf(msgs[i]) != nonceOf(msgs[0]) {
					t.Errorf("retransmission %d changed the nonce", i)
				}
				gap := msgs[i].at.Sub(msgs[i-1].at)
				hi := min(50*time.Millisecond<<(i-1), 200*time.Millisecond)
				if gap < 45*time.Millisecond || gap > hi+40*time.Millisecond {
					t.Errorf("retransmission %d after %v, want within [50ms, %v]", i, gap, hi)
				}
			}
			if nonceOf(msgs[4]) == nonceOf(msgs[0]) {
				t.Error("the round after the backoff reuses the nonce")
			}
			if gap := msgs[4].at.Sub(msgs[3].at); gap < 50*time.Millisecond {
				t.Errorf("new round %v after the last retransmission: no backoff", gap)
			}
			s := g.State()
			if cs := channelState(s, ch4); cs == nil || cs.Failures == 0 || cs.LastError == "" {
				t.Errorf("channel state %+v: want failures and an error", cs)
			}
		})
	}
}

// TestRelayRestart: the relay goes away and comes back on the same port
// with no state. The gateway notices the silence, backs off, joins again,
// and data flows again.
func TestRelayRestart(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.NoDataTimeout = 400 * time.Millisecond
	g, _ := startGateway(t, opts)
	var col collector
	defer g.Subscribe(col.add)()
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	stopSending := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stopSending:
				return
			case <-time.After(10 * time.Millisecond):
			}
			relay.send(ch4, datagram(ch4, 5000, fmt.Sprint(i)))
		}
	}()
	defer func() { close(stopSending); wg.Wait() }()
	waitFor(t, 2*time.Second, "data before the restart", func() bool { return col.count() >= 5 })

	var sawBackoff bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		relay.restart(800 * time.Millisecond)
	}()
	waitFor(t, 3*time.Second, "the gateway to notice", func() bool {
		s := g.State()
		if cs := channelState(s, ch4); cs != nil && cs.Status == StatusBackoff {
			sawBackoff = true
		}
		return sawBackoff
	})
	<-done
	before := col.count()
	waitFor(t, 3*time.Second, "rejoin after the restart", func() bool { _, ok := relay.member(ch4); return ok })
	waitFor(t, 2*time.Second, "data after the restart", func() bool { return col.count() >= before+5 })
	s := g.State()
	cs := channelState(s, ch4)
	if cs == nil || cs.Status != StatusJoined || cs.Failures != 0 {
		t.Errorf("channel state after the restart %+v", cs)
	}
	if ts := tunnelOf(s, relay.addr); ts == nil || ts.Phase != PhaseJoined {
		t.Errorf("tunnels after the restart %+v", s.Tunnels)
	}
}

// TestLimitFlag: a relay that answers with L is left for the next one and
// held down; it never gets a report.
func TestLimitFlag(t *testing.T) {
	full := newTestRelay(t, "udp", "127.0.0.1:0")
	full.set(func(r *testRelay) { r.limit = true })
	ok := newTestRelay(t, "udp", "127.0.0.1:0")
	g, _ := startGateway(t, fastOptions(t, Static{{Addr: full.addr}, {Addr: ok.addr}}))
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership at the second relay", func() bool { _, j := ok.member(ch4); return j })
	if n := len(full.messages(amt.TypeRequest)); n != 1 {
		t.Errorf("the limited relay got %d requests, want 1", n)
	}
	if u := full.messages(amt.TypeMembershipUpdate); len(u) != 0 {
		t.Errorf("the limited relay got %d updates", len(u))
	}
	s := g.State()
	if !slices.ContainsFunc(s.HeldDown, func(h HeldDownRelay) bool { return h.Addr == full.addr }) {
		t.Errorf("held down %v, want %v", s.HeldDown, full.addr)
	}
	if ts := tunnelOf(s, ok.addr); ts == nil || ts.Phase != PhaseJoined {
		t.Errorf("tunnels %+v", s.Tunnels)
	}
}

// stubLookup is a DRIAD resolver with fixed answers.
type stubLookup struct {
	mu      sync.Mutex
	relays  map[netip.Addr][]driad.Relay
	lookups int
}

func (s *stubLookup) Lookup(ctx context.Context, src netip.Addr) ([]driad.Relay, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	rs, ok := s.relays[src]
	if !ok {
		return nil, driad.ErrNotFound
	}
	return rs, nil
}

// TestDRIADFallback: the source's AMTRELAY records list a dead relay
// first (precedence 10, D=0: discovery required) and a live one second
// (precedence 20, D=1: Request directly). The gateway discovers in vain at
// the first, then requests at the second.
func TestDRIADFallback(t *testing.T) {
	// Two loopback addresses, one port: DNS gives addresses, not ports.
	live := newTestRelay(t, "udp", "127.0.0.3:0")
	dead := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), live.addr.Port())
	deadConn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(dead)) // receives, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer deadConn.Close()
	var deadMsgs []amt.Type
	var deadMu sync.Mutex
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := deadConn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if typ, err := amt.TypeOf(buf[:n]); err == nil {
				deadMu.Lock()
				deadMsgs = append(deadMsgs, typ)
				deadMu.Unlock()
			}
		}
	}()
	stub := &stubLookup{relays: map[netip.Addr][]driad.Relay{
		src4: {
			{Precedence: 10, Type: driad.RelayIPv4, Addr: dead.Addr()},
			{Precedence: 20, DiscoveryOptional: true, Type: driad.RelayIPv4, Addr: live.addr.Addr()},
		},
	}}
	g, _ := startGateway(t, fastOptions(t, DRIAD{Resolver: stub, Port: live.addr.Port()}))
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "membership at the second relay", func() bool { _, ok := live.member(ch4); return ok })
	deadMu.Lock()
	got := slices.Clone(deadMsgs)
	deadMu.Unlock()
	if len(got) != 3 || slices.ContainsFunc(got, func(t amt.Type) bool { return t != amt.TypeRelayDiscovery }) {
		t.Errorf("the dead relay got %v, want 3 Relay Discoveries (D=0)", got)
	}
	if d := live.messages(amt.TypeRelayDiscovery); len(d) != 0 {
		t.Errorf("the live relay got %d discoveries; D=1 says request directly", len(d))
	}
	if cs := channelState(g.State(), ch4); cs == nil || cs.Relay != live.addr {
		t.Errorf("channel state %+v", cs)
	}
	stub.mu.Lock()
	defer stub.mu.Unlock()
	if stub.lookups != 1 {
		t.Errorf("%d lookups, want 1", stub.lookups)
	}
}

// TestExplicitRelay: a Join naming a relay (a castd offer) uses it before
// the configured ones; and an unknown source with DRIAD backs off.
func TestExplicitRelay(t *testing.T) {
	offered := newTestRelay(t, "udp", "127.0.0.1:0")
	configured := newTestRelay(t, "udp", "127.0.0.1:0")
	g, _ := startGateway(t, fastOptions(t, Static{{Addr: configured.addr}}))
	if err := g.Join(ch4, offered.addr, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership at the offered relay", func() bool { _, ok := offered.member(ch4); return ok })
	if n := len(configured.messages(0)); n != 0 {
		t.Errorf("the configured relay got %d messages", n)
	}

	g2, _ := startGateway(t, fastOptions(t, DRIAD{Resolver: &stubLookup{}}))
	if err := g2.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "backoff without relays", func() bool {
		cs := channelState(g2.State(), ch4)
		return cs != nil && cs.Status == StatusBackoff && cs.Failures > 0 && cs.LastError != ""
	})
}

// teardownTest joins with a G-flag relay, then ends the channel with end
// and checks the Teardown that must follow.
func teardownTest(t *testing.T, end func(g *Gateway, stop func() error)) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	relay.set(func(r *testRelay) { r.gflag = true })
	g, stop := startGateway(t, fastOptions(t, Static{{Addr: relay.addr}}))
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership", func() bool { _, ok := relay.member(ch4); return ok })
	gw, _ := relay.member(ch4)
	end(g, stop)
	waitFor(t, 2*time.Second, "teardown", func() bool { return len(relay.messages(amt.TypeTeardown)) > 0 })
	qs := relay.sentQueries()
	last := qs[len(qs)-1]
	td := relay.messages(amt.TypeTeardown)[0]
	m := td.msg.(*amt.Teardown)
	if m.Gateway != gw || m.Gateway != last.gw || m.Nonce != last.nonce || m.MAC != last.mac || !td.macOK {
		t.Errorf("teardown %+v (MAC ok %v), want gateway %v nonce %#x MAC %x", m, td.macOK, gw, last.nonce, last.mac)
	}
	// The leave itself went first, with the MAC of the last query.
	var blocked bool
	for _, u := range relay.messages(amt.TypeMembershipUpdate) {
		for _, rec := range u.report.Records {
			if rec.Type == amt.BlockOldSources && rec.Group == ch4.Group && slices.Contains(rec.Sources, ch4.Source) {
				blocked = u.macOK && u.at.Before(td.at.Add(time.Millisecond))
			}
		}
	}
	if !blocked {
		t.Error("no BLOCK_OLD_SOURCES report with a valid MAC before the teardown")
	}
	if relay.memberCount() != 0 {
		t.Error("the relay still has members")
	}
}

func TestTeardownOnLeave(t *testing.T) {
	teardownTest(t, func(g *Gateway, _ func() error) {
		if err := g.Leave(ch4); err != nil {
			t.Fatal(err)
		}
		if err := g.Leave(ch4); !errors.Is(err, ErrNotJoined) {
			t.Errorf("second Leave: %v, want ErrNotJoined", err)
		}
		waitFor(t, 2*time.Second, "tunnel gone", func() bool { return len(g.State().Tunnels) == 0 })
	})
}

func TestTeardownOnShutdown(t *testing.T) {
	teardownTest(t, func(g *Gateway, stop func() error) {
		if err := stop(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		if err := g.Join(ch6, netip.AddrPort{}, false); !errors.Is(err, ErrClosed) {
			t.Errorf("Join after Run: %v, want ErrClosed", err)
		}
	})
}

// TestNATChange: the relay's queries report the gateway at a new address
// (as after a NAT rebinding). The gateway tears down the state of the old
// address, with that address and the nonce and MAC of the query that
// reported it, and reports its channels again.
func TestNATChange(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	moved := netip.MustParseAddrPort("198.51.100.7:40000")
	var queries int
	relay.set(func(r *testRelay) {
		r.gflag = true
		r.gwAddr = func(from netip.AddrPort) netip.AddrPort {
			queries++
			if queries == 1 {
				return from
			}
			return moved
		}
	})
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.NoDataTimeout = 300 * time.Millisecond // quiet: the gateway asks again soon
	g, _ := startGateway(t, opts)
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "teardown", func() bool { return len(relay.messages(amt.TypeTeardown)) > 0 })
	first := relay.sentQueries()[0]
	td := relay.messages(amt.TypeTeardown)[0]
	m := td.msg.(*amt.Teardown)
	if m.Gateway != first.gw || m.Nonce != first.nonce || m.MAC != first.mac || !td.macOK {
		t.Errorf("teardown %+v, want the first query's gateway %v, nonce %#x, MAC %x", m, first.gw, first.nonce, first.mac)
	}
	waitFor(t, time.Second, "NAT change in the state", func() bool {
		ts := tunnelOf(g.State(), relay.addr)
		return ts != nil && ts.NATChanges == 1 && ts.Gateway == moved
	})
	// Only one teardown: the later queries keep reporting the same address.
	time.Sleep(400 * time.Millisecond)
	if n := len(relay.messages(amt.TypeTeardown)); n != 1 {
		t.Errorf("%d teardowns, want 1", n)
	}
}

// TestSourceFiltering: only datagrams of joined channels, from the relay
// of their tunnel, reach subscribers; the rest is counted.
func TestSourceFiltering(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	g, _ := startGateway(t, fastOptions(t, Static{{Addr: relay.addr}}))
	var col collector
	defer g.Subscribe(col.add)()
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership", func() bool { _, ok := relay.member(ch4); return ok })
	otherSource := Channel{Source: netip.MustParseAddr("192.0.2.66"), Group: ch4.Group}
	otherGroup := Channel{Source: ch4.Source, Group: netip.MustParseAddr("232.9.9.9")}
	relay.send(ch4, datagram(otherSource, 5000, "wrong source"))
	relay.send(ch4, datagram(otherGroup, 5000, "wrong group"))
	bad, _ := amt.AppendInnerUDP(nil, datagram(ch4, 5000, "bad checksum"))
	bad[len(bad)-1] ^= 0xff
	relay.sendRaw(ch4, amt.AppendData(nil, bad))
	relay.sendRaw(ch4, []byte{0x06})
	// The right channel from the wrong sender.
	gw, _ := relay.member(ch4)
	spoof, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer spoof.Close()
	inner, _ := amt.AppendInnerUDP(nil, datagram(ch4, 5000, "spoofed"))
	spoof.WriteToUDPAddrPort(amt.AppendData(nil, inner), gw)
	relay.send(ch4, datagram(ch4, 5000, "right"))
	waitFor(t, 2*time.Second, "the right datagram", func() bool { return col.count() > 0 })
	var last State
	defer func() {
		if t.Failed() {
			t.Logf("state %+v", last)
		}
	}()
	waitFor(t, time.Second, "the counters", func() bool {
		last = g.State()
		ts := tunnelOf(last, relay.addr)
		return ts != nil && ts.Filtered == 2 && ts.Malformed == 2 && last.UnknownSource == 1
	})
	got := col.all()
	if len(got) != 1 || string(got[0].Payload) != "right" {
		t.Errorf("received %v, want only the right datagram", got)
	}
}

// TestSlowConsumer: a subscriber that stops reading loses datagrams,
// counted, while another one gets them all.
func TestSlowConsumer(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.QueueLen = 4
	g, _ := startGateway(t, opts)
	var fast collector
	defer g.Subscribe(fast.add)()
	release := make(chan struct{})
	var slow collector
	defer g.Subscribe(func(ch Channel, d amt.Datagram) {
		<-release
		slow.add(ch, d)
	})()
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership", func() bool { _, ok := relay.member(ch4); return ok })
	const n = 40
	for i := 0; i < n; i++ {
		relay.send(ch4, datagram(ch4, 5000, fmt.Sprint(i)))
		time.Sleep(time.Millisecond)
	}
	waitFor(t, 2*time.Second, "all datagrams at the fast subscriber", func() bool { return fast.count() == n })
	close(release)
	s := g.State()
	cs := channelState(s, ch4)
	// The slow one holds one datagram in its callback and 4 queued.
	if cs == nil || cs.Dropped < n-5 || cs.Packets != n {
		t.Errorf("channel state %+v: want %d packets, at least %d dropped", cs, n, n-5)
	}
	if len(s.Consumers) != 2 || s.Consumers[0].Dropped != 0 || s.Consumers[1].Dropped != cs.Dropped {
		t.Errorf("consumers %+v", s.Consumers)
	}
	waitFor(t, time.Second, "the slow subscriber to drain", func() bool { return slow.count() == n-int(cs.Dropped) })
	for i, d := range fast.all() {
		if string(d.Payload) != fmt.Sprint(i) {
			t.Fatalf("datagram %d is %q: out of order or corrupted", i, d.Payload)
		}
	}
}

func TestJoinValidation(t *testing.T) {
	g, err := New(Options{Relays: Static{{Addr: netip.MustParseAddrPort("192.0.2.1:2268")}}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	noRelays, _ := New(Options{Logger: testLogger(t)})
	a := netip.MustParseAddr
	tests := []struct {
		name   string
		g      *Gateway
		ch     Channel
		relay  netip.AddrPort
		reemit bool
		want   error
	}{
		{"ok", g, ch4, netip.AddrPort{}, false, nil},
		{"ok ipv6", g, ch6, netip.AddrPort{}, false, nil},
		{"ok mapped", g, Channel{Source: a("::ffff:192.0.2.1"), Group: a("::ffff:232.0.0.1")}, netip.AddrPort{}, false, nil},
		{"multicast source", g, Channel{Source: a("232.0.0.1"), Group: a("232.0.0.2")}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"unspecified source", g, Channel{Source: a("0.0.0.0"), Group: a("232.0.0.2")}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"no source", g, Channel{Group: a("232.0.0.2")}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"unicast group", g, Channel{Source: src4, Group: a("192.0.2.2")}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"link-local group", g, Channel{Source: src4, Group: a("224.0.0.22")}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"link-local group v6", g, Channel{Source: src6, Group: a("ff02::16")}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"mixed families", g, Channel{Source: src6, Group: ch4.Group}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"zone", g, Channel{Source: a("fe80::1%eth0"), Group: ch6.Group}, netip.AddrPort{}, false, ErrInvalidChannel},
		{"multicast relay", g, ch4, netip.MustParseAddrPort("232.0.0.1:2268"), false, ErrNoRelay},
		{"no relay anywhere", noRelays, ch4, netip.AddrPort{}, false, ErrNoRelay},
		{"explicit relay, none configured", noRelays, ch4, netip.MustParseAddrPort("192.0.2.1:0"), false, nil},
		{"reemit off", g, ch4, netip.AddrPort{}, true, ErrReemit},
	}
	for _, tt := range tests {
		err := tt.g.Join(tt.ch, tt.relay, tt.reemit)
		if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("%s: Join = %v, want %v", tt.name, err, tt.want)
		}
	}
	withReemit, _ := New(Options{Relays: Static{}, ReemitInterface: "lo"})
	if err := withReemit.Join(ch6, netip.AddrPort{}, true); !errors.Is(err, ErrReemit) {
		t.Errorf("IPv6 re-emission: %v, want ErrReemit", err)
	}
	if got := g.Joined(); len(got) != 3 {
		t.Errorf("Joined = %v, want 3 channels", got)
	}
	if err := g.Leave(Channel{Source: a("::ffff:192.0.2.1"), Group: a("::ffff:232.0.0.1")}); err != nil {
		t.Errorf("Leave of the mapped channel: %v", err)
	}
	// Before Run the channels wait.
	if cs := g.State().Channels; len(cs) != 2 || cs[0].Status != StatusWaiting || cs[1].Status != StatusWaiting {
		t.Errorf("channels before Run: %+v", cs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Run(ctx); err != nil {
		t.Errorf("Run with a cancelled context: %v", err)
	}
	if err := g.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}
	bad, _ := New(Options{LocalAddr: "256.0.0.1:0"})
	if err := bad.Run(context.Background()); err == nil {
		t.Error("Run with a bad local address succeeded")
	}
}

func TestRandWait(t *testing.T) {
	for n := 0; n < 8; n++ {
		hi := min(time.Second<<n, 120*time.Second)
		var lo, up bool
		for i := 0; i < 500; i++ {
			d := randWait(time.Second, 120*time.Second, n)
			if d < time.Second || d > hi {
				t.Fatalf("n=%d: %v outside [1s, %v]", n, d, hi)
			}
			lo = lo || d < time.Second+(hi-time.Second)/4
			up = up || d > hi-(hi-time.Second)/4
		}
		if n > 0 && !(lo && up) {
			t.Errorf("n=%d: waits do not spread over [1s, %v]", n, hi)
		}
	}
	for i := 0; i < 100; i++ {
		if nonce() == 0 {
			t.Fatal("zero nonce")
		}
	}
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

// TestLoopIdle: the control loop sleeps until something is due, also while
// a probe Request to a silent relay is outstanding or a tunnel is leaving.
func TestLoopIdle(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.NoDataTimeout = 2 * time.Second
	opts.RetransmitMax = 400 * time.Millisecond
	opts.ReportInterval = 300 * time.Millisecond
	g, _ := startGateway(t, opts)
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership", func() bool { _, ok := relay.member(ch4); return ok })
	relay.set(func(r *testRelay) { r.silent = true })
	wakeups := func() int {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.wakeups
	}
	time.Sleep(1100 * time.Millisecond) // the probe is out
	n := wakeups()
	time.Sleep(500 * time.Millisecond)
	if d := wakeups() - n; d > 15 {
		t.Errorf("%d loop iterations in 500 ms with a probe outstanding", d)
	}
	relay.set(func(r *testRelay) { r.silent = false })
	waitFor(t, 2*time.Second, "the probe answered", func() bool {
		ts := tunnelOf(g.State(), relay.addr)
		return ts != nil && time.Since(ts.LastQuery) < 300*time.Millisecond
	})
	if err := g.Leave(ch4); err != nil {
		t.Fatal(err)
	}
	n = wakeups()
	time.Sleep(200 * time.Millisecond) // leaving: BLOCK repeated after up to 300 ms
	if d := wakeups() - n; d > 10 {
		t.Errorf("%d loop iterations in 200 ms while leaving", d)
	}
}

// TestRobustness: with the query's QRV of 3, a join is reported three
// times (the answer to the query and two ALLOWs) and a leave three times
// (BLOCK), each repetition within the report interval, and then the
// Teardown.
func TestRobustness(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	relay.set(func(r *testRelay) { r.qrv, r.gflag = 3, true })
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.ReportInterval = 100 * time.Millisecond
	g, _ := startGateway(t, opts)
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	reports := func(types ...amt.RecordType) []relayMsg {
		var out []relayMsg
		for _, u := range relay.messages(amt.TypeMembershipUpdate) {
			for _, r := range u.report.Records {
				if slices.Contains(types, r.Type) && r.Group == ch4.Group && slices.Contains(r.Sources, ch4.Source) {
					out = append(out, u)
					break
				}
			}
		}
		return out
	}
	checkSpacing := func(what string, ms []relayMsg) {
		for i := 1; i < len(ms); i++ {
			if gap := ms[i].at.Sub(ms[i-1].at); gap > 150*time.Millisecond {
				t.Errorf("%s %d came %v after the previous one, want within the 100 ms report interval", what, i, gap)
			}
		}
	}
	waitFor(t, 2*time.Second, "three join reports", func() bool { return len(reports(amt.ModeIsInclude, amt.AllowNewSources)) >= 3 })
	time.Sleep(300 * time.Millisecond)
	joins := reports(amt.ModeIsInclude, amt.AllowNewSources)
	if len(joins) != 3 || joins[0].report.Records[0].Type != amt.ModeIsInclude {
		t.Errorf("%d join reports, want 3, the first the answer to the query", len(joins))
	}
	checkSpacing("join report", joins)

	if err := g.Leave(ch4); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "teardown", func() bool { return len(relay.messages(amt.TypeTeardown)) > 0 })
	leaves := reports(amt.BlockOldSources)
	if len(leaves) != 3 {
		t.Errorf("%d leave reports, want 3", len(leaves))
	}
	checkSpacing("leave report", leaves)
	td := relay.messages(amt.TypeTeardown)
	if len(leaves) > 0 && td[0].at.Before(leaves[len(leaves)-1].at) {
		t.Error("teardown before the last leave report")
	}
}

func TestMonoClock(t *testing.T) {
	a := monoNow()
	if a == 0 {
		t.Fatal("monoNow is 0")
	}
	if d := time.Since(wallTime(a)); d < 0 || d > time.Second {
		t.Errorf("wallTime(monoNow()) is %v before now", d)
	}
	if !wallTime(0).IsZero() {
		t.Error("wallTime(0) is not the zero time")
	}
	if d := time.Since(monoTime(a)); d < 0 || d > time.Second {
		t.Errorf("monoTime(monoNow()) is %v before now", d)
	}
}

// TestLimitFlagEstablished: a relay that sets L after the tunnel is up
// keeps serving it (RFC 7450: L turns away new gateways only); the gateway
// stays, but marks the relay held down for new placements.
func TestLimitFlagEstablished(t *testing.T) {
	relay := newTestRelay(t, "udp", "127.0.0.1:0")
	opts := fastOptions(t, Static{{Addr: relay.addr}})
	opts.NoDataTimeout = 300 * time.Millisecond // asks again after 150 ms of quiet
	g, _ := startGateway(t, opts)
	if err := g.Join(ch4, netip.AddrPort{}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "membership", func() bool { _, ok := relay.member(ch4); return ok })
	relay.set(func(r *testRelay) { r.limit = true })
	waitFor(t, 2*time.Second, "the L flag noticed", func() bool {
		ts := tunnelOf(g.State(), relay.addr)
		return ts != nil && ts.Limited
	})
	time.Sleep(400 * time.Millisecond) // longer than NoDataTimeout: queries keep it alive
	s := g.State()
	if ts := tunnelOf(s, relay.addr); ts == nil || ts.Phase != PhaseJoined {
		t.Errorf("tunnels %+v: want the limited relay's tunnel kept", s.Tunnels)
	}
	if !slices.ContainsFunc(s.HeldDown, func(h HeldDownRelay) bool { return h.Addr == relay.addr }) {
		t.Errorf("held down %v, want the limited relay", s.HeldDown)
	}
	if _, ok := relay.member(ch4); !ok {
		t.Error("the relay dropped the channel")
	}
}

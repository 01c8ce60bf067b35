package amtrelay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// Fixed channels of the tests.
var (
	src4a   = netip.MustParseAddr("198.51.100.9")
	src4b   = netip.MustParseAddr("198.51.100.10")
	group4a = netip.MustParseAddr("232.1.2.3")
	group4b = netip.MustParseAddr("232.9.9.9")
	src6a   = netip.MustParseAddr("2001:db8::9")
	group6a = netip.MustParseAddr("ff3e::8000:1")

	chA  = amt.Channel{Source: src4a, Group: group4a}
	chA2 = amt.Channel{Source: src4b, Group: group4a} // same G, other S
	chB  = amt.Channel{Source: src4a, Group: group4b}
	ch6  = amt.Channel{Source: src6a, Group: group6a}
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("AMTRELAY_TEST_LOG") == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fastOptions expire state in 300 ms.
func fastOptions(listen string) Options {
	return Options{
		Listen:                listen,
		QueryInterval:         200 * time.Millisecond,
		Robustness:            1,
		QueryResponseInterval: 100 * time.Millisecond,
	}
}

// startRelay runs a relay until the test ends.
func startRelay(t testing.TB, o Options) *Relay {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	r, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return r
}

// relayAddr is the relay's address of the family of lo (a loopback).
func relayAddr(t testing.TB, r *Relay, lo netip.Addr) netip.AddrPort {
	t.Helper()
	for _, a := range r.Addrs() {
		ap := a.(*net.UDPAddr).AddrPort()
		if ap.Addr().Unmap().Is4() == lo.Is4() {
			return netip.AddrPortFrom(lo, ap.Port())
		}
	}
	t.Fatalf("relay has no %v socket", lo)
	return netip.AddrPort{}
}

// waitFor polls cond for up to 3 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	// Generous: it returns as soon as cond holds, and a loaded machine
	// (make test runs packages side by side) can stall timers for seconds.
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// testGateway is a minimal AMT gateway built from the codec.
type testGateway struct {
	t     testing.TB
	uc    *net.UDPConn
	local netip.Addr
	relay netip.AddrPort
	nonce uint32
	mac   [6]byte
	ipv6  bool // P flag: ask for MLDv2 queries
}

func newGateway(t testing.TB, local netip.Addr, relay netip.AddrPort) *testGateway {
	t.Helper()
	g := &testGateway{t: t, local: local, relay: relay}
	g.bind()
	return g
}

func (g *testGateway) bind() {
	g.t.Helper()
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.local, 0)))
	if err != nil {
		g.t.Fatal(err)
	}
	g.uc = uc
	g.t.Cleanup(func() { uc.Close() })
}

// rebind moves the gateway to a new port, as a NAT rebinding does.
func (g *testGateway) rebind() {
	g.t.Helper()
	g.uc.Close()
	g.bind()
}

func (g *testGateway) addr() netip.AddrPort {
	ap := g.uc.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (g *testGateway) sendRaw(b []byte) {
	g.t.Helper()
	if _, err := g.uc.WriteToUDPAddrPort(b, g.relay); err != nil {
		g.t.Fatal(err)
	}
}

func (g *testGateway) send(m amt.Message) {
	g.t.Helper()
	b, err := m.AppendTo(nil)
	if err != nil {
		g.t.Fatal(err)
	}
	g.sendRaw(b)
}

// recv returns the next datagram and its source, or an error on timeout.
func (g *testGateway) recv(timeout time.Duration) ([]byte, netip.AddrPort, error) {
	buf := make([]byte, 65536)
	g.uc.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := g.uc.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, from, err
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

// recvType waits for a message of type want, skipping Multicast Data.
func (g *testGateway) recvType(want amt.Type) ([]byte, amt.Message) {
	g.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		b, from, err := g.recv(time.Until(deadline))
		if err != nil {
			g.t.Fatalf("waiting for %v: %v", want, err)
		}
		if from != g.relay {
			g.t.Fatalf("%v from %v, want the relay's %v", want, from, g.relay)
		}
		m, err := amt.Options{Strict: true}.Parse(b)
		if err != nil {
			g.t.Fatalf("relay sent a message strict parsing refuses: %v\n% x", err, b)
		}
		if m.Type() == want {
			return b, m
		}
		if m.Type() != amt.TypeMulticastData {
			g.t.Fatalf("got %v, want %v", m.Type(), want)
		}
	}
}

// request runs a Request/Query exchange with a new nonce and keeps the MAC.
func (g *testGateway) request() *amt.MembershipQuery {
	g.t.Helper()
	g.nonce = rand.Uint32() | 1
	g.send(&amt.Request{Nonce: g.nonce, IPv6: g.ipv6})
	_, m := g.recvType(amt.TypeMembershipQuery)
	q := m.(*amt.MembershipQuery)
	if q.Nonce != g.nonce {
		g.t.Fatalf("query nonce %#x, want %#x", q.Nonce, g.nonce)
	}
	g.mac = q.MAC
	return q
}

// updateMsg builds an Update of recs with the gateway's MAC and nonce.
func (g *testGateway) updateMsg(recs []amt.GroupRecord) *amt.MembershipUpdate {
	g.t.Helper()
	src := netip.IPv4Unspecified()
	if len(recs) > 0 && recs[0].Group.Is6() {
		src = netip.MustParseAddr("fe80::2")
	}
	rep, err := amt.AppendReportPacket(nil, src, recs)
	if err != nil {
		g.t.Fatal(err)
	}
	return &amt.MembershipUpdate{MAC: g.mac, Nonce: g.nonce, Report: rep}
}

func (g *testGateway) update(recs []amt.GroupRecord) { g.send(g.updateMsg(recs)) }

// joinAndWait joins chs and waits until the relay has processed it.
func (g *testGateway) joinAndWait(r *Relay, chs ...amt.Channel) {
	g.t.Helper()
	g.update(amt.ChangeRecords(chs, nil))
	waitFor(g.t, "join", func() bool { return hasChannels(r, g.addr(), chs...) })
}

// expectData waits for Multicast Data and returns its inner datagram.
func (g *testGateway) expectData() []byte {
	g.t.Helper()
	b, _ := g.recvType(amt.TypeMulticastData)
	inner, err := amt.ParseDataHeader(b)
	if err != nil {
		g.t.Fatal(err)
	}
	return inner
}

// expectNothing checks that nothing arrives for d.
func (g *testGateway) expectNothing(d time.Duration) {
	g.t.Helper()
	b, _, err := g.recv(d)
	if err == nil {
		g.t.Fatalf("unexpected datagram (% x)", b[:min(len(b), 16)])
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		g.t.Fatal(err)
	}
}

// hasChannels reports whether the relay's tunnel for gw has all of chs.
func hasChannels(r *Relay, gw netip.AddrPort, chs ...amt.Channel) bool {
	for _, gi := range r.Gateways() {
		if gi.Addr != gw {
			continue
		}
		for _, ch := range chs {
			found := false
			for _, c := range gi.Channels {
				found = found || c == ch
			}
			if !found {
				return false
			}
		}
		return true
	}
	return false
}

func hasTunnel(r *Relay, gw netip.AddrPort) bool {
	for _, gi := range r.Gateways() {
		if gi.Addr == gw {
			return true
		}
	}
	return false
}

// datagram builds an inner datagram of ch with a payload naming seq.
func datagram(t testing.TB, ch amt.Channel, port uint16, seq int) []byte {
	t.Helper()
	payload := binary.BigEndian.AppendUint32(bytes.Repeat([]byte{0x47}, 184), uint32(seq))
	b, err := amt.AppendInnerUDP(nil, amt.Datagram{Src: ch.Source, Dst: ch.Group, SrcPort: 5000, DstPort: port, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixedRand is a deterministic secret source for golden tests.
type fixedRand byte

func (f fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(f) + byte(i)
	}
	return len(p), nil
}

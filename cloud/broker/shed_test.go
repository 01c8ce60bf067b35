package broker

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(t testing.TB, src, addr string) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

// closedByPeer reports whether the broker closed c within d.
func closedByPeer(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	if err == nil {
		return false
	}
	ne, ok := err.(net.Error)
	return !ok || !ne.Timeout()
}

// pickAddrs returns an attacker address whose per-address counters do not
// collide with 127.0.0.1's (the tables are hashed with a per-process key).
func pickAttacker(t *testing.T, b *Broker) string {
	t.Helper()
	node := netip.MustParseAddr("127.0.0.1")
	for i := 2; i < 250; i++ {
		a := netip.AddrFrom4([4]byte{127, 0, 0, byte(i)})
		if !b.ln.gate.perAddr.Collide(a, node) && (b.ln.gate.rate == nil || !b.ln.gate.rate.Collide(a, node)) {
			return a.String()
		}
	}
	t.Fatal("every loopback address collides with 127.0.0.1")
	return ""
}

// An address that opens many connections and never sends CONNECT holds at
// most MaxHandshakesPerAddr handshake slots: the global ones stay free, and
// a registered node from another address still connects. On the old broker
// (one global pool) the silent sockets took every slot and the node was
// shed.
func TestSilentFloodFromOneAddress(t *testing.T) {
	logs := &harness.LineBuffer{}
	node := newKey(t)
	b := startBroker(t, Options{
		Known: knownSet(node.ID()),
		// A deadline long enough that the four held sockets outlive the
		// flood's dialing even on a loaded machine.
		MaxHandshakes: 64, MaxHandshakesPerAddr: 4, HandshakeTimeout: 4 * time.Second,
		ConnectRate: -1,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	attacker := pickAttacker(t, b)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 200; i++ {
		c, err := dialFrom(t, attacker, b.Addr())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// Wait until the listener has seen them all (it accepts asynchronously).
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats().ShedBy[ShedPerAddr] < 196 {
		if time.Now().After(deadline) {
			t.Fatalf("shed %v, want 196 per_address", b.Stats().ShedBy)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The node connects while the attacker's four still hold their slots.
	mustConnect(t, "tcp://"+b.Addr(), node)
	st := b.Stats()
	if st.ShedBy[ShedTotal] != 0 || st.ShedBy[ShedPerAddr] != 196 {
		t.Errorf("shed %v, want exactly 196 per_address and no total", st.ShedBy)
	}
	// The four that held slots are cut at the handshake deadline, counted.
	held := 0
	for _, c := range conns {
		if !closedByPeer(c, 10*time.Millisecond) {
			held++
		}
	}
	if held != 4 {
		t.Errorf("%d attacker sockets open after the shedding, want 4", held)
	}
	deadline = time.Now().Add(10 * time.Second)
	for b.Stats().ShedBy[ShedTimeout] != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("shed %v, want 4 timeouts", b.Stats().ShedBy)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := b.Stats(); st.Shed != 200 {
		t.Errorf("Shed %d, want 200 (%v)", st.Shed, st.ShedBy)
	}
	// Logged at warn, once for the whole flood (at most a line per 10 s).
	if n := strings.Count(logs.String(), "shedding connections"); n != 1 {
		t.Errorf("%d shedding lines, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "per_address=") {
		t.Errorf("shedding not logged at warn with its reason:\n%s", logs.String())
	}
}

// An address that opens connections faster than ConnectRate has the excess
// closed at once; other addresses are not affected.
func TestConnectRatePerAddress(t *testing.T) {
	node := newKey(t)
	b := startBroker(t, Options{Known: knownSet(node.ID()), ConnectRate: 0.01, ConnectBurst: 5, MaxHandshakesPerAddr: 100})
	attacker := pickAttacker(t, b)
	shed := 0
	for i := 0; i < 20; i++ {
		c, err := dialFrom(t, attacker, b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if closedByPeer(c, 200*time.Millisecond) {
			shed++
		}
		c.Close()
	}
	if shed != 15 {
		t.Errorf("%d of 20 connections shed, want 15 (burst 5)", shed)
	}
	if got := b.Stats().ShedBy[ShedRate]; got != 15 {
		t.Errorf("shed %v, want 15 for rate", b.Stats().ShedBy)
	}
	mustConnect(t, "tcp://"+b.Addr(), node)
}

// The gate gives every slot back: per address and in total.
func TestGateRelease(t *testing.T) {
	g := newGate(&Options{MaxHandshakes: 3, MaxHandshakesPerAddr: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	a, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	if g.perAddr.Collide(a, c) {
		t.Skip("test addresses collide in this process's table")
	}
	now := time.Now()
	for i, want := range []bool{true, true, false} {
		if ok := g.admit(a, now); ok != want {
			t.Fatalf("admit %d from a: %v, want %v", i, ok, want)
		}
	}
	if !g.admit(c, now) {
		t.Fatal("admit from c refused")
	}
	// The total is full: shed whatever the address.
	if g.admit(netip.MustParseAddr("2001:db8::2"), now) {
		t.Fatal("admitted with the total full")
	}
	g.release(a)
	g.release(a)
	g.release(c)
	if len(g.total) != 0 || g.perAddr.Held(a) != 0 || g.perAddr.Held(c) != 0 {
		t.Fatalf("slots not given back: total %d, a %d, c %d", len(g.total), g.perAddr.Held(a), g.perAddr.Held(c))
	}
	by, sum := g.stats()
	if sum != 2 || by[ShedPerAddr] != 1 || by[ShedTotal] != 1 {
		t.Fatalf("stats %v %d", by, sum)
	}
}

// A peer that trickles its CONNECT a byte at a time (slowloris) is cut at
// the handshake deadline, which runs from the accept, not from its last
// byte, and is counted as a timeout.
func TestTrickledConnectCut(t *testing.T) {
	b := startBroker(t, Options{HandshakeTimeout: 500 * time.Millisecond})
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	// CONNECT with a remaining length of 100, never completed.
	connect := append([]byte{0x10, 100, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60}, make([]byte, 88)...)
	var cut time.Duration
	for _, by := range connect {
		if _, err := c.Write([]byte{by}); err != nil {
			cut = time.Since(start)
			break
		}
		if closedByPeer(c, 100*time.Millisecond) {
			cut = time.Since(start)
			break
		}
	}
	if cut == 0 || cut > 2*time.Second {
		t.Fatalf("trickling peer cut after %s, want about 500ms", cut)
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.Stats().ShedBy[ShedTimeout] != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("shed %v, want one timeout", b.Stats().ShedBy)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

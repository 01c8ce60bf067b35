package amtgw

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

// Fixed nonces the fuzz gateway's tunnels wait for, so that seeds can
// answer them.
const (
	fuzzReqNonce4 = 0x01020304
	fuzzReqNonce6 = 0x05060708
	fuzzDiscNonce = 0x0a0b0c0d
)

var (
	fuzzRelay     = netip.MustParseAddrPort("127.0.0.1:9") // discard: nothing answers
	fuzzDiscovery = netip.MustParseAddrPort("127.0.0.2:9")
	fuzzOther     = netip.MustParseAddrPort("127.0.0.3:2268")
)

// fuzzGateway is a gateway in the middle of its life, driven by hand: one
// tunnel to fuzzRelay (ch4 and ch6, waiting for Queries with known nonces),
// one still discovering, and a consumer queue the test drains itself.
func fuzzGateway(t testing.TB) (*Gateway, *queue, func()) {
	g, err := New(Options{
		Relays:      Static{{Addr: fuzzDiscovery, Discover: true}},
		Logger:      testLogger(t),
		QueueLen:    4,
		MaxDatagram: 2048,
	})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(4, 2048, nil)
	g.mu.Lock()
	g.io = &tunnelIO{conn: conn, local: conn.LocalAddr().(*net.UDPAddr).AddrPort()}
	g.running = true
	g.runCtx = context.Background()
	g.subs = []*queue{q}
	g.want[ch4] = joinReq{relay: fuzzRelay}
	g.want[ch6] = joinReq{relay: fuzzRelay}
	g.want[Channel{Source: src4, Group: netip.MustParseAddr("232.7.7.7")}] = joinReq{}
	g.sources[src4] = &sourceRec{relays: Static{{Addr: fuzzDiscovery, Discover: true}}, expires: time.Now().Add(time.Hour)}
	g.sync(time.Now())
	for _, tun := range g.tunnels {
		if tun.phase == PhaseDiscovering {
			tun.discNonce = fuzzDiscNonce
			continue
		}
		tun.cyc[0].nonce, tun.cyc[1].nonce = fuzzReqNonce4, fuzzReqNonce6
	}
	g.mu.Unlock()
	if len(g.tunnels) != 2 {
		t.Fatalf("fuzz gateway has %d tunnels", len(g.tunnels))
	}
	return g, q, func() { conn.Close() }
}

func fuzzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	add := func(m amt.Message) {
		b, err := m.AppendTo(nil)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	for _, ch := range []Channel{ch4, ch6, {Source: netip.MustParseAddr("192.0.2.99"), Group: ch4.Group}} {
		inner, err := amt.AppendInnerUDP(nil, datagram(ch, 5000, "seed"))
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, amt.AppendData(nil, inner))
	}
	q4, _ := amt.AppendQueryPacket(nil, netip.MustParseAddr("10.0.0.1"), amt.Query{QQIC: 10, QRV: 3})
	q6, _ := amt.AppendQueryPacket(nil, netip.MustParseAddr("fe80::1"), amt.Query{QQIC: 10})
	add(&amt.MembershipQuery{MAC: [6]byte{1, 2, 3, 4, 5, 6}, Nonce: fuzzReqNonce4, Query: q4})
	add(&amt.MembershipQuery{MAC: [6]byte{1, 2, 3, 4, 5, 6}, Nonce: fuzzReqNonce6, Query: q6, Gateway: netip.MustParseAddrPort("198.51.100.1:1234")})
	add(&amt.MembershipQuery{Limit: true, Nonce: fuzzReqNonce4, Query: q4})
	add(&amt.RelayAdvertisement{Nonce: fuzzDiscNonce, Relay: netip.MustParseAddr("127.0.0.4")})
	add(&amt.RelayAdvertisement{Nonce: fuzzDiscNonce, Relay: netip.MustParseAddr("::1")})
	add(&amt.Teardown{Gateway: fuzzOther})
	return seeds
}

// FuzzReceive feeds arbitrary datagrams, from the relay, the discovery
// address or a stranger, into the gateway's receive handler and, when it
// passes them on, its control handler. Nothing may panic, and the only
// datagrams delivered are well-formed ones of a joined channel.
func FuzzReceive(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		for who := uint8(0); who < 3; who++ {
			f.Add(s, who)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, who uint8) {
		g, q, done := fuzzGateway(t)
		defer done()
		from := []netip.AddrPort{fuzzRelay, fuzzDiscovery, fuzzOther, netip.MustParseAddrPort("[::ffff:127.0.0.1]:9")}[who%4]
		orig := bytes.Clone(b)
		g.handlePacket(b, from)
		if !bytes.Equal(b, orig) {
			t.Fatal("handlePacket modified its input")
		}
		select {
		case m := <-g.ctrl:
			g.mu.Lock()
			g.handleControl(m, time.Now())
			g.tick(time.Now())
			g.mu.Unlock()
		default:
		}
		for {
			select {
			case i := <-q.ready:
				s := q.slots[i]
				if from.Addr().Unmap() != fuzzRelay.Addr() {
					t.Fatalf("delivered a datagram from %v", from)
				}
				if c := s.d.Channel(); c != ch4 && c != ch6 {
					t.Fatalf("delivered a datagram of %v", c)
				}
				d, err := amt.ParseInnerUDP(s.buf[:s.n])
				if err != nil {
					t.Fatalf("delivered a datagram that does not parse: %v", err)
				}
				d.Payload, s.d.Payload = bytes.Clone(d.Payload), bytes.Clone(s.d.Payload)
				if !reflect.DeepEqual(d, s.d) {
					t.Fatalf("delivered %+v for the bytes of %+v", s.d, d)
				}
				q.free <- i
				continue
			default:
			}
			break
		}
		_ = g.State()
	})
}

// TestReceiveHandler checks that the fuzz harness reaches the interesting
// states: a seed query establishes the tunnel, a seed advertisement moves
// discovery on, seed data is delivered, and strangers are counted.
func TestReceiveHandler(t *testing.T) {
	seeds := fuzzSeeds(t)
	g, q, done := fuzzGateway(t)
	defer done()
	step := func(b []byte, from netip.AddrPort) {
		g.handlePacket(b, from)
		select {
		case m := <-g.ctrl:
			g.mu.Lock()
			g.handleControl(m, time.Now())
			g.mu.Unlock()
		default:
		}
	}
	step(seeds[0], fuzzRelay) // data of ch4
	select {
	case i := <-q.ready:
		if got := q.slots[i].d.Channel(); got != ch4 || string(q.slots[i].d.Payload) != "seed" {
			t.Errorf("delivered %v %q", got, q.slots[i].d.Payload)
		}
		q.free <- i
	default:
		t.Error("data of a joined channel not delivered")
	}
	step(seeds[3], fuzzRelay) // IPv4 query
	step(seeds[4], fuzzRelay) // IPv6 query with G
	step(seeds[6], fuzzRelay) // advertisement from the wrong place, still matched by nonce
	step(seeds[0], fuzzOther)
	s := g.State()
	var joined, requesting bool
	for _, ts := range s.Tunnels {
		joined = joined || ts.Phase == PhaseJoined && ts.Relay == fuzzRelay && ts.QueryInterval == 10*time.Second && ts.Gateway.IsValid()
		requesting = requesting || ts.Phase == PhaseRequesting && ts.Relay == netip.AddrPortFrom(netip.MustParseAddr("127.0.0.4"), 9)
	}
	if !joined || !requesting {
		t.Errorf("tunnels %+v: want one joined, one requesting", s.Tunnels)
	}
	if s.UnknownSource != 1 {
		t.Errorf("unknown source %d, want 1", s.UnknownSource)
	}
	// A gateway ignores gateway-to-relay messages.
	step(seeds[len(seeds)-1], fuzzRelay)
	if s := g.State(); s.Unexpected != 1 {
		t.Errorf("unexpected %d, want 1", s.Unexpected)
	}
}

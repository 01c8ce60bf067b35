package amtrelay

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func TestDiscoveryAdvertisement(t *testing.T) {
	tests := []struct {
		name      string
		listen    string
		lo        netip.Addr
		advertise netip.Addr
		want      netip.Addr
	}{
		{"ipv4 bound", "127.0.0.1:0", lo4, netip.Addr{}, lo4},
		{"ipv6 bound", "[::1]:0", lo6, netip.Addr{}, lo6},
		{"wildcard ipv4", ":0", lo4, netip.Addr{}, lo4},
		{"wildcard ipv6", ":0", lo6, netip.Addr{}, lo6},
		{"advertise behind NAT", "127.0.0.1:0", lo4, netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.1")},
		{"advertise of other family", ":0", lo6, netip.MustParseAddr("198.51.100.1"), lo6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, Options{Listen: tt.listen, Advertise: tt.advertise})
			g := newGateway(t, tt.lo, relayAddr(t, r, tt.lo))
			g.send(&amt.RelayDiscovery{Nonce: 0x01020304})
			b, m := g.recvType(amt.TypeRelayAdvertisement)
			adv := m.(*amt.RelayAdvertisement)
			if adv.Nonce != 0x01020304 || adv.Relay != tt.want {
				t.Errorf("advertisement = %+v, want nonce 0x01020304 relay %v", adv, tt.want)
			}
			if wantLen := map[bool]int{true: 12, false: 24}[tt.want.Is4()]; len(b) != wantLen {
				t.Errorf("advertisement of %d bytes, want %d", len(b), wantLen)
			}
			if s := r.Stats(); s.Advertisements != 1 || s.Gateways != 0 {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

func TestRequestQuery(t *testing.T) {
	tests := []struct {
		name    string
		lo      netip.Addr
		p       bool // P flag: MLDv2 query wanted
		g       bool // SendGatewayAddr
		wantLen int
		qsrc    netip.Addr // inner query source
	}{
		// VLC expects exactly 48 bytes: 12 + IPv4 with Router Alert (24) + IGMPv3 (12).
		{"ipv4 igmp", lo4, false, false, 48, lo4},
		{"ipv4 igmp with G", lo4, false, true, 48 + 18, lo4},
		{"ipv4 mld", lo4, true, false, 12 + 48 + 28, mldQuerySource},
		{"ipv6 mld", lo6, true, false, 12 + 48 + 28, mldQuerySource},
		{"ipv6 mld with G", lo6, true, true, 12 + 48 + 28 + 18, mldQuerySource},
		{"ipv6 igmp", lo6, false, false, 48, netip.IPv4Unspecified()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, Options{Listen: ":0", SendGatewayAddr: tt.g})
			g := newGateway(t, tt.lo, relayAddr(t, r, tt.lo))
			g.ipv6 = tt.p
			g.nonce = 0xdeadbeef
			g.send(&amt.Request{Nonce: g.nonce, IPv6: tt.p})
			b, m := g.recvType(amt.TypeMembershipQuery)
			q := m.(*amt.MembershipQuery)
			if len(b) != tt.wantLen {
				t.Errorf("query of %d bytes, want %d", len(b), tt.wantLen)
			}
			if q.Nonce != g.nonce {
				t.Errorf("nonce %#x not echoed", q.Nonce)
			}
			if want := amt.ComputeMAC(r.keys.Load().cur, g.addr(), g.nonce); q.MAC != want {
				t.Errorf("MAC %x, want %x", q.MAC, want)
			}
			if q.Limit {
				t.Error("L flag set on an empty relay")
			}
			if tt.g != q.Gateway.IsValid() {
				t.Errorf("G flag %v, want %v", q.Gateway.IsValid(), tt.g)
			}
			if tt.g {
				// Compare the wire form: ::1 reads back as the
				// IPv4-compatible 0.0.0.1, the one ambiguity of the field.
				want, _ := (&amt.Teardown{Gateway: g.addr()}).AppendTo(nil)
				if tail := b[len(b)-18:]; !bytes.Equal(tail, want[12:]) {
					t.Errorf("gateway fields % x, want % x (%v)", tail, want[12:], g.addr())
				}
			}
			qp, err := amt.Options{Strict: true}.ParseQueryPacket(q.Query)
			if err != nil {
				t.Fatalf("encapsulated query: %v", err)
			}
			if qp.Src != tt.qsrc || qp.Src.Is6() != tt.p {
				t.Errorf("query from %v, want %v", qp.Src, tt.qsrc)
			}
			if qp.Query.QQIC != 125 || qp.Query.QRV != 2 || qp.Query.MaxResponse() != 10*time.Second ||
				qp.Query.QueryInterval() != 125*time.Second || !qp.Query.Group.IsUnspecified() {
				t.Errorf("query = %+v, want general query QQIC 125 QRV 2 MRC 10s", qp.Query)
			}
			if s := r.Stats(); s.Queries != 1 || s.Gateways != 0 {
				t.Errorf("a Request created state or was not counted: %+v", s)
			}
		})
	}
}

func TestJoinAndData(t *testing.T) {
	r := startRelay(t, Options{Listen: ":0"})
	relay4, relay6 := relayAddr(t, r, lo4), relayAddr(t, r, lo6)
	gw4 := newGateway(t, lo4, relay4)   // IPv4 tunnel, chA
	gw6 := newGateway(t, lo6, relay6)   // IPv6 tunnel, chA
	gwB := newGateway(t, lo4, relay4)   // chB: other group
	gwA2 := newGateway(t, lo4, relay4)  // chA2: same group, other source
	gwMLD := newGateway(t, lo6, relay6) // ch6 over MLDv2
	gwMLD.ipv6 = true
	for _, x := range []struct {
		g  *testGateway
		ch amt.Channel
	}{{gw4, chA}, {gw6, chA}, {gwB, chB}, {gwA2, chA2}, {gwMLD, ch6}} {
		x.g.request()
		x.g.joinAndWait(r, x.ch)
	}

	tests := []struct {
		name string
		ch   amt.Channel
		port uint16
		to   []*testGateway
	}{
		{"two families", chA, 5001, []*testGateway{gw4, gw6}},
		{"other port, same (S,G)", chA, 6000, []*testGateway{gw4, gw6}},
		{"same group other source", chA2, 5001, []*testGateway{gwA2}},
		{"other group", chB, 5001, []*testGateway{gwB}},
		{"ipv6 channel", ch6, 5001, []*testGateway{gwMLD}},
		{"nobody joined", amt.Channel{Source: src4b, Group: group4b}, 5001, nil},
	}
	all := []*testGateway{gw4, gw6, gwB, gwA2, gwMLD}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := r.Stats()
			inner := datagram(t, tt.ch, tt.port, i)
			if err := r.Inject(inner); err != nil {
				t.Fatal(err)
			}
			for _, g := range tt.to {
				if got := g.expectData(); !bytes.Equal(got, inner) {
					t.Errorf("gateway %v got a different datagram", g.addr())
				}
			}
			for _, g := range all {
				g.expectNothing(20 * time.Millisecond)
			}
			s := r.Stats()
			if got := s.PacketsOut - before.PacketsOut; got != uint64(len(tt.to)) {
				t.Errorf("PacketsOut grew by %d, want %d", got, len(tt.to))
			}
			if got, want := s.BytesOut-before.BytesOut, uint64(len(tt.to)*(len(inner)+amt.DataHeaderLen)); got != want {
				t.Errorf("BytesOut grew by %d, want %d", got, want)
			}
			if tt.to == nil && s.NoReceiver != before.NoReceiver+1 {
				t.Errorf("NoReceiver = %d, want %d", s.NoReceiver, before.NoReceiver+1)
			}
		})
	}

	t.Run("leave", func(t *testing.T) {
		gw4.update(amt.ChangeRecords(nil, []amt.Channel{chA}))
		waitFor(t, "leave", func() bool { return !hasChannels(r, gw4.addr(), chA) })
		inner := datagram(t, chA, 5001, 99)
		if err := r.Inject(inner); err != nil {
			t.Fatal(err)
		}
		gw6.expectData()
		gw4.expectNothing(30 * time.Millisecond)
		// Nothing is left to keep: the slot is released at once, not
		// after the membership interval.
		if hasTunnel(r, gw4.addr()) {
			t.Error("leaving the last channel kept the tunnel")
		}
	})

	if s := r.Stats(); s.Gateways != 4 || s.Channels != 4 {
		t.Errorf("stats: %d gateways %d channels, want 4 and 4", s.Gateways, s.Channels)
	}
}

func TestGatewaysInfo(t *testing.T) {
	r := startRelay(t, Options{Listen: ":0"})
	g := newGateway(t, lo4, relayAddr(t, r, lo4))
	g.request()
	before := time.Now()
	g.joinAndWait(r, chB, chA)
	gws := r.Gateways()
	if len(gws) != 1 {
		t.Fatalf("Gateways() = %+v", gws)
	}
	gi := gws[0]
	if gi.Addr != g.addr() || gi.Local != lo4 {
		t.Errorf("addr %v local %v, want %v and %v", gi.Addr, gi.Local, g.addr(), lo4)
	}
	if len(gi.Channels) != 2 || gi.Channels[0] != chA || gi.Channels[1] != chB {
		t.Errorf("channels %v, want sorted [%v %v]", gi.Channels, chA, chB)
	}
	if gi.LastUpdate.Before(before) || gi.Expires != gi.LastUpdate.Add(2*125*time.Second+10*time.Second) {
		t.Errorf("last update %v expires %v, want expiry after 260 s", gi.LastUpdate, gi.Expires)
	}
}

func TestExpiry(t *testing.T) {
	r := startRelay(t, fastOptions("127.0.0.1:0"))
	g := newGateway(t, lo4, relayAddr(t, r, lo4))
	g.request()
	g.joinAndWait(r, chA)
	joined := time.Now()
	waitFor(t, "expiry", func() bool { return !hasTunnel(r, g.addr()) })
	if d := time.Since(joined); d < 250*time.Millisecond {
		t.Errorf("expired after %v, before QRV×QI+QRI = 300 ms", d)
	}
	if s := r.Stats(); s.Expired != 1 || s.Channels != 0 {
		t.Errorf("stats after expiry: %+v", s)
	}
	if err := r.Inject(datagram(t, chA, 5001, 1)); err != nil {
		t.Fatal(err)
	}
	g.expectNothing(30 * time.Millisecond)
}

func TestRefresh(t *testing.T) {
	r := startRelay(t, fastOptions("127.0.0.1:0"))
	g := newGateway(t, lo4, relayAddr(t, r, lo4))
	g.request()
	g.joinAndWait(r, chA, chB)
	// Refresh chA only, with current-state records and the same MAC and
	// nonce (as VLC does), for well past the 300 ms expiry; chB times out
	// on its own while the tunnel and chA stay.
	for i := 0; i < 8; i++ {
		time.Sleep(100 * time.Millisecond)
		g.update(amt.CurrentStateRecords([]amt.Channel{chA}))
	}
	waitFor(t, "chB to expire", func() bool { return !hasChannels(r, g.addr(), chB) })
	if !hasChannels(r, g.addr(), chA) {
		t.Fatal("refreshed channel expired")
	}
	inner := datagram(t, chA, 5001, 1)
	if err := r.Inject(inner); err != nil {
		t.Fatal(err)
	}
	if got := g.expectData(); !bytes.Equal(got, inner) {
		t.Error("wrong data")
	}
	waitFor(t, "all updates", func() bool { return r.Stats().Updates == 9 })
	if s := r.Stats(); s.Expired != 0 || s.Drops != (Drops{}) {
		t.Errorf("stats: %+v", s)
	}
}

// TestSpoofedJoin: updates that do not carry the MAC and nonce of a query
// sent to their source address and port create nothing and get no data.
func TestSpoofedJoin(t *testing.T) {
	tests := []struct {
		name  string
		from  netip.Addr // attacker's address; invalid: the victim's own socket
		forge func(u *amt.MembershipUpdate)
	}{
		{"wrong MAC", netip.Addr{}, func(u *amt.MembershipUpdate) { u.MAC[5] ^= 1 }},
		{"wrong nonce", netip.Addr{}, func(u *amt.MembershipUpdate) { u.Nonce++ }},
		{"zero MAC", netip.Addr{}, func(u *amt.MembershipUpdate) { u.MAC = [6]byte{} }},
		{"victim's MAC from another port", lo4, func(*amt.MembershipUpdate) {}},
		{"victim's MAC from another address", netip.MustParseAddr("127.0.0.2"), func(*amt.MembershipUpdate) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, Options{Listen: ":0"})
			victim := newGateway(t, lo4, relayAddr(t, r, lo4))
			victim.request()
			u := victim.updateMsg(amt.ChangeRecords([]amt.Channel{chA}, nil))
			tt.forge(u)
			sender := victim
			if tt.from.IsValid() {
				sender = newGateway(t, tt.from, victim.relay)
			}
			sender.send(u)
			waitFor(t, "the drop", func() bool { return r.Stats().Drops.BadMAC == 1 })
			if s := r.Stats(); s.Gateways != 0 || s.Channels != 0 || s.Updates != 0 {
				t.Fatalf("spoofed update made state: %+v", s)
			}
			if err := r.Inject(datagram(t, chA, 5001, 1)); err != nil {
				t.Fatal(err)
			}
			victim.expectNothing(30 * time.Millisecond)
			sender.expectNothing(10 * time.Millisecond)
		})
	}
}

func TestTeardown(t *testing.T) {
	t.Run("after NAT rebinding", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0", SendGatewayAddr: true})
		g := newGateway(t, lo4, relayAddr(t, r, lo4))
		q := g.request()
		if q.Gateway != g.addr() {
			t.Fatalf("G fields %v, want %v", q.Gateway, g.addr())
		}
		g.joinAndWait(r, chA)
		old := &amt.Teardown{MAC: g.mac, Nonce: g.nonce, Gateway: q.Gateway}

		g.rebind() // the NAT gives the gateway a new port
		q = g.request()
		if q.Gateway == old.Gateway {
			t.Fatal("G fields did not change with the port")
		}
		g.joinAndWait(r, chA)
		if n := len(r.Gateways()); n != 2 {
			t.Fatalf("%d tunnels, want the old and the new one", n)
		}
		// A Teardown from the new address, with the old fields, ends the
		// old tunnel only.
		g.send(old)
		waitFor(t, "teardown", func() bool { return !hasTunnel(r, old.Gateway) })
		if !hasChannels(r, g.addr(), chA) {
			t.Fatal("teardown removed the new tunnel")
		}
		if err := r.Inject(datagram(t, chA, 5001, 1)); err != nil {
			t.Fatal(err)
		}
		g.expectData()
		g.expectNothing(20 * time.Millisecond) // one copy, not two
		if s := r.Stats(); s.Teardowns != 1 || s.Gateways != 1 {
			t.Errorf("stats: %+v", s)
		}
	})

	t.Run("port 0 and :: from the tunnel's address", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0"})
		g := newGateway(t, lo4, relayAddr(t, r, lo4))
		g.request()
		g.joinAndWait(r, chA)
		g.send(&amt.Teardown{MAC: g.mac, Nonce: g.nonce, Gateway: netip.AddrPortFrom(netip.IPv6Unspecified(), 0)})
		waitFor(t, "teardown", func() bool { return !hasTunnel(r, g.addr()) })
	})

	t.Run("bad MAC ignored", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0"})
		g := newGateway(t, lo4, relayAddr(t, r, lo4))
		g.request()
		g.joinAndWait(r, chA)
		attacker := newGateway(t, netip.MustParseAddr("127.0.0.3"), g.relay)
		for _, td := range []*amt.Teardown{
			{MAC: [6]byte{1, 2, 3, 4, 5, 6}, Nonce: g.nonce, Gateway: g.addr()},
			{MAC: g.mac, Nonce: g.nonce + 1, Gateway: g.addr()},
		} {
			attacker.send(td)
		}
		waitFor(t, "drops", func() bool { return r.Stats().Drops.BadMAC == 2 })
		if !hasChannels(r, g.addr(), chA) {
			t.Fatal("forged teardown ended the tunnel")
		}
	})
}

// TestNATRebindExpiry: without a Teardown the old tunnel expires while the
// new one is refreshed.
func TestNATRebindExpiry(t *testing.T) {
	r := startRelay(t, fastOptions("127.0.0.1:0"))
	g := newGateway(t, lo4, relayAddr(t, r, lo4))
	g.request()
	g.joinAndWait(r, chA)
	old := g.addr()
	g.rebind()
	g.request()
	g.joinAndWait(r, chA)
	for hasTunnel(r, old) {
		g.update(amt.CurrentStateRecords([]amt.Channel{chA}))
		time.Sleep(50 * time.Millisecond)
	}
	if !hasChannels(r, g.addr(), chA) {
		t.Fatal("new tunnel lost")
	}
}

func TestGatewayLimit(t *testing.T) {
	r := startRelay(t, Options{Listen: "127.0.0.1:0", MaxGateways: 2})
	relay := relayAddr(t, r, lo4)
	g1, g2, g3 := newGateway(t, lo4, relay), newGateway(t, lo4, relay), newGateway(t, lo4, relay)
	for _, g := range []*testGateway{g1, g2} {
		if q := g.request(); q.Limit {
			t.Fatal("L flag before the relay is full")
		}
		g.joinAndWait(r, chA)
	}
	if q := g3.request(); !q.Limit {
		t.Error("no L flag for a new gateway at MaxGateways")
	}
	g3.update(amt.ChangeRecords([]amt.Channel{chA}, nil))
	waitFor(t, "refusal", func() bool { return r.Stats().Drops.GatewayLimit == 1 })
	if hasTunnel(r, g3.addr()) {
		t.Fatal("tunnel beyond MaxGateways")
	}
	if q := g1.request(); q.Limit {
		t.Error("L flag sent to a gateway that has a tunnel")
	}
	g1.joinAndWait(r, chA) // an existing tunnel is still served
	g1.send(&amt.Teardown{MAC: g1.mac, Nonce: g1.nonce, Gateway: g1.addr()})
	waitFor(t, "teardown", func() bool { return !hasTunnel(r, g1.addr()) })
	if q := g3.request(); q.Limit {
		t.Error("L flag after a tunnel ended")
	}
	g3.joinAndWait(r, chA)
}

func TestChannelLimits(t *testing.T) {
	t.Run("per gateway", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0", MaxChannelsPerGateway: 3})
		g := newGateway(t, lo4, relayAddr(t, r, lo4))
		g.request()
		var chs []amt.Channel
		for i := 1; i <= 5; i++ {
			chs = append(chs, amt.Channel{Source: src4a, Group: netip.AddrFrom4([4]byte{232, 0, 0, byte(i)})})
		}
		g.update(amt.ChangeRecords(chs, nil))
		waitFor(t, "refusals", func() bool { return r.Stats().Drops.ChannelLimit == 2 })
		if gws := r.Gateways(); len(gws) != 1 || len(gws[0].Channels) != 3 {
			t.Fatalf("gateways: %+v", gws)
		}
		// Refreshing a joined channel is not a new join.
		g.update(amt.CurrentStateRecords(chs[:3]))
		waitFor(t, "refresh", func() bool { return r.Stats().Updates == 2 })
		if d := r.Stats().Drops.ChannelLimit; d != 2 {
			t.Errorf("ChannelLimit = %d after a refresh, want 2", d)
		}
	})
	t.Run("total", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0", MaxChannels: 2})
		relay := relayAddr(t, r, lo4)
		g1, g2 := newGateway(t, lo4, relay), newGateway(t, lo4, relay)
		g1.request()
		g1.joinAndWait(r, chA, chB)
		g2.request()
		g2.update(amt.ChangeRecords([]amt.Channel{chA, chA2}, nil))
		waitFor(t, "refusal", func() bool { return r.Stats().Drops.ChannelLimit == 1 })
		waitFor(t, "join", func() bool { return hasChannels(r, g2.addr(), chA) })
		if hasChannels(r, g2.addr(), chA2) || r.Stats().Channels != 2 {
			t.Fatal("channel beyond MaxChannels")
		}
	})
}

// TestRequestFlood: Requests never allocate state, and a source address is
// answered at most at its rate.
func TestRequestFlood(t *testing.T) {
	r := startRelay(t, Options{Listen: "127.0.0.1:0", RequestRate: 0.001, RequestBurst: 5})
	relay := relayAddr(t, r, lo4)
	var gws []*testGateway
	for i := 0; i < 20; i++ {
		g := newGateway(t, lo4, relay)
		g.send(&amt.Request{Nonce: uint32(i + 1)})
		gws = append(gws, g)
	}
	waitFor(t, "all requests", func() bool { return r.Stats().ControlIn == 20 })
	s := r.Stats()
	if s.Queries != 5 || s.Drops.RateLimited != 15 || s.Gateways != 0 {
		t.Errorf("stats: queries %d rate-limited %d gateways %d, want 5, 15, 0", s.Queries, s.Drops.RateLimited, s.Gateways)
	}
	// Another address (in another bucket of the hashed table) has its own
	// budget.
	otherAddr := netip.MustParseAddr("127.0.0.4")
	for r.limiter.Collide(otherAddr, lo4) {
		otherAddr = otherAddr.Next()
	}
	newGateway(t, otherAddr, relay).request()
}

func TestSecretRotation(t *testing.T) {
	r := startRelay(t, fastOptions("127.0.0.1:0"))
	relay := relayAddr(t, r, lo4)
	now := time.Now()

	g := newGateway(t, lo4, relay)
	g.request()
	if err := r.rotate(now); err != nil {
		t.Fatal(err)
	}
	g.joinAndWait(r, chA) // MAC under the previous secret: accepted

	late := newGateway(t, lo4, relay)
	late.request()
	for i := 0; i < 2; i++ {
		if err := r.rotate(now); err != nil {
			t.Fatal(err)
		}
	}
	late.update(amt.ChangeRecords([]amt.Channel{chA}, nil))
	waitFor(t, "refusal", func() bool { return r.Stats().Drops.BadMAC == 1 })
	if hasTunnel(r, late.addr()) {
		t.Fatal("MAC accepted two rotations later")
	}

	// g's MAC was made under a secret the relay no longer has, but its
	// tunnel is alive: like VLC, it keeps echoing it and stays served.
	n := r.Stats().Updates
	g.update(amt.CurrentStateRecords([]amt.Channel{chA}))
	waitFor(t, "refresh", func() bool { return r.Stats().Updates == n+1 })
	inner := datagram(t, chA, 5001, 1)
	if err := r.Inject(inner); err != nil {
		t.Fatal(err)
	}
	g.expectData()

	// Once the tunnel has expired, that MAC means nothing.
	waitFor(t, "expiry", func() bool { return !hasTunnel(r, g.addr()) })
	g.update(amt.CurrentStateRecords([]amt.Channel{chA}))
	waitFor(t, "refusal", func() bool { return r.Stats().Drops.BadMAC == 2 })
	if hasTunnel(r, g.addr()) {
		t.Fatal("stale MAC revived a tunnel")
	}
}

func TestSecretRotationTimer(t *testing.T) {
	o := fastOptions("127.0.0.1:0")
	o.SecretRotation, o.minRotation = 30*time.Millisecond, 10*time.Millisecond
	r := startRelay(t, o)
	first := r.keys.Load()
	waitFor(t, "two rotations", func() bool { return r.keys.Load().gen >= 2 })
	kr := r.keys.Load()
	if bytes.Equal(kr.cur, first.cur) || bytes.Equal(kr.cur, kr.prev) {
		t.Error("rotation did not change the secret")
	}
}

func TestCiscoMACQuirk(t *testing.T) {
	for _, quirk := range []bool{false, true} {
		r := startRelay(t, Options{Listen: "127.0.0.1:0", CiscoMACQuirk: quirk})
		g := newGateway(t, lo4, relayAddr(t, r, lo4))
		g.request()
		g.mac[4] ^= 0xff
		g.mac[5] ^= 0x55
		g.update(amt.ChangeRecords([]amt.Channel{chA}, nil))
		waitFor(t, "update", func() bool { s := r.Stats(); return s.Updates+s.Drops.BadMAC == 1 })
		if got := hasTunnel(r, g.addr()); got != quirk {
			t.Errorf("quirk %v: last two MAC bytes wrong accepted = %v", quirk, got)
		}
		g.mac[0] ^= 1 // a wrong leading byte is always refused
		g.nonce++
		g.update(amt.ChangeRecords([]amt.Channel{chB}, nil))
		waitFor(t, "update", func() bool { s := r.Stats(); return s.Updates+s.Drops.BadMAC == 2 })
		if hasChannels(r, g.addr(), chB) {
			t.Errorf("quirk %v: wrong first byte accepted", quirk)
		}
	}
}

// TestGatewaysInTheWild: what deployed gateways send is accepted.
func TestGatewaysInTheWild(t *testing.T) {
	r := startRelay(t, Options{Listen: "127.0.0.1:0"})
	relay := relayAddr(t, r, lo4)

	t.Run("VLC 9-byte Request", func(t *testing.T) {
		g := newGateway(t, lo4, relay)
		g.sendRaw([]byte{3, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0})
		_, m := g.recvType(amt.TypeMembershipQuery)
		if q := m.(*amt.MembershipQuery); q.Nonce != 0x12345678 {
			t.Errorf("nonce %#x", q.Nonce)
		}
	})
	t.Run("reserved bits set", func(t *testing.T) {
		g := newGateway(t, lo4, relay)
		g.sendRaw([]byte{3, 0xfe, 0xff, 0xff, 0, 0, 0, 9})
		g.recvType(amt.TypeMembershipQuery)
	})
	t.Run("report to the group, from 0.0.0.0, no Router Alert", func(t *testing.T) {
		g := newGateway(t, lo4, relay)
		g.request()
		body, err := amt.AppendIGMPReport(nil, amt.ChangeRecords([]amt.Channel{chB}, nil))
		if err != nil {
			t.Fatal(err)
		}
		pkt, err := amt.AppendIPv4(nil, amt.IPv4Header{TTL: 64, Protocol: amt.ProtoIGMP, Src: netip.IPv4Unspecified(), Dst: group4b}, len(body))
		if err != nil {
			t.Fatal(err)
		}
		g.send(&amt.MembershipUpdate{MAC: g.mac, Nonce: g.nonce, Report: append(pkt, body...)})
		waitFor(t, "join", func() bool { return hasChannels(r, g.addr(), chB) })
	})
}

// TestRecords checks how report records change a tunnel's channels.
func TestRecords(t *testing.T) {
	asm := netip.MustParseAddr("239.1.1.1")
	rec := func(typ amt.RecordType, g netip.Addr, srcs ...netip.Addr) amt.GroupRecord {
		return amt.GroupRecord{Type: typ, Group: g, Sources: srcs}
	}
	tests := []struct {
		name    string
		reports [][]amt.GroupRecord
		want    []amt.Channel
		notSSM  uint64
	}{
		{"allow", [][]amt.GroupRecord{{rec(amt.AllowNewSources, group4a, src4a, src4b)}}, []amt.Channel{chA, chA2}, 0},
		{"allow then block", [][]amt.GroupRecord{
			{rec(amt.AllowNewSources, group4a, src4a, src4b)},
			{rec(amt.BlockOldSources, group4a, src4b)},
		}, []amt.Channel{chA}, 0},
		{"is_in adds", [][]amt.GroupRecord{
			{rec(amt.AllowNewSources, group4a, src4a)},
			{rec(amt.ModeIsInclude, group4b, src4a)},
		}, []amt.Channel{chA, chB}, 0},
		{"to_in{} leaves the group only", [][]amt.GroupRecord{
			{rec(amt.AllowNewSources, group4a, src4a, src4b), rec(amt.AllowNewSources, group4b, src4a)},
			{rec(amt.ChangeToInclude, group4a)},
		}, []amt.Channel{chB}, 0},
		{"to_in(B) replaces the group's sources", [][]amt.GroupRecord{
			{rec(amt.AllowNewSources, group4a, src4a)},
			{rec(amt.ChangeToInclude, group4a, src4b)},
		}, []amt.Channel{chA2}, 0},
		{"to_in split over two records", [][]amt.GroupRecord{
			{rec(amt.AllowNewSources, group4b, src4a)},
			{rec(amt.ChangeToInclude, group4a, src4a), rec(amt.ChangeToInclude, group4a, src4b)},
		}, []amt.Channel{chA, chA2, chB}, 0},
		{"exclude{} on an SSM group means nothing", [][]amt.GroupRecord{
			{rec(amt.AllowNewSources, group4a, src4a)},
			{rec(amt.ModeIsExclude, group4a), rec(amt.ChangeToExclude, group4b)},
		}, []amt.Channel{chA}, 2},
		{"any-source join refused", [][]amt.GroupRecord{{rec(amt.ChangeToExclude, asm)}}, nil, 1},
		{"non-SSM group refused", [][]amt.GroupRecord{{rec(amt.AllowNewSources, asm, src4a)}}, nil, 1},
		{"block of what was never joined", [][]amt.GroupRecord{{rec(amt.BlockOldSources, group4a, src4a)}}, nil, 0},
		{"ipv6", [][]amt.GroupRecord{{rec(amt.AllowNewSources, group6a, src6a)}}, []amt.Channel{ch6}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(Options{Listen: "127.0.0.1:0", Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			gw := netip.MustParseAddrPort("203.0.113.7:40000")
			for i, recs := range tt.reports {
				u := authUpdate(t, r, gw, uint32(i+1), recs)
				r.handle(r.conns[0], u, nil, gw, lo4, 0, time.Now())
			}
			var got []amt.Channel
			if gws := r.Gateways(); len(gws) == 1 {
				got = gws[0].Channels
			}
			sortChannels(tt.want)
			if len(got) != len(tt.want) || (len(got) > 0 && !equalChannels(got, tt.want)) {
				t.Errorf("channels %v, want %v", got, tt.want)
			}
			if s := r.Stats(); s.Drops.NotSSM != tt.notSSM || s.Updates != uint64(len(tt.reports)) {
				t.Errorf("NotSSM %d (want %d), updates %d", s.Drops.NotSSM, tt.notSSM, s.Updates)
			}
			// The data path's index agrees with the table.
			idx := r.index.Load().m
			if len(idx) != len(tt.want) {
				t.Errorf("index has %d channels, want %d", len(idx), len(tt.want))
			}
			for _, ch := range tt.want {
				if e := idx[ch]; e == nil || len(e.groups) != 1 || len(e.groups[0].dests) != 1 {
					t.Errorf("index entry of %v: %+v", ch, e)
				}
			}
		})
	}
}

// authUpdate builds an Update from gw that authenticates with r's secret.
func authUpdate(t testing.TB, r *Relay, gw netip.AddrPort, nonce uint32, recs []amt.GroupRecord) []byte {
	t.Helper()
	src := netip.IPv4Unspecified()
	if len(recs) > 0 && recs[0].Group.Is6() {
		src = netip.MustParseAddr("fe80::2")
	}
	rep, err := amt.AppendReportPacket(nil, src, recs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := amt.MembershipUpdate{MAC: r.keys.Load().mac(gw, nonce), Nonce: nonce, Report: rep}.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func equalChannels(a, b []amt.Channel) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestInjectErrors(t *testing.T) {
	r, err := New(Options{Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	unicast, err := amt.AppendIPv4(nil, amt.IPv4Header{TTL: 1, Protocol: amt.ProtoUDP, Src: src4a, Dst: src4b}, 8)
	if err != nil {
		t.Fatal(err)
	}
	unicast = append(unicast, 0x13, 0x88, 0x13, 0x89, 0, 8, 0, 0)
	corrupt := datagram(t, chA, 5001, 1)
	corrupt[len(corrupt)-1] ^= 1
	tests := []struct {
		name  string
		inner []byte
		want  error
	}{
		{"empty", nil, ErrDatagram},
		{"garbage", []byte("not an IP packet"), ErrDatagram},
		{"unicast destination", unicast, ErrDatagram},
		{"bad UDP checksum", corrupt, ErrDatagram},
		{"too big", make([]byte, 70000), ErrTooBig},
	}
	for _, tt := range tests {
		if err := r.Inject(tt.inner); !errors.Is(err, tt.want) {
			t.Errorf("%s: Inject = %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := r.Inject(datagram(t, chA, 5001, 1)); err != nil {
		t.Errorf("valid datagram: %v", err)
	}
	r.Close()
	if err := r.Inject(datagram(t, chA, 5001, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"QQIC would not be literal", Options{QueryInterval: 128 * time.Second}},
		{"robustness 0 after default is fine, 8 is not", Options{Robustness: 8}},
		{"response interval above query interval", Options{QueryInterval: 10 * time.Second, QueryResponseInterval: 11 * time.Second}},
		{"secret rotation under 2 h", Options{SecretRotation: time.Hour}},
		{"negative limit", Options{MaxGateways: -1}},
		{"multicast advertise", Options{Advertise: group4a}},
		{"bad listen", Options{Listen: "2268"}},
	}
	for _, tt := range tests {
		tt.o.Logger = testLogger(t)
		if tt.o.Listen == "" {
			tt.o.Listen = "127.0.0.1:0"
		}
		r, err := New(tt.o)
		if !errors.Is(err, ErrOptions) {
			t.Errorf("%s: New = %v, want ErrOptions", tt.name, err)
		}
		if r != nil {
			r.Close()
		}
	}
	r, err := New(Options{Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o := r.opts
	if o.QueryInterval != 125*time.Second || o.Robustness != 2 || o.QueryResponseInterval != 10*time.Second ||
		o.SecretRotation != 2*time.Hour || r.gmi != 260*time.Second {
		t.Errorf("defaults: %+v gmi %v", o, r.gmi)
	}
}

func TestRunTwiceAndClose(t *testing.T) {
	r := startRelay(t, Options{Listen: "127.0.0.1:0"})
	waitFor(t, "running", r.running.Load)
	if err := r.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v", err)
	}
}

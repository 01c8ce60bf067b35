package amtrelay

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/goldenhex"

	"github.com/blockcast/beacon/shared/amt"
)

// fuzzRelay is a relay that is never Run: the fuzz targets call its
// message handler directly.
func fuzzRelay(f *testing.F, o Options) *Relay {
	o.Listen, o.Logger = "127.0.0.1:0", testLogger(f)
	// A Request per iteration from one address: keep the limiter out of
	// the way so the query path is exercised too.
	o.RequestRate, o.RequestBurst = 1e9, 1<<30
	r, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	return r
}

// seedMessages adds every golden message of this package and a set of
// gateway messages to f. Their MACs are not r's.
func seedMessages(f *testing.F, gw netip.AddrPort) {
	other := fuzzRelay(f, Options{})
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hex"))
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		b, err := goldenhex.Parse(raw)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, m := range []amt.Message{
		&amt.RelayDiscovery{Nonce: 1},
		&amt.Request{Nonce: 2},
		&amt.Request{Nonce: 3, IPv6: true},
		&amt.Teardown{MAC: [6]byte{1}, Nonce: 4, Gateway: gw},
	} {
		b, err := m.AppendTo(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(authUpdate(f, other, gw, 5, amt.ChangeRecords([]amt.Channel{chA, chB}, []amt.Channel{chA2})))
	f.Add(authUpdate(f, other, gw, 6, amt.CurrentStateRecords([]amt.Channel{ch6})))
	f.Add(append([]byte{6, 0}, datagram(f, chA, 5001, 1)...))
}

// FuzzHandle feeds arbitrary datagrams to the relay's message handler:
// no panic, a bounded reply, and no state, since nothing the fuzzer makes
// carries a valid MAC.
func FuzzHandle(f *testing.F) {
	r := fuzzRelay(f, Options{})
	gw := netip.MustParseAddrPort("203.0.113.7:40000")
	seedMessages(f, gw)
	out := make([]byte, 0, 256)
	f.Fuzz(func(t *testing.T, b []byte) {
		reply := r.handle(r.conns[0], b, out[:0], gw, lo4, 0, time.Now())
		if len(reply) > 12+76+18 { // MLDv2 query with G fields
			t.Fatalf("reply of %d bytes", len(reply))
		}
		if len(reply) > 0 {
			if _, err := (amt.Options{Strict: true}).Parse(reply); err != nil {
				t.Fatalf("relay sent an invalid reply: %v", err)
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.tab.tunnels) != 0 || len(r.tab.members) != 0 || len(r.index.Load().m) != 0 {
			t.Fatalf("unauthenticated input made state: %d tunnels", len(r.tab.tunnels))
		}
	})
}

// FuzzUpdate feeds arbitrary encapsulated reports in authenticated
// Updates: no panic, limits hold, only SSM channels, and the data path's
// index matches the table.
func FuzzUpdate(f *testing.F) {
	r := fuzzRelay(f, Options{MaxChannelsPerGateway: 8, MaxChannels: 12, MaxGateways: 4})
	for _, recs := range [][]amt.GroupRecord{
		amt.ChangeRecords([]amt.Channel{chA, chB}, []amt.Channel{chA2}),
		amt.CurrentStateRecords([]amt.Channel{chA, chA2}),
		amt.ChangeRecords([]amt.Channel{ch6}, nil),
		{{Type: amt.ChangeToInclude, Group: group4a}},
		{{Type: amt.ModeIsExclude, Group: netip.MustParseAddr("239.1.1.1")}},
	} {
		src := netip.IPv4Unspecified()
		if recs[0].Group.Is6() {
			src = netip.MustParseAddr("fe80::2")
		}
		rep, err := amt.AppendReportPacket(nil, src, recs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(0), rep)
	}
	f.Fuzz(func(t *testing.T, who uint8, report []byte) {
		// A few gateways, so that more than MaxGateways try.
		gw := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, who % 8}), 40000)
		u, err := amt.MembershipUpdate{MAC: r.keys.Load().mac(gw, 7), Nonce: 7, Report: report}.AppendTo(nil)
		if err != nil {
			return // not one IP packet: the codec refuses to encode it
		}
		r.handle(r.conns[0], u, nil, gw, lo4, 0, time.Now())

		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.tab.tunnels) > 4 || len(r.tab.members) > 12 {
			t.Fatalf("%d tunnels, %d channels: limits broken", len(r.tab.tunnels), len(r.tab.members))
		}
		idx := r.index.Load().m
		if len(idx) != len(r.tab.members) {
			t.Fatalf("index has %d channels, table %d", len(idx), len(r.tab.members))
		}
		for ch, m := range r.tab.members {
			if !amt.IsSSM(ch.Group) || ch.Source.IsMulticast() || len(m) == 0 {
				t.Fatalf("bad channel %v with %d members", ch, len(m))
			}
			n := 0
			for _, g := range idx[ch].groups {
				n += len(g.dests)
			}
			if n != len(m) {
				t.Fatalf("%v: index has %d gateways, table %d", ch, n, len(m))
			}
		}
		for _, tun := range r.tab.tunnels {
			if len(tun.chans) > 8 {
				t.Fatalf("tunnel with %d channels", len(tun.chans))
			}
		}
	})
}

// FuzzNative feeds arbitrary datagrams to the checks of natively received
// multicast and on to the relay: what they pass, the codec's parser
// accepts, and nothing panics.
func FuzzNative(f *testing.F) {
	r := fuzzRelay(f, Options{})
	// A gateway that never reads: its socket drops what overflows.
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sink.Close() })
	gw := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	for i, ch := range []amt.Channel{chA, ch6} {
		u := authUpdate(f, r, gw, uint32(i+1), amt.ChangeRecords([]amt.Channel{ch}, nil))
		r.handle(r.conns[0], u, nil, gw, lo4, 0, time.Now())
	}
	if r.Stats().Channels != 2 {
		f.Fatal("setup: no channels")
	}
	d4 := datagram(f, chA, 5001, 1)
	f.Add(d4, false)
	f.Add(datagram(f, ch6, 5001, 1)[40:], true)
	partial := append([]byte(nil), d4...)
	partial[26], partial[27] = byte(pseudoSum(src4a, group4a, len(d4)-20)>>8), byte(pseudoSum(src4a, group4a, len(d4)-20))
	f.Add(partial, false)
	var out []byte
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		pkt := b
		if v6 {
			var ok bool
			if pkt, ok = nativeIPv6(out[:0], src6a, group6a, 64, b); !ok {
				return
			}
			out = pkt
		} else if !nativeIPv4(b) {
			return
		}
		if _, err := amt.ParseInnerUDP(pkt); err != nil && v6 {
			t.Fatalf("rebuilt IPv6 datagram refused: %v", err)
		}
		r.forwardNative(pkt)
	})
}

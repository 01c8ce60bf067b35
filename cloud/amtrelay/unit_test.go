package amtrelay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
)

func TestFixPartialChecksum(t *testing.T) {
	good4 := datagram(t, chA, 5001, 1)
	good6 := datagram(t, ch6, 5001, 1)
	udp := func(inner []byte) []byte {
		if inner[0]>>4 == 4 {
			return append([]byte(nil), inner[20:]...)
		}
		return append([]byte(nil), inner[40:]...)
	}
	setSum := func(b []byte, v uint16) []byte { binary.BigEndian.PutUint16(b[6:], v); return b }
	tests := []struct {
		name     string
		src, dst netip.Addr
		udp      []byte
		ok       bool
	}{
		{"valid ipv4", src4a, group4a, udp(good4), true},
		{"valid ipv6", src6a, group6a, udp(good6), true},
		{"partial ipv4 (offload)", src4a, group4a, setSum(udp(good4), pseudoSum(src4a, group4a, len(udp(good4)))), true},
		{"partial ipv6 (offload)", src6a, group6a, setSum(udp(good6), pseudoSum(src6a, group6a, len(udp(good6)))), true},
		{"zero ipv4: no checksum", src4a, group4a, setSum(udp(good4), 0), true},
		{"zero ipv6: invalid", src6a, group6a, setSum(udp(good6), 0), false},
		{"corrupt", src4a, group4a, setSum(udp(good4), 0x1234), false},
		{"bad length", src4a, group4a, udp(good4)[:20], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.udp
			zero := binary.BigEndian.Uint16(b[6:]) == 0
			if got := fixPartialChecksum(tt.src, tt.dst, b); got != tt.ok {
				t.Fatalf("fixPartialChecksum = %v, want %v", got, tt.ok)
			}
			if !tt.ok || zero {
				return
			}
			// What it accepted, the codec's parser accepts.
			var ip []byte
			var err error
			if tt.src.Is4() {
				ip, err = amt.AppendIPv4(nil, amt.IPv4Header{TTL: 9, Protocol: amt.ProtoUDP, Src: tt.src, Dst: tt.dst}, len(b))
			} else {
				ip, err = amt.AppendIPv6(nil, amt.IPv6Header{NextHeader: amt.ProtoUDP, HopLimit: 9, Src: tt.src, Dst: tt.dst}, len(b))
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := amt.ParseInnerUDP(append(ip, b...)); err != nil {
				t.Errorf("repaired datagram refused: %v", err)
			}
		})
	}
}

func TestFanoutBatches(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		o := Options{Listen: ":0", batchSize: 2}
		r := startRelay(t, o)
		for _, c := range r.conns {
			c.noBatch.Store(fallback)
		}
		var gws []*testGateway
		for i := 0; i < 5; i++ {
			lo := lo4
			if i%2 == 1 {
				lo = lo6
			}
			g := newGateway(t, lo, relayAddr(t, r, lo))
			g.request()
			g.joinAndWait(r, chA)
			gws = append(gws, g)
		}
		if err := r.Inject(datagram(t, chA, 5001, 1)); err != nil {
			t.Fatal(err)
		}
		for _, g := range gws {
			g.expectData()
			g.expectNothing(10 * time.Millisecond)
		}
		if s := r.Stats(); s.PacketsOut != 5 || s.Drops.SendErrors != 0 {
			t.Errorf("fallback %v: stats %+v", fallback, s)
		}
	}
}

// TestInjectAllocs: the per-packet path allocates nothing.
func TestInjectAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	r := startRelay(t, Options{Listen: ":0"})
	for _, lo := range []netip.Addr{lo4, lo6, lo4} {
		g := newGateway(t, lo, relayAddr(t, r, lo))
		g.request()
		g.joinAndWait(r, chA)
	}
	inner := datagram(t, chA, 5001, 1)
	allocs := testing.AllocsPerRun(200, func() {
		if err := r.Inject(inner); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Inject allocates %v times per packet", allocs)
	}
}

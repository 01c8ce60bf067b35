package amt

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"testing"
)

// The vectors below are written out by hand from the RFC layouts (RFC 7450
// §5.1.x figures, RFC 3376 §4.1/§4.2, RFC 3810 §5.2, RFC 2113, RFC 768),
// with checksums computed separately (a short one's-complement sum, not this
// package). They pin the goldens in testdata/ to the RFCs rather than to
// whatever the encoder happens to produce.

var (
	handMAC   = [6]byte{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6}
	handRelay = netip.MustParseAddr("198.51.100.1")
	handGW4   = netip.MustParseAddrPort("203.0.113.7:40000")
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// handQuery4 is an IPv4 general query as a relay encapsulates it: 36 bytes.
var handQuery4 = cat(
	// IPv4 header, 24 bytes (RFC 791, RFC 3376 §4)
	[]byte{0x46},       // version 4, IHL 6 words (Router Alert option)
	[]byte{0xc0},       // TOS: precedence Internetwork Control
	[]byte{0x00, 0x24}, // total length 36
	[]byte{0x00, 0x00}, // identification
	[]byte{0x00, 0x00}, // flags/fragment offset
	[]byte{0x01},       // TTL 1
	[]byte{0x02},       // protocol IGMP
	[]byte{0x19, 0xde}, // header checksum
	[]byte{198, 51, 100, 1},
	[]byte{224, 0, 0, 1},           // all-systems
	[]byte{0x94, 0x04, 0x00, 0x00}, // Router Alert (RFC 2113)
	// IGMPv3 Membership Query, 12 bytes (RFC 3376 §4.1)
	[]byte{0x11},       // type
	[]byte{0x64},       // max resp code 100 = 10 s
	[]byte{0xec, 0x1e}, // checksum
	[]byte{0, 0, 0, 0}, // group: general query
	[]byte{0x02},       // Resv 0, S 0, QRV 2
	[]byte{0x7d},       // QQIC 125 s
	[]byte{0x00, 0x00}, // number of sources
)

func TestHandWritten(t *testing.T) {
	report4 := cat(
		// IPv4 header, 24 bytes
		[]byte{0x46, 0xc0, 0x00, 0x38}, // v4 IHL 6, TOS 0xc0, total 56
		[]byte{0, 0, 0, 0},             // id, flags
		[]byte{0x01, 0x02, 0x37, 0xe6}, // TTL 1, IGMP, checksum
		[]byte{10, 1, 2, 3},            // source: the gateway
		[]byte{224, 0, 0, 22},          // IGMPv3-capable routers
		[]byte{0x94, 0x04, 0x00, 0x00}, // Router Alert
		// IGMPv3 report (RFC 3376 §4.2)
		[]byte{0x22, 0x00, 0xa3, 0x69}, // type 0x22, reserved, checksum
		[]byte{0x00, 0x00, 0x00, 0x02}, // reserved, 2 group records
		[]byte{0x05, 0x00, 0x00, 0x01}, // ALLOW_NEW_SOURCES, aux 0, 1 source
		[]byte{232, 1, 2, 3},           // group
		[]byte{198, 51, 100, 9},        // source
		[]byte{0x06, 0x00, 0x00, 0x01}, // BLOCK_OLD_SOURCES, aux 0, 1 source
		[]byte{232, 9, 9, 9},
		[]byte{198, 51, 100, 9},
	)
	mld := cat(
		// IPv6 header (RFC 8200)
		[]byte{0x60, 0x00, 0x00, 0x00}, // version 6, class 0, flow 0
		[]byte{0x00, 0x34},             // payload length 52 = 8 HBH + 44 MLD
		[]byte{0x00},                   // next header: Hop-by-Hop
		[]byte{0x01},                   // hop limit 1
		ip6b("fe80::2"),
		ip6b("ff02::16"),               // all MLDv2-capable routers
		[]byte{0x3a, 0x00},             // HBH: next ICMPv6, length 8 bytes
		[]byte{0x05, 0x02, 0x00, 0x00}, // Router Alert, value 0 = MLD (RFC 2711)
		[]byte{0x01, 0x00},             // PadN
		// MLDv2 report (RFC 3810 §5.2)
		[]byte{0x8f, 0x00, 0xc4, 0xf8}, // type 143, reserved, checksum
		[]byte{0x00, 0x00, 0x00, 0x01}, // reserved, 1 record
		[]byte{0x01, 0x00, 0x00, 0x01}, // MODE_IS_INCLUDE, aux 0, 1 source
		ip6b("ff3e::8000:1"),
		ip6b("2001:db8::9"),
	)
	inner4 := cat(
		[]byte{0x45, 0x00, 0x00, 0x1f}, // v4 IHL 5, TOS 0, total 31
		[]byte{0x00, 0x00, 0x40, 0x00}, // id 0, DF
		[]byte{0x10, 0x11, 0x56, 0x8d}, // TTL 16, UDP, checksum
		[]byte{198, 51, 100, 9},
		[]byte{232, 1, 2, 3},
		[]byte{0x13, 0x88, 0x13, 0x89}, // ports 5000 -> 5001
		[]byte{0x00, 0x0b, 0x3b, 0x1c}, // UDP length 11, checksum
		[]byte("hi!"),
	)

	tests := []struct {
		name  string
		build func(dst []byte) ([]byte, error)
		want  []byte
	}{
		{"relay discovery", RelayDiscovery{Nonce: 0x01020304}.AppendTo, cat(
			[]byte{0x01},       // V=0, type 1
			[]byte{0, 0, 0},    // reserved
			[]byte{1, 2, 3, 4}, // discovery nonce
		)},
		{"relay advertisement v4", RelayAdvertisement{Nonce: 0x01020304, Relay: handRelay}.AppendTo, cat(
			[]byte{0x02, 0, 0, 0},   // V=0, type 2, reserved
			[]byte{1, 2, 3, 4},      // nonce echoed
			[]byte{198, 51, 100, 1}, // relay address, 4 bytes
		)},
		{"relay advertisement v6", RelayAdvertisement{Nonce: 7, Relay: netip.MustParseAddr("2001:db8::1")}.AppendTo, cat(
			[]byte{0x02, 0, 0, 0},
			[]byte{0, 0, 0, 7},
			ip6b("2001:db8::1"), // 16 bytes: 24 in all
		)},
		{"request P=0", Request{Nonce: 0xdeadbeef}.AppendTo, cat(
			[]byte{0x03}, // type 3
			[]byte{0x00}, // reserved (7 bits), P=0: IGMPv3 wanted
			[]byte{0, 0}, // reserved
			[]byte{0xde, 0xad, 0xbe, 0xef},
		)},
		{"request P=1", Request{Nonce: 0xdeadbeef, IPv6: true}.AppendTo, cat(
			[]byte{0x03, 0x01, 0, 0}, // P is the lowest bit of byte 1
			[]byte{0xde, 0xad, 0xbe, 0xef},
		)},
		{"membership query v4 (48 bytes, as VLC expects)", MembershipQuery{MAC: handMAC, Nonce: 0xdeadbeef, Query: handQuery4}.AppendTo, cat(
			[]byte{0x04}, // type 4
			[]byte{0x00}, // reserved (6 bits), L=0, G=0
			handMAC[:],   // response MAC, 48 bits
			[]byte{0xde, 0xad, 0xbe, 0xef},
			handQuery4,
		)},
		{"membership query v4 with L and G", MembershipQuery{Limit: true, MAC: handMAC, Nonce: 0xdeadbeef, Query: handQuery4, Gateway: handGW4}.AppendTo, cat(
			[]byte{0x04},
			[]byte{0x03}, // L (0x02) and G (0x01)
			handMAC[:],
			[]byte{0xde, 0xad, 0xbe, 0xef},
			handQuery4,
			[]byte{0x9c, 0x40},     // gateway port 40000
			make([]byte, 12),       // IPv4-compatible: 96 zero bits
			[]byte{203, 0, 113, 7}, // then the IPv4 address
		)},
		{"igmpv3 report packet", func(dst []byte) ([]byte, error) {
			return AppendReportPacket(dst, netip.MustParseAddr("10.1.2.3"), ChangeRecords(
				[]Channel{{Source: netip.MustParseAddr("198.51.100.9"), Group: netip.MustParseAddr("232.1.2.3")}},
				[]Channel{{Source: netip.MustParseAddr("198.51.100.9"), Group: netip.MustParseAddr("232.9.9.9")}}))
		}, report4},
		{"membership update v4", MembershipUpdate{MAC: handMAC, Nonce: 0xdeadbeef, Report: report4}.AppendTo, cat(
			[]byte{0x05, 0x00}, // type 5, reserved
			handMAC[:],         // MAC echoed
			[]byte{0xde, 0xad, 0xbe, 0xef},
			report4,
		)},
		{"mldv2 report packet", func(dst []byte) ([]byte, error) {
			return AppendReportPacket(dst, netip.MustParseAddr("fe80::2"), CurrentStateRecords(
				[]Channel{{Source: netip.MustParseAddr("2001:db8::9"), Group: netip.MustParseAddr("ff3e::8000:1")}}))
		}, mld},
		{"inner udp v4", func(dst []byte) ([]byte, error) {
			return AppendInnerUDP(dst, Datagram{
				Src: netip.MustParseAddr("198.51.100.9"), Dst: netip.MustParseAddr("232.1.2.3"),
				SrcPort: 5000, DstPort: 5001, TTL: 16, Payload: []byte("hi!"),
			})
		}, inner4},
		{"multicast data", func(dst []byte) ([]byte, error) { return AppendData(dst, inner4), nil }, cat(
			[]byte{0x06, 0x00}, // type 6, reserved
			inner4,             // the whole datagram
		)},
		{"teardown v4", Teardown{MAC: handMAC, Nonce: 0xdeadbeef, Gateway: handGW4}.AppendTo, cat(
			[]byte{0x07, 0x00}, // type 7, reserved
			handMAC[:],
			[]byte{0xde, 0xad, 0xbe, 0xef},
			[]byte{0x9c, 0x40}, // port
			make([]byte, 12),   // IPv4-compatible IPv6
			[]byte{203, 0, 113, 7},
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Append after existing bytes, as callers reusing a buffer do.
			prefix := []byte("prefix")
			got, err := tt.build(prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("clobbered the bytes before dst's end: %q", got)
			}
			got = got[len(prefix):]
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got\n%s\nwant\n%s", hex.Dump(got), hex.Dump(tt.want))
			}
		})
	}
}

// TestHandWrittenDecode reads the hand-written vectors back.
func TestHandWrittenDecode(t *testing.T) {
	qp, err := ParseQueryPacket(handQuery4)
	if err != nil {
		t.Fatal(err)
	}
	if qp.Src != handRelay || qp.Dst != allSystems4 || qp.HopLimit != 1 || !qp.RouterAlert {
		t.Errorf("envelope = %+v", qp.Envelope)
	}
	if q := qp.Query; q.MaxResponse().Seconds() != 10 || q.QueryInterval().Seconds() != 125 || q.QRV != 2 || !q.Group.IsUnspecified() {
		t.Errorf("query = %+v", q)
	}
	if _, err := (Options{Strict: true}).ParseQueryPacket(handQuery4); err != nil {
		t.Errorf("strict: %v", err)
	}

	msg := cat([]byte{0x04, 0x03}, handMAC[:], []byte{0xde, 0xad, 0xbe, 0xef}, handQuery4,
		[]byte{0x9c, 0x40}, make([]byte, 12), []byte{203, 0, 113, 7})
	m, err := Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	q, ok := m.(*MembershipQuery)
	if !ok {
		t.Fatalf("parsed %T", m)
	}
	if !q.Limit || q.MAC != handMAC || q.Nonce != 0xdeadbeef || q.Gateway != handGW4 || !bytes.Equal(q.Query, handQuery4) {
		t.Errorf("query = %+v", q)
	}
}

func ip6b(s string) []byte {
	a := netip.MustParseAddr(s).As16()
	return a[:]
}

package amt

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

func encode(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := m.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edit returns a copy of b changed by f.
func edit(b []byte, f func(b []byte) []byte) []byte {
	return f(append([]byte(nil), b...))
}

// fixIPv4 recomputes the IPv4 header checksum at b[off:] after an edit.
func fixIPv4(b []byte, off int) []byte {
	hlen := int(b[off]&0x0f) * 4
	b[off+10], b[off+11] = 0, 0
	binary.BigEndian.PutUint16(b[off+10:], checksum(b[off:off+hlen]))
	return b
}

func TestParseRefuses(t *testing.T) {
	strict, lenient := Options{Strict: true}, Options{}
	disc := encode(t, &RelayDiscovery{Nonce: 1})
	adv4 := encode(t, &RelayAdvertisement{Nonce: 1, Relay: fxRelay4})
	req := encode(t, &Request{Nonce: 1})
	var query4, update4, data4, teardown []byte
	for _, fx := range fixtures(t) {
		switch fx.name {
		case "membership_query_v4":
			query4 = encode(t, fx.msg)
		case "membership_update_v4":
			update4 = encode(t, fx.msg)
		case "multicast_data_v4":
			data4 = encode(t, fx.msg)
		case "teardown_v4":
			teardown = encode(t, fx.msg)
		}
	}
	queryG := append(append([]byte(nil), query4...), make([]byte, gatewayFieldsLen)...)
	queryG[1] |= queryFlagG

	tests := []struct {
		name string
		in   []byte
		opt  Options
		want error // nil: accepted
	}{
		{"empty", nil, lenient, ErrShort},
		{"version 1", edit(disc, func(b []byte) []byte { b[0] = 0x11; return b }), lenient, ErrVersion},
		{"version 15", edit(disc, func(b []byte) []byte { b[0] = 0xf1; return b }), lenient, ErrVersion},
		{"type 0", edit(disc, func(b []byte) []byte { b[0] = 0; return b }), lenient, ErrType},
		{"type 8", edit(disc, func(b []byte) []byte { b[0] = 8; return b }), lenient, ErrType},
		{"type 15", edit(disc, func(b []byte) []byte { b[0] = 15; return b }), lenient, ErrType},

		{"discovery short", disc[:7], lenient, ErrShort},
		{"discovery long strict", append(disc, 0), strict, ErrLength},
		{"discovery long lenient", append(disc, 0), lenient, nil},
		{"discovery reserved strict", edit(disc, func(b []byte) []byte { b[2] = 1; return b }), strict, ErrReserved},
		{"discovery reserved lenient", edit(disc, func(b []byte) []byte { b[2] = 1; return b }), lenient, nil},

		{"advertisement short", adv4[:11], lenient, ErrShort},
		{"advertisement 5-byte address", append(adv4, 0), lenient, ErrLength},
		{"advertisement 12-byte address", append(adv4, make([]byte, 8)...), lenient, ErrLength},
		{"advertisement 17-byte address", append(adv4, make([]byte, 13)...), lenient, ErrLength},
		{"advertisement unspecified relay", edit(adv4, func(b []byte) []byte { copy(b[8:], []byte{0, 0, 0, 0}); return b }), lenient, ErrAddress},
		{"advertisement multicast relay", edit(adv4, func(b []byte) []byte { b[8] = 239; return b }), lenient, ErrAddress},
		{"advertisement reserved strict", edit(adv4, func(b []byte) []byte { b[1] = 0x80; return b }), strict, ErrReserved},

		{"request short", req[:7], lenient, ErrShort},
		{"request 9 bytes (VLC) lenient", append(req, 0), lenient, nil},
		{"request 9 bytes strict", append(req, 0), strict, ErrLength},
		{"request reserved bit strict", edit(req, func(b []byte) []byte { b[1] = 0x80; return b }), strict, ErrReserved},
		{"request reserved bit lenient", edit(req, func(b []byte) []byte { b[1] = 0x80; return b }), lenient, nil},
		{"request reserved word strict", edit(req, func(b []byte) []byte { b[3] = 1; return b }), strict, ErrReserved},

		{"query short", query4[:11], lenient, ErrShort},
		{"query without packet", query4[:12], lenient, ErrShort},
		{"query reserved strict", edit(query4, func(b []byte) []byte { b[1] = 0x04; return b }), strict, ErrReserved},
		{"query reserved lenient", edit(query4, func(b []byte) []byte { b[1] = 0x04; return b }), lenient, nil},
		{"query G set, tail missing", edit(query4, func(b []byte) []byte { b[1] |= queryFlagG; return b }), lenient, ErrShort},
		{"query G set, too short for tail", edit(query4[:20], func(b []byte) []byte { b[1] |= queryFlagG; return b }), lenient, ErrShort},
		{"query G set, tail present", queryG, strict, nil},
		{"query G clear, tail present", edit(queryG, func(b []byte) []byte { b[1] &^= queryFlagG; return b }), lenient, ErrLength},
		{"query truncated packet", query4[:len(query4)-1], lenient, ErrLength},
		{"query packet with trailing byte", append(query4, 0), lenient, ErrLength},
		{"query packet IP version 5", edit(query4, func(b []byte) []byte { b[12] = 0x56; return b }), lenient, ErrVersion},
		{"query packet IPv4 header cut", query4[:12+19], lenient, ErrShort},

		{"update short", update4[:11], lenient, ErrShort},
		{"update without packet", update4[:12], lenient, ErrShort},
		{"update reserved strict", edit(update4, func(b []byte) []byte { b[1] = 1; return b }), strict, ErrReserved},
		{"update reserved lenient", edit(update4, func(b []byte) []byte { b[1] = 1; return b }), lenient, nil},
		{"update truncated packet", update4[:len(update4)-4], lenient, ErrLength},

		{"data short", data4[:1], lenient, ErrShort},
		{"data without packet", data4[:2], lenient, ErrShort},
		{"data reserved strict", edit(data4, func(b []byte) []byte { b[1] = 1; return b }), strict, ErrReserved},
		{"data reserved lenient", edit(data4, func(b []byte) []byte { b[1] = 1; return b }), lenient, nil},
		{"data truncated", data4[:len(data4)-1], lenient, ErrLength},
		{"data padded", append(data4, 0), lenient, ErrLength},

		{"teardown short", teardown[:29], lenient, ErrShort},
		{"teardown long strict", append(teardown, 0), strict, ErrLength},
		{"teardown long lenient", append(teardown, 0), lenient, nil},
		{"teardown reserved strict", edit(teardown, func(b []byte) []byte { b[1] = 0xff; return b }), strict, ErrReserved},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.opt.Parse(tt.in)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %+v, %v; want %v", m, err, tt.want)
			}
			if m != nil {
				t.Fatalf("returned %+v with the error", m)
			}
		})
	}
}

func TestParseDataHeader(t *testing.T) {
	data := encode(t, fixtures(t)[13].msg)
	inner, err := ParseDataHeader(data)
	if err != nil || &inner[0] != &data[2] {
		t.Fatalf("ParseDataHeader = %v; want the bytes after the header, not a copy", err)
	}
	if _, err := ParseDataHeader(encode(t, &Request{Nonce: 1})); !errors.Is(err, ErrType) {
		t.Errorf("on a Request: %v, want ErrType", err)
	}
	if _, err := ParseDataHeader([]byte{0x16, 0}); !errors.Is(err, ErrVersion) {
		t.Errorf("version 1: %v, want ErrVersion", err)
	}
	if _, err := ParseDataHeader([]byte{0x0e, 0}); !errors.Is(err, ErrType) {
		t.Errorf("type 14: %v, want ErrType", err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	query4, _ := AppendQueryPacket(nil, fxRelay4, Query{})
	tests := []struct {
		name string
		m    Message
		want error
	}{
		{"advertisement without relay", &RelayAdvertisement{}, ErrAddress},
		{"advertisement multicast relay", &RelayAdvertisement{Relay: fxGroup4}, ErrAddress},
		{"advertisement unspecified relay", &RelayAdvertisement{Relay: netip.IPv6Unspecified()}, ErrAddress},
		{"query without packet", &MembershipQuery{}, ErrShort},
		{"query with cut packet", &MembershipQuery{Query: query4[:30]}, ErrLength},
		{"query with non-IP packet", &MembershipQuery{Query: make([]byte, 40)}, ErrVersion},
		{"update without packet", &MembershipUpdate{}, ErrShort},
		{"data without packet", &MulticastData{}, ErrShort},
		{"teardown without gateway", &Teardown{}, ErrAddress},
	}
	for _, tt := range tests {
		prefix := []byte{9, 9}
		b, err := tt.m.AppendTo(prefix)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if len(b) != len(prefix) {
			t.Errorf("%s: appended %x despite the error", tt.name, b[len(prefix):])
		}
	}

	for name, err := range map[string]error{
		"igmp query with IPv6 group": second(AppendIGMPQuery(nil, Query{Group: fxGroup6})),
		"igmp query max resp > 255":  second(AppendIGMPQuery(nil, Query{MaxRespCode: 256})),
		"igmp query QRV 8":           second(AppendIGMPQuery(nil, Query{QRV: 8})),
		"igmp query IPv6 source":     second(AppendIGMPQuery(nil, Query{Sources: []netip.Addr{fxSrc6}})),
		"mld query IPv4 group":       second(AppendMLDQuery(nil, fxLL6, allNodes6, Query{Group: fxGroup4})),
		"mld query IPv4 pseudo":      second(AppendMLDQuery(nil, fxRelay4, allNodes6, Query{})),
		"igmp report IPv6 group":     second(AppendIGMPReport(nil, []GroupRecord{{Type: 1, Group: fxGroup6}})),
		"mld report IPv4 source":     second(AppendMLDReport(nil, fxLL6, mldv2Routers, []GroupRecord{{Type: 1, Group: fxGroup6, Sources: []netip.Addr{fxSrc4}}})),
		"query packet invalid src":   second(AppendQueryPacket(nil, netip.Addr{}, Query{})),
		"report packet invalid src":  second(AppendReportPacket(nil, netip.Addr{}, nil)),
		"ipv4 header IPv6 addresses": second(AppendIPv4(nil, IPv4Header{Src: fxSrc6, Dst: fxGroup6}, 0)),
		"ipv6 header IPv4 addresses": second(AppendIPv6(nil, IPv6Header{Src: fxSrc4, Dst: fxGroup4}, 0)),
		"inner udp unicast dst":      second(AppendInnerUDP(nil, Datagram{Src: fxSrc4, Dst: fxRelay4})),
		"inner udp multicast src":    second(AppendInnerUDP(nil, Datagram{Src: fxGroup4, Dst: fxGroup4})),
		"inner udp mixed families":   second(AppendInnerUDP(nil, Datagram{Src: fxSrc6, Dst: fxGroup4})),
	} {
		if !errors.Is(err, ErrAddress) && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrAddress or ErrMalformed", name, err)
		}
	}
	big := make([]byte, 0xffff)
	if _, err := AppendInnerUDP(nil, Datagram{Src: fxSrc4, Dst: fxGroup4, Payload: big}); !errors.Is(err, ErrLength) {
		t.Errorf("oversized IPv4 datagram: %v, want ErrLength", err)
	}
	if _, err := AppendInnerUDP(nil, Datagram{Src: fxSrc6, Dst: fxGroup6, Payload: big}); !errors.Is(err, ErrLength) {
		t.Errorf("oversized IPv6 datagram: %v, want ErrLength", err)
	}
}

func second[T any](_ T, err error) error { return err }

func TestInnerRefuses(t *testing.T) {
	d4, err := AppendInnerUDP(nil, Datagram{Src: fxSrc4, Dst: fxGroup4, SrcPort: 1, DstPort: 2, Payload: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	d6, err := AppendInnerUDP(nil, Datagram{Src: fxSrc6, Dst: fxGroup6, SrcPort: 1, DstPort: 2, Payload: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	// An IPv6 datagram with a Destination Options header before UDP.
	d6opts := append(append(append([]byte(nil), d6[:40]...), ProtoUDP, 0, ipv6OptPadN, 4, 0, 0, 0, 0), d6[40:]...)
	d6opts[6] = ipv6DestOpts
	binary.BigEndian.PutUint16(d6opts[4:], uint16(len(d6opts)-40))

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"v4 ok", d4, nil},
		{"v6 ok", d6, nil},
		{"v6 destination options", d6opts, nil},
		{"v4 zero UDP checksum", edit(d4, func(b []byte) []byte { b[26], b[27] = 0, 0; return b }), nil},
		{"empty", nil, ErrShort},
		{"v4 header short", d4[:19], ErrShort},
		{"v4 bad header checksum", edit(d4, func(b []byte) []byte { b[10] ^= 1; return b }), ErrChecksum},
		{"v4 IHL 4", fixIPv4(edit(d4, func(b []byte) []byte { b[0] = 0x44; return b }), 0), ErrMalformed},
		{"v4 IHL beyond packet", edit(d4[:20], func(b []byte) []byte { b[0] = 0x4f; return b }), ErrShort},
		{"v4 total length beyond packet", fixIPv4(edit(d4, func(b []byte) []byte { b[3]++; return b }), 0), ErrShort},
		{"v4 total length below header", fixIPv4(edit(d4, func(b []byte) []byte { b[2], b[3] = 0, 10; return b }), 0), ErrMalformed},
		{"v4 trailing bytes", append(d4, 0), ErrLength},
		{"v4 more fragments", fixIPv4(edit(d4, func(b []byte) []byte { b[6] |= 0x20; return b }), 0), ErrFragment},
		{"v4 fragment offset", fixIPv4(edit(d4, func(b []byte) []byte { b[7] = 1; return b }), 0), ErrFragment},
		{"v4 TCP", fixIPv4(edit(d4, func(b []byte) []byte { b[9] = 6; return b }), 0), ErrProtocol},
		{"v4 unicast destination", fixIPv4(edit(d4, func(b []byte) []byte { b[16] = 10; return b }), 0), ErrAddress},
		{"v4 bad UDP checksum", edit(d4, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum},
		{"v4 UDP length", edit(d4, func(b []byte) []byte { b[25]--; return b }), ErrLength},
		{"v4 UDP header cut", fixIPv4(edit(d4[:27], func(b []byte) []byte { b[3] = 27; return b }), 0), ErrShort},
		{"version 5", edit(d4, func(b []byte) []byte { b[0] = 0x55; return b }), ErrVersion},
		{"v6 header short", d6[:39], ErrShort},
		{"v6 payload length beyond packet", edit(d6, func(b []byte) []byte { b[5]++; return b }), ErrShort},
		{"v6 trailing bytes", append(d6, 0), ErrLength},
		{"v6 zero UDP checksum", edit(d6, func(b []byte) []byte { b[46], b[47] = 0, 0; return b }), ErrChecksum},
		{"v6 bad UDP checksum", edit(d6, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrChecksum},
		{"v6 fragment header", edit(d6opts, func(b []byte) []byte { b[6] = ipv6Fragment; return b }), ErrFragment},
		{"v6 misplaced hop-by-hop", edit(d6opts, func(b []byte) []byte { b[40] = ipv6HopByHop; return b }), ErrMalformed},
		{"v6 option overrun", edit(d6opts, func(b []byte) []byte { b[43] = 5; return b }), ErrMalformed},
		{"v6 extension header overrun", edit(d6opts, func(b []byte) []byte { b[41] = 200; return b }), ErrShort},
		{"v6 IPv4-mapped source", edit(d6, func(b []byte) []byte {
			copy(b[8:24], netip.AddrFrom16(fxSrc4.As16()).AsSlice())
			return b
		}), ErrAddress},
		{"v6 unicast destination", edit(d6, func(b []byte) []byte { b[24] = 0x20; return b }), ErrAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseInnerUDP(tt.in)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseInnerUDP = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMembershipRefuses(t *testing.T) {
	q4, _ := AppendQueryPacket(nil, fxRelay4, Query{})
	q6, _ := AppendQueryPacket(nil, fxLL6, Query{})
	r4, _ := AppendReportPacket(nil, fxSrc4, CurrentStateRecords([]Channel{{fxSrc4, fxGroup4}}))
	r6, _ := AppendReportPacket(nil, fxLL6, CurrentStateRecords([]Channel{{fxSrc6, fxGroup6}}))
	const igmp = 24 // IGMP starts after the 24-byte IPv4 header
	const mld = 48  // MLD starts after IPv6 + hop-by-hop
	// A v1 query: an 8-byte IGMP message.
	v1 := append(append([]byte(nil), q4[:igmp]...), 0x11, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(v1[igmp+2:], checksum(v1[igmp:]))
	v1[3] = byte(len(v1))
	fixIPv4(v1, 0)

	// Edits to the IGMP body must restore its checksum to reach the field
	// under test.
	fixIGMP := func(b []byte) []byte {
		b[igmp+2], b[igmp+3] = 0, 0
		binary.BigEndian.PutUint16(b[igmp+2:], checksum(b[igmp:]))
		return b
	}
	fixMLD := func(b []byte) []byte {
		b[mld+2], b[mld+3] = 0, 0
		src, dst := netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		binary.BigEndian.PutUint16(b[mld+2:], upperChecksum(src, dst, ProtoICMPv6, b[mld:]))
		return b
	}

	type parser func([]byte) error
	query := func(b []byte) error { _, err := ParseQueryPacket(b); return err }
	report := func(b []byte) error { _, err := ParseReportPacket(b); return err }
	tests := []struct {
		name  string
		parse parser
		in    []byte
		want  error
	}{
		{"igmp query ok", query, q4, nil},
		{"mld query ok", query, q6, nil},
		{"igmp report ok", report, r4, nil},
		{"mld report ok", report, r6, nil},
		{"empty", query, nil, ErrShort},
		{"version 5", query, edit(q4, func(b []byte) []byte { b[0] = 0x56; return b }), ErrVersion},
		{"igmp query bad checksum", query, edit(q4, func(b []byte) []byte { b[igmp+9]++; return b }), ErrChecksum},
		{"igmp query wrong type", query, fixIGMP(edit(q4, func(b []byte) []byte { b[igmp] = 0x22; return b })), ErrType},
		{"igmp v1/v2 query", query, v1, ErrShort},
		{"igmp query sources overrun", query, fixIGMP(edit(q4, func(b []byte) []byte { b[igmp+11] = 1; return b })), ErrShort},
		{"igmp report as query", query, r4, ErrType},
		{"igmp not IGMP", query, fixIPv4(edit(q4, func(b []byte) []byte { b[9] = ProtoUDP; return b }), 0), ErrProtocol},
		{"igmp IP header checksum", query, edit(q4, func(b []byte) []byte { b[8] = 2; return b }), ErrChecksum},
		{"igmp option overrun", query, fixIPv4(edit(q4, func(b []byte) []byte { b[21] = 9; return b }), 0), ErrMalformed},
		{"igmp option length 1", query, fixIPv4(edit(q4, func(b []byte) []byte { b[21] = 1; return b }), 0), ErrMalformed},
		{"igmp report bad checksum", report, edit(r4, func(b []byte) []byte { b[len(b)-1]++; return b }), ErrChecksum},
		{"igmp report records overrun", report, fixIGMP(edit(r4, func(b []byte) []byte { b[igmp+7] = 2; return b })), ErrShort},
		{"igmp report sources overrun", report, fixIGMP(edit(r4, func(b []byte) []byte { b[igmp+11] = 2; return b })), ErrShort},
		{"igmp report aux overrun", report, fixIGMP(edit(r4, func(b []byte) []byte { b[igmp+9] = 1; return b })), ErrShort},
		{"igmp report short", report, fixIPv4(edit(r4[:igmp+7], func(b []byte) []byte { b[3] = igmp + 7; return b }), 0), ErrShort},
		{"mld query bad checksum", query, edit(q6, func(b []byte) []byte { b[mld+25]++; return b }), ErrChecksum},
		{"mld query pseudo-header covers dst", query, edit(q6, func(b []byte) []byte { b[39] = 2; return b }), ErrChecksum},
		{"mld query wrong type", query, fixMLD(edit(q6, func(b []byte) []byte { b[mld] = 131; return b })), ErrType},
		{"mld v1 query", query, fixMLD(edit(q6[:mld+24], func(b []byte) []byte { b[5] = 8 + 24; return b })), ErrShort},
		{"mld query sources overrun", query, fixMLD(edit(q6, func(b []byte) []byte { b[mld+27] = 1; return b })), ErrShort},
		{"mld not ICMPv6", query, edit(q6, func(b []byte) []byte { b[40] = ProtoUDP; return b }), ErrProtocol},
		{"mld report bad checksum", report, edit(r6, func(b []byte) []byte { b[len(b)-1]++; return b }), ErrChecksum},
		{"mld report sources overrun", report, fixMLD(edit(r6, func(b []byte) []byte { b[mld+11] = 9; return b })), ErrShort},
		{"mld report short", report, fixMLD(edit(r6[:mld+6], func(b []byte) []byte { b[5] = 8 + 6; return b })), ErrShort},
		{"mld query as report", report, q6, ErrType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}

	// Aux data is skipped: a record with one aux word still decodes.
	recs := []GroupRecord{{Type: ModeIsInclude, Group: fxGroup4, Sources: []netip.Addr{fxSrc4}}}
	body, _ := AppendIGMPReport(nil, recs)
	body = append(body, 0xde, 0xad, 0xbe, 0xef)
	body[9] = 1
	body[2], body[3] = 0, 0
	binary.BigEndian.PutUint16(body[2:], checksum(body))
	got, err := ParseIGMPReport(body)
	if err != nil || len(got) != 1 || got[0].Group != fxGroup4 || len(got[0].Sources) != 1 {
		t.Errorf("report with aux data: %+v, %v", got, err)
	}
}

package amt

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

// TestRoundTrip encodes every fixture, decodes it in both modes, and decodes
// the encapsulated packet back to the inputs that built it.
func TestRoundTrip(t *testing.T) {
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			b, err := fx.msg.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			if typ, err := TypeOf(b); err != nil || typ != fx.msg.Type() {
				t.Errorf("TypeOf = %v, %v; want %v", typ, err, fx.msg.Type())
			}
			for _, o := range []Options{{}, {Strict: true}} {
				m, err := o.Parse(b)
				if err != nil {
					t.Fatalf("%+v: %v", o, err)
				}
				if !reflect.DeepEqual(m, fx.msg) {
					t.Fatalf("%+v: got %+v, want %+v", o, m, fx.msg)
				}
				again, err := m.AppendTo(nil)
				if err != nil || !bytes.Equal(again, b) {
					t.Fatalf("re-encode = %x, %v; want %x", again, err, b)
				}
			}
			switch m := fx.msg.(type) {
			case *MembershipQuery:
				p, err := Options{Strict: true}.ParseQueryPacket(m.Query)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(p.Query, *fx.query) {
					t.Errorf("query = %+v, want %+v", p.Query, *fx.query)
				}
			case *MembershipUpdate:
				p, err := Options{Strict: true}.ParseReportPacket(m.Report)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(p.Records, fx.records) {
					t.Errorf("records = %+v, want %+v", p.Records, fx.records)
				}
			case *MulticastData:
				inner, err := ParseDataHeader(b)
				if err != nil {
					t.Fatal(err)
				}
				d, err := ParseInnerUDP(inner)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(d, *fx.data) {
					t.Errorf("datagram = %+v, want %+v", d, *fx.data)
				}
			}
		})
	}
}

func TestQueryPacketWithSources(t *testing.T) {
	for _, tt := range []struct {
		src netip.Addr
		q   Query
	}{
		{fxRelay4, Query{MaxRespCode: 200, Group: fxGroup4, SuppressRouterProcessing: true, QRV: 7, QQIC: 0x8f,
			Sources: []netip.Addr{fxSrc4, fxSrc4b}}},
		{fxLL6, Query{MaxRespCode: 0x9234, Group: fxGroup6, SuppressRouterProcessing: true, QRV: 3, QQIC: 60,
			Sources: []netip.Addr{fxSrc6, fxRelay6}}},
	} {
		b, err := AppendQueryPacket(nil, tt.src, tt.q)
		if err != nil {
			t.Fatal(err)
		}
		// A group-specific query goes to 224.0.0.1 / ff02::1 from us;
		// strict decoding wants the group, so only lenient accepts it.
		p, err := ParseQueryPacket(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p.Query, tt.q) || p.Src != tt.src {
			t.Errorf("got %+v, want %+v", p, tt.q)
		}
		if _, err := (Options{Strict: true}).ParseQueryPacket(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("strict on a group query to all-nodes: %v, want ErrProtocol", err)
		}
	}
}

func TestRecords(t *testing.T) {
	s1, s2, g1, g2 := fxSrc4, fxSrc4b, fxGroup4, fxGroup4b
	got := ChangeRecords(
		[]Channel{{s1, g1}, {s2, g2}, {s2, g1}, {s1, g1}},
		[]Channel{{s1, g2}})
	want := []GroupRecord{
		{Type: AllowNewSources, Group: g1, Sources: []netip.Addr{s1, s2}},
		{Type: AllowNewSources, Group: g2, Sources: []netip.Addr{s2}},
		{Type: BlockOldSources, Group: g2, Sources: []netip.Addr{s1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ChangeRecords = %+v\nwant %+v", got, want)
	}
	got = CurrentStateRecords([]Channel{{s1, g1}, {s2, g1}})
	want = []GroupRecord{{Type: ModeIsInclude, Group: g1, Sources: []netip.Addr{s1, s2}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CurrentStateRecords = %+v, want %+v", got, want)
	}
	if got := ChangeRecords(nil, nil); len(got) != 0 {
		t.Errorf("no channels: %+v", got)
	}
	if _, err := AppendReportPacket(nil, fxLL6, ChangeRecords([]Channel{{s1, g1}}, nil)); !errors.Is(err, ErrAddress) {
		t.Errorf("IPv4 channel in an MLD report: %v, want ErrAddress", err)
	}
	if (Channel{s1, g1}).String() != "(198.51.100.9,232.1.2.3)" {
		t.Errorf("String = %s", Channel{s1, g1})
	}
	for typ := RecordType(0); typ < 8; typ++ {
		if typ.Known() != (typ >= 1 && typ <= 6) {
			t.Errorf("%v.Known() = %v", typ, typ.Known())
		}
	}
}

// TestReportsInTheWild: reports the way some deployed gateways send them
// are accepted by default and refused by strict decoding.
func TestReportsInTheWild(t *testing.T) {
	recs := []GroupRecord{{Type: ModeIsInclude, Group: fxGroup4, Sources: []netip.Addr{fxSrc4}}}
	body, err := AppendIGMPReport(nil, recs)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []IPv4Header{
		{TTL: 1, Protocol: ProtoIGMP, Src: netip.IPv4Unspecified(), Dst: fxGroup4},         // to the group, no RA
		{TTL: 1, Protocol: ProtoIGMP, Src: fxSrc4, Dst: fxGroup4, RouterAlert: true},       // from S
		{TTL: 64, Protocol: ProtoIGMP, Src: fxSrc4, Dst: igmpv3Routers, RouterAlert: true}, // TTL not 1
		{TTL: 1, Protocol: ProtoIGMP, Src: netip.IPv4Unspecified(), Dst: igmpv3Routers},    // no RA
	} {
		b, err := AppendIPv4(nil, h, len(body))
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, body...)
		p, err := ParseReportPacket(b)
		if err != nil {
			t.Errorf("%+v: lenient: %v", h, err)
		} else if !reflect.DeepEqual(p.Records, recs) {
			t.Errorf("%+v: records %+v", h, p.Records)
		}
		if _, err := (Options{Strict: true}).ParseReportPacket(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("%+v: strict: %v, want ErrProtocol", h, err)
		}
	}
}

func TestCodes(t *testing.T) {
	for _, tt := range []struct {
		v    uint32
		code uint8
		back uint32
	}{
		{0, 0, 0}, {100, 100, 100}, {125, 125, 125}, {127, 127, 127},
		{128, 0x80, 128}, // exp 0, mant 0: 16 << 3
		{136, 0x81, 136},
		{143, 0x81, 136}, // rounds down
		{248, 0x8f, 248},
		{256, 0x90, 256}, // exp 1
		{31744, 0xff, 31744},
		{1 << 20, 0xff, 31744}, // saturates
	} {
		if got := EncodeCode8(tt.v); got != tt.code {
			t.Errorf("EncodeCode8(%d) = %#x, want %#x", tt.v, got, tt.code)
		}
		if got := DecodeCode8(tt.code); got != tt.back {
			t.Errorf("DecodeCode8(%#x) = %d, want %d", tt.code, got, tt.back)
		}
	}
	for _, tt := range []struct {
		v    uint32
		code uint16
		back uint32
	}{
		{0, 0, 0}, {10000, 10000, 10000}, {32767, 32767, 32767},
		{32768, 0x8000, 32768}, // 0x1000 << 3
		{32776, 0x8001, 32776},
		{65536, 0x9000, 65536},
		{8387584, 0xffff, 8387584},
		{1 << 30, 0xffff, 8387584},
	} {
		if got := EncodeCode16(tt.v); got != tt.code {
			t.Errorf("EncodeCode16(%d) = %#x, want %#x", tt.v, got, tt.code)
		}
		if got := DecodeCode16(tt.code); got != tt.back {
			t.Errorf("DecodeCode16(%#x) = %d, want %d", tt.code, got, tt.back)
		}
	}
	// Every code decodes to a value that encodes back to it.
	for c := 0; c < 256; c++ {
		if got := EncodeCode8(DecodeCode8(uint8(c))); got != uint8(c) {
			t.Errorf("code8 %#x -> %d -> %#x", c, DecodeCode8(uint8(c)), got)
		}
	}
	for c := 0; c < 1<<16; c += 7 {
		if got := EncodeCode16(DecodeCode16(uint16(c))); got != uint16(c) {
			t.Errorf("code16 %#x -> %d -> %#x", c, DecodeCode16(uint16(c)), got)
		}
	}
	q := Query{Group: netip.IPv4Unspecified(), MaxRespCode: 0x80, QQIC: 0}
	if q.MaxResponse().Milliseconds() != 12800 || q.QueryInterval().Seconds() != 125 {
		t.Errorf("IGMP %+v: %v %v", q, q.MaxResponse(), q.QueryInterval())
	}
	q = Query{Group: netip.IPv6Unspecified(), MaxRespCode: 10000, QQIC: 60}
	if q.MaxResponse().Seconds() != 10 || q.QueryInterval().Seconds() != 60 {
		t.Errorf("MLD %+v: %v %v", q, q.MaxResponse(), q.QueryInterval())
	}
}

func TestComputeMAC(t *testing.T) {
	secret := []byte("relay secret")
	mac := ComputeMAC(secret, fxGW4, 42)
	// Deterministic, and the same for the IPv4-mapped form of the address
	// and the form a Teardown's gateway field decodes to.
	if ComputeMAC(secret, fxGW4, 42) != mac {
		t.Error("not deterministic")
	}
	mapped := netip.AddrPortFrom(netip.AddrFrom16(fxGW4.Addr().As16()), fxGW4.Port())
	if ComputeMAC(secret, mapped, 42) != mac {
		t.Error("IPv4-mapped address gives another MAC")
	}
	td, _ := Teardown{Gateway: fxGW4}.AppendTo(nil)
	if got := gatewayFrom(td[12:]); ComputeMAC(secret, got, 42) != mac {
		t.Errorf("teardown gateway %v gives another MAC", got)
	}
	for name, other := range map[string][6]byte{
		"nonce":  ComputeMAC(secret, fxGW4, 43),
		"port":   ComputeMAC(secret, netip.AddrPortFrom(fxGW4.Addr(), 40001), 42),
		"addr":   ComputeMAC(secret, netip.MustParseAddrPort("203.0.113.8:40000"), 42),
		"secret": ComputeMAC([]byte("another secret"), fxGW4, 42),
	} {
		if other == mac {
			t.Errorf("changing the %s leaves the MAC unchanged", name)
		}
	}
	if !VerifyMAC(secret, fxGW4, 42, mac) || VerifyMAC(secret, fxGW4, 43, mac) {
		t.Error("VerifyMAC disagrees with ComputeMAC")
	}
}

func TestIsSSM(t *testing.T) {
	for s, want := range map[string]bool{
		"232.0.0.1": true, "232.255.255.255": true, "231.255.255.255": false, "233.0.0.1": false,
		"224.0.0.22": false, "::ffff:232.1.2.3": true, "ff3e::8000:1": true, "ff35::1": true,
		"ff3e:1::1": false, "ff0e::1": false, "ff02::16": false, "2001:db8::1": false,
	} {
		if got := IsSSM(netip.MustParseAddr(s)); got != want {
			t.Errorf("IsSSM(%s) = %v", s, got)
		}
	}
	if IsSSM(netip.Addr{}) {
		t.Error("IsSSM(invalid)")
	}
	if !DiscoveryPrefix4.Contains(DiscoveryAddr4) || !DiscoveryPrefix6.Contains(DiscoveryAddr6) {
		t.Error("discovery addresses outside their prefixes")
	}
}

func TestTypeString(t *testing.T) {
	if TypeTeardown.String() != "Teardown" || Type(9).String() != "Type(9)" {
		t.Error(TypeTeardown, Type(9))
	}
	if AllowNewSources.String() != "ALLOW_NEW_SOURCES" || RecordType(9).String() != "RecordType(9)" {
		t.Error(AllowNewSources, RecordType(9))
	}
}

// TestChecksum checks the 8-byte-at-a-time sum against the RFC 1071
// definition on every length and alignment up to 100 bytes.
func TestChecksum(t *testing.T) {
	buf := make([]byte, 100)
	for i := range buf {
		buf[i] = byte(i*37 + 11)
	}
	buf[50], buf[51] = 0xff, 0xff
	for n := 0; n <= len(buf); n++ {
		var s uint32
		for i := 0; i < n; i += 2 {
			w := uint32(buf[i]) << 8
			if i+1 < n {
				w |= uint32(buf[i+1])
			}
			s += w
		}
		for s>>16 != 0 {
			s = s&0xffff + s>>16
		}
		if got, want := checksum(buf[:n]), ^uint16(s); got != want {
			t.Errorf("len %d: %#x, want %#x", n, got, want)
		}
	}
}

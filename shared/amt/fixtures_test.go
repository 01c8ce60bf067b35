package amt

import (
	"net/netip"
	"testing"
)

// Fixed inputs shared by the golden, round-trip and tshark tests.
var (
	fxMAC     = [6]byte{0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f}
	fxRelay4  = netip.MustParseAddr("198.51.100.1")
	fxRelay6  = netip.MustParseAddr("2001:db8::1")
	fxLL6     = netip.MustParseAddr("fe80::1")
	fxGW4     = netip.MustParseAddrPort("203.0.113.7:40000")
	fxGW6     = netip.MustParseAddrPort("[2001:db8::7]:40001")
	fxSrc4    = netip.MustParseAddr("198.51.100.9")
	fxSrc4b   = netip.MustParseAddr("198.51.100.10")
	fxGroup4  = netip.MustParseAddr("232.1.2.3")
	fxGroup4b = netip.MustParseAddr("232.9.9.9")
	fxSrc6    = netip.MustParseAddr("2001:db8::9")
	fxGroup6  = netip.MustParseAddr("ff3e::8000:1")
	fxGroup6b = netip.MustParseAddr("ff3e::8000:2")
)

// fixture is one message the codec produces, with what went into it so that
// tests can check decoders (ours and tshark's) against the inputs.
type fixture struct {
	name    string
	msg     Message
	query   *Query        // the encapsulated query, if any
	records []GroupRecord // the encapsulated report's records, if any
	data    *Datagram     // the encapsulated datagram, if any
}

func fixtures(t testing.TB) []fixture {
	t.Helper()
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	q4 := Query{MaxRespCode: 100, QRV: 2, QQIC: 125}
	q6 := Query{MaxRespCode: 10000, QRV: 2, QQIC: 125}
	query4 := must(AppendQueryPacket(nil, fxRelay4, q4))
	query6 := must(AppendQueryPacket(nil, fxLL6, q6))
	q4.Group, q6.Group = netip.IPv4Unspecified(), netip.IPv6Unspecified()

	rec4 := ChangeRecords(
		[]Channel{{fxSrc4, fxGroup4}, {fxSrc4b, fxGroup4}},
		[]Channel{{fxSrc4, fxGroup4b}})
	rec4cur := CurrentStateRecords([]Channel{{fxSrc4, fxGroup4}, {fxSrc4b, fxGroup4b}})
	rec6 := ChangeRecords([]Channel{{fxSrc6, fxGroup6}}, []Channel{{fxSrc6, fxGroup6b}})
	report4 := must(AppendReportPacket(nil, netip.MustParseAddr("10.1.2.3"), rec4))
	report4cur := must(AppendReportPacket(nil, netip.IPv4Unspecified(), rec4cur))
	report6 := must(AppendReportPacket(nil, netip.MustParseAddr("fe80::2"), rec6))

	d4 := Datagram{Src: fxSrc4, Dst: fxGroup4, SrcPort: 5000, DstPort: 5001, TTL: 16, Payload: []byte("hello, multicast")}
	d6 := Datagram{Src: fxSrc6, Dst: fxGroup6, SrcPort: 5000, DstPort: 5002, TTL: 16, Payload: []byte("hello, multicast v6")}
	data4 := must(AppendInnerUDP(nil, d4))
	data6 := must(AppendInnerUDP(nil, d6))

	return []fixture{
		{name: "relay_discovery", msg: &RelayDiscovery{Nonce: 0x11223344}},
		{name: "relay_advertisement_v4", msg: &RelayAdvertisement{Nonce: 0x11223344, Relay: fxRelay4}},
		{name: "relay_advertisement_v6", msg: &RelayAdvertisement{Nonce: 0x55667788, Relay: fxRelay6}},
		{name: "request_v4", msg: &Request{Nonce: 0x99aabbcc}},
		{name: "request_v6", msg: &Request{Nonce: 0x99aabbcd, IPv6: true}},
		{name: "membership_query_v4", msg: &MembershipQuery{MAC: fxMAC, Nonce: 0x99aabbcc, Query: query4}, query: &q4},
		{name: "membership_query_v4_g", msg: &MembershipQuery{MAC: fxMAC, Nonce: 0x99aabbcc, Query: query4, Gateway: fxGW4}, query: &q4},
		{name: "membership_query_v4_l", msg: &MembershipQuery{Limit: true, MAC: fxMAC, Nonce: 0x99aabbcc, Query: query4}, query: &q4},
		{name: "membership_query_v6", msg: &MembershipQuery{MAC: fxMAC, Nonce: 0x99aabbcd, Query: query6}, query: &q6},
		{name: "membership_query_v6_g", msg: &MembershipQuery{MAC: fxMAC, Nonce: 0x99aabbcd, Query: query6, Gateway: fxGW6}, query: &q6},
		{name: "membership_update_v4", msg: &MembershipUpdate{MAC: fxMAC, Nonce: 0x99aabbcc, Report: report4}, records: rec4},
		{name: "membership_update_v4_current", msg: &MembershipUpdate{MAC: fxMAC, Nonce: 0x99aabbcc, Report: report4cur}, records: rec4cur},
		{name: "membership_update_v6", msg: &MembershipUpdate{MAC: fxMAC, Nonce: 0x99aabbcd, Report: report6}, records: rec6},
		{name: "multicast_data_v4", msg: &MulticastData{Packet: data4}, data: &d4},
		{name: "multicast_data_v6", msg: &MulticastData{Packet: data6}, data: &d6},
		{name: "teardown_v4", msg: &Teardown{MAC: fxMAC, Nonce: 0x99aabbcc, Gateway: fxGW4}},
		{name: "teardown_v6", msg: &Teardown{MAC: fxMAC, Nonce: 0x99aabbcd, Gateway: fxGW6}},
	}
}

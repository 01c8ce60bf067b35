package amt_test

import (
	"fmt"
	"net/netip"

	"github.com/blockcast/beacon/shared/amt"
)

// Example walks one AMT handshake through the codec: the gateway's Request,
// the relay's Query with a MAC, the gateway's Update joining a channel, the
// relay checking it, and one Multicast Data datagram.
func Example() {
	secret := []byte("relay-only secret")
	gw := netip.MustParseAddrPort("203.0.113.7:40000") // as the relay sees it
	relay := netip.MustParseAddr("198.51.100.1")
	ch := amt.Channel{Source: netip.MustParseAddr("198.51.100.9"), Group: netip.MustParseAddr("232.1.2.3")}

	// Gateway → relay.
	req, _ := amt.Request{Nonce: 0x1234}.AppendTo(nil)

	// Relay: answer with a general query and the MAC for this gateway.
	m, _ := amt.Parse(req)
	r := m.(*amt.Request)
	gq, _ := amt.AppendQueryPacket(nil, relay, amt.Query{MaxRespCode: 100, QRV: 2, QQIC: 125})
	query, _ := amt.MembershipQuery{MAC: amt.ComputeMAC(secret, gw, r.Nonce), Nonce: r.Nonce, Query: gq}.AppendTo(nil)

	// Gateway: join (S,G), echoing MAC and nonce.
	m, _ = amt.Parse(query)
	q := m.(*amt.MembershipQuery)
	qp, _ := amt.ParseQueryPacket(q.Query)
	report, _ := amt.AppendReportPacket(nil, netip.IPv4Unspecified(), amt.ChangeRecords([]amt.Channel{ch}, nil))
	update, _ := amt.MembershipUpdate{MAC: q.MAC, Nonce: q.Nonce, Report: report}.AppendTo(nil)

	// Relay: accept the update only if the MAC matches.
	m, _ = amt.Parse(update)
	u := m.(*amt.MembershipUpdate)
	rp, _ := amt.ParseReportPacket(u.Report)
	fmt.Println(len(query), "byte query, interval", qp.Query.QueryInterval())
	fmt.Println("MAC ok:", amt.VerifyMAC(secret, gw, u.Nonce, u.MAC))
	for _, rec := range rp.Records {
		fmt.Println(rec.Type, rec.Group, rec.Sources)
	}

	// Relay → gateway: one datagram of the channel.
	inner, _ := amt.AppendInnerUDP(nil, amt.Datagram{Src: ch.Source, Dst: ch.Group, SrcPort: 5000, DstPort: 5001, Payload: []byte("hello")})
	data := amt.AppendData(nil, inner)
	got, _ := amt.ParseDataHeader(data)
	d, _ := amt.ParseInnerUDP(got)
	fmt.Println(d.Channel(), d.DstPort, string(d.Payload))
	// Output:
	// 48 byte query, interval 2m5s
	// MAC ok: true
	// ALLOW_NEW_SOURCES 232.1.2.3 [198.51.100.9]
	// (198.51.100.9,232.1.2.3) 5001 hello
}

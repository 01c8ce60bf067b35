package amtnet

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/test/harness"
)

// wireFields are the fields TestWire reads from tshark.
var wireFields = []string{
	"amt.version", "amt.type", "amt.reserved", "amt.discovery_nonce", "amt.request_nonce",
	"amt.relay_address.ipv4", "amt.relay_address.ipv6",
	"amt.request.p", "amt.membership_query.l", "amt.membership_query.g",
	"amt.response_mac", "amt.gateway.port_number", "amt.gateway.ip_address",
	"ip.src", "ip.dst", "ip.ttl", "ip.opt.ra", "ip.checksum.status",
	"ipv6.src", "ipv6.dst", "ipv6.hlim", "ipv6.opt.router_alert",
	"igmp.type", "igmp.checksum.status", "igmp.max_resp", "igmp.qrv", "igmp.qqic", "igmp.num_src",
	"igmp.record_type", "igmp.maddr", "igmp.saddr",
	"icmpv6.type", "icmpv6.checksum.status", "icmpv6.mld.maximum_response_code", "icmpv6.mld.flag.qrv",
	"icmpv6.mld.qqi", "icmpv6.mld.multicast_address",
	"icmpv6.mldr.mar.record_type", "icmpv6.mldr.mar.multicast_address", "icmpv6.mldr.mar.source_address",
	"udp.checksum.status", "data.data",
	"_ws.malformed", "_ws.expert.severity", "_ws.expert.message",
}

// TestWire captures the real exchange between the beacon's gateway and
// castd's relay, running in two namespaces, and checks every AMT message
// with Wireshark's dissectors: nothing malformed, no expert warnings, good
// inner checksums, and fields that agree with what the test set up and
// with each other along the RFC 7450 handshake:
//
//   - IPv4: Relay Discovery to the anycast address (the beacon runs with
//     --amt-anycast) and Relay Advertisement naming the relay; Request (P=0),
//     Membership Query (G set: castd runs with --amt-gateway-addr) with an
//     IGMPv3 general query, Membership Update with IGMPv3 reports of the
//     channel, Multicast Data carrying the source's datagrams, and after the
//     leave, BLOCK reports and a Teardown.
//   - IPv6, on a second tunnel to the relay's IPv6 address: the same from
//     Request (P=1) on, with MLDv2 inside.
func TestWire(t *testing.T) {
	tools := require(t, "tshark")
	l := newLab(t, labOpts{})
	l.startCastd("--amt-query-interval", "10s", "--amt-gateway-addr")
	l.startBeacon("--amt-anycast")

	tap := startCapture(t, tools["tshark"], l.gw, "wan0", "udp port 2268", amtRelayIP4)

	ch4 := amt.Channel{Source: srcIP4, Group: netip.MustParseAddr("232.10.2.1")}
	ch6 := amt.Channel{Source: srcIP6, Group: netip.MustParseAddr("ff3e::8000:2")}
	const port = 5003
	l.amtCommand("join", ch4.Source.String()+"@"+ch4.Group.String()+" reemit")
	l.amtCommand("join", ch6.Source.String()+"@"+ch6.Group.String()+" relay=["+amtRelayIP6.String()+"]:2268")
	l.waitJoined(ch4.Source, ch4.Group, 20*time.Second)
	l.waitJoined(ch6.Source, ch6.Group, 20*time.Second)
	waitAMTRelayNative(t, l, 2)

	const n = 10
	snd4 := newSender(t, l.src, "eth0", ch4.Source, netip.AddrPortFrom(ch4.Group, port))
	snd6 := newSender(t, l.src, "eth0", ch6.Source, netip.AddrPortFrom(ch6.Group, port))
	for _, s := range []*sender{snd4, snd6} {
		if err := s.send(0, n, 2*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if !harness.WaitFor(10*time.Second, func() bool {
		c4, _ := l.channelState(ch4.Source, ch4.Group)
		c6, _ := l.channelState(ch6.Source, ch6.Group)
		return c4.Packets == n && c6.Packets == n
	}) {
		st, _ := l.gwState()
		t.Fatalf("gateway did not get %d datagrams per channel: %+v", n, st.Channels)
	}
	st, err := l.gwState()
	if err != nil {
		t.Fatal(err)
	}
	l.amtCommand("leave", ch4.Source.String()+"@"+ch4.Group.String())
	l.amtCommand("leave", ch6.Source.String()+"@"+ch6.Group.String())
	// The tunnels close after the BLOCK reports' repetitions, with a
	// Teardown each.
	if !harness.WaitFor(10*time.Second, func() bool {
		st, err := l.gwState()
		return err == nil && len(st.Tunnels) == 0
	}) {
		t.Fatal("tunnels still open after the leave")
	}
	tap.sync(l.gw) // the Teardowns are in the capture
	tap.stop()

	// The test datagrams inside Multicast Data are arbitrary bytes: have
	// tshark read them as data, or its heuristic dissectors (RTCP, CLTP, …)
	// guess at them and report "malformed" packets that are not ours.
	asData := fmt.Sprintf("udp.port==%d,data", port)
	pkts := dissect(t, tools["tshark"], tap.pcap, nil, wireFields, "-o", "ip.check_checksum:TRUE", "-d", asData)
	// UDP checksums in a second pass: the outer ones of datagrams this
	// host sent are left to the veth's checksum offload and read as bad
	// in a capture, so only the inner ones (the source's) are checked.
	sums := dissect(t, tools["tshark"], tap.pcap, nil, []string{"udp.checksum.status"}, "-o", "udp.check_checksum:TRUE", "-d", asData)
	if len(sums) != len(pkts) {
		t.Fatalf("second pass dissected %d packets, first %d", len(sums), len(pkts))
	}
	for i, p := range pkts {
		p["udp.checksum.status"] = sums[i]["udp.checksum.status"]
	}
	w := &wireCheck{t: t, ch4: ch4, ch6: ch6, port: port, run4: snd4.run, run6: snd6.run,
		// The beacon's tunnel socket as the relay saw it: the G flag
		// must carry exactly this.
		gateway4:    netip.AddrPortFrom(gwIP4, st.LocalAddr.Port()),
		gateway6:    netip.AddrPortFrom(gwIP6, st.LocalAddr.Port()),
		discoveries: map[string]packet{}, requests: map[string]packet{}, queries: map[string]packet{},
		seen: map[string]int{}, data: map[bool][]uint32{},
		joinRecs: map[bool]int{}, blockRecs: map[bool]int{}, teardowns: map[bool]int{}}
	for _, p := range pkts {
		// AMTNET_DUMP=1 logs every dissected packet, for debugging.
		if os.Getenv("AMTNET_DUMP") != "" {
			t.Logf("%v", p)
		}
		w.check(p)
	}
	w.summary()
}

// wireCheck follows the captured exchange in order.
type wireCheck struct {
	t                  *testing.T
	ch4, ch6           amt.Channel
	port               int
	run4, run6         uint32
	gateway4, gateway6 netip.AddrPort

	discoveries map[string]packet // by discovery nonce
	requests    map[string]packet // by gateway address and request nonce
	queries     map[string]packet // by gateway address, request nonce and MAC
	seen        map[string]int    // message kind → count
	data        map[bool][]uint32 // sequence numbers by family (true: IPv6)
	joinRecs    map[bool]int      // Updates joining, by family
	blockRecs   map[bool]int      // Updates with BLOCK records, by family
	teardowns   map[bool]int
	problems    int
}

func (w *wireCheck) bad(p packet, format string, args ...any) {
	w.t.Helper()
	w.problems++
	if w.problems <= 40 {
		w.t.Errorf("frame %s (AMT type %s): %s", p.frame(), p.first("amt.type"), fmt.Sprintf(format, args...))
	}
}

func (w *wireCheck) count(kind string) { w.seen[kind]++ }

// want checks that field's occurrences (all of them, or the inner ones
// for IP/UDP fields) are exactly vals.
func (w *wireCheck) want(p packet, field string, vals ...string) {
	w.t.Helper()
	got := p[field]
	if strings.HasPrefix(field, "ip") || strings.HasPrefix(field, "udp.") {
		got = p.inner(field)
	}
	if strings.Join(got, ",") != strings.Join(vals, ",") {
		w.bad(p, "%s = %q, want %q", field, got, vals)
	}
}

func (w *wireCheck) wantAddr(p packet, field string, want netip.Addr) {
	w.t.Helper()
	v := p[field]
	if len(v) != 1 {
		w.bad(p, "%s = %q, want %v", field, v, want)
		return
	}
	if a, err := netip.ParseAddr(v[0]); err != nil || a != want {
		w.bad(p, "%s = %q, want %v", field, v[0], want)
	}
}

func (w *wireCheck) good(p packet, field string) {
	w.t.Helper()
	v := p[field]
	if len(v) == 0 {
		w.bad(p, "%s missing", field)
	}
	for _, s := range v {
		if s != "1" {
			w.bad(p, "%s = %q, want good (1)", field, v)
			return
		}
	}
}

func (w *wireCheck) check(p packet) {
	w.t.Helper()
	for _, pr := range p.problems() {
		w.bad(p, "%s", pr)
	}
	w.want(p, "amt.version", "0")
	// Reserved fields are sent as zero (RFC 7450 §5.1).
	for _, r := range p["amt.reserved"] {
		if strings.Trim(strings.ReplaceAll(r, ":", ""), "0") != "" {
			w.bad(p, "reserved bytes %q not zero", r)
		}
	}
	src, dst := p.outer()
	v6 := p.outer6()
	relay, gateway := netip.AddrPortFrom(amtRelayIP4, amt.Port), w.gateway4
	if v6 {
		relay, gateway = netip.AddrPortFrom(amtRelayIP6, amt.Port), w.gateway6
	}
	fromGateway := src == gateway
	switch {
	case fromGateway && (dst == relay || dst == netip.AddrPortFrom(amt.DiscoveryAddr4, amt.Port)):
	case dst == gateway && (src == relay || src == netip.AddrPortFrom(amt.DiscoveryAddr4, amt.Port)):
	default:
		w.bad(p, "between %v and %v: neither the gateway %v nor the relay %v", src, dst, gateway, relay)
		return
	}
	typ, _ := strconv.Atoi(p.first("amt.type"))
	switch amt.Type(typ) {
	case amt.TypeRelayDiscovery:
		w.count("discovery")
		if !fromGateway || v6 || dst.Addr() != amt.DiscoveryAddr4 {
			w.bad(p, "Relay Discovery %v → %v, want the gateway to the anycast address", src, dst)
		}
		nonce := p.first("amt.discovery_nonce")
		if v, err := strconv.ParseUint(nonce, 0, 32); err != nil || v == 0 {
			w.bad(p, "discovery nonce %q, want non-zero", nonce)
		}
		w.discoveries[nonce] = p
	case amt.TypeRelayAdvertisement:
		w.count("advertisement")
		nonce := p.first("amt.discovery_nonce")
		d, ok := w.discoveries[nonce]
		if !ok {
			w.bad(p, "Relay Advertisement with nonce %s that no discovery sent", nonce)
		} else if ds, dd := d.outer(); src != dd || dst != ds {
			w.bad(p, "Relay Advertisement %v → %v answers a Discovery %v → %v", src, dst, ds, dd)
		}
		w.wantAddr(p, "amt.relay_address.ipv4", amtRelayIP4)
	case amt.TypeRequest:
		w.count("request")
		if !fromGateway || dst != relay {
			w.bad(p, "Request %v → %v, want the gateway to the relay %v", src, dst, relay)
		}
		// P asks for an MLDv2 query for IPv6 channels, which go to the
		// relay's IPv6 address here.
		w.want(p, "amt.request.p", map[bool]string{false: "0", true: "1"}[v6])
		w.requests[src.String()+"/"+p.first("amt.request_nonce")] = p
	case amt.TypeMembershipQuery:
		w.count("query")
		w.checkQuery(p, dst, v6)
	case amt.TypeMembershipUpdate:
		w.count("update")
		key := src.String() + "/" + p.first("amt.request_nonce") + "/" + p.first("amt.response_mac")
		if _, ok := w.queries[key]; !ok {
			w.bad(p, "Update echoes nonce %s and MAC %s, which no Query to %v carried",
				p.first("amt.request_nonce"), p.first("amt.response_mac"), src)
		}
		w.checkReport(p, v6)
	case amt.TypeMulticastData:
		w.count("data")
		w.checkData(p, v6)
	case amt.TypeTeardown:
		w.count("teardown")
		w.teardowns[v6]++
		key := src.String() + "/" + p.first("amt.request_nonce") + "/" + p.first("amt.response_mac")
		q, ok := w.queries[key]
		if !ok {
			w.bad(p, "Teardown with nonce and MAC of no Query")
			break
		}
		// The gateway names the address the relay reported.
		w.want(p, "amt.gateway.port_number", q.first("amt.gateway.port_number"))
		w.want(p, "amt.gateway.ip_address", q.first("amt.gateway.ip_address"))
	default:
		w.bad(p, "unexpected AMT type")
	}
}

// ipv4Compat is an IPv4 address in the IPv4-compatible IPv6 form the
// G flag and Teardown carry.
func ipv4Compat(a netip.Addr) netip.Addr {
	var b [16]byte
	v4 := a.As4()
	copy(b[12:], v4[:])
	return netip.AddrFrom16(b)
}

func (w *wireCheck) checkQuery(p packet, gw netip.AddrPort, v6 bool) {
	w.t.Helper()
	nonce := p.first("amt.request_nonce")
	if _, ok := w.requests[gw.String()+"/"+nonce]; !ok {
		w.bad(p, "Query with nonce %s that the gateway at %v never sent", nonce, gw)
	}
	w.want(p, "amt.membership_query.l", "0")
	w.want(p, "amt.membership_query.g", "1")
	if mac := p.first("amt.response_mac"); mac == "" || mac == "0" || mac == "0x000000000000" {
		w.bad(p, "response MAC %q", mac)
	}
	w.want(p, "amt.gateway.port_number", strconv.Itoa(int(gw.Port())))
	want := gw.Addr()
	if want.Is4() {
		want = ipv4Compat(want)
	}
	w.wantAddr(p, "amt.gateway.ip_address", want)
	w.queries[gw.String()+"/"+nonce+"/"+p.first("amt.response_mac")] = p
	// The encapsulated general query: QQIC 10 s (castd's
	// --amt-query-interval), QRV 2, max response 10 s.
	if !v6 {
		w.want(p, "ip.dst", "224.0.0.1")
		w.want(p, "ip.ttl", "1")
		if len(p["ip.opt.ra"]) != 1 {
			w.bad(p, "inner IPv4 header without Router Alert")
		}
		w.want(p, "igmp.type", "0x11")
		w.good(p, "igmp.checksum.status")
		w.want(p, "igmp.qqic", "10")
		w.want(p, "igmp.qrv", "2")
		w.want(p, "igmp.max_resp", "100")
		w.want(p, "igmp.num_src", "0")
		w.good(p, "ip.checksum.status")
		return
	}
	w.want(p, "ipv6.dst", "ff02::1")
	w.want(p, "ipv6.hlim", "1")
	if len(p["ipv6.opt.router_alert"]) != 1 {
		w.bad(p, "inner IPv6 header without Router Alert")
	}
	w.want(p, "icmpv6.type", "130")
	w.good(p, "icmpv6.checksum.status")
	w.want(p, "icmpv6.mld.qqi", "10")
	w.want(p, "icmpv6.mld.flag.qrv", "2")
	w.want(p, "icmpv6.mld.maximum_response_code", "10000")
	w.want(p, "icmpv6.mld.multicast_address", "::")
}

// checkReport checks an Update's encapsulated report: only the test's
// channel of the tunnel's family, as INCLUDE, ALLOW or BLOCK records.
func (w *wireCheck) checkReport(p packet, v6 bool) {
	w.t.Helper()
	ch := w.ch4
	types, groups, sources := "igmp.record_type", "igmp.maddr", "igmp.saddr"
	if v6 {
		ch = w.ch6
		types, groups, sources = "icmpv6.mldr.mar.record_type", "icmpv6.mldr.mar.multicast_address", "icmpv6.mldr.mar.source_address"
		w.want(p, "ipv6.dst", "ff02::16")
		w.want(p, "ipv6.hlim", "1")
		if len(p["ipv6.opt.router_alert"]) != 1 {
			w.bad(p, "inner IPv6 header without Router Alert")
		}
		w.want(p, "icmpv6.type", "143")
		w.good(p, "icmpv6.checksum.status")
	} else {
		w.want(p, "ip.dst", "224.0.0.22")
		w.want(p, "ip.ttl", "1")
		if len(p["ip.opt.ra"]) != 1 {
			w.bad(p, "inner IPv4 header without Router Alert")
		}
		w.want(p, "igmp.type", "0x22")
		w.good(p, "igmp.checksum.status")
		w.good(p, "ip.checksum.status")
	}
	recTypes := p[types]
	if len(recTypes) != 1 {
		w.bad(p, "%d records (%q), want one for %v", len(recTypes), recTypes, ch)
		return
	}
	w.want(p, groups, ch.Group.String())
	w.want(p, sources, ch.Source.String())
	switch recTypes[0] {
	case strconv.Itoa(int(amt.ModeIsInclude)), strconv.Itoa(int(amt.AllowNewSources)):
		w.joinRecs[v6]++
		if w.blockRecs[v6] > 0 {
			w.bad(p, "record %s after the leave", recTypes[0])
		}
	case strconv.Itoa(int(amt.BlockOldSources)):
		w.blockRecs[v6]++
	default:
		w.bad(p, "record type %s, want INCLUDE (1), ALLOW (5) or BLOCK (6)", recTypes[0])
	}
}

// checkData checks a Multicast Data message against what the sender sent.
func (w *wireCheck) checkData(p packet, v6 bool) {
	w.t.Helper()
	ch, run := w.ch4, w.run4
	f := "ip."
	if v6 {
		ch, run, f = w.ch6, w.run6, "ipv6."
	}
	w.want(p, f+"src", ch.Source.String())
	w.want(p, f+"dst", ch.Group.String())
	w.want(p, "udp.dstport", strconv.Itoa(w.port))
	// The UDP checksum of the source's own datagram travels unchanged.
	if st := p.inner("udp.checksum.status"); len(st) != 1 || st[0] != "1" {
		w.bad(p, "inner UDP checksum status %q, want good", st)
	}
	if !v6 {
		w.good(p, "ip.checksum.status")
	}
	b, err := hex.DecodeString(strings.ReplaceAll(p.first("data.data"), ":", ""))
	if err != nil {
		w.bad(p, "data: %v", err)
		return
	}
	seq, err := checkPayload(run, b)
	if err != nil {
		w.bad(p, "payload: %v", err)
		return
	}
	w.data[v6] = append(w.data[v6], seq)
}

func (w *wireCheck) summary() {
	w.t.Helper()
	w.t.Logf("captured: %v", w.seen)
	for _, kind := range []string{"discovery", "advertisement", "request", "query", "update", "data", "teardown"} {
		if w.seen[kind] == 0 {
			w.t.Errorf("no %s captured", kind)
		}
	}
	for _, v6 := range []bool{false, true} {
		fam := map[bool]string{false: "IPv4", true: "IPv6"}[v6]
		want := []uint32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
		if !slices.Equal(w.data[v6], want) {
			w.t.Errorf("%s Multicast Data carried datagrams %v, want %v", fam, w.data[v6], want)
		}
		if w.joinRecs[v6] == 0 || w.blockRecs[v6] == 0 || w.teardowns[v6] != 1 {
			w.t.Errorf("%s: %d joining reports, %d BLOCK reports, %d Teardowns; want some, some, one",
				fam, w.joinRecs[v6], w.blockRecs[v6], w.teardowns[v6])
		}
	}
}

package amtnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// TestNATRebind: the beacon sits behind a NAT whose mapping changes port
// mid-stream, and the state moves as RFC 7450 says. The relay (castd with
// --amt-gateway-addr) reports in each Membership Query, with the G flag,
// the address and port it sees the gateway at. At its next Request the
// gateway learns the new mapping from the Query, sends a Teardown naming
// the old address and port with that tunnel's MAC and nonce (§5.2.3.7),
// and a Membership Update from the new one; the relay ends the old tunnel
// at once (§5.3.3.7) instead of sending data into the stale mapping until
// it expires, and serves the new one.
//
// There is no nft or iptables here, and the beacon cannot be told to
// rebind its socket, so the NAT is a user-space port translator in its own
// namespace between the beacon and the relay: it is the gateway's next hop
// to the relay (the beacon is configured with the NAT's inside address as
// its relay, as with a port forward), forwards each datagram from an
// outside socket, and rebinding makes a new outside socket, exactly the
// change a relay sees when a NAT binding moves. The real beacon and castd
// processes are on either side.
func TestNATRebind(t *testing.T) {
	tools := require(t, "tshark")
	l := newLab(t, labOpts{nat: true})
	nat := newUDPNAT(t, l.nat, netip.AddrPortFrom(natInIP4, amt.Port), natOutIP4, netip.AddrPortFrom(amtRelayNatIP4, amt.Port))
	ch := amt.Channel{Source: srcIP4, Group: netip.MustParseAddr("232.10.7.1")}
	group := netip.AddrPortFrom(ch.Group, 5007)
	l.startCastd("--amt-query-interval", "10s", "--amt-gateway-addr")
	l.startBeacon("--amt-join", ch.Source.String()+"@"+ch.Group.String()+" relay="+natInIP4.String()+" reemit")
	l.waitJoined(ch.Source, ch.Group, 15*time.Second)

	snd := newSender(t, l.src, "eth0", srcIP4, group)
	rcv := newReceiver(t, l.lan, "eth0", srcIP4, group, snd.run)
	waitAMTRelayNative(t, l, 1)
	stopStream := snd.start(10 * time.Millisecond)
	t.Cleanup(func() { stopStream() })
	if !rcv.waitCount(50, 10*time.Second) {
		t.Fatalf("stream not flowing: %d datagrams", rcv.count())
	}
	old := nat.mapping()
	st, err := l.gwState()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tunnels) != 1 || st.Tunnels[0].Gateway != old {
		t.Fatalf("gateway's view of its address %+v, want the NAT mapping %v", st.Tunnels, old)
	}

	tap := startCapture(t, tools["tshark"], l.amtRelay, "nat0", "udp port 2268", natOutIP4)
	rebound := time.Now()
	cur := nat.rebind()
	t.Logf("NAT mapping moved from %v to %v", old, cur)

	// The gateway's next Request comes within the query interval (10 s).
	if !harness.WaitFor(15*time.Second, func() bool {
		st, err := l.gwState()
		return err == nil && len(st.Tunnels) == 1 && st.Tunnels[0].Gateway == cur && st.Tunnels[0].NATChanges == 1
	}) {
		st, _ := l.gwState()
		t.Fatalf("gateway did not learn the new mapping: %+v", st.Tunnels)
	}
	if !harness.WaitFor(5*time.Second, func() bool {
		got := rcv.arrivals()
		return len(got) > 0 && got[len(got)-1].at.After(rebound.Add(time.Second))
	}) {
		t.Fatal("stream did not resume after the rebind")
	}
	resumed := time.Now()
	// Torn down, not expired: castd's expiry is 2 × 10 s + 10 s.
	if !harness.WaitFor(3*time.Second, func() bool {
		v, err := l.castdMetric("castd_amt_gateways")
		return err == nil && v == 1
	}) {
		v, _ := l.castdMetric("castd_amt_gateways")
		t.Errorf("castd holds %v tunnels after the rebind, want 1: the old one was not torn down", v)
	}
	time.Sleep(time.Second) // data after the Teardown, for the capture
	tap.sync(l.amtRelay)
	tap.stop()
	strays := nat.strays()
	stopStream()

	got := rcv.arrivals()
	if err := checkInOrder(got); err != nil {
		t.Error(err)
	}
	var gap time.Duration
	for i := 1; i < len(got); i++ {
		if d := got[i].at.Sub(got[i-1].at); d > gap {
			gap = d
		}
	}
	t.Logf("stream interrupted for %s by the rebind; resumed within %s", gap.Round(time.Millisecond), resumed.Sub(rebound).Round(time.Millisecond))

	// The relay's side of the story, from the capture on its link.
	// The stream's datagrams inside Multicast Data are arbitrary bytes: read
	// them as data, or tshark's heuristic dissectors (CLTP, RTCP, …) guess
	// at them and call frames malformed that are not ours (as in wire_test).
	asData := fmt.Sprintf("udp.port==%d,data", group.Port())
	pkts := dissect(t, tools["tshark"], tap.pcap, nil, []string{
		"amt.type", "amt.request_nonce", "amt.response_mac", "amt.membership_query.g",
		"amt.gateway.port_number", "amt.gateway.ip_address", "ip.src", "ip.dst",
		"_ws.malformed", "_ws.expert.severity", "_ws.expert.message", "icmp.type", "frame.time_epoch"}, "-d", asData)
	macs := map[string]netip.AddrPort{} // nonce/MAC of each Query → the gateway address it named
	var teardown, dataOldAfter, dataNewAfter, updatesNew, inFlight int
	var teardownAt float64
	for _, p := range pkts {
		// Data still sent to the old mapping draws ICMP port-unreachable
		// errors that quote it cut short; tshark may call the quoted,
		// truncated datagram malformed. Those frames are not ours to judge.
		if p.first("icmp.type") == "" {
			for _, pr := range p.problems() {
				t.Errorf("frame %s: %s", p.frame(), pr)
			}
		}
		src, dst := p.outer()
		key := p.first("amt.request_nonce") + "/" + p.first("amt.response_mac")
		typ, _ := strconv.Atoi(p.first("amt.type"))
		switch amt.Type(typ) {
		case amt.TypeMembershipQuery:
			port, _ := strconv.Atoi(p.first("amt.gateway.port_number"))
			named := netip.AddrPortFrom(netip.MustParseAddr(p.first("amt.gateway.ip_address")), uint16(port))
			if p.first("amt.membership_query.g") != "1" || named != netip.AddrPortFrom(ipv4Compat(dst.Addr()), dst.Port()) {
				t.Errorf("frame %s: Query to %v names %v", p.frame(), dst, named)
			}
			macs[key] = netip.AddrPortFrom(dst.Addr(), dst.Port())
		case amt.TypeTeardown:
			teardown++
			teardownAt, _ = strconv.ParseFloat(p.first("frame.time_epoch"), 64)
			port, _ := strconv.Atoi(p.first("amt.gateway.port_number"))
			named := netip.AddrPortFrom(netip.MustParseAddr(p.first("amt.gateway.ip_address")), uint16(port))
			if src != cur || named != netip.AddrPortFrom(ipv4Compat(old.Addr()), old.Port()) {
				t.Errorf("frame %s: Teardown from %v naming %v, want from %v naming %v", p.frame(), src, named, cur, old)
			}
			// Its MAC and nonce are those the old mapping was given
			// (the first Query in the capture went there if the gateway
			// did not refresh just before the rebind; else it went to
			// the old one anyway).
			if q, ok := macs[key]; ok && q != old {
				t.Errorf("frame %s: Teardown carries the MAC of the Query to %v, want the one to %v", p.frame(), q, old)
			}
		case amt.TypeMembershipUpdate:
			if src == cur {
				updatesNew++
				if macs[key] != cur {
					t.Errorf("frame %s: Update from %v with a MAC not issued to it", p.frame(), src)
				}
				if teardown == 0 {
					t.Errorf("frame %s: Update from the new mapping before the Teardown of the old", p.frame())
				}
			}
		case amt.TypeMulticastData:
			if teardown > 0 && dst == old {
				// The relay forwards from a copy-on-write index: a datagram
				// it had addressed when the Teardown arrived may still
				// leave just after it. Later ones would be a stale tunnel.
				at, _ := strconv.ParseFloat(p.first("frame.time_epoch"), 64)
				if at-teardownAt <= 0.02 {
					inFlight++
				} else {
					dataOldAfter++
				}
			}
			if teardown > 0 && dst == cur {
				dataNewAfter++
			}
		}
	}
	t.Logf("relay link: %d frames; %d Teardown, %d Updates from the new mapping, after the Teardown %d Multicast Data to the new mapping and %d to the old (+%d in flight within 20 ms); the old mapping received %v in all after the rebind",
		len(pkts), teardown, updatesNew, dataNewAfter, dataOldAfter, inFlight, strays)
	if teardown != 1 || updatesNew == 0 || dataNewAfter < 50 || dataOldAfter != 0 {
		t.Error("the relay's state did not move from the old mapping to the new one as RFC 7450 prescribes")
	}
}

// udpNAT is a user-space port-translating NAT for one inside host: what
// arrives at its inside address goes to the relay from an outside socket
// (the mapping), and what the relay sends to the mapping goes back to the
// host from the inside address.
type udpNAT struct {
	tb      testing.TB
	ns      *netns.NS
	inside  *net.UDPConn
	outside netip.Addr
	relay   *net.UDPAddr

	mu      sync.Mutex
	host    *net.UDPAddr // the inside host, once it has sent
	current *net.UDPConn
	old     []*net.UDPConn
	stray   map[amt.Type]int // what reached retired mappings
	wg      sync.WaitGroup
}

func newUDPNAT(tb testing.TB, ns *netns.NS, inside netip.AddrPort, outside netip.Addr, relay netip.AddrPort) *udpNAT {
	tb.Helper()
	in, err := ns.ListenUDP("udp4", net.UDPAddrFromAddrPort(inside))
	if err != nil {
		tb.Fatal(err)
	}
	n := &udpNAT{tb: tb, ns: ns, inside: in, outside: outside, relay: net.UDPAddrFromAddrPort(relay), stray: map[amt.Type]int{}}
	n.rebind()
	n.wg.Add(1)
	go n.forwardOut()
	tb.Cleanup(n.close)
	return n
}

// rebind gives the host a new mapping; the old port stays open but
// forwards nothing, as a NAT that has moved the binding, and counts what
// still arrives there. It returns the new mapping.
func (n *udpNAT) rebind() netip.AddrPort {
	c, err := n.ns.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.outside, 0)))
	if err != nil {
		n.tb.Fatal(err)
	}
	n.mu.Lock()
	if n.current != nil {
		n.old = append(n.old, n.current)
	}
	n.current = c
	n.mu.Unlock()
	n.wg.Add(1)
	go n.forwardIn(c)
	return unmap(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

func (n *udpNAT) mapping() netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	return unmap(n.current.LocalAddr().(*net.UDPAddr).AddrPort())
}

// unmap turns an IPv4-mapped IPv6 address (as sockets report IPv4 peers)
// into IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// strays returns the AMT message types that reached retired mappings.
func (n *udpNAT) strays() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]int{}
	for t, c := range n.stray {
		out[t.String()] = c
	}
	return out
}

// forwardOut: host → relay, through the current mapping.
func (n *udpNAT) forwardOut() {
	defer n.wg.Done()
	buf := make([]byte, 65536)
	for {
		k, from, err := n.inside.ReadFromUDP(buf)
		if err != nil {
			return
		}
		n.mu.Lock()
		n.host = from
		out := n.current
		n.mu.Unlock()
		out.WriteToUDP(buf[:k], n.relay)
	}
}

// forwardIn: relay → host, for the mapping c while it is current.
func (n *udpNAT) forwardIn(c *net.UDPConn) {
	defer n.wg.Done()
	buf := make([]byte, 65536)
	for {
		k, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				n.tb.Logf("nat: %v", err)
			}
			return
		}
		n.mu.Lock()
		host, live := n.host, c == n.current
		if !live {
			if t, err := amt.TypeOf(buf[:k]); err == nil {
				n.stray[t]++
			}
		}
		n.mu.Unlock()
		if live && host != nil && unmap(from.AddrPort()) == unmap(n.relay.AddrPort()) {
			n.inside.WriteToUDP(buf[:k], host)
		}
	}
}

func (n *udpNAT) close() {
	n.inside.Close()
	n.mu.Lock()
	conns := append([]*net.UDPConn{n.current}, n.old...)
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	n.wg.Wait()
}

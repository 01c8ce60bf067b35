package amtnet

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/test/harness"
)

// TestSpoofedUpdate: a third namespace, on its own link to the relay, tries
// to join a channel the real gateway receives without completing the
// handshake, with Membership Updates built by shared/amt:
//
//   - guessed nonces and MACs, with no Request ever sent;
//   - the MAC of a Query the relay really sent it, with a guessed nonce;
//   - that Query's MAC and nonce, sent from another port of the same host
//     (the MAC covers the gateway's address and port).
//
// No Multicast Data may reach the attacker, by its sockets or by a capture
// of everything arriving on its interface; castd counts every attempt as a
// bad MAC and keeps one tunnel; the real gateway's stream goes on
// undisturbed. Last, as a control that the attacker's path works and the
// checks can fail, the attacker completes the handshake properly and does
// receive data.
func TestSpoofedUpdate(t *testing.T) {
	tools := require(t, "tshark")
	l := newLab(t, labOpts{attacker: true})
	ch := amt.Channel{Source: srcIP4, Group: netip.MustParseAddr("232.10.6.1")}
	group := netip.AddrPortFrom(ch.Group, 5006)
	l.startCastd("--amt-query-interval", "10s")
	l.startBeacon("--amt-join", ch.Source.String()+"@"+ch.Group.String()+" relay="+amtRelayIP4.String()+" reemit")
	l.waitJoined(ch.Source, ch.Group, 15*time.Second)

	snd := newSender(t, l.src, "eth0", srcIP4, group)
	rcv := newReceiver(t, l.lan, "eth0", srcIP4, group, snd.run)
	waitAMTRelayNative(t, l, 1)
	stopStream := snd.start(10 * time.Millisecond)
	t.Cleanup(func() { stopStream() })
	if !rcv.waitCount(50, 10*time.Second) {
		t.Fatalf("stream not flowing: %d datagrams", rcv.count())
	}

	relay := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr("10.200.4.1"), amt.Port))
	open := func() *net.UDPConn {
		c, err := l.attacker.ListenUDP("udp4", &net.UDPAddr{IP: attackerIP4.AsSlice()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := open(), open()
	aPort, bPort := a.LocalAddr().(*net.UDPAddr).Port, b.LocalAddr().(*net.UDPAddr).Port
	tap := startCapture(t, tools["tshark"], l.attacker, "eth0", "udp", netip.MustParseAddr("10.200.4.1"))

	report, err := amt.AppendReportPacket(nil, attackerIP4, amt.CurrentStateRecords([]amt.Channel{ch}))
	if err != nil {
		t.Fatal(err)
	}
	update := func(c *net.UDPConn, mac [6]byte, nonce uint32) {
		t.Helper()
		msg, err := amt.MembershipUpdate{MAC: mac, Nonce: nonce, Report: report}.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToUDP(msg, relay); err != nil {
			t.Fatal(err)
		}
	}
	// query asks the relay for a Membership Query from c, as a gateway
	// does, and returns it.
	query := func(c *net.UDPConn) *amt.MembershipQuery {
		t.Helper()
		nonce := randUint32()
		msg, _ := amt.Request{Nonce: nonce}.AppendTo(nil)
		if _, err := c.WriteToUDP(msg, relay); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("no Membership Query for the attacker: %v", err)
			}
			m, err := amt.Parse(buf[:n])
			if q, ok := m.(*amt.MembershipQuery); err == nil && ok && q.Nonce == nonce {
				return q
			}
		}
	}

	badBefore, err := l.castdMetric(`castd_amt_refused_total{reason="bad_mac"}`)
	if err != nil {
		t.Fatal(err)
	}
	flowing := rcv.count()
	const guesses = 64
	for i := 0; i < guesses; i++ {
		var mac [6]byte
		rand.Read(mac[:])
		update(a, mac, randUint32())
	}
	q := query(a)
	update(a, q.MAC, q.Nonce+1) // the right MAC, a guessed nonce
	update(b, q.MAC, q.Nonce)   // a MAC and nonce issued to another port
	const attempts = guesses + 2

	// Data keeps coming for the real gateway meanwhile: if the relay took
	// any of these, the attacker would be sent copies at once.
	if leaked := readData(a, b, 2*time.Second); leaked != "" {
		t.Errorf("the attacker received Multicast Data: %s", leaked)
	}
	tap.sync(l.attacker)
	tap.stop()
	pkts := dissect(t, tools["tshark"], tap.pcap, []uint16{uint16(aPort), uint16(bPort)},
		[]string{"amt.type", "ip.src", "ip.dst", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"})
	var updates, data int
	for _, p := range pkts {
		for _, pr := range p.problems() {
			t.Errorf("frame %s: %s", p.frame(), pr)
		}
		switch p.first("amt.type") {
		case strconv.Itoa(int(amt.TypeMembershipUpdate)):
			updates++
		case strconv.Itoa(int(amt.TypeMulticastData)):
			data++
		}
	}
	t.Logf("attacker's interface: %d frames captured, %d forged Updates sent, %d Multicast Data received", len(pkts), updates, data)
	if updates != attempts {
		t.Errorf("capture holds %d of the %d forged Updates: it does not see the attacker's traffic", updates, attempts)
	}
	if data != 0 {
		t.Errorf("%d Multicast Data messages reached the attacker's interface", data)
	}
	badAfter, err := l.castdMetric(`castd_amt_refused_total{reason="bad_mac"}`)
	if err != nil {
		t.Fatal(err)
	}
	if badAfter-badBefore != attempts {
		t.Errorf("castd counted %v bad MACs, want %d", badAfter-badBefore, attempts)
	}
	if gws, _ := l.castdMetric("castd_amt_gateways"); gws != 1 {
		t.Errorf("castd holds %v tunnels, want the real gateway's only", gws)
	}
	if got := rcv.count(); got < flowing+150 {
		t.Errorf("the real gateway's stream stalled during the attack: %d datagrams, then %d", flowing, got)
	}
	if err := checkInOrder(rcv.arrivals()); err != nil {
		t.Error(err)
	}

	// Control: the same host completing the handshake gets the channel.
	q = query(a)
	update(a, q.MAC, q.Nonce)
	if got := readData(a, nil, 3*time.Second); got == "" {
		t.Error("control: the attacker's authenticated Update brought no data; the checks above prove nothing")
	}
	if !harness.WaitFor(2*time.Second, func() bool {
		gws, _ := l.castdMetric("castd_amt_gateways")
		return gws == 2
	}) {
		t.Error("control: castd did not take the authenticated Update")
	}
}

// readData reads a and b (b may be nil) for d and describes the first
// Multicast Data message either got, or returns "".
func readData(a, b *net.UDPConn, d time.Duration) string {
	res := make(chan string, 2)
	read := func(c *net.UDPConn) {
		buf := make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(d))
		defer c.SetReadDeadline(time.Time{})
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					res <- ""
				} else {
					res <- "read error: " + err.Error()
				}
				return
			}
			if typ, err := amt.TypeOf(buf[:n]); err == nil && typ == amt.TypeMulticastData {
				res <- strconv.Itoa(n) + " bytes from " + from.String() + " to " + c.LocalAddr().String()
				return
			}
		}
	}
	conns := []*net.UDPConn{a}
	if b != nil {
		conns = append(conns, b)
	}
	for _, c := range conns {
		go read(c)
	}
	out := ""
	for range conns {
		if s := <-res; s != "" && out == "" {
			out = s
		}
	}
	return out
}

func randUint32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:]) | 1
}

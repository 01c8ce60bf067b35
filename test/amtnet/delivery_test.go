package amtnet

import (
	"net/netip"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
)

// TestDeliveryIPv4: a stream sent as native SSM in the relay's network
// crosses the AMT tunnel to the beacon, which re-emits it on its LAN, where
// a receiver that joined (S,G) gets every datagram, intact and in order.
func TestDeliveryIPv4(t *testing.T) {
	require(t)
	l := newLab(t, labOpts{})
	group := netip.MustParseAddrPort("232.10.1.1:5001")
	l.startCastd("--amt-query-interval", "10s")
	l.startBeacon("--amt-join", srcIP4.String()+"@"+group.Addr().String()+" relay="+amtRelayIP4.String()+" reemit")
	l.waitJoined(srcIP4, group.Addr(), 15*time.Second)

	snd := newSender(t, l.src, "eth0", srcIP4, group)
	rcv := newReceiver(t, l.lan, "eth0", srcIP4, group, snd.run)
	waitAMTRelayNative(t, l, 1)

	const n = 2000
	start := time.Now()
	// 2000 datagrams of 700 bytes on average at 0.5 ms spacing: about
	// 11 Mbit/s, in bursts the gateway's queues must absorb.
	if err := snd.send(0, n, 500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	if !rcv.waitCount(n, 10*time.Second) {
		t.Errorf("received %d of %d datagrams", rcv.count(), n)
	}
	got := rcv.arrivals()
	if err := checkInOrder(got); err != nil {
		t.Fatal(err)
	}
	if len(got) == n && got[n-1].seq != n-1 {
		t.Errorf("last datagram %d, want %d", got[n-1].seq, n-1)
	}
	t.Logf("%d datagrams through the tunnel and re-emitted in %s, in order and intact", len(got), time.Since(start).Round(time.Millisecond))

	c, _ := l.channelState(srcIP4, group.Addr())
	var bytes uint64
	for seq := uint32(0); seq < n; seq++ {
		bytes += uint64(streamLen(seq))
	}
	if c.Packets != n || c.Bytes != bytes {
		t.Errorf("gateway counts %d packets / %d bytes, want %d / %d", c.Packets, c.Bytes, n, bytes)
	}
	st, err := l.gwState()
	if err != nil {
		t.Fatal(err)
	}
	if st.Reemit == nil || st.Reemit.Sent != n || st.Reemit.Dropped != 0 || st.Reemit.Errors != 0 {
		t.Errorf("re-emission: %+v, want %d sent, none dropped", st.Reemit, n)
	}
}

// TestDeliveryIPv6: the same over IPv6 end to end (native SSM source, outer
// tunnel and inner datagrams all IPv6). The beacon does not re-emit IPv6 by
// design (there is no portable way to send with a foreign IPv6 source), so
// delivery is checked with the gateway's own per-channel counters: every
// datagram and every payload byte, as counted after the gateway parsed and
// checksum-verified the inner datagram. Order is not observable that way.
func TestDeliveryIPv6(t *testing.T) {
	require(t)
	l := newLab(t, labOpts{})
	group := netip.MustParseAddrPort("[ff3e::8000:1]:5002")
	l.startCastd("--amt-query-interval", "10s")
	l.startBeacon("--amt-join", srcIP6.String()+"@"+group.Addr().String()+" relay=["+amtRelayIP6.String()+"]:2268")
	l.waitJoined(srcIP6, group.Addr(), 15*time.Second)
	st, err := l.gwState()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tunnels) != 1 || st.Tunnels[0].Relay != netip.AddrPortFrom(amtRelayIP6, 2268) {
		t.Fatalf("tunnels %+v, want one to [%s]:2268", st.Tunnels, amtRelayIP6)
	}

	snd := newSender(t, l.src, "eth0", srcIP6, group)
	waitAMTRelayNative(t, l, 1)
	const n = 2000
	if err := snd.send(0, n, 500*time.Microsecond); err != nil {
		t.Fatal(err)
	}
	var bytes uint64
	for seq := uint32(0); seq < n; seq++ {
		bytes += uint64(streamLen(seq))
	}
	var c = struct{ packets, bytes uint64 }{}
	ok := harness.WaitFor(10*time.Second, func() bool {
		cs, _ := l.channelState(srcIP6, group.Addr())
		c.packets, c.bytes = cs.Packets, cs.Bytes
		return c.packets >= n
	})
	if !ok || c.packets != n || c.bytes != bytes {
		t.Errorf("gateway counts %d packets / %d bytes, want %d / %d", c.packets, c.bytes, n, bytes)
	}
	st, _ = l.gwState()
	if st.Tunnels[0].Malformed != 0 || st.Tunnels[0].Filtered != 0 {
		t.Errorf("tunnel %+v: malformed or filtered data", st.Tunnels[0])
	}
	t.Logf("IPv6: %d datagrams, %d payload bytes counted by the gateway", c.packets, c.bytes)
}

// waitAMTRelayNative waits until castd holds native memberships for n
// channels: the gateway's Membership Update reached it and it joined
// (S,G) on its native interface.
func waitAMTRelayNative(tb testing.TB, l *lab, n int) {
	tb.Helper()
	if !harness.WaitFor(10*time.Second, func() bool {
		v, err := l.castdMetric("castd_amt_channels")
		return err == nil && int(v) >= n
	}) {
		v, err := l.castdMetric("castd_amt_channels")
		tb.Fatalf("castd serves %v channels (%v), want %d", v, err, n)
	}
}

// TestAMTRelayRestart kills castd with SIGKILL in the middle of a stream and
// starts it again (new process, new MAC secret, no tunnel state). The
// beacon is not told: its gateway notices the silence (half its 30 s
// no-data timeout), asks the relay again with a Request, and re-joins,
// and the stream resumes on the LAN by itself. castd runs with its default
// 125 s query interval, so this is the silence detection at work, not the
// routine refresh. The gap is logged; it must stay within the gateway's
// no-data timeout.
func TestAMTRelayRestart(t *testing.T) {
	require(t)
	l := newLab(t, labOpts{})
	group := netip.MustParseAddrPort("232.10.4.1:5005")
	l.startCastd()
	l.startBeacon("--amt-join", srcIP4.String()+"@"+group.Addr().String()+" relay="+amtRelayIP4.String()+" reemit")
	l.waitJoined(srcIP4, group.Addr(), 15*time.Second)

	snd := newSender(t, l.src, "eth0", srcIP4, group)
	rcv := newReceiver(t, l.lan, "eth0", srcIP4, group, snd.run)
	waitAMTRelayNative(t, l, 1)
	stopStream := snd.start(10 * time.Millisecond)
	t.Cleanup(func() { stopStream() })
	if !rcv.waitCount(100, 10*time.Second) {
		t.Fatalf("stream not flowing: %d datagrams", rcv.count())
	}

	killed := time.Now()
	l.killCastd()
	time.Sleep(time.Second)
	l.runCastd()
	restarted := time.Now()
	t.Logf("castd killed (SIGKILL) and restarted %s later", restarted.Sub(killed).Round(time.Millisecond))

	// The gateway's silence check comes at 15 s; allow up to its 30 s
	// no-data timeout and a retransmission.
	before := rcv.count()
	if !harness.WaitFor(35*time.Second, func() bool {
		got := rcv.arrivals()
		return len(got) > before+50 && got[len(got)-1].at.After(restarted)
	}) {
		st, _ := l.gwState()
		t.Fatalf("stream did not resume within 35 s of the restart; gateway: %+v", st)
	}
	n, err := stopStream()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	got := rcv.arrivals()
	if err := checkInOrder(got); err != nil {
		t.Fatal(err)
	}
	// The outage is the longest silence between two arrivals.
	var gap time.Duration
	var last, resumed arrival
	for i := 1; i < len(got); i++ {
		if d := got[i].at.Sub(got[i-1].at); d > gap {
			gap, last, resumed = d, got[i-1], got[i]
		}
	}
	t.Logf("outage: %s without data (datagram %d to %d); resumed %s after the restart; %d of %d datagrams arrived",
		gap.Round(time.Millisecond), last.seq, resumed.seq, resumed.at.Sub(restarted).Round(time.Millisecond), len(got), n)
	if last.at.After(killed.Add(time.Second)) || resumed.at.Before(restarted) {
		t.Errorf("the longest gap (%v to %v) is not the outage (kill %v, restart %v)", last.at, resumed.at, killed, restarted)
	}
	if gap > 35*time.Second {
		t.Errorf("outage %s, longer than the gateway's no-data timeout allows", gap)
	}
	// Once resumed, nothing is lost.
	if tail := got[len(got)-1].seq - resumed.seq + 1; int(tail) != len(got)-indexOf(got, resumed.seq) {
		t.Errorf("datagrams lost after the stream resumed")
	}
	st, err := l.gwState()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tunnels) != 1 || st.Tunnels[0].Phase != "joined" || st.Tunnels[0].Relay != netip.AddrPortFrom(amtRelayIP4, 2268) {
		t.Errorf("tunnels after the restart: %+v", st.Tunnels)
	}
}

func indexOf(got []arrival, seq uint32) int {
	for i, a := range got {
		if a.seq == seq {
			return i
		}
	}
	return -1
}

package mcnet

import (
	"fmt"
	"testing"
)

// TestLossPerReceiver: native beacons lose 1%, 5% and 20% of the channel's
// packets independently (their own seeds), one loses all of them (its
// multicast cut), and one asks only when castd has sent half the object;
// a beacon through AMT sees no loss. All finish with the exact bytes in
// one session.
func TestLossPerReceiver(t *testing.T) {
	require(t)
	const size = 4 << 20
	l := newLab(t, 5, 1, false)
	// A slower channel, so that the late beacon joins a running session.
	l.startCastd("", "--multicast-rate", "40Mbit")
	loss := map[string]string{
		"nb0": "rx=0.01,seed=11",
		"nb1": "rx=0.05,seed=12",
		"nb2": "rx=0.2,seed=13",
		"nb3": "rx=1,seed=14", // multicast cut entirely
		"nb4": "rx=0.05,seed=15",
	}
	for _, n := range l.nodes {
		l.startBeacon(n, loss[n.name])
	}
	l.waitReady(l.nodes)
	l.run(fmt.Sprintf("/obj/%d/lossy.bin", size), size, map[string]bool{"nb4": true})
	cm := l.castdMetrics()
	if s := sample(cm, "castd_multicast_sessions_total"); s != 1 {
		t.Errorf("castd ran %v sessions, want 1 (the late beacon joins the running one)", s)
	}
	for _, n := range l.nodes {
		page := l.beaconMetrics(n)
		mc := sample(page, `beacon_multicast_bytes_total{path="multicast"}`)
		switch n.name {
		case "nb3":
			if mc != 0 {
				t.Errorf("nb3's multicast is cut but it counts %v multicast bytes", mc)
			}
		case "nb2":
			// A fifth of the channel lost: much of it rebuilt or repaired.
			if got := sample(page, "beacon_multicast_parity_used_bytes_total") + sample(page, `beacon_multicast_bytes_total{path="repair"}`) +
				sample(page, `beacon_multicast_bytes_total{path="fallback"}`); got < 0.1*size {
				t.Errorf("nb2 loses 20%% of the channel but only %v bytes came from parity, repair or fallback", got)
			}
			fallthrough
		case "nb1":
			// Losses were repaired: by parity on the channel, or by DTLS.
			if sample(page, "beacon_multicast_parity_used_bytes_total")+sample(page, `beacon_multicast_bytes_total{path="repair"}`) == 0 {
				t.Errorf("%s lost packets but used no parity nor repair", n.name)
			}
		}
	}
}

// TestLossCorrelated: castd's native socket drops 1%, 5% or 20% of what
// it sends on the segment, so every native beacon loses the same packets
// (one parity packet cannot repair different losses here, but more parity
// on the channel can); one beacon loses 5% more on its own.
func TestLossCorrelated(t *testing.T) {
	require(t)
	const size = 4 << 20
	for i, tx := range []string{"0.01", "0.05", "0.2"} {
		t.Run("tx="+tx, func(t *testing.T) {
			l := newLab(t, 3, 1, false)
			l.startCastd(fmt.Sprintf("tx=%s,seed=%d", tx, 21+i))
			for _, n := range l.nodes {
				env := ""
				if n.name == "nb0" {
					env = fmt.Sprintf("rx=0.05,seed=%d", 31+i)
				}
				l.startBeacon(n, env)
			}
			l.waitReady(l.nodes)
			l.run(fmt.Sprintf("/obj/%d/correlated.bin", size), size, nil)
			cm := l.castdMetrics()
			if s := sample(cm, "castd_multicast_sessions_total"); s != 1 {
				t.Errorf("castd ran %v sessions, want 1", s)
			}
			// A fifth of the channel lost for everyone: castd sent at least
			// half of that again, as parity on the channel or repairs.
			if more := sample(cm, `castd_multicast_bytes_total{kind="nack_parity"}`) + sample(cm, `castd_multicast_bytes_total{kind="repair"}`); tx == "0.2" && more < 0.1*size {
				t.Errorf("castd drops 20%% of the channel but sent only %v bytes of NACKed parity and repairs", more)
			}
			for _, n := range l.nodes {
				if n.viaAMT {
					continue
				}
				page := l.beaconMetrics(n)
				if sample(page, "beacon_multicast_parity_used_bytes_total")+sample(page, `beacon_multicast_bytes_total{path="repair"}`)+sample(page, `beacon_multicast_bytes_total{path="fallback"}`) == 0 {
					t.Errorf("%s: castd dropped %s of the channel, yet it used no parity, repair or fallback", n.name, tx)
				}
			}
		})
	}
}

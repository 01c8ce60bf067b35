package amtrelay

import (
	"context"
	"log/slog"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/test/harness"
)

var (
	asmGroup = netip.MustParseAddr("239.1.1.1")
	lo4b     = netip.MustParseAddr("127.0.0.2") // a second host
)

// TestEmptyUpdateHoldsNoSlot reproduces the slot-holding attack: after a
// Teardown, an authenticated Update that joins nothing made a tunnel that
// held one of MaxGateways for the whole membership interval (4 min 20 s
// with the defaults), so a few such gateways locked everyone else out.
func TestEmptyUpdateHoldsNoSlot(t *testing.T) {
	tests := []struct {
		name string
		recs []amt.GroupRecord
	}{
		{"leave of what was torn down", amt.ChangeRecords(nil, []amt.Channel{chA})},
		{"no records", nil},
		{"to_in{}", []amt.GroupRecord{{Type: amt.ChangeToInclude, Group: group4a}}},
		{"non-SSM group only", []amt.GroupRecord{{Type: amt.AllowNewSources, Group: asmGroup, Sources: []netip.Addr{src4a}}}},
		{"any-source join only", []amt.GroupRecord{{Type: amt.ChangeToExclude, Group: group4a}}},
		{"current state of nothing", amt.CurrentStateRecords(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startRelay(t, Options{Listen: "127.0.0.1:0", MaxGateways: 1})
			relay := relayAddr(t, r, lo4)
			g := newGateway(t, lo4, relay)
			g.request()
			g.joinAndWait(r, chA)
			g.send(&amt.Teardown{MAC: g.mac, Nonce: g.nonce, Gateway: g.addr()})
			waitFor(t, "teardown", func() bool { return r.Stats().Gateways == 0 })

			n := r.Stats().Updates
			g.update(tt.recs) // still authentic: the MAC is current
			waitFor(t, "the update", func() bool { return r.Stats().Updates == n+1 })
			if s := r.Stats(); s.Gateways != 0 {
				t.Fatalf("an Update that joins nothing holds %d gateway slots", s.Gateways)
			}

			// The one slot is free for a real gateway.
			other := newGateway(t, lo4b, relay)
			if q := other.request(); q.Limit {
				t.Fatal("L flag: an empty tunnel holds the last slot")
			}
			other.joinAndWait(r, chA)
			if err := r.Inject(datagram(t, chA, 5001, 1)); err != nil {
				t.Fatal(err)
			}
			other.expectData()
			if d := r.Stats().Drops.GatewayLimit; d != 0 {
				t.Errorf("%d gateway_limit refusals", d)
			}
		})
	}
}

// TestTunnelEndsWithItsChannels: a tunnel lives only while it has a
// channel, whichever way the last one goes.
func TestTunnelEndsWithItsChannels(t *testing.T) {
	t.Run("leave", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0", MaxGateways: 1})
		relay := relayAddr(t, r, lo4)
		g := newGateway(t, lo4, relay)
		g.request()
		g.joinAndWait(r, chA, chB)
		g.update(amt.ChangeRecords(nil, []amt.Channel{chA}))
		waitFor(t, "first leave", func() bool { return !hasChannels(r, g.addr(), chA) })
		if !hasChannels(r, g.addr(), chB) {
			t.Fatal("leaving one channel ended the tunnel")
		}
		g.update(amt.ChangeRecords(nil, []amt.Channel{chB}))
		// The default membership interval is 260 s: released at once.
		waitFor(t, "release", func() bool { return r.Stats().Gateways == 0 })
		other := newGateway(t, lo4b, relay)
		other.request()
		other.joinAndWait(r, chB)
		// The first gateway comes back with its still valid MAC.
		g.update(amt.ChangeRecords([]amt.Channel{chA}, nil))
		waitFor(t, "refusal", func() bool { return r.Stats().Drops.GatewayLimit == 1 })
		if hasTunnel(r, g.addr()) {
			t.Fatal("tunnel beyond MaxGateways")
		}
	})

	t.Run("every join refused", func(t *testing.T) {
		r := startRelay(t, Options{Listen: "127.0.0.1:0", MaxChannels: 1})
		relay := relayAddr(t, r, lo4)
		g1, g2 := newGateway(t, lo4, relay), newGateway(t, lo4b, relay)
		g1.request()
		g1.joinAndWait(r, chA)
		g2.request()
		g2.update(amt.ChangeRecords([]amt.Channel{chB}, nil))
		waitFor(t, "refusal", func() bool { return r.Stats().Drops.ChannelLimit == 1 })
		if s := r.Stats(); s.Gateways != 1 {
			t.Fatalf("%d tunnels; the refused gateway's must not exist", s.Gateways)
		}
	})

	t.Run("channels time out while refreshed with nothing", func(t *testing.T) {
		r := startRelay(t, fastOptions("127.0.0.1:0")) // 300 ms
		g := newGateway(t, lo4, relayAddr(t, r, lo4))
		g.request()
		g.joinAndWait(r, chA)
		// Authentic Updates that join nothing keep refreshing the tunnel
		// but not chA: once chA times out the tunnel has nothing to keep.
		nothing := []amt.GroupRecord{{Type: amt.ModeIsInclude, Group: asmGroup, Sources: []netip.Addr{src4a}}}
		deadline := time.Now().Add(3 * time.Second)
		for hasTunnel(r, g.addr()) {
			if time.Now().After(deadline) {
				t.Fatal("a tunnel without channels is kept alive by empty Updates")
			}
			g.update(nothing)
			time.Sleep(30 * time.Millisecond)
		}
		if s := r.Stats(); s.Expired != 1 || s.Channels != 0 {
			t.Errorf("stats: %+v", s)
		}
	})
}

// TestRefusalReasons: every refusal a gateway can cause over the wire is
// counted under its reason, and nothing else is.
func TestRefusalReasons(t *testing.T) {
	o := Options{Listen: "127.0.0.1:0", MaxGateways: 1, MaxChannelsPerGateway: 1, RequestRate: 0.001, RequestBurst: 2}
	r := startRelay(t, o)
	relay := relayAddr(t, r, lo4)
	g := newGateway(t, lo4, relay)
	g.request()
	g.joinAndWait(r, chA)

	g.sendRaw([]byte{0x5f, 1, 2})                             // malformed: unknown type
	g.sendRaw([]byte{byte(amt.TypeMembershipQuery), 0, 0, 0}) // malformed: truncated
	g.send(&amt.RelayAdvertisement{Nonce: 1, Relay: lo4})     // unexpected
	bad := g.updateMsg(amt.ChangeRecords([]amt.Channel{chB}, nil))
	bad.MAC[0] ^= 1
	g.send(bad)                                                                                             // bad_mac
	g.update(amt.ChangeRecords([]amt.Channel{chB}, nil))                                                    // channel_limit (one per gateway)
	g.update([]amt.GroupRecord{{Type: amt.AllowNewSources, Group: asmGroup, Sources: []netip.Addr{src4a}}}) // non_ssm
	for i := 0; i < 3; i++ {                                                                                // the burst of 2 is spent by g.request and the first of these
		g.send(&amt.Request{Nonce: uint32(100 + i)})
	}
	other := newGateway(t, lo4b, relay)
	other.request()
	other.update(amt.ChangeRecords([]amt.Channel{chA}, nil)) // gateway_limit

	want := Drops{Malformed: 2, Unexpected: 1, BadMAC: 1, ChannelLimit: 1, NotSSM: 1, RateLimited: 2, GatewayLimit: 1}
	waitFor(t, "the refusals", func() bool { return r.Stats().Drops == want })
	time.Sleep(20 * time.Millisecond)
	if got := r.Stats().Drops; got != want {
		t.Errorf("drops %+v, want %+v", got, want)
	}
	byReason := map[string]uint64{}
	for _, rf := range r.Stats().Drops.ByReason() {
		byReason[rf.Reason] = rf.Count
	}
	for reason, n := range map[string]uint64{"malformed": 2, "unexpected": 1, "bad_mac": 1, "channel_limit": 1, "non_ssm": 1, "rate_limited": 2, "gateway_limit": 1} {
		if byReason[reason] != n {
			t.Errorf("ByReason[%s] = %d, want %d", reason, byReason[reason], n)
		}
	}
}

// TestByReasonCoversDrops: every Drops field has exactly one reason label,
// so a new drop counter cannot be left out of the metric.
func TestByReasonCoversDrops(t *testing.T) {
	var d Drops
	v := reflect.ValueOf(&d).Elem()
	for i := 0; i < v.NumField(); i++ {
		v.Field(i).SetUint(uint64(1) << i)
	}
	rs := d.ByReason()
	if len(rs) != v.NumField() || len(RefusalReasons) != v.NumField() {
		t.Fatalf("%d reasons (%d labels) for %d Drops fields", len(rs), len(RefusalReasons), v.NumField())
	}
	var seen uint64
	labels := map[string]bool{}
	for i, rf := range rs {
		if rf.Reason != RefusalReasons[i] || labels[rf.Reason] || !regexp.MustCompile(`^[a-z_]+$`).MatchString(rf.Reason) {
			t.Errorf("reason %d: %q", i, rf.Reason)
		}
		labels[rf.Reason] = true
		if rf.Count == 0 || seen&rf.Count != 0 {
			t.Errorf("reason %s: count %#x duplicates or misses a field", rf.Reason, rf.Count)
		}
		seen |= rf.Count
	}
	// Round trip through the counters.
	var c refusals
	for i := range numReasons {
		c.n[i].Store(rs[i].Count)
	}
	if got := dropsFrom(&c.n); got != d {
		t.Errorf("dropsFrom = %+v, want %+v", got, d)
	}
}

// TestRefusalLog: a flood of refusals is logged as one warning per reason
// per interval with the count, never a line per packet, and what is left
// is logged when the relay stops.
func TestRefusalLog(t *testing.T) {
	var logs harness.LineBuffer
	o := Options{Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	o.refusalLog = time.Hour
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer cancel()

	g := newGateway(t, lo4, relayAddr(t, r, lo4))
	const flood = 300
	for i := 0; i < flood; i++ {
		g.sendRaw([]byte{0x5f, byte(i)})
	}
	waitFor(t, "the flood", func() bool { return r.Stats().Drops.Malformed == flood })
	waitFor(t, "the first summary", func() bool { return strings.Contains(logs.String(), "reason=malformed") })
	time.Sleep(1200 * time.Millisecond) // a few more maintenance ticks
	if n := strings.Count(logs.String(), "reason=malformed"); n != 1 {
		t.Fatalf("%d warnings within the interval, want 1:\n%s", n, logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	lines := strings.Count(out, "reason=malformed")
	if lines < 1 || lines > 2 {
		t.Fatalf("%d warnings for one flood:\n%s", lines, out)
	}
	var sum int
	for _, m := range regexp.MustCompile(`reason=malformed count=(\d+)`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		sum += n
	}
	if sum != flood {
		t.Errorf("warnings count %d refusals, want %d:\n%s", sum, flood, out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "sample_from=127.0.0.1:") {
		t.Errorf("warning lacks its level or a sample source:\n%s", out)
	}
}

package mcsend

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/mcproto"
)

// Block 1 of the object loses different source symbols at different
// receivers, with no proactive parity: when two or more lack symbols the
// sender puts max(Need) NEW parity symbols on the channel (one parity
// symbol repairs different losses at different receivers), and nothing
// goes by unicast; when one alone lacks, it gets exactly what it named by
// unicast and nothing more goes on the channel.
func TestNackAggregation(t *testing.T) {
	lose := func(which map[int][]uint16) func(int, *alc.Packet) bool {
		return func(r int, p *alc.Packet) bool {
			if p.TOI != 1 || p.SBN != 1 {
				return false
			}
			for _, esi := range which[r] {
				if p.ESI == esi {
					return true
				}
			}
			return false
		}
	}
	noParity := func(o *Options) { o.Parity = -1 }
	for _, tc := range []struct {
		name            string
		lost            map[int][]uint16
		channel, repair uint64 // packets
	}{
		{"several lack: parity on the channel", map[int][]uint16{0: {5, 6, 7}, 1: {8, 9, 10, 11}, 2: {3}}, 4, 0},
		{"one lacks: unicast", map[int][]uint16{0: {5, 6, 7}}, 0, 3},
		{"none lacks", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runSim(t, simConfig{n: 4, size: 600_000, seed: 5, drop: lose(tc.lost), opts: noParity})
			st := r.st
			if st.Packets[KindNackParity] != tc.channel || st.Packets[KindRepair] != tc.repair {
				t.Errorf("channel repair %d packets, unicast %d; want %d and %d", st.Packets[KindNackParity], st.Packets[KindRepair], tc.channel, tc.repair)
			}
			if st.Packets[KindParity] != 0 {
				t.Errorf("%d proactive parity packets with Parity < 0", st.Packets[KindParity])
			}
		})
	}
}

// The carousel never exceeds the per-channel or the total cap, on a fake
// clock: over every interval, bytes sent <= burst + rate * interval.
func TestPacingWithinCaps(t *testing.T) {
	for _, tc := range []struct {
		name              string
		perChannel, total float64
		burst             int
	}{
		{"per channel", 1e6, 0, 8000},
		{"total below per channel", 4e6, 5e5, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type rec struct {
				at time.Time
				n  int
			}
			var sent []rec
			r := runSim(t, simConfig{n: 2, size: 300_000, seed: 3, loss: 0.05,
				sent: func(at time.Time, pkt []byte) { sent = append(sent, rec{at, len(pkt)}) },
				opts: func(o *Options) {
					sh, err := channels.NewShaper(tc.perChannel, tc.total, tc.burst, t0)
					if err != nil {
						t.Fatal(err)
					}
					o.Shaper = sh
				}})
			rate := tc.perChannel
			if tc.total > 0 {
				rate = min(rate, tc.total)
			}
			for i := range sent {
				sum := 0
				for j := i; j < len(sent); j++ {
					sum += sent[j].n
					if limit := float64(tc.burst) + rate*sent[j].at.Sub(sent[i].at).Seconds(); float64(sum) > limit+1e-6 {
						t.Fatalf("packets %d..%d: %d bytes in %v, cap %.0f", i, j, sum, sent[j].at.Sub(sent[i].at), limit)
					}
				}
			}
			// And it used the cap: the whole transfer took about size/rate.
			span := sent[len(sent)-1].at.Sub(sent[0].at).Seconds()
			var total int
			for _, s := range sent {
				total += s.n
			}
			if got := float64(total-tc.burst) / span; got < 0.9*rate {
				t.Errorf("sent at %.0f bytes/s, cap %.0f: pacing too slow", got, rate)
			}
			t.Logf("%d packets, %d bytes over %.3fs; complete %v", len(sent), total, span, r.complete)
		})
	}
}

// A session ends by itself: after its passes and the wait for offered
// beacons, with nobody joined, it releases its lease (the channel is
// handed out again after the hold-down).
func TestSessionEndsAndReleases(t *testing.T) {
	pool := testPool(t)
	clk := t0
	snd, err := New(Options{Key: testKey(t, 1), Alloc: pool, Native: &countSink{}, Idle: time.Second,
		Now: func() time.Time { return clk }, Sleep: func(ctx context.Context, d time.Duration) error { clk = clk.Add(d); return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	obj := testObject(100_000, 1)
	ss, err := snd.Offer(context.Background(), Object{Key: "k", URL: "/k", R: bytesReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ss.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end")
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	if pool.InUse() != 1 { // resting in hold-down, no longer held
		t.Errorf("channels in use %d, want 1 resting", pool.InUse())
	}
	if _, ok := pool.Lookup("k", clk); ok {
		t.Error("lease still live after the session ended")
	}
	if got := clk.Sub(t0); got < time.Second {
		t.Errorf("ended after %v, before the wait for offered beacons (1s)", got)
	}
	if _, ok := snd.Lookup("k"); ok {
		t.Error("ended session still listed")
	}
	// A Join now is for an ended session.
	p := &simRecv{name: "late"}
	j := mcproto.Join{Object: mcproto.Object{TSI: ss.Manifest().TSI, TOI: ss.Manifest().TOI}}
	snd.Handle(p, j.AppendTo(nil))
	if len(p.statuses) != 1 || p.statuses[0].Code != mcproto.StatusUnknown {
		t.Errorf("join of an ended session: %+v, want StatusUnknown", p.statuses)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// What one NACK or many nodes can make the service hold is capped: ranges
// honoured per message, blocks pending per node, nodes per session; the
// rest is refused and counted, exactly.
func TestNackStateBounded(t *testing.T) {
	snd, err := New(Options{Key: testKey(t, 1), Alloc: testPool(t), Native: &countSink{}, Idle: time.Hour,
		NackWindow: time.Hour, MaxRanges: 8, MaxPending: 3, MaxNodes: 5, NackRate: 1e6, NackBurst: 1e6, SymbolLen: 64, MaxBlockLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	obj := testObject(64*10*12, 1) // 12 blocks
	ss, err := snd.Offer(context.Background(), Object{Key: "b", URL: "/b", R: bytesReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first pass", func() bool { return ss.Stats().Passes >= 1 })
	o := mcproto.Object{TSI: ss.Manifest().TSI, TOI: ss.Manifest().TOI}
	p := &nullPeer{id: "flooder"}
	n := mcproto.Nack{Object: o}
	for sbn := range 12 { // 12 blocks, 2 ranges each: 24 ranges
		n.Ranges = append(n.Ranges, mcproto.Range{SBN: uint32(sbn), First: 0, Count: 5, Need: 10},
			mcproto.Range{SBN: uint32(sbn), First: 5, Count: 5, Need: 10})
	}
	b, err := n.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	snd.Handle(p, b)
	st := snd.Stats()
	if st.Refused[RefuseRanges] != 24-8 {
		t.Errorf("ranges refused %d, want %d (24 sent, 8 honoured)", st.Refused[RefuseRanges], 24-8)
	}
	if st.Refused[RefusePending] != 2 { // 8 ranges = 4 blocks, cap 3: block 3's two ranges
		t.Errorf("pending refused %d, want 2", st.Refused[RefusePending])
	}
	ss.mu.Lock()
	if len(ss.pending) != 3 || ss.members["flooder"].pending != 3 {
		t.Errorf("%d blocks pending, node has %d; cap 3", len(ss.pending), ss.members["flooder"].pending)
	}
	ss.mu.Unlock()
	// Nodes: at most MaxNodes hold state; the others are refused.
	for i := range 10 {
		j := mcproto.Join{Object: o}
		snd.Handle(&nullPeer{id: fmt.Sprint("node", i)}, j.AppendTo(nil))
	}
	ss.mu.Lock()
	members := len(ss.members)
	ss.mu.Unlock()
	if st := snd.Stats(); members > 5 || st.Nodes > 5 || st.Refused[RefuseNodes] != 6 {
		t.Errorf("%d members, %d nodes, %d refused; want at most 5 and 6 refused", members, st.Nodes, st.Refused[RefuseNodes])
	}
}

// A session that only serves repairs between passes, sending nothing on
// the channel, still renews its lease: it must not lapse while the
// session may put parity on the channel again.
func TestQuietSessionKeepsLease(t *testing.T) {
	r, _ := channels.ParseRanges("232.1.0.0/16")
	pool, err := channels.New(channels.Options{Ranges: r, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, LeaseTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clk := t0
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }
	var lapsed time.Duration
	snd, err := New(Options{Key: testKey(t, 1), Alloc: pool, Native: &countSink{}, Idle: 10 * time.Second,
		Now: now, Sleep: func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			clk = clk.Add(d)
			if _, live := pool.Lookup("q", clk); !live && lapsed == 0 {
				lapsed = clk.Sub(t0)
			}
			return ctx.Err()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	obj := testObject(50_000, 1)
	ss, err := snd.Offer(context.Background(), Object{Key: "q", URL: "/q", R: bytesReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}
	// The session lingers Idle (10 s) for offered beacons, five lease
	// lifetimes, sending nothing.
	<-ss.Done()
	if err := ss.Err(); err != nil {
		t.Fatalf("session ended with %v, want a clean end after renewing", err)
	}
	if got := now().Sub(t0); got < 10*time.Second {
		t.Errorf("ended after %v", got)
	}
	if lapsed != 0 {
		t.Errorf("the lease lapsed %v into the session", lapsed)
	}
}

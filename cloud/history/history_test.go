package history

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func seedKey(t *testing.T, b byte) *identity.Keypair {
	k, err := identity.FromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// contract for node: 10 hours from t0, 8 of them online, 64 GB, 100 Mbit/s.
func contract(t *testing.T, node identity.PublicKey) contracts.Contract {
	owner, cast := seedKey(t, 1), seedKey(t, 3)
	o := contracts.Offer{Owner: owner.Public(), Node: node, Cast: cast.Public(), BandwidthMbps: 100, AvailabilityHours: 8, StorageGB: 64, Start: t0, End: t0.Add(10 * time.Hour)}
	m, s, _ := offchain.SignText(owner, o.Text())
	c, err := contracts.Accept(cast, owner.Public(), o.Text(), m, s, t0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run samples a node every 5 minutes for 10 hours; state says, per minute,
// whether it is online and what it reports.
func run(t *testing.T, h *History, node string, state func(min int) (online bool, served, storage uint64)) {
	t.Helper()
	for min := 0; min <= 600; min += 5 {
		on, served, storage := state(min)
		s := Sample{Node: node, Online: on}
		if on {
			s.HasHealth, s.BytesServed, s.HitRatio, s.StorageBytes = true, served, 0.75, storage
		}
		if err := h.Record(t0.Add(time.Duration(min)*time.Minute), 10*time.Minute, []Sample{s}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestContractMeasured(t *testing.T) {
	for _, tc := range []struct {
		name    string
		state   func(min int) (bool, uint64, uint64)
		verdict string
		reason  string
		bw      string
	}{
		{"met: 9 h online, 1 GB a minute, 70 GB", func(min int) (bool, uint64, uint64) {
			return min <= 540, uint64(min) * 1e9, 70e9 // 133 Mbit/s
		}, contracts.VerdictMet, "", contracts.StatusMet},
		{"not met: 5 h online", func(min int) (bool, uint64, uint64) {
			return min <= 300, uint64(min) * 1e6, 70e9
		}, contracts.VerdictNotMet, "availability_hours: online 5.000 h of the 8.000 h due", contracts.StatusUnverified},
		{"not met: storage dropped", func(min int) (bool, uint64, uint64) {
			if min == 205 {
				return true, 0, 10e9
			}
			return true, 0, 70e9
		}, contracts.VerdictNotMet, "storage_gb: offered as little as 10.00 GB", contracts.StatusUnverified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Open(filepath.Join(t.TempDir(), "history.db"), 0, slog.Default())
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			node := seedKey(t, 2)
			run(t, h, node.ID(), tc.state)
			c := contract(t, node.Public())
			ev, err := contracts.Evaluate(c, t0, t0.Add(24*time.Hour), t0.Add(11*time.Hour), h, h)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Verdict != tc.verdict || !strings.Contains(strings.Join(ev.Reasons, "|"), tc.reason) || ev.Terms[2].Status != tc.bw {
				t.Fatalf("evaluation %+v", ev)
			}
			if ev.Observed < 9.99 || ev.Observed > 10.01 {
				t.Errorf("observed %.2f h, want 10", ev.Observed)
			}
			if ev.Served.Source != SourceHealth {
				t.Errorf("source %q", ev.Served.Source)
			}
			mid, _ := contracts.Evaluate(c, t0, t0.Add(24*time.Hour), t0.Add(5*time.Hour), h, h)
			if mid.Verdict != contracts.VerdictRunning {
				t.Errorf("before the end: %s", mid.Verdict)
			}
		})
	}
}

func TestServedCounters(t *testing.T) {
	h, err := Open(filepath.Join(t.TempDir(), "history.db"), 0, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	rec := func(min int, served uint64) {
		if err := h.Record(t0.Add(time.Duration(min)*time.Minute), 2*time.Minute, []Sample{{Node: "n", Online: true, HasHealth: true, BytesServed: served, HitRatio: 0.5, StorageBytes: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	rec(0, 1000)      // baseline
	rec(1, 3000)      // +2000
	rec(2, 500)       // restart: +500
	rec(3, 1<<62)     // a lie: 10^18 bytes in a minute, not counted
	rec(4, 1<<62+100) // +100
	f, err := h.ServedBytes("n", t0, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if f.Bytes != 2600 || f.HitRatio != 0.5 {
		t.Fatalf("served %+v, want 2600 bytes at 0.5", f)
	}
	// A node that started while castd watched: its first report counts
	// whole; one that ran before castd did: its first report is the baseline.
	late := func(node string, min int, uptime time.Duration) {
		h.Record(t0.Add(time.Duration(min)*time.Minute), 2*time.Minute, []Sample{{Node: node, Online: true, HasHealth: true, BytesServed: 7000, Uptime: uptime}})
	}
	late("fresh", 5, 30*time.Second)
	late("old", 6, time.Hour)
	for node, want := range map[string]uint64{"fresh": 7000, "old": 0} {
		if f, _ := h.ServedBytes(node, t0, t0.Add(time.Hour)); f.Bytes != want {
			t.Errorf("%s: %d bytes, want %d", node, f.Bytes, want)
		}
	}
	// castd down for two hours: observed only up to maxGap of it.
	rec(125, 1<<62+100)
	m, _ := h.Measure("n", t0, t0.Add(3*time.Hour))
	if m.Observed != 6*time.Minute {
		t.Fatalf("observed %s, want 6m", m.Observed)
	}
}

func TestPrune(t *testing.T) {
	h, err := Open(filepath.Join(t.TempDir(), "history.db"), 48*time.Hour, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	h.Record(t0, time.Minute, []Sample{{Node: "n", Online: true}})
	h.Record(t0.Add(time.Minute), time.Minute, []Sample{{Node: "n", Online: true}})
	h.Record(t0.Add(72*time.Hour), time.Minute, []Sample{{Node: "n", Online: true}})
	h.Record(t0.Add(72*time.Hour+time.Minute), time.Minute, []Sample{{Node: "n", Online: true}})
	old, recent := 0, 0
	h.Hours("n", t0, t0.Add(24*time.Hour), func(time.Time, Hour, float64) { old++ })
	h.Hours("n", t0.Add(24*time.Hour), t0.Add(100*time.Hour), func(time.Time, Hour, float64) { recent++ })
	if old != 0 || recent != 2 {
		t.Fatalf("%d old and %d recent hours kept, want 0 and 2", old, recent)
	}
}

// BenchmarkRecord10k is one sampling tick of a 10,000-node fleet.
func BenchmarkRecord10k(b *testing.B) {
	h, err := Open(filepath.Join(b.TempDir(), "history.db"), 0, slog.Default())
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	samples := make([]Sample, 10000)
	for i := range samples {
		samples[i] = Sample{Node: fmt.Sprintf("node-%05d-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", i), Online: i%10 != 0, HasHealth: true, StorageBytes: 64e9}
	}
	at := t0
	h.Record(at, time.Hour, samples)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		at = at.Add(time.Minute)
		for j := range samples {
			samples[j].BytesServed += 1e6
		}
		if err := h.Record(at, 2*time.Minute, samples); err != nil {
			b.Fatal(err)
		}
	}
}

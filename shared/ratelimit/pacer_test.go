package ratelimit

import (
	"math"
	"testing"
	"time"
)

// TestPacerRate sends as fast as the pacer lets it on a fake clock and
// checks the bytes sent over the run against rate*t + burst.
func TestPacerRate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int
		size  int
	}{
		{"1MBps/1316B", 1e6, 1500, 1316},
		{"12.5MBps/1400B", 12.5e6, 64 << 10, 1400},
		{"100kBps/odd", 1e5, 3000, 1001},
		{"packet over burst", 1e4, 500, 1200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1_700_000_000, 0)
			now := start
			p := NewPacer(tc.rate, tc.burst, now)
			var sent int
			for now.Sub(start) < 10*time.Second {
				now = now.Add(p.Reserve(now, tc.size))
				sent += tc.size
				// The bound: what went by now never exceeds burst + rate*t
				// (plus the packet that may exceed the burst on its own).
				limit := float64(tc.burst) + tc.rate*now.Sub(start).Seconds() + float64(tc.size)
				if float64(sent) > limit+1e-6 {
					t.Fatalf("at %v sent %d > limit %.0f", now.Sub(start), sent, limit)
				}
			}
			got := float64(sent) / now.Sub(start).Seconds()
			if got < tc.rate*0.99 || got > tc.rate*1.01+float64(tc.burst)/10 {
				t.Fatalf("rate %.0f B/s, want about %.0f", got, tc.rate)
			}
		})
	}
}

func TestPacerIdleRefillsToBurstOnly(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := NewPacer(1000, 2000, now)
	if d := p.Reserve(now, 2000); d != 0 {
		t.Fatalf("full burst waited %v", d)
	}
	if d := p.Reserve(now, 1000); d < time.Second || d > time.Second+time.Microsecond {
		t.Fatalf("1000 B over an empty 1000 B/s bucket waits %v, want 1s", d)
	}
	// An hour idle saves only the burst, not an hour of bytes.
	now = now.Add(time.Hour)
	if d := p.Reserve(now, 2000); d != 0 {
		t.Fatalf("after idle, burst waited %v", d)
	}
	if d := p.Reserve(now, 1); d == 0 {
		t.Fatal("idle time saved more than the burst")
	}
	if d := NewPacer(0, 0, now).Reserve(now, 1<<30); d != 0 {
		t.Fatalf("unlimited pacer waited %v", d)
	}
	if d := NewPacer(1000, 10, now).Reserve(now, -5); d != 0 {
		t.Fatalf("negative size waited %v", d)
	}
	// An absurd size waits as long as a Duration can, never "at once"
	// through an overflow.
	huge := NewPacer(1, 10, now)
	if d := huge.Reserve(now, math.MaxInt); d != math.MaxInt64 {
		t.Fatalf("absurd size waited %v", d)
	}
	if d := huge.Reserve(now.Add(time.Hour), 1); d <= 0 {
		t.Fatalf("after an absurd reservation the next waits %v", d)
	}
	for _, r := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1} {
		if d := NewPacer(r, 10, now).Reserve(now, 1<<20); d != 0 {
			t.Fatalf("rate %v waited %v, want no limit", r, d)
		}
	}
}

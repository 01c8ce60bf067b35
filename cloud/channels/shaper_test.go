package channels

import (
	"math"
	"testing"
	"time"
)

// TestShaperCaps runs three channels flat out on a fake clock through one
// Shaper and checks each channel against the per-channel cap and all of
// them against the total, over the whole run and at every step, and that
// the sender is not held back below the caps.
func TestShaperCaps(t *testing.T) {
	for _, tc := range []struct {
		name              string
		perChannel, total float64
		wantEach          float64 // expected bytes/s of each channel
	}{
		{"total binds", 2e6, 3e6, 1e6},
		{"per-channel binds", 1e6, 10e6, 1e6},
		{"no total", 5e5, 0, 5e5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size, burst, run = 1400, 16 << 10, 20 * time.Second
			s, err := NewShaper(tc.perChannel, tc.total, burst, t0)
			if err != nil {
				t.Fatal(err)
			}
			sess := make([]*Session, 3)
			next := make([]time.Time, 3)
			sent := make([]float64, 3)
			for i := range sess {
				sess[i], next[i] = s.Session(t0), t0
			}
			for {
				// The channel due first sends its next datagram.
				i := 0
				for j := range next {
					if next[j].Before(next[i]) {
						i = j
					}
				}
				now := next[i]
				if now.Sub(t0) >= run {
					break
				}
				at := now.Add(sess[i].Reserve(now, size))
				sent[i] += size
				el := at.Sub(t0).Seconds()
				if sent[i] > tc.perChannel*el+burst+size {
					t.Fatalf("channel %d: %.0f bytes by %.3fs, cap %.0f", i, sent[i], el, tc.perChannel*el+burst)
				}
				if tot := sent[0] + sent[1] + sent[2]; tc.total > 0 && tot > tc.total*el+burst+3*size {
					t.Fatalf("total %.0f bytes by %.3fs, cap %.0f", tot, el, tc.total*el+burst)
				}
				next[i] = at
			}
			for i, b := range sent {
				rate := b / run.Seconds()
				if rate < tc.wantEach*0.97 || rate > tc.wantEach*1.03+float64(burst)/run.Seconds() {
					t.Errorf("channel %d sent %.0f B/s, want about %.0f", i, rate, tc.wantEach)
				}
			}
		})
	}
}

func TestNewShaperErrors(t *testing.T) {
	for _, tc := range []struct {
		per, total float64
		burst      int
	}{{-1, 0, 0}, {0, -1, 0}, {1e6, 1e6, 1000}, {1e6, 1e6, -5}, {math.NaN(), 0, 0}, {0, math.Inf(1), 0}, {2 * MaxRate, 0, 0}} {
		if _, err := NewShaper(tc.per, tc.total, tc.burst, t0); err == nil {
			t.Errorf("NewShaper(%v, %v, %d) accepted", tc.per, tc.total, tc.burst)
		}
	}
}

package mcrecv

import (
	"testing"
	"time"
)

func TestCoarseClock(t *testing.T) {
	base := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	c := newCoarseClock(base)
	for _, tc := range []struct {
		set  time.Time
		want time.Time
	}{
		{base, base},
		{base.Add(1500 * time.Microsecond), base.Add(time.Millisecond)},        // milliseconds, truncated
		{base.Add(-time.Hour), base.Add(time.Millisecond)},                     // never backwards
		{base.Add(10 * time.Second), base.Add(10 * time.Second)},               // forward
		{base.Add(5 * time.Second), base.Add(10 * time.Second)},                // not back either
		{base.Add(2000 * time.Hour), base.Add((1<<32 - 1) * time.Millisecond)}, // saturates
	} {
		c.set(tc.set)
		if got := c.Now(); !got.Equal(tc.want) {
			t.Errorf("after set(%v): Now() = %v, want %v", tc.set.Sub(base), got.Sub(base), tc.want.Sub(base))
		}
	}
}

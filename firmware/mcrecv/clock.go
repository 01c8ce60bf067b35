package mcrecv

import (
	"sync/atomic"
	"time"
)

// coarseClock is an object's clock for its Assembler, which stamps every
// verified symbol with the time (for Stalled). Reading the real clock per
// packet is a clock_gettime system call on 32-bit MIPS (Go has no vDSO
// there, and time.Now reads two clocks), so the object's loop, which
// wakes every NackGap/2 anyway, sets the time and the packet path only
// loads it: a stamp is at most one tick old, and Stalled, asked by the
// loop right after it sets the time, sees the real time.
type coarseClock struct {
	base time.Time
	ms   atomic.Uint32 // since base; 32 bits: atomic without a lock on MIPS32, 49 days
}

func newCoarseClock(now time.Time) *coarseClock { return &coarseClock{base: now} }

// Now returns the time last set.
func (c *coarseClock) Now() time.Time {
	return c.base.Add(time.Duration(c.ms.Load()) * time.Millisecond)
}

// set advances the clock to t (never backwards, and saturating).
func (c *coarseClock) set(t time.Time) {
	d := t.Sub(c.base) / time.Millisecond
	if d <= 0 {
		return
	}
	d = min(d, 1<<32-1)
	if uint32(d) > c.ms.Load() {
		c.ms.Store(uint32(d))
	}
}

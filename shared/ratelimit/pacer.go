package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Pacer is a token bucket in bytes for a sender that waits rather than
// drops: Reserve always takes the n bytes and says how long to wait before
// sending them, so the tokens may go negative (a debt the wait pays back).
// Over any interval of length t, the bytes whose wait has elapsed are at
// most burst + rate*t. The zero value is not usable; see NewPacer.
type Pacer struct {
	mu     sync.Mutex
	rate   float64 // bytes a second, > 0
	burst  float64
	tokens float64 // may be negative: bytes reserved ahead of the rate
	last   time.Time
}

// NewPacer returns a full pacer of rate bytes a second that lets burst
// bytes go at once. A rate of zero or less, +Inf or NaN means no limit.
func NewPacer(rate float64, burst int, now time.Time) *Pacer {
	if !(rate > 0) || math.IsInf(rate, 1) {
		rate = 0
	}
	return &Pacer{rate: rate, burst: float64(max(burst, 0)), tokens: float64(max(burst, 0)), last: now}
}

// Reserve takes n bytes (n < 0 counts as 0) and returns how long after now
// the caller must wait before sending them; 0 means at once. Callers that
// reserve for several pacers (a channel's and the total) wait for the
// longest of the delays: each pacer's bound still holds, as bytes only go
// later than each of them allowed.
func (p *Pacer) Reserve(now time.Time, n int) time.Duration {
	if p.rate <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := now.Sub(p.last); d > 0 {
		p.tokens = min(p.burst, p.tokens+d.Seconds()*p.rate)
		p.last = now
	}
	p.tokens -= float64(max(n, 0))
	if p.tokens >= 0 {
		return 0
	}
	// Round up so that waiting exactly the delay never sends early; a debt
	// past what a Duration holds (absurd sizes) waits the longest it can
	// rather than overflowing into "at once".
	wait := -p.tokens / p.rate * float64(time.Second)
	if wait >= math.MaxInt64-1 {
		return math.MaxInt64
	}
	return time.Duration(wait) + 1
}

// Rate is the pacer's rate in bytes a second (0 or less: no limit).
func (p *Pacer) Rate() float64 { return p.rate }

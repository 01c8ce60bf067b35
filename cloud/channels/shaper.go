package channels

import (
	"fmt"
	"time"

	"github.com/blockcast/beacon/shared/ratelimit"
)

// MinBurst is the smallest pacing burst: one datagram of a 1500-byte path.
const MinBurst = 1500

// DefaultBurst lets a few dozen packets go back to back; the sender's
// timer resolution (about a millisecond) needs that much at tens of Mbit/s.
const DefaultBurst = 64 << 10

// Shaper holds the rate caps of this castd's multicast sending: each
// channel at most PerChannel bytes a second (--multicast-rate), all
// channels together at most Total (--multicast-rate-total). The sender
// takes a Session per lease and asks it, before each datagram, how long to
// wait.
type Shaper struct {
	perChannel float64
	burst      int
	total      *ratelimit.Pacer
}

// NewShaper returns a Shaper; a rate of 0 means no cap. burst 0 means
// DefaultBurst.
func NewShaper(perChannel, total float64, burst int, now time.Time) (*Shaper, error) {
	for _, r := range []float64{perChannel, total} {
		if !(r >= 0) || r > MaxRate {
			return nil, fmt.Errorf("%w: multicast rate %v bytes/s is not within 0..%g (per channel %v, total %v)", ErrBadOptions, r, float64(MaxRate), perChannel, total)
		}
	}
	if burst == 0 {
		burst = DefaultBurst
	}
	if burst < MinBurst {
		return nil, fmt.Errorf("%w: burst %d bytes is under one datagram (%d)", ErrBadOptions, burst, MinBurst)
	}
	return &Shaper{perChannel: perChannel, burst: burst, total: ratelimit.NewPacer(total, burst, now)}, nil
}

// Session is the pacer of one channel's sending.
type Session struct {
	ch    *ratelimit.Pacer
	total *ratelimit.Pacer
}

// Session returns a pacer for one lease's sending, starting full.
func (s *Shaper) Session(now time.Time) *Session {
	return &Session{ch: ratelimit.NewPacer(s.perChannel, s.burst, now), total: s.total}
}

// Reserve takes n bytes from the channel's and the total budget and
// returns how long after now the datagram may go. The sender waits that
// long (it never drops): the caps hold over any interval, bursts aside.
func (p *Session) Reserve(now time.Time, n int) time.Duration {
	return max(p.ch.Reserve(now, n), p.total.Reserve(now, n))
}

package amtrelay

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// limiterBuckets is the fixed size of the rate limiter table. Source
// addresses hash into it, so a flood from many addresses costs no memory;
// two addresses that collide share a budget. The hash is keyed per process
// so that nobody can aim collisions at a victim's address.
const limiterBuckets = 4096

// limiter is a token bucket per source address (IPv6 by /64, the unit a
// single host usually controls), in a fixed-size hashed table.
type limiter struct {
	mu      sync.Mutex
	seed    maphash.Seed
	rate    float64 // tokens per second
	burst   float64
	epoch   time.Time
	buckets [limiterBuckets]bucket
}

type bucket struct {
	tokens float64
	last   time.Duration // since epoch; 0 = never used
}

func newLimiter(rate, burst float64) *limiter {
	return &limiter{seed: maphash.MakeSeed(), rate: rate, burst: burst, epoch: time.Now()}
}

// bucketOf returns src's bucket.
func (l *limiter) bucketOf(src netip.Addr) uint64 {
	src = src.Unmap()
	key := src.As16()
	if src.Is6() {
		clear(key[8:]) // one budget per /64
	}
	return maphash.Bytes(l.seed, key[:]) % limiterBuckets
}

// allow takes one token for src and reports whether there was one.
func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	i := l.bucketOf(src)
	t := max(now.Sub(l.epoch), 1) // monotonic; never 0 once used

	l.mu.Lock()
	defer l.mu.Unlock()
	b := &l.buckets[i]
	if b.last == 0 {
		b.tokens = l.burst
	} else {
		b.tokens = min(l.burst, b.tokens+max(t-b.last, 0).Seconds()*l.rate)
	}
	b.last = t
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

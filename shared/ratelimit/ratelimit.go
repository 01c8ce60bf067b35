// Package ratelimit holds the per-source limits that keep one address from
// taking what is meant for many: token buckets (requests per second) and
// slot counters (things held at once), both in fixed-size tables hashed by
// address, so that a flood from many addresses costs no memory. Two
// addresses that collide share a budget; the hash is keyed per process so
// that nobody can aim collisions at a victim's address. IPv6 addresses are
// limited per /64, the unit a single host usually controls.
package ratelimit

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// tableSize is the number of buckets or counters in a table.
const tableSize = 4096

// table hashes addresses into tableSize entries.
type table struct{ seed maphash.Seed }

func newTable() table { return table{seed: maphash.MakeSeed()} }

// Index returns the entry an address uses: IPv4 by address, IPv6 by /64,
// IPv4-mapped IPv6 as the IPv4 address.
func (t table) index(a netip.Addr) uint64 {
	a = a.Unmap()
	key := a.As16()
	if a.Is6() {
		clear(key[8:])
	}
	return maphash.Bytes(t.seed, key[:]) % tableSize
}

// Bucket is one token bucket: rate tokens a second, at most burst saved.
// The zero value is not usable; see NewBucket.
type Bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// NewBucket returns a full bucket.
func NewBucket(rate float64, burst int, now time.Time) *Bucket {
	return &Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// Allow takes one token and reports whether there was one.
func (b *Bucket) Allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// AllowN takes n tokens and reports whether there were n; on false it takes
// none. With rate in bytes a second and burst in bytes it is a byte-rate
// limit (a datagram of n bytes costs n tokens), so burst must be at least
// the largest datagram or that datagram is never allowed.
func (b *Bucket) AllowN(now time.Time, n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if n < 0 || b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Full reports whether the bucket has refilled to its burst by now, that is
// whether forgetting it would give its owner nothing it does not already have.
func (b *Bucket) Full(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokens+max(now.Sub(b.last), 0).Seconds()*b.rate >= b.burst
}

// PerAddr is a token bucket per source address.
type PerAddr struct {
	t       table
	mu      sync.Mutex
	rate    float64 // tokens per second
	burst   float64
	epoch   time.Time
	buckets [tableSize]addrBucket
}

type addrBucket struct {
	tokens float64
	last   time.Duration // since epoch; 0 = never used
}

// NewPerAddr returns a limiter that lets each address make burst requests
// at once and rate a second after that.
func NewPerAddr(rate float64, burst int) *PerAddr {
	return &PerAddr{t: newTable(), rate: rate, burst: float64(burst), epoch: time.Now()}
}

// Allow takes one token for src and reports whether there was one.
func (l *PerAddr) Allow(src netip.Addr, now time.Time) bool {
	i := l.t.index(src)
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

// Collide reports whether a and b share a budget (for tests that need two
// addresses that do not).
func (l *PerAddr) Collide(a, b netip.Addr) bool { return l.t.index(a) == l.t.index(b) }

// Slots bounds how many things (connections in a handshake, requests in
// flight) one source address holds at once.
type Slots struct {
	t     table
	max   int32
	mu    sync.Mutex
	count [tableSize]int32
}

// NewSlots returns counters that let each address hold at most max at once.
func NewSlots(max int) *Slots { return &Slots{t: newTable(), max: int32(max)} }

// Acquire takes a slot for src; false means src holds its maximum already.
// Every true must be followed by exactly one Release of the same address.
func (s *Slots) Acquire(src netip.Addr) bool {
	i := s.t.index(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count[i] >= s.max {
		return false
	}
	s.count[i]++
	return true
}

// Release gives back a slot taken by Acquire.
func (s *Slots) Release(src netip.Addr) {
	i := s.t.index(src)
	s.mu.Lock()
	if s.count[i] > 0 {
		s.count[i]--
	}
	s.mu.Unlock()
}

// Held is how many slots src's entry holds.
func (s *Slots) Held(src netip.Addr) int {
	i := s.t.index(src)
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.count[i])
}

// Collide reports whether a and b share a counter.
func (s *Slots) Collide(a, b netip.Addr) bool { return s.t.index(a) == s.t.index(b) }

// Available reports whether src has a token now, without taking it.
func (l *PerAddr) Available(src netip.Addr, now time.Time) bool {
	i := l.t.index(src)
	t := max(now.Sub(l.epoch), 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &l.buckets[i]
	return b.last == 0 || min(l.burst, b.tokens+max(t-b.last, 0).Seconds()*l.rate) >= 1
}

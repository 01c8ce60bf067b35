package channels

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/manifest"
)

// ErrBadOptions is wrapped by New's errors.
var ErrBadOptions = errors.New("bad channel options")

// Pool is the in-memory Allocator of one castd.
//
// Groups are taken round-robin from a random starting point in each range,
// so that a restarted castd (which forgets its hold-downs) does not reuse
// the channels of its previous life first. Memory is bounded by
// MaxChannels whatever the range sizes.
type Pool struct {
	mu       sync.Mutex
	ranges   []poolRange
	port     uint16
	holdDown time.Duration
	ttl      time.Duration
	max      int

	byGroup map[netip.Addr]*slot // held or in hold-down
	byKey   map[string]*slot     // held
	byID    map[LeaseID]*slot    // held
	nextID  LeaseID
	nextTSI uint32
	sweepAt time.Time
}

type poolRange struct {
	Range
	source netip.Addr
	cursor uint64
}

// slot is one channel held by a lease (lease.ID != 0) or resting until
// freeAt.
type slot struct {
	lease  Lease
	freeAt time.Time
}

var _ Allocator = (*Pool)(nil)

// New returns a Pool for o.
func New(o Options) (*Pool, error) {
	var src4, src6 netip.Addr
	for _, s := range o.Sources {
		switch {
		case !s.IsValid() || s.IsUnspecified() || s.IsMulticast() || s.Zone() != "":
			return nil, fmt.Errorf("%w: source %v is not a unicast address", ErrBadOptions, s)
		case s.Is4() || s.Is4In6():
			if src4.IsValid() {
				return nil, fmt.Errorf("%w: two IPv4 sources (%v, %v)", ErrBadOptions, src4, s)
			}
			src4 = s.Unmap()
		default:
			if src6.IsValid() {
				return nil, fmt.Errorf("%w: two IPv6 sources (%v, %v)", ErrBadOptions, src6, s)
			}
			src6 = s
		}
	}
	ranges := o.Ranges
	if ranges == nil {
		var err error
		if ranges, err = ParseRanges(DefaultRanges); err != nil {
			return nil, err
		}
	}
	p := &Pool{
		port:     o.Port,
		holdDown: o.HoldDown,
		ttl:      o.LeaseTTL,
		max:      o.MaxChannels,
		byGroup:  make(map[netip.Addr]*slot),
		byKey:    make(map[string]*slot),
		byID:     make(map[LeaseID]*slot),
		nextID:   LeaseID(rand.Uint64()>>1 | 1),
		nextTSI:  rand.Uint32(),
	}
	if p.port == 0 {
		p.port = DefaultPort
	}
	if p.holdDown == 0 {
		p.holdDown = DefaultHoldDown
	}
	if p.ttl == 0 {
		p.ttl = DefaultLeaseTTL
	}
	if p.max == 0 {
		p.max = DefaultMaxChannels
	}
	if p.holdDown < 0 || p.ttl < 0 || p.max < 0 {
		return nil, fmt.Errorf("%w: negative hold-down, lease TTL or max channels", ErrBadOptions)
	}
	for _, r := range ranges {
		if r.n == 0 {
			return nil, fmt.Errorf("%w: range %v was not made by ParseRange", ErrBadOptions, r.prefix)
		}
		src := src6
		if r.Is4() {
			src = src4
		}
		if !src.IsValid() {
			continue
		}
		p.ranges = append(p.ranges, poolRange{Range: r, source: src, cursor: rand.Uint64N(r.n)})
	}
	if len(p.ranges) == 0 {
		return nil, fmt.Errorf("%w: no range has a source of its family (sources %v, ranges %v)", ErrBadOptions, o.Sources, ranges)
	}
	return p, nil
}

// Acquire gives key's session a channel. If key holds one already it
// returns that lease and ErrHeld.
func (p *Pool) Acquire(key string, now time.Time) (Lease, error) {
	if key == "" || len(key) > MaxKeyLen {
		return Lease{}, fmt.Errorf("%w: %d bytes", ErrBadKey, len(key))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maybeSweep(now)
	if s := p.byKey[key]; s != nil {
		if p.live(s, now) {
			return s.lease, ErrHeld
		}
	}
	if len(p.byGroup) >= p.max {
		p.sweep(now)
		if len(p.byGroup) >= p.max {
			return Lease{}, fmt.Errorf("%w: %d channels held or resting (max %d)", ErrExhausted, len(p.byGroup), p.max)
		}
	}
	for i := range p.ranges {
		r := &p.ranges[i]
		// Every group in use is in byGroup, so len(byGroup)+1 candidates
		// find a free one if the range has any.
		tries := min(r.n, uint64(len(p.byGroup))+1)
		for range tries {
			g := r.group(r.cursor % r.n)
			r.cursor = (r.cursor + 1) % r.n
			if s := p.byGroup[g]; s != nil && !p.reclaim(s, now) {
				continue
			}
			return p.grant(key, manifest.Channel{Source: r.source, Group: g, Port: p.port}, now), nil
		}
	}
	return Lease{}, fmt.Errorf("%w: every group of %d ranges is held or resting", ErrExhausted, len(p.ranges))
}

func (p *Pool) grant(key string, ch manifest.Channel, now time.Time) Lease {
	id := p.nextID
	p.nextID++
	if p.nextID == 0 {
		p.nextID = 1
	}
	p.nextTSI++
	if p.nextTSI == 0 {
		p.nextTSI = 1
	}
	s := &slot{lease: Lease{ID: id, Key: key, Channel: ch, TSI: p.nextTSI, Expires: now.Add(p.ttl)}}
	p.byGroup[ch.Group] = s
	p.byKey[key] = s
	p.byID[id] = s
	return s.lease
}

// Lookup returns key's live lease, for offering its channel to a beacon.
func (p *Pool) Lookup(key string, now time.Time) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.byKey[key]
	if s == nil || !p.live(s, now) {
		return Lease{}, false
	}
	return s.lease, true
}

// Renew extends a live lease to now + LeaseTTL.
func (p *Pool) Renew(id LeaseID, now time.Time) (Lease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.byID[id]
	if s == nil || !p.live(s, now) {
		return Lease{}, fmt.Errorf("%w: lease %d", ErrLost, id)
	}
	s.lease.Expires = now.Add(p.ttl)
	return s.lease, nil
}

// Release ends a live lease; its channel rests HoldDown from now.
func (p *Pool) Release(id LeaseID, now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.byID[id]
	if s == nil || !p.live(s, now) {
		return fmt.Errorf("%w: lease %d", ErrLost, id)
	}
	p.end(s, now)
	return nil
}

// live reports whether s is held at now; a lease found expired is ended
// (its hold-down counted from Expires, when the holder last might send).
func (p *Pool) live(s *slot, now time.Time) bool {
	if s.lease.ID == 0 {
		return false
	}
	if now.Before(s.lease.Expires) {
		return true
	}
	p.end(s, s.lease.Expires)
	return false
}

func (p *Pool) end(s *slot, at time.Time) {
	delete(p.byKey, s.lease.Key)
	delete(p.byID, s.lease.ID)
	s.freeAt = at.Add(p.holdDown)
	s.lease = Lease{Channel: s.lease.Channel}
}

// reclaim reports whether s's channel may be handed out at now, and if so
// forgets it.
func (p *Pool) reclaim(s *slot, now time.Time) bool {
	if p.live(s, now) || now.Before(s.freeAt) {
		return false
	}
	delete(p.byGroup, s.lease.Channel.Group)
	return true
}

// maybeSweep forgets ended channels now and then, so that byGroup holds
// only what is held or resting.
func (p *Pool) maybeSweep(now time.Time) {
	if now.Before(p.sweepAt) {
		return
	}
	p.sweep(now)
	p.sweepAt = now.Add(max(p.holdDown/2, time.Second))
}

func (p *Pool) sweep(now time.Time) {
	for _, s := range p.byGroup {
		p.reclaim(s, now)
	}
}

// InUse is how many channels are held or resting.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byGroup)
}

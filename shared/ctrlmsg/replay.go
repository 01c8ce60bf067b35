package ctrlmsg

import (
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/identity"
)

// ReplayCache remembers the (signer, nonce) pairs of recently accepted
// messages or tokens, so that a captured one cannot be accepted twice. It
// only needs to remember a pair while its timestamp is inside the window
// (after that the timestamp check refuses it), and it never holds more than
// its capacity: when full it forgets the oldest pair and from then on
// refuses everything timestamped at or before it (the floor), so memory
// stays bounded without letting a forgotten pair be replayed. Under that
// pressure it errs on the side of refusing old-but-new messages.
//
// It is safe for concurrent use.
type ReplayCache struct {
	window   time.Duration
	capacity int

	mu    sync.Mutex
	seen  map[replayKey]struct{}
	ring  []replayEntry // insertion order from head; grows up to capacity
	head  int
	n     int
	floor int64 // unix ms: refuse ts <= floor (0: none)
}

type replayKey [identity.PublicKeySize + NonceSize]byte

type replayEntry struct {
	key replayKey
	ts  int64 // unix ms
}

// NewReplayCache returns a cache for messages accepted within window of now
// (the same window as the timestamp check), holding at most capacity pairs
// (at least 1).
func NewReplayCache(window time.Duration, capacity int) *ReplayCache {
	if capacity < 1 {
		capacity = 1
	}
	return &ReplayCache{
		window:   window,
		capacity: capacity,
		seen:     make(map[replayKey]struct{}),
	}
}

// Check records signer's nonce (hex, as in Msg.Nonce or a token) with
// timestamp ts, or returns ErrReplay if it was recorded before or ts is at
// or below the floor.
func (c *ReplayCache) Check(signer identity.PublicKey, nonce string, ts, now time.Time) error {
	var k replayKey
	copy(k[:], signer[:])
	if len(nonce) != 2*NonceSize {
		return fmt.Errorf("%w: nonce is not %d hex digits", ErrMalformed, 2*NonceSize)
	}
	if _, err := hex.Decode(k[identity.PublicKeySize:], []byte(nonce)); err != nil {
		return fmt.Errorf("%w: nonce: %w", ErrMalformed, err)
	}
	ms := ts.UnixMilli()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now.Add(-c.window).UnixMilli())
	if ms <= c.floor {
		return fmt.Errorf("%w: older than what the full replay cache still remembers", ErrReplay)
	}
	if _, dup := c.seen[k]; dup {
		return fmt.Errorf("%w: nonce %s from %s", ErrReplay, nonce, signer)
	}
	if c.n == len(c.ring) && len(c.ring) < c.capacity {
		c.grow()
	}
	if c.n == len(c.ring) {
		old := c.ring[c.head]
		if old.ts > c.floor {
			c.floor = old.ts
		}
		c.pop()
	}
	c.ring[(c.head+c.n)%len(c.ring)] = replayEntry{key: k, ts: ms}
	c.n++
	c.seen[k] = struct{}{}
	return nil
}

// Len returns how many pairs the cache holds.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// expire forgets entries from the head while they are older than cutoff.
// Entries behind a newer one wait for it (timestamps arrive nearly in
// order), which costs memory, never correctness.
func (c *ReplayCache) expire(cutoff int64) {
	for c.n > 0 && c.ring[c.head].ts < cutoff {
		c.pop()
	}
}

// grow enlarges the ring (it starts small so that an idle cache costs
// little) and moves its entries to the front.
func (c *ReplayCache) grow() {
	size := min(max(2*len(c.ring), 64), c.capacity)
	ring := make([]replayEntry, size)
	for i := 0; i < c.n; i++ {
		ring[i] = c.ring[(c.head+i)%len(c.ring)]
	}
	c.ring, c.head = ring, 0
}

func (c *ReplayCache) pop() {
	delete(c.seen, c.ring[c.head].key)
	c.ring[c.head] = replayEntry{}
	c.head = (c.head + 1) % len(c.ring)
	c.n--
}

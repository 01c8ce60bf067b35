// Package channels hands out the SSM channels (S,G,port) castd sends
// popular objects on, one per object session, and paces what is sent on
// them to a per-channel and a total byte rate.
//
// Allocation is behind the Allocator interface because a later step runs
// several castd instances over one shared engine, and two of them must
// never send one object or use one channel at the same time; Pool is the
// single-instance implementation. Pacing (Shaper) is local: it caps what
// THIS process puts on its uplink.
package channels

import (
	"errors"
	"net/netip"
	"time"

	"github.com/blockcast/beacon/shared/manifest"
)

// LeaseID names one lease; never 0, never reused by an Allocator.
type LeaseID uint64

// Lease is one object session's hold on a channel.
type Lease struct {
	ID      LeaseID
	Key     string           // the object's content key
	Channel manifest.Channel // (S,G,port)
	// TSI is the session's ALC Transport Session Identifier: different for
	// each lease, so that a receiver never takes a later session's packets
	// on a reused channel for an earlier one's.
	TSI uint32
	// Expires is when the lease ends unless renewed. A holder must not send
	// at or after Expires unless a Renew succeeded.
	Expires time.Time
}

// Errors callers branch on.
var (
	// ErrHeld: the key's session already holds a channel. Acquire returns
	// that lease with it; the caller offers it and does not send.
	ErrHeld = errors.New("object already has a channel")
	// ErrExhausted: no channel is free (all held or in hold-down, or the
	// cap on channels is reached).
	ErrExhausted = errors.New("no free multicast channel")
	// ErrLost: the lease was released or expired; its holder must stop
	// sending at once.
	ErrLost = errors.New("channel lease lost")
	// ErrBadKey: an empty or oversized key.
	ErrBadKey = errors.New("bad object key")
)

// Allocator hands out channels to object sessions.
//
// An implementation must guarantee, cluster-wide when it is shared:
//   - At most one live lease per channel (S,G,port) at any time, and at
//     most one live lease per key: Acquire of a key with a live lease
//     returns that lease and ErrHeld, so one object has one sender.
//   - A lease is live from Acquire until Release or until Expires passes
//     without a Renew; Renew and Release of a lease that is not live fail
//     with ErrLost (and change nothing), so a holder that was cut off and
//     lost its lease learns so before it sends again.
//   - Hold-down: a channel is not handed out again before HoldDown has
//     passed since its last lease ended (released, or expired at
//     Expires), so late packets and receivers of one session never meet
//     the next.
//   - Lease IDs and TSIs are never reused while a lease is live or held
//     down; groups come only from validated SSM ranges and sources from the
//     configured addresses of the same family.
//   - Safe for concurrent use; all of the above hold under it (Acquire,
//     Renew and Release are linearizable).
type Allocator interface {
	Acquire(key string, now time.Time) (Lease, error)
	Lookup(key string, now time.Time) (Lease, bool)
	Renew(id LeaseID, now time.Time) (Lease, error)
	Release(id LeaseID, now time.Time) error
}

// Options configure a Pool.
type Options struct {
	// Ranges to allocate groups from, tried in order; nil means
	// DefaultRanges. Ranges of a family without a Source are skipped, and
	// if no range has a source New fails.
	Ranges []Range
	// Sources are castd's unicast source addresses (S), at most one IPv4
	// and one IPv6.
	Sources []netip.Addr
	// Port is the UDP destination port of every channel; 0 means
	// DefaultPort.
	Port uint16
	// HoldDown is how long a channel rests after its lease ends; 0 means
	// DefaultHoldDown.
	HoldDown time.Duration
	// LeaseTTL is how long a lease lives without Renew; 0 means
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	// MaxChannels bounds channels held or in hold-down at once; 0 means
	// DefaultMaxChannels.
	MaxChannels int
}

// Defaults.
const (
	DefaultPort        = 5001
	DefaultHoldDown    = 30 * time.Second
	DefaultLeaseTTL    = 60 * time.Second
	DefaultMaxChannels = 4096
	// MaxKeyLen bounds a key (as protocol.MaxPathLen does a content path).
	MaxKeyLen = 4096
)

// Package mcsend is castd's multicast object sender and its unicast repair
// service: it sends an object once on an SSM channel as ALC packets under a
// signed manifest (shared/manifest), paced to the channel and total caps
// (channels.Shaper), natively and/or into castd's AMT relay, and serves the
// beacons' DTLS sessions (shared/dtlschan) with early media, NACK-driven
// repairs and refusals (shared/mcproto).
//
// A session's carousel sends, per pass, the manifest packet (at the pass
// start and every ManifestEvery packets), then block by block the block's
// hash-list packets, its source symbols and its proactive parity. Passes
// repeat while beacons are joined (a Join or Nack within Idle), at least
// MinPasses; then the lease is released.
//
// Repairs: NACKs for one block are gathered over NackWindow across all
// nodes. When two or more nodes lack symbols of the block the sender puts
// max(Need) NEW parity symbols on the channel (ESIs never sent before: one
// parity symbol repairs different losses at different receivers); what one
// node alone lacks goes to it over its DTLS session (WriteLimited, the
// per-node --repair-rate). State is bounded whatever a node sends: NACK
// messages per node are rate-limited, ranges honoured per message and
// pending blocks per node and per session are capped, and every refusal is
// counted by reason.
package mcsend

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
)

// Errors callers branch on.
var (
	// ErrBadObject: the Object cannot be sent (no reader, bad size or URL).
	ErrBadObject = errors.New("mcsend: bad object")
	// ErrBadOptions is wrapped by New's errors.
	ErrBadOptions = errors.New("mcsend: bad options")
	// ErrClosed: the Sender was closed.
	ErrClosed = errors.New("mcsend: sender closed")
	// ErrHeldElsewhere: the allocator says another sender holds the key's
	// channel (a lease this Sender does not run).
	ErrHeldElsewhere = errors.New("mcsend: object's channel held by another sender")
)

// Defaults for Options' zero fields.
const (
	DefaultParity        = 0.05
	DefaultMinPasses     = 1
	DefaultIdle          = 10 * time.Second
	DefaultManifestEvery = 100
	DefaultNackWindow    = 20 * time.Millisecond
	DefaultMaxEarly      = 2
	DefaultJoinGrace     = 50 * time.Millisecond
	DefaultNackRate      = 50 // NACK messages a second per node
	DefaultNackBurst     = 100
	DefaultMaxRanges     = 64 // ranges honoured per NACK message
	DefaultMaxPending    = 16 // blocks with repairs pending per node and session
	DefaultManifestTTL   = time.Hour
	DefaultMaxNodes      = 10000
	DefaultMulticastTTL  = 16
)

// Object is what castd hands the sender: the whole object, readable at
// any offset (castd's cache file), and the metadata the manifest carries.
type Object struct {
	Key          string      // content key: one session per key
	URL          string      // the object's path as requested ("/...")
	R            io.ReaderAt // the whole object
	Size         int64
	ContentType  string
	ETag         string
	LastModified time.Time // zero: none
	// Expires bounds the manifest's validity; zero means now +
	// Options.ManifestTTL.
	Expires time.Time
}

// Options configure a Sender.
type Options struct {
	Key    *identity.Keypair  // the CAST key that signs manifests
	Alloc  channels.Allocator // channel leases
	Shaper *channels.Shaper   // pacing; nil: no cap
	Native Sink               // native multicast (--multicast-iface); nil: none
	AMT    Sink               // castd's AMT relay; nil: none
	Codec  *fec.Codec         // nil: a new one

	Parity        float64       // proactive parity per block, fraction of k; 0: DefaultParity; <0: none
	MinPasses     int           // carousel passes always sent; 0: DefaultMinPasses
	Idle          time.Duration // stop after a pass with no Join/Nack for this long; 0: DefaultIdle
	ManifestEvery int           // packets between manifest repeats; 0: DefaultManifestEvery
	NackWindow    time.Duration // NACK aggregation window; 0: DefaultNackWindow
	MaxEarly      int           // most early blocks one Join gets; 0: DefaultMaxEarly
	// JoinGrace is how long a new session waits before its first pass, so
	// that the beacons it was offered to have joined the channel and need
	// no early media; 0: DefaultJoinGrace; <0: none.
	JoinGrace  time.Duration
	NackRate   float64 // control messages a second per node; 0: DefaultNackRate
	NackBurst  int     // 0: DefaultNackBurst
	MaxRanges  int     // ranges honoured per NACK; 0: DefaultMaxRanges
	MaxPending int     // blocks pending repair per node and session; 0: DefaultMaxPending
	MaxNodes   int     // nodes with state at once; 0: DefaultMaxNodes
	// RepairRate paces each node's unicast (early media, repairs), bytes
	// a second: castd's --repair-rate, dtlschan's SendRate, so that
	// WriteLimited refuses only a node that asks for more than it may
	// have. 0: DefaultRepairRate.
	RepairRate  float64
	ManifestTTL time.Duration // manifest validity when Object.Expires is zero; 0: DefaultManifestTTL
	SymbolLen   int           // 0: alc.MaxSymbolSize (tests use less)
	MaxBlockLen int           // 0: manifest.DefaultMaxBlockLen

	Log *slog.Logger
	// Now and Sleep are the clock; nil: time.Now and a timer. Sleep
	// returns early with ctx's error.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Sink puts one ALC packet on a channel. Send must not keep pkt (the
// sender reuses it) and may be called from several sessions at once.
type Sink interface {
	Send(ch manifest.Channel, pkt []byte) error
}

// Peer is one node's unicast channel as the repair service sees it;
// *dtlschan.Session is one. A Peer that also has Done() <-chan struct{}
// (a session) gets a queue and a writer of its own, paced to RepairRate;
// any other Peer (a simulation) is written at once from the caller.
type Peer interface {
	NodeID() string
	Write(p []byte) (int, error)
	WriteLimited(p []byte) (int, error)
}

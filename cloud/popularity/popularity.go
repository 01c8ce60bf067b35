// Package popularity decides whether castd answers a beacon's miss by
// unicast or with a multicast offer: an object goes by multicast once
// enough DISTINCT beacons asked for it within a sliding window, or always
// when its path matches an operator's pattern (--multicast-path).
//
// Counting is behind the Counter interface because a later step runs
// several castd instances over one shared engine; Table is the
// single-instance implementation, in memory and bounded whatever strangers
// send.
//
// On a registered beacon's miss castd first asks its channel allocator
// (cloud/channels) whether the object already has a running session and
// offers that one; only otherwise does Decide choose between starting a
// session and answering by unicast. So an object stays on its channel for
// the whole session even when its count later falls below the threshold.
package popularity

import (
	"errors"
	"fmt"
	"time"
)

// Reason says why a Decision came out as it did.
type Reason uint8

const (
	ReasonBelow   Reason = iota // too few distinct beacons in the window: unicast
	ReasonPopular               // Threshold distinct beacons in the window: multicast
	ReasonPath                  // the path matches a configured pattern: multicast
)

func (r Reason) String() string {
	switch r {
	case ReasonBelow:
		return "below-threshold"
	case ReasonPopular:
		return "popular"
	case ReasonPath:
		return "path"
	}
	return fmt.Sprintf("Reason(%d)", uint8(r))
}

// Decision is the answer to one miss.
type Decision struct {
	Multicast bool
	Reason    Reason
	// Nodes is how many distinct beacons (this one included) asked for the
	// object within the window, counted up to the threshold (0 when the
	// path alone decided).
	Nodes int
}

// Counter records misses and decides how each is answered.
//
// An implementation must guarantee, for every key:
//   - Distinctness: one node counts once however often it asks; a node that
//     asks again within the window moves its own time forward, it does not
//     add to the count.
//   - The window: a request made at time t counts for Decide calls at times
//     now with now-t < Window, and not after (a request exactly Window old
//     has expired). Decide(key, node, now) counts its own request.
//   - Exactness up to the threshold: while the object is tracked, Nodes is
//     min(Threshold, distinct nodes whose latest request is in the window);
//     it never over-counts. Forgetting an object (bounded memory) may only
//     UNDER-count, never push an object over the threshold.
//   - Multicast is true exactly when a pattern matches or Nodes >= Threshold
//     (Threshold > 0).
//   - Safe for concurrent use; a cluster implementation makes the count
//     cluster-wide (a miss at any instance counts at all of them) and Decide
//     linearizable per key, so that the Threshold-th beacon sees Multicast
//     at whichever instance it asks. Which instance SENDS is not decided
//     here: the channel allocator hands one object's session to one holder.
//   - Bounded memory whatever keys and node IDs arrive; time going
//     backwards (a clock step) neither panics nor inflates a count.
//
// Callers pass only authenticated node IDs (a registered beacon's signed
// request): a caller that counted unauthenticated IDs would let anyone
// make anything "popular".
type Counter interface {
	Decide(key, node string, now time.Time) Decision
}

// Options configure a Table. The zero value decides unicast for everything.
type Options struct {
	// Threshold is how many distinct beacons within Window make an object
	// multicast; 0 disables counting (only Paths go by multicast). At most
	// MaxThreshold.
	Threshold int
	// Window is the sliding window; required when Threshold > 0.
	Window time.Duration
	// Paths are patterns (see Pattern) always sent by multicast.
	Paths []string
	// MaxObjects bounds the objects tracked at once; 0 means
	// DefaultMaxObjects.
	MaxObjects int
}

const (
	// DefaultMaxObjects is the default bound on tracked objects: with a
	// threshold of 16 and every object full, about 20 MB.
	DefaultMaxObjects = 1 << 16
	// MaxThreshold bounds Threshold, hence each object's node set.
	MaxThreshold = 1024
)

// ErrBadOptions is wrapped by New's errors.
var ErrBadOptions = errors.New("bad popularity options")

// compile checks o and compiles its patterns.
func (o Options) compile() ([]Pattern, error) {
	if o.Threshold < 0 || o.Threshold > MaxThreshold {
		return nil, fmt.Errorf("%w: threshold %d is not within 0..%d", ErrBadOptions, o.Threshold, MaxThreshold)
	}
	if o.Threshold > 0 && o.Window <= 0 {
		return nil, fmt.Errorf("%w: threshold %d needs a window > 0, got %v", ErrBadOptions, o.Threshold, o.Window)
	}
	if o.MaxObjects < 0 {
		return nil, fmt.Errorf("%w: max objects %d < 0", ErrBadOptions, o.MaxObjects)
	}
	pats := make([]Pattern, 0, len(o.Paths))
	for _, s := range o.Paths {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadOptions, err)
		}
		pats = append(pats, p)
	}
	return pats, nil
}

package manifest

import (
	"bytes"
	"fmt"
	"sync"
	"time"
)

// DefaultMaxSkew is how far in the future Replay accepts an issue time
// (router clocks drift, and some boot without one).
const DefaultMaxSkew = 5 * time.Minute

// maxReplayEntries bounds Replay's memory: one entry per URL seen.
const maxReplayEntries = 4096

// Replay refuses a manifest that is older than one already accepted for
// the same URL, conflicts with it (same sequence, other content), has
// expired, or claims to be issued in the future. Call Check only with
// manifests whose signature verified: it remembers what it accepts. The
// zero value is ready; it is safe for concurrent use.
type Replay struct {
	MaxSkew time.Duration // 0: DefaultMaxSkew

	mu   sync.Mutex
	seen map[string]replayEntry
}

type replayEntry struct {
	seq     uint64
	sig     [64]byte
	expires time.Time
}

// Check accepts m at time now, or returns an error wrapping ErrReplay or
// ErrExpired. The same manifest again (the in-band repeats) is accepted.
func (r *Replay) Check(m *Manifest, now time.Time) error {
	skew := r.MaxSkew
	if skew == 0 {
		skew = DefaultMaxSkew
	}
	if !now.Before(m.Expires) {
		return fmt.Errorf("%w: %s sequence %d expired at %v", ErrExpired, m.URL, m.Sequence, m.Expires)
	}
	if m.Issued.After(now.Add(skew)) {
		return fmt.Errorf("%w: %s sequence %d issued at %v, in the future", ErrExpired, m.URL, m.Sequence, m.Issued)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = make(map[string]replayEntry)
	}
	if prev, ok := r.seen[m.URL]; ok {
		switch {
		case m.Sequence < prev.seq:
			return fmt.Errorf("%w: %s sequence %d, already have %d", ErrReplay, m.URL, m.Sequence, prev.seq)
		case m.Sequence == prev.seq && !bytes.Equal(m.Signature[:], prev.sig[:]):
			return fmt.Errorf("%w: %s sequence %d differs from the one accepted", ErrReplay, m.URL, m.Sequence)
		}
	} else if len(r.seen) >= maxReplayEntries {
		r.evict(now)
	}
	r.seen[m.URL] = replayEntry{seq: m.Sequence, sig: m.Signature, expires: m.Expires}
	return nil
}

// evict drops expired entries, or the one expiring first when none has:
// forgetting a URL only lets a manifest that is still unexpired and
// validly signed back in, which the expiry bounds.
func (r *Replay) evict(now time.Time) {
	var oldest string
	var at time.Time
	for url, e := range r.seen {
		if !now.Before(e.expires) {
			delete(r.seen, url)
			continue
		}
		if oldest == "" || e.expires.Before(at) {
			oldest, at = url, e.expires
		}
	}
	if len(r.seen) >= maxReplayEntries {
		delete(r.seen, oldest)
	}
}

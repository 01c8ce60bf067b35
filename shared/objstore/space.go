package objstore

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// ErrNoSpace wraps a write the file system refused for lack of space
// (ENOSPC, EDQUOT, EFBIG) even after least recently used objects were
// evicted to make room. The fill that met it has failed cleanly (no partial
// object, no file left); Stats reports the store as full until a later
// fill commits.
var ErrNoSpace = errors.New("objstore: no space left on the cache's file system")

// isNoSpace reports whether err is the file system running out of room.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// entryOverhead is what every object costs besides its body, key and meta
// record: bbolt's element headers in three buckets, the LRU key, the id
// keys and page slack. With the key (stored twice: meta key and LRU value)
// and the record it is the object's metadata charge, counted against
// MaxBytes like body bytes so that the bound holds for many tiny objects
// too, not only for bytes.
const entryOverhead = 128

// metaCharge is the metadata charge of an object with a key of keyLen bytes
// and a meta record of recLen bytes.
func metaCharge(keyLen, recLen int) int64 {
	return entryOverhead + 2*int64(keyLen) + int64(recLen)
}

// noSpace records that the file system refused a write of the fill of key,
// and returns the error the fill fails with.
func (s *Store) noSpace(key string, err error) error {
	now := time.Now().UnixNano()
	if s.fullSince.CompareAndSwap(0, now) {
		s.log.Warn("objstore: the cache's file system is full; objects are passed through unstored until a fill commits again",
			"path", s.path, "key", key, "err", err)
	}
	s.noSpaceErrs.Add(1)
	return fmt.Errorf("%w: %q: %w", ErrNoSpace, key, err)
}

// spaceOK clears the full condition after a fill committed.
func (s *Store) spaceOK() {
	if since := s.fullSince.Swap(0); since != 0 {
		s.log.Info("objstore: the cache's file system has room again", "path", s.path,
			"full_for", time.Since(time.Unix(0, since)).Round(time.Millisecond))
	}
}

// FullSince is when the file system last refused a write for lack of space
// and the store has not committed a fill since; zero while it is not full.
func (s *Store) FullSince() time.Time {
	if v := s.fullSince.Load(); v != 0 {
		return time.Unix(0, v)
	}
	return time.Time{}
}

// ClearFull ends the full condition without a commit, for a caller that
// has seen room come back (an operator freed space).
func (s *Store) ClearFull() { s.spaceOK() }

// freeDisk evicts least recently used objects whose bodies and metadata
// add up to at least n bytes (and evictSlack), whatever the bound: the
// file system refused a write although the store was within MaxBytes
// (something else filled it, or it is smaller than MaxBytes). It reports
// how many bytes it freed; 0 means there was nothing left to evict.
func (s *Store) freeDisk(n int64) (int64, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	d, err := s.evictLocked(max(n, s.evictSlack))
	if err != nil {
		return 0, err
	}
	if d.objects > 0 {
		s.log.Info("objstore: evicted to make room on the file system", "path", s.path, "objects", d.objects, "bytes", d.bytes+d.meta)
	}
	return d.bytes + d.meta, nil
}

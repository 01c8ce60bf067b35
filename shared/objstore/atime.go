package objstore

import (
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Access times are kept in a bounded map and written in one transaction
// every AtimeFlush, when the map fills, before an eviction and on
// Sync/Close: a hit costs no flash write.

// now returns a Unix-ns time that never repeats or goes backwards, so LRU
// order holds across clock steps.
func (s *Store) now() int64 {
	t := time.Now().UnixNano()
	for {
		last := s.clock.Load()
		if t <= last {
			t = last + 1
		}
		if s.clock.CompareAndSwap(last, t) {
			return t
		}
	}
}

// touch records an access to key. When the batch is full (in entries or
// in key bytes) an access to a key not already in it is dropped (its LRU
// position is just older than it should be) and the flusher is woken.
func (s *Store) touch(key string) {
	t := s.now()
	s.amu.Lock()
	if _, ok := s.atimes[key]; !ok {
		if len(s.atimes) >= atimeBatchMax || s.atimeBytes+len(key) > atimeBatchBytes {
			s.amu.Unlock()
			s.kickFlusher()
			return
		}
		s.atimeBytes += len(key)
	}
	s.atimes[key] = t
	full := len(s.atimes) >= atimeBatchMax*3/4 || s.atimeBytes >= atimeBatchBytes*3/4
	s.amu.Unlock()
	if full {
		s.kickFlusher()
	}
}

func (s *Store) kickFlusher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Store) flusher(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		if err := s.flushAtimes(); err != nil {
			s.log.Warn("objstore: writing access times", "path", s.path, "err", err)
		}
	}
}

func (s *Store) takeAtimes() map[string]int64 {
	s.amu.Lock()
	defer s.amu.Unlock()
	b := s.atimes
	if len(b) == 0 {
		return nil
	}
	s.atimes = make(map[string]int64, 64)
	s.atimeBytes = 0
	return b
}

func (s *Store) flushAtimes() error {
	batch := s.takeAtimes()
	if len(batch) == 0 {
		return nil
	}
	return s.update(func(tx *bolt.Tx) error { return s.applyAtimes(tx, batch) })
}

// applyAtimes moves each object in batch to its new LRU position. Keys
// deleted or replaced meanwhile are skipped or applied to the new version,
// which was accessed no earlier anyway. A damaged record is logged and
// skipped: access times are not worth failing a transaction for.
func (s *Store) applyAtimes(tx *bolt.Tx, batch map[string]int64) error {
	mb, lb := tx.Bucket(bucketMeta), tx.Bucket(bucketLRU)
	for k, t := range batch {
		key := []byte(k)
		v := mb.Get(key)
		if v == nil {
			continue
		}
		h, err := parseHead(v)
		if err != nil {
			s.log.Error("objstore: damaged meta record", "path", s.path, "key", k, "err", err)
			continue
		}
		if t <= h.atime {
			continue
		}
		var old [lruKeyLen]byte
		nk := make([]byte, lruKeyLen) // bbolt keeps keys until commit
		nv := append([]byte(nil), v...)
		binary.BigEndian.PutUint64(nv[offAtime:], uint64(t))
		if err := lb.Delete(lruKey(&old, h.atime, h.id)); err != nil {
			return err
		}
		if err := lb.Put(lruKey((*[lruKeyLen]byte)(nk), t, h.id), key); err != nil {
			return err
		}
		if err := mb.Put(key, nv); err != nil {
			return err
		}
	}
	return nil
}

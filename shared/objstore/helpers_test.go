package objstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// openTest opens a store in a temp dir. fillTxn, if > 0, overrides how
// much a fill buffers per transaction so that tests cross flush boundaries
// with little data.
func openTest(t testing.TB, path string, opts Options, fillTxn int) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "cache.db")
	}
	if opts.Logger == nil {
		opts.Logger = quietLog
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	// No fsync: these tests are about logic, and a killed process (the
	// crash test, which does not use openTest) loses no written data.
	s.db.NoSync = true
	if fillTxn > 0 {
		s.fillBytes = int(max(s.chunk, int64(fillTxn)/s.chunk*s.chunk))
		s.evictSlack = min(int64(s.fillBytes), s.max/64)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// body returns n deterministic bytes that differ per seed, so a read of
// the wrong object or offset shows.
func body(seed string, n int) []byte {
	b := make([]byte, n)
	var x uint32 = 2166136261
	for i := 0; i < len(seed); i++ {
		x = (x ^ uint32(seed[i])) * 16777619
	}
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// put stores key with data, writing in pieces of step bytes.
func put(t testing.TB, s *Store, key string, data []byte, step int) {
	t.Helper()
	w, err := s.Create(key, int64(len(data)))
	if err != nil {
		t.Fatalf("Create(%q): %v", key, err)
	}
	if step <= 0 {
		step = len(data) + 1
	}
	for off := 0; off < len(data); off += step {
		end := min(off+step, len(data))
		if n, err := w.Write(data[off:end]); err != nil || n != end-off {
			t.Fatalf("Write(%q) at %d: n=%d err=%v", key, off, n, err)
		}
	}
	if err := w.Commit(Meta{Status: 200}); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

func readAll(t testing.TB, s *Store, key string) []byte {
	t.Helper()
	o, err := s.Get(key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	var buf bytes.Buffer
	if n, err := o.WriteRange(&buf, 0, o.Meta.Size); err != nil || n != o.Meta.Size {
		t.Fatalf("WriteRange(%q): n=%d err=%v", key, n, err)
	}
	return buf.Bytes()
}

// checkInvariants scans the buckets and checks them against each other
// and against Stats: every object has its LRU entry and exactly its
// chunks, no other chunk exists, and no fill is recorded (call it with no
// fill in progress).
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	st := s.Stats()
	err := s.view(func(tx *bolt.Tx) error {
		mb, lb, cb, fb := tx.Bucket(bucketMeta), tx.Bucket(bucketLRU), tx.Bucket(bucketChunks), tx.Bucket(bucketFills)
		if k, _ := fb.Cursor().First(); k != nil {
			return fmt.Errorf("fills bucket not empty: %x", k)
		}
		chunks := map[uint64]int64{} // id → chunk bytes
		if err := cb.ForEach(func(k, v []byte) error {
			chunks[binary.BigEndian.Uint64(k)] += int64(len(v))
			return nil
		}); err != nil {
			return err
		}
		var objects, total int64
		if err := mb.ForEach(func(k, v []byte) error {
			h, err := validateRecord(v)
			if err != nil {
				return err
			}
			objects++
			total += h.size
			var lk [lruKeyLen]byte
			if got := lb.Get(lruKey(&lk, h.atime, h.id)); !bytes.Equal(got, k) {
				return fmt.Errorf("lru entry of %q: %q", k, got)
			}
			if chunks[h.id] != h.size {
				return fmt.Errorf("%q: %d chunk bytes for size %d", k, chunks[h.id], h.size)
			}
			delete(chunks, h.id)
			return nil
		}); err != nil {
			return err
		}
		if len(chunks) != 0 {
			return fmt.Errorf("orphan chunks of ids %v", chunks)
		}
		if n := lb.Stats().KeyN; int64(n) != objects {
			return fmt.Errorf("%d lru entries for %d objects", n, objects)
		}
		if objects != st.Objects || total != st.Bytes {
			return fmt.Errorf("scan: %d objects, %d bytes; Stats: %+v", objects, total, st)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("invariants: %v", err)
	}
}

func mustNotFound(t testing.TB, s *Store, key string) {
	t.Helper()
	if _, err := s.Get(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%q) = %v, want ErrNotFound", key, err)
	}
}

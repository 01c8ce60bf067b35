package objstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// openTest opens a store in a temp dir. inlineMax, if > 0, overrides the
// largest body kept in bbolt, so that tests get file bodies with little
// data.
func openTest(t testing.TB, path string, opts Options, inlineMax int64) *Store {
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
	s.noSync = true
	if inlineMax > 0 {
		s.inlineMax = inlineMax
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

// checkInvariants scans the buckets and the body directory and checks
// them against each other and against Stats: every object has its LRU
// entry and exactly its body (inline record, or file entry and file of the
// right size), no other body exists, no .part file is left, and the hot
// cache holds nothing the records do not say (call it with no fill in
// progress).
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	st := s.Stats()
	files := map[uint64]int64{} // id → size of the body files on disk
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		id, ok := parseIDName(e.Name())
		if !ok {
			t.Fatalf("unexpected file %s in the body directory", e.Name())
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		files[id] = fi.Size()
	}
	err = s.view(func(tx *bolt.Tx) error {
		mb, lb, ib, fb := tx.Bucket(bucketMeta), tx.Bucket(bucketLRU), tx.Bucket(bucketInline), tx.Bucket(bucketFiles)
		inline := map[uint64]int64{}
		if err := ib.ForEach(func(k, v []byte) error {
			inline[binary.BigEndian.Uint64(k)] = int64(len(v))
			return nil
		}); err != nil {
			return err
		}
		entries := map[uint64]string{}
		if err := fb.ForEach(func(k, v []byte) error {
			entries[binary.BigEndian.Uint64(k)] = string(v)
			return nil
		}); err != nil {
			return err
		}
		var objects, total, meta int64
		if err := mb.ForEach(func(k, v []byte) error {
			h, err := validateRecord(v)
			if err != nil {
				return err
			}
			objects++
			total += h.size
			meta += metaCharge(len(k), len(v))
			var lk [lruKeyLen]byte
			if got := lb.Get(lruKey(&lk, h.atime, h.id)); !bytes.Equal(got, k) {
				return fmt.Errorf("lru entry of %q: %q", k, got)
			}
			if h.file {
				size, ok := files[h.id]
				if !ok || size != h.size || entries[h.id] != string(k) {
					return fmt.Errorf("%q: body file %v of %d bytes, entry %q, for size %d", k, ok, size, entries[h.id], h.size)
				}
				delete(files, h.id)
				delete(entries, h.id)
			} else if h.size > 0 {
				if inline[h.id] != h.size {
					return fmt.Errorf("%q: %d inline bytes for size %d", k, inline[h.id], h.size)
				}
				delete(inline, h.id)
			}
			return nil
		}); err != nil {
			return err
		}
		if len(inline) != 0 || len(files) != 0 || len(entries) != 0 {
			return fmt.Errorf("orphan bodies: inline %v, files %v, file entries %v", inline, files, entries)
		}
		if n := lb.Stats().KeyN; int64(n) != objects {
			return fmt.Errorf("%d lru entries for %d objects", n, objects)
		}
		if objects != st.Objects || total != st.Bytes || meta != st.MetaBytes {
			return fmt.Errorf("scan: %d objects, %d bytes, %d metadata bytes; Stats: %+v", objects, total, meta, st)
		}
		if st.Bytes+st.MetaBytes > st.MaxBytes {
			return fmt.Errorf("over the bound: %+v", st)
		}
		// The hot cache agrees with the records.
		s.hot.mu.Lock()
		defer s.hot.mu.Unlock()
		var hotBytes int
		for k, e := range s.hot.m {
			hotBytes += e.cost
			h, err := parseHead(mb.Get([]byte(k)))
			if err != nil || h.id != e.id || h.file || e.meta.Key != k || int64(len(e.body)) != h.size {
				return fmt.Errorf("hot cache entry %q (id %d) does not match its record (%+v, %v)", k, e.id, h, err)
			}
		}
		if hotBytes != s.hot.bytes || hotBytes > s.hot.max {
			return fmt.Errorf("hot cache: %d bytes counted, %d held, bound %d", s.hot.bytes, hotBytes, s.hot.max)
		}
		if len(s.hot.writing) != 0 {
			return fmt.Errorf("hot cache: keys still marked as being written: %v", s.hot.writing)
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

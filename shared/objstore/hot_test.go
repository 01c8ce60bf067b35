package objstore

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func hotHas(s *Store, key string) bool {
	s.hot.mu.Lock()
	defer s.hot.mu.Unlock()
	return s.hot.m[key] != nil
}

// TestHotCacheInvalidation: every way a stored object changes or goes
// takes it out of the hot cache, so the next Get sees the change.
func TestHotCacheInvalidation(t *testing.T) {
	v1, v2 := body("v1", 1000), body("v2", 1500)
	tests := []struct {
		name   string
		change func(t *testing.T, s *Store)
		want   []byte // nil: not found
		status int
	}{
		{"replace", func(t *testing.T, s *Store) { put(t, s, "/h", v2, 0) }, v2, 200},
		{"replace by a file", func(t *testing.T, s *Store) {
			s.inlineMax = 1200
			put(t, s, "/h", v2, 0)
		}, v2, 200},
		{"delete", func(t *testing.T, s *Store) {
			if err := s.Delete("/h"); err != nil {
				t.Fatal(err)
			}
		}, nil, 0},
		{"delete prefix", func(t *testing.T, s *Store) {
			if n, err := s.DeletePrefix("/"); n != 1 || err != nil {
				t.Fatal(n, err)
			}
		}, nil, 0},
		{"update meta", func(t *testing.T, s *Store) {
			if err := s.UpdateMeta("/h", func(m *Meta) { m.Status = 203 }); err != nil {
				t.Fatal(err)
			}
		}, v1, 203},
		{"eviction", func(t *testing.T, s *Store) { put(t, s, "/big", body("big", 9500), 0) }, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, "", Options{MaxBytes: 10000}, 0)
			put(t, s, "/h", v1, 0)
			for i := 0; i < 2; i++ {
				if got := readAll(t, s, "/h"); !bytes.Equal(got, v1) {
					t.Fatal("v1 differs")
				}
			}
			if !hotHas(s, "/h") {
				t.Fatal("a small object read twice is not in the hot cache")
			}
			tt.change(t, s)
			if tt.want == nil {
				mustNotFound(t, s, "/h")
			} else {
				o, err := s.Get("/h")
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, s, "/h"); !bytes.Equal(got, tt.want) || o.Meta.Status != tt.status {
					t.Fatalf("after the change: status %d, %d bytes", o.Meta.Status, len(got))
				}
			}
			checkInvariants(t, s)
		})
	}
}

func TestHotCacheBounded(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 64 << 20}, 0)
	for i := 0; i < 400; i++ {
		key := fmt.Sprint("/k", i)
		put(t, s, key, body(key, 10000), 0)
		readAll(t, s, key)
		if s.hot.bytes > hotMaxBytes {
			t.Fatalf("hot cache holds %d bytes", s.hot.bytes)
		}
	}
	if n := len(s.hot.m); n < 50 || n > hotMaxBytes/10000 {
		t.Fatalf("hot cache holds %d entries", n)
	}
	// A body above a sixteenth of the bound is not kept.
	put(t, s, "/big", body("big", hotMaxBytes/16), 0)
	readAll(t, s, "/big")
	if hotHas(s, "/big") {
		t.Fatal("a large body went into the hot cache")
	}
	checkInvariants(t, s)
}

func TestHotCacheGeneration(t *testing.T) {
	var h hotCache
	h.init(1 << 20)
	o := &Object{Meta: Meta{Key: "/k"}, id: 1, body: []byte("old")}
	cached := func() uint64 {
		if e, _ := h.get("/k"); e != nil {
			return e.id
		}
		return 0
	}
	// A read that began before a write ended is not cached.
	_, gen := h.get("/k")
	w := &hotWrite{h: &h}
	w.change("/other")
	w.done()
	h.add(gen, 5, "/k", o, 60)
	if cached() != 0 {
		t.Fatal("a read older than a change was cached")
	}
	_, gen = h.get("/k")
	h.add(gen, 5, "/k", o, 60)
	if cached() != 1 {
		t.Fatal("a current read was not cached")
	}
	// A read by an earlier transaction does not replace a later one's.
	_, gen = h.get("/k")
	h.add(gen, 4, "/k", &Object{Meta: Meta{Key: "/k"}, id: 2}, 60)
	if cached() != 1 {
		t.Fatal("an older read replaced a newer one")
	}
	// While a write of the key is under way, it is neither served nor
	// cached, even by a read that began after the write did.
	w.change("/k")
	if cached() != 0 {
		t.Fatal("a key being written is still served")
	}
	_, gen = h.get("/k")
	h.add(gen, 6, "/k", &Object{Meta: Meta{Key: "/k"}, id: 3}, 60)
	if cached() != 0 {
		t.Fatal("a key being written was cached")
	}
	w.done()
	if len(h.writing) != 0 {
		t.Fatalf("writing = %v after done", h.writing)
	}
	_, gen = h.get("/k")
	h.add(gen, 7, "/k", &Object{Meta: Meta{Key: "/k"}, id: 4}, 60)
	if cached() != 4 {
		t.Fatal("not cached after the write ended")
	}
}

// TestHotCacheNoStaleRead: once a Commit, Delete or UpdateMeta has
// returned, no Get returns the version before it, with readers hammering
// the key (and filling the hot cache) all along; and no reader ever sees a
// version older than one it has seen.
func TestHotCacheNoStaleRead(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	var current atomic.Int64 // the version last committed, -1 when deleted
	stop := make(chan struct{})
	var wg sync.WaitGroup
	version := func(o *Object) int64 {
		v, _ := strconv.ParseInt(o.Meta.Header.Get("X-V"), 10, 64)
		if o.Meta.Status == 203 {
			v++ // UpdateMeta below marks version v as v+1
		}
		return v
	}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := int64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				low := current.Load()
				o, err := s.Get("/k")
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				v := version(o)
				if v < seen || v < low {
					t.Errorf("reader saw version %d after %d (committed before the Get: %d)", v, seen, low)
					return
				}
				seen = v
				if got := readAll(t, s, "/k"); len(got) == 0 {
					continue
				}
			}
		}()
	}
	for v := int64(1); v < 300; v += 2 {
		w, _ := s.Create("/k", -1)
		w.Write(body(fmt.Sprint(v), 100))
		if err := w.Commit(Meta{Status: 200, Header: http.Header{"X-V": {strconv.FormatInt(v, 10)}}}); err != nil {
			t.Fatal(err)
		}
		current.Store(v)
		if v%10 == 1 {
			if err := s.UpdateMeta("/k", func(m *Meta) { m.Status = 203 }); err != nil {
				t.Fatal(err)
			}
			current.Store(v + 1)
		}
		time.Sleep(100 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	checkInvariants(t, s)
}

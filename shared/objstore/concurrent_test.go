package objstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// worker does random operations on a few keys and checks every body it
// reads against the seed stored in its header: a reader sees a whole
// version or an error, never another version's bytes.
func worker(t *testing.T, s *Store, id int, ops int, stop <-chan struct{}) {
	rng := rand.New(rand.NewSource(int64(id)))
	allowed := func(err error) bool {
		return err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrTooLarge) ||
			errors.Is(err, ErrAborted) || errors.Is(err, ErrClosed)
	}
	for i := 0; i < ops; i++ {
		select {
		case <-stop:
			return
		default:
		}
		key := fmt.Sprintf("/k/%d", rng.Intn(12))
		switch op := rng.Intn(10); {
		case op < 4: // fill, with a follower
			seed := fmt.Sprintf("%s#%d.%d", key, id, i)
			data := body(seed, rng.Intn(12000))
			w, err := s.Create(key, -1)
			if err != nil {
				if !allowed(err) {
					t.Errorf("Create: %v", err)
				}
				continue
			}
			var got []byte
			var ferr error
			var wg sync.WaitGroup
			wg.Add(1)
			go follow(w.NewReader(), &got, &ferr, &wg)
			abort := rng.Intn(8) == 0
			var werr error
			for off := 0; off < len(data) && werr == nil; off += 1000 {
				_, werr = w.Write(data[off:min(off+1000, len(data))])
			}
			if abort {
				w.Abort()
			} else if werr == nil {
				werr = w.Commit(Meta{Status: 200, Header: http.Header{"X-Seed": {seed}}})
			}
			wg.Wait()
			if !allowed(werr) {
				t.Errorf("fill: %v", werr)
			}
			if !bytes.Equal(got, data[:len(got)]) || ferr == nil && (abort || werr != nil || len(got) != len(data)) {
				t.Errorf("follower: %d of %d bytes, err %v (abort %v, fill err %v)", len(got), len(data), ferr, abort, werr)
			}
		case op < 8: // read
			o, err := s.Get(key)
			if err != nil {
				if !allowed(err) {
					t.Errorf("Get: %v", err)
				}
				continue
			}
			var buf bytes.Buffer
			var rerr error
			if rng.Intn(2) == 0 {
				_, rerr = o.WriteRange(&buf, 0, o.Meta.Size)
			} else {
				p := make([]byte, o.Meta.Size)
				var n int
				n, rerr = o.ReadAt(p, 0)
				if rerr == io.EOF {
					rerr = nil
				}
				buf.Write(p[:n])
			}
			want := body(o.Meta.Header.Get("X-Seed"), int(o.Meta.Size))
			if !allowed(rerr) || !bytes.Equal(buf.Bytes(), want[:buf.Len()]) || rerr == nil && int64(buf.Len()) != o.Meta.Size {
				t.Errorf("read %s: %d bytes, %v", key, buf.Len(), rerr)
			}
		case op < 9:
			if err := s.Delete(key); !allowed(err) {
				t.Errorf("Delete: %v", err)
			}
		default:
			if _, err := s.DeletePrefix("/k/1"); !allowed(err) {
				t.Errorf("DeletePrefix: %v", err)
			}
			if err := s.UpdateMeta(key, func(m *Meta) { m.Status = 203 }); !allowed(err) {
				t.Errorf("UpdateMeta: %v", err)
			}
		}
		if st := s.Stats(); st.Bytes > st.MaxBytes {
			t.Errorf("Stats = %+v", st)
		}
	}
}

func TestConcurrent(t *testing.T) {
	const max = 40000 // small: fills evict each other all the time
	s := openTest(t, "", Options{MaxBytes: max, AtimeFlush: 5 * time.Millisecond}, 1024)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			worker(t, s, i, 200, nil)
		}(i)
	}
	wg.Wait()
	checkInvariants(t, s)
	if st := s.Stats(); st.Bytes > max {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestCloseUnderLoad(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 100000}, 1024)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			worker(t, s, i, 1<<30, stop)
		}(i)
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // workers keep going against the closed store
	close(stop)
	wg.Wait()
	// Everything that was committed is intact after a reopen.
	s = openTest(t, s.path, Options{MaxBytes: 100000}, 0)
	checkInvariants(t, s)
	for i := 0; i < 12; i++ {
		key := "/k/" + strconv.Itoa(i)
		o, err := s.Get(key)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, s, key); !bytes.Equal(got, body(o.Meta.Header.Get("X-Seed"), len(got))) {
			t.Fatalf("%s damaged", key)
		}
	}
}

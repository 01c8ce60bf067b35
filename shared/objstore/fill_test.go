package objstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

// follow reads r to the end in small reads and reports what it got.
func follow(r io.ReadCloser, out *[]byte, errp *error, wg *sync.WaitGroup) {
	defer wg.Done()
	defer r.Close()
	buf := make([]byte, 777)
	for {
		n, err := r.Read(buf)
		*out = append(*out, buf[:n]...)
		if err != nil {
			if err != io.EOF {
				*errp = err
			}
			return
		}
	}
}

func TestFollowers(t *testing.T) {
	const cs = 256
	s := openTest(t, "", Options{MaxBytes: 16 << 20}, 4*cs)
	data := body("follow", 40*cs+99) // starts inline, then a file
	w, err := s.Create("/f", -1)
	if err != nil {
		t.Fatal(err)
	}
	const early = 100
	outs := make([][]byte, early+2)
	errs := make([]error, early+2)
	var wg sync.WaitGroup
	for i := 0; i < early; i++ { // before any data
		wg.Add(1)
		go follow(w.NewReader(), &outs[i], &errs[i], &wg)
	}
	half := len(data) / 2
	for off := 0; off < half; off += 500 {
		if _, err := w.Write(data[off:min(off+500, half)]); err != nil {
			t.Fatal(err)
		}
	}
	// Late followers: one starts after half the body was written (mostly
	// flushed to bbolt), one after the commit.
	wg.Add(1)
	go follow(w.NewReader(), &outs[early], &errs[early], &wg)
	for off := half; off < len(data); off += 500 {
		if _, err := w.Write(data[off:min(off+500, len(data))]); err != nil {
			t.Fatal(err)
		}
		if off%(5*cs) == 0 {
			time.Sleep(time.Millisecond) // let followers catch up and block
		}
	}
	if err := w.Commit(Meta{Status: 200}); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go follow(w.NewReader(), &outs[early+1], &errs[early+1], &wg)
	wg.Wait()
	for i := range outs {
		if errs[i] != nil || !bytes.Equal(outs[i], data) {
			t.Fatalf("follower %d: %d bytes, err %v", i, len(outs[i]), errs[i])
		}
	}
	checkInvariants(t, s)
}

func TestFollowerFailures(t *testing.T) {
	tests := []struct {
		name string
		end  func(w *Writer) error // ends the fill, returns what followers must see
	}{
		{"abort", func(w *Writer) error { w.Abort(); return ErrAborted }},
		{"too large", func(w *Writer) error {
			_, err := w.Write(make([]byte, 20000))
			if !errors.Is(err, ErrTooLarge) {
				return fmt.Errorf("Write = %v", err)
			}
			return ErrTooLarge
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, "", Options{MaxBytes: 10000}, 256)
			w, _ := s.Create("/x", -1)
			data := body("x", 3000)
			w.Write(data) // in a file
			r1 := w.NewReader()
			got := make([]byte, 1000) // r1 has read some, then blocks
			if _, err := io.ReadFull(r1, got); err != nil || !bytes.Equal(got, data[:1000]) {
				t.Fatalf("before end: %v", err)
			}
			type res struct {
				n   int64
				err error
			}
			done := make(chan res, 1)
			go func() {
				n, err := io.Copy(io.Discard, r1)
				done <- res{n, err}
			}()
			time.Sleep(5 * time.Millisecond)
			want := tt.end(w)
			r := <-done
			if !errors.Is(r.err, want) || r.n > 2000 {
				t.Fatalf("blocked follower: %d bytes, %v; want %v", r.n, r.err, want)
			}
			// A follower that starts after the end.
			if _, err := w.NewReader().Read(make([]byte, 10)); !errors.Is(err, want) {
				t.Fatalf("late follower: %v", err)
			}
			mustNotFound(t, s, "/x")
			if st := s.Stats(); st.Bytes != 0 || st.Objects != 0 {
				t.Fatalf("Stats = %+v", st)
			}
			checkInvariants(t, s)
		})
	}
}

func TestFollowerClose(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	w, _ := s.Create("/x", -1)
	defer w.Abort()
	r := w.NewReader()
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(5 * time.Millisecond)
	r.Close()
	select {
	case err := <-errc:
		if err == nil || err == io.EOF {
			t.Fatalf("Read on closed reader = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the blocked Read")
	}
}

func TestFollowerOfReplacedFill(t *testing.T) {
	// A follower that lags behind a committed fill holds the body file
	// open: it reads the version it followed to the end, even after that
	// version is replaced and its file unlinked.
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 256)
	data := body("a", 5000)
	w, _ := s.Create("/k", -1)
	r := w.NewReader()
	defer r.Close()
	w.Write(data)
	w.Commit(Meta{Status: 200})
	got := make([]byte, 1000)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatal(err)
	}
	put(t, s, "/k", body("b", 5000), 0)
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[1000:]) {
		t.Fatalf("lagging follower: %d bytes, %v", len(rest), err)
	}
	checkInvariants(t, s)
}

func TestFollowInline(t *testing.T) {
	// A body that stays inline is followed from RAM, also after Commit.
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	data := body("i", 3000)
	w, _ := s.Create("/i", int64(len(data)))
	r := w.NewReader()
	w.Write(data[:1000])
	got := make([]byte, 1000)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatal(err)
	}
	w.Write(data[1000:])
	if err := w.Commit(Meta{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("/i"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[1000:]) {
		t.Fatalf("follower: %d bytes, %v", len(rest), err)
	}
	checkInvariants(t, s)
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

func TestNoFDLeaks(t *testing.T) {
	// No GC meanwhile: it would close a leaked *os.File and hide the leak.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 100)
	before := openFDs(t)
	data := body("fd", 5000)
	for i := 0; i < 50; i++ {
		key := fmt.Sprint("/fd/", i%5)
		// A fill with followers that end in every way: read to EOF, closed
		// midway, never read past the start, and an aborted fill.
		w, _ := s.Create(key, -1)
		r1, r2, r3 := w.NewReader(), w.NewReader(), w.NewReader()
		w.Write(data[:3000])
		io.ReadFull(r2, make([]byte, 2000))
		r2.Close()
		r3.Read(make([]byte, 10))
		w.Write(data[3000:])
		if i%7 == 3 {
			w.Abort()
		} else if err := w.Commit(Meta{Status: 200}); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r1)
		io.Copy(io.Discard, r3)
		// Reads of the committed object, whole and failing.
		if o, err := s.Get(key); err == nil {
			o.WriteRange(io.Discard, 0, o.Meta.Size)
			o.ReadAt(make([]byte, 100), 10)
			o.WriteRange(io.Discard, 1, o.Meta.Size+5) // bad range
		}
		if i%3 == 0 {
			s.Delete(key)
		}
	}
	if after := openFDs(t); after != before {
		t.Fatalf("%d file descriptors open before, %d after", before, after)
	}
	checkInvariants(t, s)
}

func TestDeleteAbortsFills(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 1024)
	put(t, s, "/p/old", body("old", 100), 0)
	wa, _ := s.Create("/p/a", -1)
	wb, _ := s.Create("/q/b", -1)
	wk, _ := s.Create("/k", -1)
	for _, w := range []*Writer{wa, wb, wk} {
		w.Write(body("x", 3000))
	}
	ra := wa.NewReader()
	if n, err := s.DeletePrefix("/p/"); n != 1 || err != nil {
		t.Fatalf("DeletePrefix = %d, %v", n, err)
	}
	if _, err := io.ReadAll(ra); !errors.Is(err, ErrAborted) {
		t.Fatalf("follower of a purged fill: %v", err)
	}
	if err := wa.Commit(Meta{Status: 200}); !errors.Is(err, ErrAborted) {
		t.Fatalf("Commit of a purged fill = %v", err)
	}
	if err := s.Delete("/k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Delete = %v", err)
	}
	if err := wk.Commit(Meta{Status: 200}); !errors.Is(err, ErrAborted) {
		t.Fatalf("Commit after Delete = %v", err)
	}
	if err := wb.Commit(Meta{Status: 200}); err != nil { // other prefix: untouched
		t.Fatal(err)
	}
	mustNotFound(t, s, "/p/a")
	mustNotFound(t, s, "/k")
	if _, err := s.Get("/q/b"); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
}

func TestAbandonedWriter(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 1024)
	r := func() io.ReadCloser {
		w, _ := s.Create("/lost", -1)
		w.Write(body("lost", 5000)) // flushed in part
		return w.NewReader()
	}()
	errc := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(r)
		errc <- err
	}()
	deadline := time.After(10 * time.Second)
	for {
		runtime.GC()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrAborted) {
				t.Fatalf("follower of an abandoned fill: %v", err)
			}
			// Followers are told first; the cleanup follows in the
			// finalizer's goroutine.
			for s.Stats().Bytes != 0 {
				select {
				case <-deadline:
					t.Fatalf("Stats = %+v", s.Stats())
				case <-time.After(time.Millisecond):
				}
			}
			checkInvariants(t, s)
			return
		case <-deadline:
			t.Fatal("abandoned fill never ended")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

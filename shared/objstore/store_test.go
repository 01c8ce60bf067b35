package objstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		opts Options
	}{
		{"no MaxBytes", Options{}},
		{"negative MaxBytes", Options{MaxBytes: -1}},
		{"negative flush", Options{MaxBytes: 1 << 20, AtimeFlush: -time.Second}},
		{"negative lock timeout", Options{MaxBytes: 1 << 20, LockTimeout: -time.Second}},
	}
	if strconv.IntSize == 32 {
		tests = append(tests, struct {
			name string
			opts Options
		}{"too big for 32-bit", Options{MaxBytes: 1 << 30}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(filepath.Join(dir, tt.name), tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	const inline = 1024
	s := openTest(t, "", Options{MaxBytes: 64 << 20}, inline)
	sizes := []int{0, 1, 100, inline - 1, inline, inline + 1, 4*inline + 1, 13*inline + 17}
	for _, n := range sizes {
		for _, step := range []int{0, 1000, inline, 7} {
			key := fmt.Sprintf("/obj/%d?step=%d", n, step)
			want := body(key, n)
			put(t, s, key, want, step)
			o, err := s.Get(key)
			if err != nil {
				t.Fatal(err)
			}
			if o.Meta.Size != int64(n) || o.Meta.Key != key || o.Meta.Status != 200 {
				t.Fatalf("%s: meta %+v", key, o.Meta)
			}
			if got := readAll(t, s, key); !bytes.Equal(got, want) {
				t.Fatalf("%s: body differs", key)
			}
			got := make([]byte, n)
			if m, err := o.ReadAt(got, 0); m != n || (err != nil && err != io.EOF) || !bytes.Equal(got, want) {
				t.Fatalf("%s: ReadAt = %d, %v", key, m, err)
			}
			if o.file != (n > inline) {
				t.Fatalf("%s: body in a file: %v", key, o.file)
			}
		}
	}
	checkInvariants(t, s)
}

func TestRoundTripLarge(t *testing.T) {
	// Default chunk and transaction sizes: several transactions per fill.
	s := openTest(t, "", Options{MaxBytes: 64 << 20}, 0)
	want := body("large", 3<<20+12345)
	put(t, s, "/large", want, 32<<10)
	if got := readAll(t, s, "/large"); !bytes.Equal(got, want) {
		t.Fatal("body differs")
	}
	checkInvariants(t, s)
}

func TestMetaRoundTrip(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	req := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	m := Meta{
		Key:          "ignored",
		Status:       206,
		Header:       http.Header{"Content-Type": {"video/mp4"}, "Etag": {`"x"`}, "Vary": {"A", "B"}},
		Size:         999, // replaced by the bytes written
		RequestTime:  req,
		ResponseTime: req.Add(time.Second),
	}
	w, err := s.Create("/m", -1)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("hello"))
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
	o, err := s.Get("/m")
	if err != nil {
		t.Fatal(err)
	}
	got := o.Meta
	if got.Key != "/m" || got.Size != 5 || got.Status != 206 || !got.RequestTime.Equal(req) ||
		!got.ResponseTime.Equal(req.Add(time.Second)) || fmt.Sprint(got.Header) != fmt.Sprint(m.Header) {
		t.Fatalf("meta = %+v", got)
	}
}

func TestReadAtBoundaries(t *testing.T) {
	for _, inFile := range []bool{false, true} {
		t.Run(fmt.Sprintf("file=%v", inFile), func(t *testing.T) { testReadAtBoundaries(t, inFile) })
	}
}

func testReadAtBoundaries(t *testing.T, inFile bool) {
	const cs = 64
	size := 10*cs + 3
	inline := int64(size)
	if inFile {
		inline = cs
	}
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, inline)
	want := body("b", size)
	put(t, s, "/b", want, 50)
	o, err := s.Get("/b")
	if err != nil {
		t.Fatal(err)
	}
	if o.file != inFile {
		t.Fatalf("body in a file: %v", o.file)
	}
	var offs []int
	for c := 0; c <= 11; c++ {
		for _, d := range []int{-1, 0, 1} {
			if off := c*cs + d; off >= 0 {
				offs = append(offs, off)
			}
		}
	}
	offs = append(offs, size-1, size, size+1)
	for _, off := range offs {
		for _, n := range []int{0, 1, cs - 1, cs, cs + 1, 3 * cs, size} {
			p := make([]byte, n)
			got, err := o.ReadAt(p, int64(off))
			wantN := max(0, min(n, size-off))
			if got != wantN {
				t.Fatalf("ReadAt(%d, %d) = %d, want %d", n, off, got, wantN)
			}
			if !bytes.Equal(p[:got], want[min(off, size):min(off, size)+wantN]) {
				t.Fatalf("ReadAt(%d, %d): wrong bytes", n, off)
			}
			short := n > 0 && off+n > size
			if short && err != io.EOF || !short && err != nil {
				t.Fatalf("ReadAt(%d, %d) err = %v", n, off, err)
			}
			// WriteRange of the same range, when it is inside the body.
			if off+n <= size {
				var buf bytes.Buffer
				if m, err := o.WriteRange(&buf, int64(off), int64(n)); err != nil || m != int64(n) || !bytes.Equal(buf.Bytes(), want[off:off+n]) {
					t.Fatalf("WriteRange(%d, %d) = %d, %v", off, n, m, err)
				}
			}
		}
	}
	if _, err := o.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at -1 succeeded")
	}
	for _, r := range [][2]int64{{-1, 1}, {0, -1}, {0, int64(size) + 1}, {int64(size), 1}, {int64(size) + 1, 0}} {
		if _, err := o.WriteRange(io.Discard, r[0], r[1]); err == nil {
			t.Errorf("WriteRange(%d, %d) succeeded", r[0], r[1])
		}
	}
}

// hookWriter calls hook before the first write. It has no ReadFrom, so
// WriteRange copies to it piece by piece.
type hookWriter struct {
	buf  bytes.Buffer
	hook func()
}

func (w *hookWriter) Write(p []byte) (int, error) {
	if w.hook != nil {
		w.hook()
		w.hook = nil
	}
	return w.buf.Write(p)
}

func (w *hookWriter) Bytes() []byte { return w.buf.Bytes() }

func TestReplaceWhileReading(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 16 << 20}, 0)
	v1 := body("v1", 200<<10) // several copy pieces
	v2 := body("v2", 100<<10)
	put(t, s, "/k", v1, 0)
	old, err := s.Get("/k")
	if err != nil {
		t.Fatal(err)
	}
	// A WriteRange under way keeps its file open: it sends the whole old
	// version even though the new one commits (and unlinks it) meanwhile.
	w := &hookWriter{hook: func() { put(t, s, "/k", v2, 0) }}
	n, err := old.WriteRange(w, 0, old.Meta.Size)
	if err != nil || !bytes.Equal(w.Bytes(), v1) {
		t.Fatalf("WriteRange of the version being replaced = %d, %v; same bytes %v", n, err, bytes.Equal(w.Bytes(), v1))
	}
	// One that starts after the replacement finds the old version gone.
	if n, err := old.WriteRange(io.Discard, 0, old.Meta.Size); !errors.Is(err, ErrNotFound) || n != 0 {
		t.Fatalf("WriteRange of the replaced version = %d, %v; want ErrNotFound", n, err)
	}
	if _, err := old.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadAt of replaced = %v", err)
	}
	if got := readAll(t, s, "/k"); !bytes.Equal(got, v2) {
		t.Fatal("new version differs")
	}
	checkInvariants(t, s)
}

func TestReplaceDuringFill(t *testing.T) {
	// A fill in progress does not disturb readers of the committed version.
	s := openTest(t, "", Options{MaxBytes: 16 << 20}, 4096)
	v1, v2 := body("v1", 10000), body("v2", 20000)
	put(t, s, "/k", v1, 0)
	w, err := s.Create("/k", -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(v2[:15000]); err != nil { // flushed in part
		t.Fatal(err)
	}
	if got := readAll(t, s, "/k"); !bytes.Equal(got, v1) {
		t.Fatal("old version changed during a fill")
	}
	if st := s.Stats(); st.Objects != 1 || st.Bytes != 25000 {
		t.Fatalf("Stats during fill = %+v", st)
	}
	w.Write(v2[15000:])
	if err := w.Commit(Meta{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, "/k"); !bytes.Equal(got, v2) {
		t.Fatal("new version differs")
	}
	if st := s.Stats(); st.Objects != 1 || st.Bytes != 20000 {
		t.Fatalf("Stats = %+v", st)
	}
	checkInvariants(t, s)
}

func TestDelete(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	put(t, s, "/a", body("a", defaultInlineMax+1), 0)
	put(t, s, "/small", body("s", defaultInlineMax), 0)
	o, _ := s.Get("/a")
	small, _ := s.Get("/small")
	if err := s.Delete("/a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("/small"); err != nil {
		t.Fatal(err)
	}
	mustNotFound(t, s, "/a")
	mustNotFound(t, s, "/small")
	if _, err := o.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadAt after Delete = %v", err)
	}
	// A small body was copied by Get: it stays readable, as it was.
	var buf bytes.Buffer
	if _, err := small.WriteRange(&buf, 0, defaultInlineMax); err != nil || !bytes.Equal(buf.Bytes(), body("s", defaultInlineMax)) {
		t.Fatalf("small body after Delete: %v", err)
	}
	if err := s.Delete("/a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if err := s.Delete(""); err == nil {
		t.Fatal("Delete of empty key succeeded")
	}
	checkInvariants(t, s)
}

func TestDeletePrefix(t *testing.T) {
	// Bodies of 100 bytes in files, of 10 bytes inline.
	s := openTest(t, "", Options{MaxBytes: 16 << 20}, 50)
	n := deleteBatch + 44 // more than one transaction
	for i := 0; i < n; i++ {
		put(t, s, fmt.Sprintf("/a/%d", i), body(fmt.Sprint(i), 100), 0)
	}
	for _, k := range []string{"/a", "/b/1", "/ab", "/"} {
		put(t, s, k, body(k, 10), 0)
	}
	tests := []struct {
		prefix string
		want   int
		left   []string
	}{
		{"/a/", n, []string{"/a", "/b/1", "/ab", "/"}},
		{"/x", 0, []string{"/a", "/b/1", "/ab", "/"}},
		{"/a", 2, []string{"/b/1", "/"}},
		{"", 2, nil},
	}
	for _, tt := range tests {
		got, err := s.DeletePrefix(tt.prefix)
		if err != nil || got != tt.want {
			t.Fatalf("DeletePrefix(%q) = %d, %v; want %d", tt.prefix, got, err, tt.want)
		}
		for _, k := range tt.left {
			if _, err := s.Get(k); err != nil {
				t.Fatalf("after DeletePrefix(%q): Get(%q) = %v", tt.prefix, k, err)
			}
		}
		if st := s.Stats(); st.Objects != int64(len(tt.left)) {
			t.Fatalf("after DeletePrefix(%q): %+v", tt.prefix, st)
		}
		checkInvariants(t, s)
	}
}

func TestUpdateMeta(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	data := body("u", 3000)
	put(t, s, "/u", data, 0)
	now := time.Now().UTC()
	err := s.UpdateMeta("/u", func(m *Meta) {
		if m.Size != 3000 || m.Key != "/u" {
			t.Errorf("fn got %+v", m)
		}
		m.Header = http.Header{"Etag": {`"2"`}}
		m.ResponseTime = now
		m.Size = 1 // ignored
		m.Key = "/other"
	})
	if err != nil {
		t.Fatal(err)
	}
	o, err := s.Get("/u")
	if err != nil {
		t.Fatal(err)
	}
	if o.Meta.Header.Get("Etag") != `"2"` || !o.Meta.ResponseTime.Equal(now) || o.Meta.Size != 3000 {
		t.Fatalf("meta = %+v", o.Meta)
	}
	if got := readAll(t, s, "/u"); !bytes.Equal(got, data) {
		t.Fatal("body changed")
	}
	if err := s.UpdateMeta("/none", func(*Meta) {}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateMeta of missing = %v", err)
	}
	if err := s.UpdateMeta("/u", func(m *Meta) { m.Status = -5 }); err == nil {
		t.Fatal("UpdateMeta with a bad status succeeded")
	}
	checkInvariants(t, s)
}

// lruMax holds four 1000-byte objects with their metadata charge, not five.
const lruMax = 4000 + 4*256

// lruFixture stores four 1000-byte objects in a cache of lruMax bytes, two
// inline and two in files.
func lruFixture(t *testing.T, path string) *Store {
	s := openTest(t, path, Options{MaxBytes: lruMax, AtimeFlush: time.Hour}, 0)
	for i, k := range []string{"a", "b", "c", "d"} {
		s.inlineMax = int64(500 + 1000*(i%2))
		put(t, s, k, body(k, 1000), 0)
	}
	return s
}

func present(s *Store, keys ...string) string {
	var got []string
	for _, k := range keys {
		if _, err := s.Get(k); err == nil {
			got = append(got, k)
		}
	}
	return strings.Join(got, ",")
}

func TestEvictionOrder(t *testing.T) {
	tests := []struct {
		name    string
		touch   []string
		reopen  bool
		added   []string
		present string
	}{
		{"insertion order", nil, false, []string{"e"}, "b,c,d,e"},
		{"touched survives", []string{"a"}, false, []string{"e"}, "a,c,d,e"},
		{"touch order", []string{"b", "a"}, false, []string{"e", "f"}, "a,b,e,f"},
		{"persisted across reopen", []string{"a", "b"}, true, []string{"e", "f"}, "a,b,e,f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.db")
			s := lruFixture(t, path)
			for _, k := range tt.touch {
				if _, err := s.Get(k); err != nil {
					t.Fatal(err)
				}
			}
			if tt.reopen {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openTest(t, path, Options{MaxBytes: lruMax, AtimeFlush: time.Hour}, 0)
				if st := s.Stats(); st.Objects != 4 || st.Bytes != 4000 {
					t.Fatalf("after reopen: %+v", st)
				}
			}
			for _, k := range tt.added {
				put(t, s, k, body(k, 1000), 0)
			}
			// present() itself touches keys: check once, at the end.
			if got := present(s, "a", "b", "c", "d", "e", "f"); got != tt.present {
				t.Fatalf("present = %s, want %s", got, tt.present)
			}
			checkInvariants(t, s)
		})
	}
}

func TestShrinkOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := lruFixture(t, path)
	s.Close()
	s = openTest(t, path, Options{MaxBytes: 2500}, 0)
	if st := s.Stats(); st.Bytes > 2500 || st.Objects != 2 {
		t.Fatalf("Stats = %+v", st)
	}
	if got := present(s, "a", "b", "c", "d"); got != "c,d" {
		t.Fatalf("present = %s", got)
	}
}

func TestSizeBoundDuringFill(t *testing.T) {
	const max = 64 << 10
	s := openTest(t, "", Options{MaxBytes: max}, 4096)
	for i := 0; i < 60; i++ {
		put(t, s, fmt.Sprint("small", i), body(fmt.Sprint(i), 1000), 0)
	}
	done, stop := make(chan struct{}), make(chan struct{})
	var worst int64
	go func() { // a concurrent observer
		defer close(done)
		for {
			if b := s.Stats().Bytes; b > worst {
				worst = b
			}
			select {
			case <-stop:
				return
			default:
				time.Sleep(10 * time.Microsecond)
			}
		}
	}()
	w, err := s.Create("/long", -1)
	if err != nil {
		t.Fatal(err)
	}
	data := body("long", 60<<10)
	for off := 0; off < len(data); off += 700 {
		if _, err := w.Write(data[off:min(off+700, len(data))]); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Bytes > max {
			t.Fatalf("Stats.Bytes = %d > %d during fill", st.Bytes, max)
		}
	}
	if err := w.Commit(Meta{Status: 200}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	if worst > max {
		t.Fatalf("observer saw %d bytes", worst)
	}
	if got := readAll(t, s, "/long"); !bytes.Equal(got, data) {
		t.Fatal("body differs")
	}
	st := s.Stats()
	if st.Bytes > max || st.Objects < 2 || st.Objects > 5 {
		t.Fatalf("Stats = %+v", st)
	}
	// The survivors are the most recently stored small objects.
	for i := 60 - int(st.Objects) + 1; i < 60; i++ {
		if _, err := s.Get(fmt.Sprint("small", i)); err != nil {
			t.Fatalf("small%d: %v", i, err)
		}
	}
	checkInvariants(t, s)
}

func TestTooLarge(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 10000}, 1024)
	put(t, s, "/keep", body("keep", 3000), 0)
	if _, err := s.Create("/big", 10001); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Create with a big hint = %v", err)
	}
	w, err := s.Create("/big", -1)
	if err != nil {
		t.Fatal(err)
	}
	r := w.NewReader()
	defer r.Close()
	data := body("big", 12000)
	var werr error
	for off := 0; off < len(data) && werr == nil; off += 1000 {
		_, werr = w.Write(data[off : off+1000])
	}
	if !errors.Is(werr, ErrTooLarge) {
		t.Fatalf("Write = %v, want ErrTooLarge", werr)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("follower got %v, want ErrTooLarge", err)
	}
	if err := w.Commit(Meta{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Commit after failure = %v", err)
	}
	w.Abort() // no-op
	mustNotFound(t, s, "/big")
	// The fill had to evict /keep on the way; the space is free again.
	if st := s.Stats(); st.Bytes != 0 || st.Objects != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	checkInvariants(t, s)
	put(t, s, "/fits", body("fits", 10000-int(metaCharge(len("/fits"), 64))), 999)
}

func TestNoRoomForConcurrentFills(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 10000}, 1024)
	w1, _ := s.Create("/1", -1)
	w2, _ := s.Create("/2", -1)
	if _, err := w1.Write(make([]byte, 6000)); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Write(make([]byte, 6000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("second fill = %v, want ErrTooLarge", err)
	}
	if err := w1.Commit(Meta{Status: 200}); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
}

func TestAbort(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 1024)
	put(t, s, "/k", body("old", 500), 0)
	w, _ := s.Create("/k", -1)
	w.Write(body("new", 5000))
	w.Abort()
	w.Abort()
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrAborted) {
		t.Fatalf("Write after Abort = %v", err)
	}
	if err := w.Commit(Meta{}); !errors.Is(err, ErrAborted) {
		t.Fatalf("Commit after Abort = %v", err)
	}
	if got := readAll(t, s, "/k"); !bytes.Equal(got, body("old", 500)) {
		t.Fatal("old version lost")
	}
	checkInvariants(t, s)

	w, _ = s.Create("/c", -1)
	w.Write([]byte("abc"))
	if err := w.Commit(Meta{Status: 200}); err != nil {
		t.Fatal(err)
	}
	w.Abort() // after Commit: no-op
	if err := w.Commit(Meta{}); err == nil {
		t.Fatal("second Commit succeeded")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("Write after Commit succeeded")
	}
	if got := readAll(t, s, "/c"); string(got) != "abc" {
		t.Fatalf("got %q", got)
	}
}

func TestBadInput(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	if _, err := s.Create("", -1); err == nil {
		t.Error("Create with an empty key succeeded")
	}
	if _, err := s.Create(strings.Repeat("k", 40000), -1); err == nil {
		t.Error("Create with a 40000-byte key succeeded")
	}
	w, _ := s.Create("/s", -1)
	if err := w.Commit(Meta{Status: 70000}); err == nil {
		t.Error("Commit with status 70000 succeeded")
	}
	w.Abort()
	mustNotFound(t, s, "")
	var o Object
	if _, err := o.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("zero Object ReadAt succeeded")
	}
	var zw Writer
	if _, err := zw.Write([]byte("x")); err == nil {
		t.Error("zero Writer Write succeeded")
	}
	zw.Abort()
	if _, err := zw.NewReader().Read(make([]byte, 1)); err == nil {
		t.Error("zero Writer reader succeeded")
	}
}

func TestInlineLimitChange(t *testing.T) {
	// Where a body is stored is in its record: a store reopened with
	// another limit reads both kinds.
	path := filepath.Join(t.TempDir(), "c.db")
	s := openTest(t, path, Options{MaxBytes: 1 << 20}, 100)
	small, big := body("s", 100), body("b", 1234)
	put(t, s, "/s", small, 0)
	put(t, s, "/b", big, 0)
	s.Close()
	s = openTest(t, path, Options{MaxBytes: 1 << 20}, 0)
	if s.inlineMax != defaultInlineMax {
		t.Fatalf("inlineMax = %d", s.inlineMax)
	}
	if got := readAll(t, s, "/b"); !bytes.Equal(got, big) {
		t.Fatal("file body differs after reopen")
	}
	if got := readAll(t, s, "/s"); !bytes.Equal(got, small) {
		t.Fatal("inline body differs after reopen")
	}
	put(t, s, "/b", body("b2", 1234), 0) // now inline: the file goes
	checkInvariants(t, s)
}

func TestAtimeBatchBounded(t *testing.T) {
	// No flusher drains this batch: the bound alone must hold.
	s := &Store{atimes: map[string]int64{}, kick: make(chan struct{}, 1)}
	for i := 0; i < 3*atimeBatchMax; i++ {
		s.touch(fmt.Sprint("/k", i))
	}
	if n := len(s.atimes); n != atimeBatchMax {
		t.Fatalf("batch holds %d entries, want %d", n, atimeBatchMax)
	}
	if len(s.kick) != 1 {
		t.Fatal("flusher not woken")
	}
	s.touch("/k7") // already batched: updated, not dropped
	s = &Store{atimes: map[string]int64{}, kick: make(chan struct{}, 1)}
	long := strings.Repeat("x", 8000)
	for i := 0; i < 200; i++ {
		s.touch(fmt.Sprint(long, i))
	}
	if s.atimeBytes > atimeBatchBytes || s.atimeBytes < atimeBatchBytes-8100 {
		t.Fatalf("batch holds %d key bytes, bound %d", s.atimeBytes, atimeBatchBytes)
	}

	// A real store writes the batch on Sync.
	st := openTest(t, "", Options{MaxBytes: 1 << 20, AtimeFlush: time.Hour}, 0)
	put(t, st, "/x", []byte("x"), 0)
	before := recordAtime(t, st, "/x")
	if _, err := st.Get("/x"); err != nil {
		t.Fatal(err)
	}
	if recordAtime(t, st, "/x") != before {
		t.Fatal("access written before Sync")
	}
	if err := st.Sync(); err != nil {
		t.Fatal(err)
	}
	if recordAtime(t, st, "/x") <= before {
		t.Fatal("access not written by Sync")
	}
}

func recordAtime(t *testing.T, s *Store, key string) int64 {
	var at int64
	err := s.view(func(tx *bolt.Tx) error {
		h, err := parseHead(tx.Bucket(bucketMeta).Get([]byte(key)))
		at = h.atime
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestClockMonotonic(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	s.clock.Store(time.Now().Add(time.Hour).UnixNano()) // as if the wall clock stepped back
	a := s.now()
	b := s.now()
	if b <= a || a <= time.Now().UnixNano() {
		t.Fatalf("now() = %d then %d", a, b)
	}
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	openTest(t, path, Options{MaxBytes: 1 << 20}, 0)
	_, err := Open(path, Options{MaxBytes: 1 << 20, LockTimeout: 50 * time.Millisecond, Logger: quietLog})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestClose(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 1024)
	put(t, s, "/o", body("o", 1025), 0)
	o, _ := s.Get("/o")
	w, _ := s.Create("/f", -1)
	w.Write(body("f", 3000))
	r := w.NewReader()
	io.CopyN(io.Discard, r, 3000)
	errc := make(chan error, 1)
	go func() { // blocked waiting for more data
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("blocked follower got %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close = %v", err)
	}
	if err := w.Commit(Meta{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v", err)
	}
	if _, err := o.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadAt after Close = %v", err)
	}
	if _, err := s.Get("/o"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
	if _, err := s.Create("/x", 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Create after Close = %v", err)
	}
	if err := s.Delete("/o"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delete after Close = %v", err)
	}
	if _, err := s.DeletePrefix("/"); !errors.Is(err, ErrClosed) {
		t.Fatalf("DeletePrefix after Close = %v", err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close = %v", err)
	}
}

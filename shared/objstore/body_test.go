package objstore

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// logBuffer collects log lines for tests that check what was logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func TestIDName(t *testing.T) {
	for _, id := range []uint64{1, 0xabc, 1<<64 - 1} {
		name := idName(id)
		if got, ok := parseIDName(name); !ok || got != id || len(name) != 16 {
			t.Fatalf("idName(%d) = %q, parsed back %d %v", id, name, got, ok)
		}
	}
	for _, name := range []string{"", "0000000000000000", "000000000000000g", "000000000000000A", "00000000000000001", "x.part"} {
		if id, ok := parseIDName(name); ok {
			t.Errorf("parseIDName(%q) = %d", name, id)
		}
	}
}

// TestOpenRemovesStrays: what a crash leaves in the body directory (a fill's
// .part file; a body renamed but whose record never committed; a body whose
// record was deleted but which was not unlinked) is removed at Open and
// logged; committed bodies and files the store does not know stay.
func TestOpenRemovesStrays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openTest(t, path, Options{MaxBytes: 1 << 20}, 100)
	keep := body("keep", 5000)
	put(t, s, "/keep", keep, 0)
	put(t, s, "/gone", body("gone", 5000), 0)
	o, _ := s.Get("/gone")
	goneID := o.id
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Delete /gone's record behind the store's back: its file stays.
	boltEdit(t, path, func(tx *bolt.Tx) error {
		var d deletion
		_, _, err := s.deleteKey(tx, []byte("/gone"), &d)
		return err
	})
	dir := path + ".bodies"
	strays := []string{idName(goneID), idName(1000), idName(1001) + partSuffix, idName(7) + partSuffix}
	for _, name := range strays[1:] {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("stray"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	foreign := filepath.Join(dir, "README")
	os.WriteFile(foreign, []byte("not ours"), 0o600)

	var logs logBuffer
	s = openTest(t, path, Options{MaxBytes: 1 << 20, Logger: logs.logger()}, 100)
	for _, name := range strays {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want removed", name, err)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a file the store does not know was removed: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "unfinished=2 unreferenced=2") || !strings.Contains(l, "README") {
		t.Errorf("log: %s", l)
	}
	if got := readAll(t, s, "/keep"); !bytes.Equal(got, keep) {
		t.Fatal("committed body damaged")
	}
	os.Remove(foreign)
	checkInvariants(t, s)
}

// TestBrokenBodyFile: a record whose body file is missing or has the wrong
// size is dropped with a warning, and the object is not found.
func TestBrokenBodyFile(t *testing.T) {
	tests := []struct {
		name   string
		damage func(path string) error
		atGet  bool // found by Get (else by the read that follows)
	}{
		{"missing", os.Remove, true},
		{"short", func(p string) error { return os.Truncate(p, 100) }, true},
		{"long", func(p string) error {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte("more"))
			return err
		}, true},
		{"cut after Get", func(p string) error { return os.Truncate(p, 100) }, false},
		{"removed after Get", os.Remove, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			s := openTest(t, "", Options{MaxBytes: 1 << 20, Logger: logs.logger()}, 100)
			put(t, s, "/b", body("b", 5000), 0)
			put(t, s, "/other", body("o", 5000), 0)
			o, err := s.Get("/b")
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.damage(s.bodyPath(o.id)); err != nil {
				t.Fatal(err)
			}
			if tt.atGet {
				mustNotFound(t, s, "/b")
			} else {
				n, err := o.WriteRange(io.Discard, 0, o.Meta.Size)
				if !errors.Is(err, ErrNotFound) || n > 100 {
					t.Fatalf("WriteRange = %d, %v; want ErrNotFound", n, err)
				}
				if n, err := o.ReadAt(make([]byte, 5000), 0); !errors.Is(err, ErrNotFound) || n > 100 {
					t.Fatalf("ReadAt = %d, %v; want ErrNotFound", n, err)
				}
			}
			// (A file that vanished after Get looks like a concurrent delete
			// to the reader; this Get finds the record still there.)
			mustNotFound(t, s, "/b")
			if !strings.Contains(logs.String(), "body file missing or damaged") {
				t.Errorf("no warning logged: %s", logs.String())
			}
			if st := s.Stats(); st.Objects != 1 || st.Bytes != 5000 {
				t.Fatalf("Stats = %+v", st)
			}
			checkInvariants(t, s)
		})
	}
}

func TestOldFormat(t *testing.T) {
	// A format 1 file (chunks in bbolt) is replaced by an empty store.
	path := filepath.Join(t.TempDir(), "c.db")
	boltEdit(t, path, func(tx *bolt.Tx) error {
		for _, name := range []string{"state", "meta", "lru", "chunks", "fills"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		st := tx.Bucket([]byte("state"))
		st.Put([]byte("format"), []byte{1})
		st.Put([]byte("chunk"), []byte{0, 1, 0, 0})
		return tx.Bucket([]byte("chunks")).Put(make([]byte, 12), bytes.Repeat([]byte("x"), 100000))
	})
	var logs logBuffer
	s := openTest(t, path, Options{MaxBytes: 1 << 20, Logger: logs.logger()}, 0)
	if st := s.Stats(); st.Objects != 0 {
		t.Fatalf("Stats = %+v", st)
	}
	if !strings.Contains(logs.String(), "old format 1") {
		t.Errorf("log: %s", logs.String())
	}
	put(t, s, "/x", []byte("x"), 0)
	checkInvariants(t, s)
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("chunks")) != nil || tx.Bucket([]byte("fills")) != nil {
			t.Error("format 1 buckets left")
		}
		return nil
	})
	db.Close()
	// A newer format is refused and kept.
	boltEdit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketState).Put(stateFormat, []byte{9}) })
	before := fileHash(t, path)
	if _, err := Open(path, Options{MaxBytes: 1 << 20, Logger: quietLog}); err == nil || !strings.Contains(err.Error(), "format version 9 is not supported") {
		t.Fatalf("Open of format 9 = %v", err)
	}
	if fileHash(t, path) != before {
		t.Fatal("Open changed a file of a newer format")
	}
}

// readerFromRecorder is a writer with ReadFrom that records what it was given.
type readerFromRecorder struct {
	bytes.Buffer
	srcs []io.Reader
}

func (r *readerFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.srcs = append(r.srcs, src)
	return r.Buffer.ReadFrom(src)
}

// TestWriteRangeGivesFile: a writer with ReadFrom gets an *io.LimitedReader
// of the *os.File, which is what net.TCPConn.ReadFrom sends with sendfile.
func TestWriteRangeGivesFile(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 100)
	data := body("f", 5000)
	put(t, s, "/f", data, 0)
	o, _ := s.Get("/f")
	var w readerFromRecorder
	if n, err := o.WriteRange(&w, 1000, 3000); n != 3000 || err != nil || !bytes.Equal(w.Bytes(), data[1000:4000]) {
		t.Fatalf("WriteRange = %d, %v", n, err)
	}
	if len(w.srcs) != 1 {
		t.Fatalf("ReadFrom called %d times", len(w.srcs))
	}
	lr, ok := w.srcs[0].(*io.LimitedReader)
	if !ok {
		t.Fatalf("ReadFrom got %T", w.srcs[0])
	}
	if _, ok := lr.R.(*os.File); !ok {
		t.Fatalf("the LimitedReader reads a %T", lr.R)
	}
}

// TestWriteRangeOverTCP serves file bodies through http.Server (the path
// that uses sendfile), ranges included, and checks every byte.
func TestWriteRangeOverTCP(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 8 << 20}, 100)
	data := body("tcp", 3<<20+17)
	put(t, s, "/t", data, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, err := s.Get("/t")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		off, n := int64(0), o.Meta.Size
		if r.URL.RawQuery == "range" {
			off, n = 12345, 1<<20
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		o.WriteRange(w, off, n)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, q := range []string{"", "range"} {
		resp, err := http.Get("http://" + ln.Addr().String() + "/?" + q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := data
		if q == "range" {
			want = data[12345 : 12345+1<<20]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%q: %d bytes, %v", q, len(got), err)
		}
	}
}

package objstore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	templateOnce sync.Once
	templateFile []byte
)

// makeStoreFile writes a closed store with enough objects for branch pages
// in the meta bucket and multi-chunk bodies (built once, then copied).
func makeStoreFile(t testing.TB, path string) {
	t.Helper()
	templateOnce.Do(func() {
		tmp := filepath.Join(t.TempDir(), "template.db")
		s, err := Open(tmp, Options{MaxBytes: 64 << 20, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		s.db.NoSync = true // speed only: the written file is read back, not crashed
		for i := 0; i < 300; i++ {
			put(t, s, fmt.Sprintf("/k%03d", i), body(fmt.Sprint(i), 100), 0)
		}
		put(t, s, "/big", body("big", 1<<20), 0)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if templateFile, err = os.ReadFile(tmp); err != nil {
			t.Fatal(err)
		}
	})
	if templateFile == nil {
		t.Fatal("no template file")
	}
	if err := os.WriteFile(path, templateFile, 0o600); err != nil {
		t.Fatal(err)
	}
}

// usedSize is the size the database's pages take (bbolt grows the file
// ahead of use, so this is less than the file size).
func usedSize(t testing.TB, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// boltEdit changes a closed store file with bbolt directly.
func boltEdit(t testing.TB, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// pageOf returns the root page of a bucket.
func pageOf(t testing.TB, path string, bucket []byte) (id uint64, pageSize int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		id = uint64(tx.Bucket(bucket).Root())
		return nil
	})
	return id, db.Info().PageSize
}

func patchFile(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the file is gone: %v", err)
	}
	return sha256.Sum256(b)
}

func TestCorrupt(t *testing.T) {
	garbage := make([]byte, 64<<10)
	rand.New(rand.NewSource(1)).Read(garbage)
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string // in the error
	}{
		{"garbage", func(t *testing.T, path string) { os.WriteFile(path, garbage, 0o600) }, "not a bbolt database"},
		{"short text", func(t *testing.T, path string) { os.WriteFile(path, []byte("hello, not a database\n"), 0o600) }, "not a bbolt database"},
		{"truncated to half", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			os.Truncate(path, usedSize(t, path)/2)
		}, "truncated"},
		{"last page cut", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			os.Truncate(path, usedSize(t, path)-1)
		}, "truncated"},
		{"truncated to 3 pages", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			os.Truncate(path, int64(3*os.Getpagesize()))
		}, "truncated"},
		{"truncated to 1 page", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			os.Truncate(path, int64(os.Getpagesize()))
		}, ""},
		{"meta pages overwritten", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			patchFile(t, path, 16, garbage[:64])
			patchFile(t, path, int64(os.Getpagesize())+16, garbage[64:128])
		}, "not a bbolt database"},
		{"page type", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			id, ps := pageOf(t, path, bucketMeta)
			patchFile(t, path, int64(id)*int64(ps)+8, []byte{0x77, 0})
		}, "unexpected page type"},
		{"page garbage", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			id, ps := pageOf(t, path, bucketInline)
			patchFile(t, path, int64(id)*int64(ps), garbage[:ps])
		}, ""},
		{"element garbage", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			id, ps := pageOf(t, path, bucketMeta)
			patchFile(t, path, int64(id)*int64(ps)+16, garbage[:ps-16]) // header kept
		}, ""},
		{"key order", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			// Make one leaf key equal to its neighbour.
			b, _ := os.ReadFile(path)
			i := bytes.Index(b, []byte("/k151"))
			if i < 0 || !bytes.Contains(b[i-200:i], []byte("/k150")) {
				t.Fatal("cannot find adjacent keys")
			}
			patchFile(t, path, int64(i), []byte("/k150"))
		}, "order"},
		{"foreign bbolt file", func(t *testing.T, path string) {
			boltEdit(t, path, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("foo"))
				return err
			})
		}, "not an objstore file"},
		{"bucket missing", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketLRU) })
		}, `bucket "lru" is missing`},
		{"bad meta record", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("/k007"), []byte("junk")) })
		}, `meta record "/k007"`},
		{"lru entry missing", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketLRU).Cursor()
				c.First()
				return c.Delete()
			})
		}, "lru index"},
		{"bad format record", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketState).Put(stateFormat, []byte{1, 2}) })
		}, "bad format record"},
		{"inline body missing", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketInline).Cursor()
				c.Seek(idKey(new([8]byte), 7))
				return c.Delete()
			})
		}, "inline body of object 7"},
		{"inline body without record", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketInline).Put(idKey(new([8]byte), 1<<40), []byte("x")) })
		}, "inline bodies"},
		{"file entry missing", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketFiles).Cursor()
				c.First()
				return c.Delete()
			})
		}, `meta record "/big": file entry`},
		{"file entry without record", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketFiles).Put(idKey(new([8]byte), 1<<40), []byte("/x")) })
		}, "file entries"},
		{"id beyond sequence", func(t *testing.T, path string) {
			makeStoreFile(t, path)
			boltEdit(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).SetSequence(3) })
		}, "beyond the id sequence"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cache.db")
			tt.damage(t, path)
			before := fileHash(t, path)
			s, err := Open(path, Options{MaxBytes: 64 << 20, Logger: quietLog})
			if err == nil {
				s.Close()
				t.Fatal("Open of a damaged file succeeded")
			}
			t.Logf("Open: %v", err)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v; want ErrCorrupt naming the file and %q", err, tt.want)
			}
			if fileHash(t, path) != before {
				t.Fatal("Open changed the damaged file")
			}
		})
	}
}

func TestCorruptRecordAtRunTime(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 0)
	put(t, s, "/x", []byte("hello"), 0)
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("/x"), []byte{1, 2, 3}) })
	if _, err := s.Get("/x"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get = %v, want ErrCorrupt", err)
	}
	if err := s.UpdateMeta("/x", func(*Meta) {}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("UpdateMeta = %v, want ErrCorrupt", err)
	}
}

func TestCheckFileValid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	makeStoreFile(t, path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if err := checkFile(f, fi.Size()); err != nil {
		t.Fatalf("checkFile of a good file: %v", err)
	}
	// bbolt's own check agrees that the file is sound.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
}

// FuzzCheckFile feeds damaged versions of a real store file to the walker:
// bytes overwritten at an offset, and the file cut short. It must return
// (an error or nil), never panic, loop or allocate without bound, and must
// accept the undamaged file.
func FuzzCheckFile(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.db")
	s, err := Open(path, Options{MaxBytes: 1 << 20, Logger: quietLog})
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		put(f, s, fmt.Sprintf("/k%02d", i), body(fmt.Sprint(i), 700), 0)
	}
	s.Close()
	base, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	ps := uint32(os.Getpagesize())
	f.Add(uint32(0), []byte{}, uint32(0))
	f.Add(2*ps+8, []byte{0x55}, uint32(0))
	f.Add(3*ps+16, []byte{0xff, 0xff, 0, 0, 1, 0, 0, 0}, uint32(0))
	f.Add(uint32(0), []byte{}, uint32(len(base)/3))
	f.Fuzz(func(t *testing.T, off uint32, patch []byte, cut uint32) {
		b := bytes.Clone(base)
		if len(patch) > 0 {
			o := int(off) % len(b)
			copy(b[o:], patch)
		}
		if cut > 0 {
			b = b[:int(cut)%len(b)]
		}
		err := checkFile(bytes.NewReader(b), int64(len(b)))
		if err != nil && bytes.Equal(b, base) {
			t.Fatalf("the undamaged file fails: %v", err)
		}
	})
}

func TestCheckFileSyncedFreelist(t *testing.T) {
	// A file written with bbolt's default options has a freelist page.
	path := filepath.Join(t.TempDir(), "plain.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists([]byte("x"))
			for i := 0; i < 500; i++ {
				b.Put([]byte(fmt.Sprintf("k%04d", i)), bytes.Repeat([]byte{byte(round)}, 300))
			}
			return nil
		})
	}
	db.Close()
	b, _ := os.ReadFile(path)
	m, err := readBoltMeta(bytes.NewReader(b), int64(len(b)))
	if err != nil || m.freelist == pgidNoFreelist {
		t.Fatalf("meta %+v, %v: no freelist page", m, err)
	}
	if err := checkFile(bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatalf("checkFile: %v", err)
	}
	off := int64(m.freelist) * int64(m.pageSize)
	b[off+8] = 0x02 // now claims to be a leaf page
	if err := checkFile(bytes.NewReader(b), int64(len(b))); err == nil || !strings.Contains(err.Error(), "freelist") {
		t.Fatalf("checkFile of a bad freelist page: %v", err)
	}
}

package objstore

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestPin: a pinned body reads the version it pinned after the object is
// replaced and after it is deleted, for file and inline bodies alike; the
// unpinned Object no longer can. After Close it reads nothing.
func TestPin(t *testing.T) {
	s := openTest(t, "", Options{MaxBytes: 1 << 20}, 1024)
	for _, tc := range []struct {
		name string
		n    int
	}{{"file", 100 << 10}, {"inline", 500}} {
		t.Run(tc.name, func(t *testing.T) {
			old := body("old-"+tc.name, tc.n)
			put(t, s, "/k", old, 4096)
			obj, err := s.Get("/k")
			if err != nil {
				t.Fatal(err)
			}
			p, err := obj.Pin()
			if err != nil {
				t.Fatal(err)
			}
			put(t, s, "/k", body("new-"+tc.name, tc.n), 4096)
			if err := s.Delete("/k"); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(io.NewSectionReader(p, 0, p.Size()))
			if err != nil || !bytes.Equal(got, old) {
				t.Fatalf("pinned read after replace and delete: %d bytes, %v", len(got), err)
			}
			b := make([]byte, 10)
			if n, err := p.ReadAt(b, p.Size()-5); n != 5 || err != io.EOF {
				t.Errorf("read across the end: %d %v", n, err)
			}
			if tc.name == "file" {
				if _, err := obj.ReadAt(b, 0); !errors.Is(err, ErrNotFound) {
					t.Errorf("unpinned read of a deleted object: %v", err)
				}
				p.Close()
				if _, err := p.ReadAt(b, 0); err == nil {
					t.Error("read after Close")
				}
			}
			p.Close()
		})
	}
	// Gone before Pin: ErrNotFound.
	put(t, s, "/gone", body("g", 10<<10), 0)
	obj, _ := s.Get("/gone")
	s.Delete("/gone")
	if _, err := obj.Pin(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Pin of a deleted object: %v", err)
	}
}

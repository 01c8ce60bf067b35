package objstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every entry is charged its metadata: zero-byte objects cannot grow the
// store (bbolt file, RAM at Open) without bound.
func TestZeroByteObjectsAreBounded(t *testing.T) {
	const max = 64 << 10
	s := openTest(t, "", Options{MaxBytes: max}, 0)
	for i := range 1500 {
		w, err := s.Create(fmt.Sprintf("/empty/%04d", i), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(Meta{Status: 200, Header: map[string][]string{"Content-Type": {"text/plain"}}}); err != nil {
			t.Fatalf("Commit %d: %v", i, err)
		}
	}
	st := s.Stats()
	// Each costs at least entryOverhead: at most max/entryOverhead fit.
	if st.Objects == 0 || st.Objects > max/entryOverhead || st.Bytes+st.MetaBytes > max {
		t.Fatalf("1500 zero-byte objects in a %d-byte cache: %+v", max, st)
	}
	t.Logf("kept %d of 1500 zero-byte objects (%d metadata bytes)", st.Objects, st.MetaBytes)
	if _, err := s.Get("/empty/1499"); err != nil {
		t.Fatalf("the newest object was evicted: %v", err)
	}
	mustNotFound(t, s, "/empty/0000")
	checkInvariants(t, s)
	// The charge survives a reopen.
	path := s.path
	s.Close()
	s = openTest(t, path, Options{MaxBytes: max}, 0)
	if st2 := s.Stats(); st2.Objects != st.Objects || st2.MetaBytes != st.MetaBytes {
		t.Fatalf("after reopen %+v, before %+v", st2, st)
	}
	checkInvariants(t, s)
}

// smallFS mounts a tmpfs of size bytes in a temp dir (root only; skipped
// without root unless CI=true) and unmounts it when the test ends.
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("this test mounts a tmpfs and needs root in CI")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// A file system smaller than MaxBytes: a fill that meets ENOSPC evicts and
// retries; one that cannot fit fails with ErrNoSpace, leaves nothing behind,
// and marks the store full until a fill commits again.
func TestNoSpaceEvictsThenFails(t *testing.T) {
	dir := smallFS(t, "1m")
	s := openTest(t, filepath.Join(dir, "cache.db"), Options{MaxBytes: 64 << 20}, 1024)
	for i := range 4 {
		put(t, s, fmt.Sprint("/old", i), body(fmt.Sprint("old", i), 200<<10), 16<<10)
	}
	// 400 KiB does not fit beside 800 KiB on a 1 MiB file system: the
	// store evicts the oldest and the fill completes.
	put(t, s, "/new", body("new", 400<<10), 16<<10)
	if got := readAll(t, s, "/new"); string(got) != string(body("new", 400<<10)) {
		t.Fatal("wrong body after the retry")
	}
	mustNotFound(t, s, "/old0")
	if !s.FullSince().IsZero() {
		t.Fatal("store marked full although the fill committed")
	}
	checkInvariants(t, s)

	// 2 MiB never fits: ErrNoSpace, for the writer and its followers.
	w, err := s.Create("/huge", -1)
	if err != nil {
		t.Fatal(err)
	}
	r := w.NewReader()
	defer r.Close()
	data := body("huge", 2<<20)
	var werr error
	for off := 0; off < len(data) && werr == nil; off += 64 << 10 {
		_, werr = w.Write(data[off : off+64<<10])
	}
	if !errors.Is(werr, ErrNoSpace) {
		t.Fatalf("Write = %v, want ErrNoSpace", werr)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("follower got %v, want ErrNoSpace", err)
	}
	w.Abort()
	mustNotFound(t, s, "/huge")
	st := s.Stats()
	if st.FullSince.IsZero() || st.NoSpaceErrors != 1 {
		t.Fatalf("Stats after ENOSPC: %+v", st)
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), partSuffix) {
			t.Fatalf("partial body %s left behind", e.Name())
		}
	}
	checkInvariants(t, s)

	// A fill that commits clears the condition.
	put(t, s, "/small", body("small", 50<<10), 0)
	if !s.FullSince().IsZero() {
		t.Fatal("still marked full after a commit")
	}
	checkInvariants(t, s)
}

package registry

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// peek reads one raw record, bypassing the registry.
func peek(t *testing.T, path string, k string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	db.View(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketNodes).Get([]byte(k))...)
		return nil
	})
	return v
}

// rawGet reads one raw record of the open r.
func rawGet(r *Registry, k string) []byte {
	var v []byte
	r.db.View(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketNodes).Get([]byte(k))...)
		return nil
	})
	return v
}

// damagedFile makes a registry of good nodes 1..5 and two damaged records:
// bad JSON under key(20), and node 1's record copied under key(21).
func damagedFile(t *testing.T) (path string, good []string, bad map[string][]byte) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "registry.db")
	r := open(t, path)
	for i := 1; i <= 5; i++ {
		n := beaconNode(key(byte(i)))
		n.Owner = key(100)
		if _, err := r.Upsert(n, false); err != nil {
			t.Fatal(err)
		}
		good = append(good, n.ID)
	}
	r.Close()
	bad = map[string][]byte{
		key(20): []byte(`{"id":"` + key(20) + `","role":"beacon","lan_url":"http://h",` + "\x00\xff"),
		key(21): peek(t, path, key(1)),
	}
	for k, v := range bad {
		poke(t, path, bucketNodes, []byte(k), v)
	}
	return path, good, bad
}

// TestDamagedRecordsSkipped: damaged records no longer stop the loading
// of the registry (castd used to refuse to start on one): they are
// skipped, reported once each, counted, and left as they are.
func TestDamagedRecordsSkipped(t *testing.T) {
	path, good, bad := damagedFile(t)
	var logs logBuf
	r, err := Open(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for round := 0; round < 3; round++ {
		var seen []string
		if err := r.ForEach(func(n Node) error { seen = append(seen, n.ID); return nil }); err != nil {
			t.Fatalf("ForEach: %v", err)
		}
		if fmt.Sprint(seen) != fmt.Sprint(sortedCopy(good)) {
			t.Fatalf("ForEach saw %q, want the good nodes %q", seen, sortedCopy(good))
		}
	}
	if r.Damaged() != 2 {
		t.Errorf("Damaged = %d, want 2", r.Damaged())
	}
	out := logs.String()
	for k := range bad {
		if n := strings.Count(out, "key="+k); n != 1 {
			t.Errorf("damaged record %s logged %d times over three loads, want once:\n%s", k, n, out)
		}
	}
	if n := strings.Count(out, "level=ERROR"); n != 2 {
		t.Errorf("%d error lines, want 2:\n%s", n, out)
	}
	for k := range bad {
		if _, err := r.Get(k); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Get(%s) = %v, want ErrCorrupt", k, err)
		}
	}
	r.Close()
	for k, v := range bad {
		if got := peek(t, path, k); !bytes.Equal(got, v) {
			t.Errorf("record %s changed in the file", k)
		}
	}
}

// TestDamagedRecordRegistration: a registration over a damaged record is
// refused unless the owner's verified delegation comes with it, because
// the record may hold an owner binding that only the owner may replace.
func TestDamagedRecordRegistration(t *testing.T) {
	path, _, bad := damagedFile(t)
	r := open(t, path)
	defer r.Close()
	id := key(20)
	n := beaconNode(id)
	if _, err := r.Upsert(n, false); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "owner") {
		t.Fatalf("unverified registration over a damaged record = %v, want ErrCorrupt explaining why", err)
	}
	n.Owner = key(101)
	if _, err := r.Upsert(n, false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("registration naming an unverified owner = %v, want ErrCorrupt", err)
	}
	if got := rawGet(r, id); !bytes.Equal(got, bad[id]) {
		t.Fatal("a refused registration changed the damaged record")
	}
	if r.Damaged() != 1 {
		t.Errorf("Damaged = %d after the refusal, want 1", r.Damaged())
	}
	before := r.Len()
	stored, err := r.Upsert(n, true)
	if err != nil {
		t.Fatalf("registration with a verified delegation = %v", err)
	}
	if stored.Owner != n.Owner || stored.FirstSeen != stored.LastSeen {
		t.Errorf("stored %+v", stored)
	}
	if r.Len() != before || r.Damaged() != 0 {
		t.Errorf("Len %d (want %d), Damaged %d (want 0)", r.Len(), before, r.Damaged())
	}
	if got, err := r.Get(id); err != nil || got.Owner != n.Owner {
		t.Errorf("Get after the repair = %+v, %v", got, err)
	}
	// Delete is the operator's way out for the other one.
	r.ForEach(func(Node) error { return nil })
	if r.Damaged() != 1 {
		t.Fatalf("Damaged = %d, want 1", r.Damaged())
	}
	if err := r.Delete(key(21)); err != nil {
		t.Fatal(err)
	}
	if r.Damaged() != 0 {
		t.Errorf("Damaged = %d after Delete, want 0", r.Damaged())
	}
}

// TestDamagedRecordsLogBounded: a file full of damaged records does not
// flood the log.
func TestDamagedRecordsLogBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	open(t, path).Close()
	const n = 60
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < n; i++ {
			tx.Bucket(bucketNodes).Put([]byte(key(byte(i))+strings.Repeat("k", 500)), []byte("{"))
		}
		return nil
	})
	db.Close()
	var logs logBuf
	r, err := Open(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.ForEach(func(Node) error { t.Fatal("a damaged record reached fn"); return nil }); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if r.Damaged() != n || strings.Count(out, "level=ERROR") != maxDamagedListed+1 ||
		!strings.Contains(out, fmt.Sprintf("count=%d", n-maxDamagedListed)) {
		t.Errorf("Damaged %d; log:\n%s", r.Damaged(), out)
	}
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 1000 {
			t.Errorf("log line of %d bytes: keys are not clipped", len(line))
		}
	}
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// TestDamagedRecordsInBatches: one damaged record among the IDs of a
// MarkOnline or ExpireUnseen batch does not fail the others; it is left
// as it is.
func TestDamagedRecordsInBatches(t *testing.T) {
	path, good, bad := damagedFile(t)
	r := open(t, path)
	defer r.Close()
	ids := []string{key(20), good[0], key(21)}
	if n, err := r.MarkOnline(t0, ids...); err != nil || n != 1 {
		t.Fatalf("MarkOnline = %d, %v; want 1 marked", n, err)
	}
	gone, err := r.ExpireUnseen(t0.Add(time.Hour), key(20), good[1], key(21))
	if err != nil || len(gone) != 1 || gone[0] != good[1] {
		t.Fatalf("ExpireUnseen = %v, %v; want only %s", gone, err, good[1])
	}
	for k, v := range bad {
		if got := rawGet(r, k); !bytes.Equal(got, v) {
			t.Errorf("record %s changed", k)
		}
	}
	if r.Damaged() != 2 {
		t.Errorf("Damaged = %d, want 2", r.Damaged())
	}
}

package registry

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestMarkOnlineOnceAndKeptByUpsert(t *testing.T) {
	r, _ := tempRegistry(t)
	id, other := key(1), key(2)
	for _, n := range []string{id, other} {
		if _, err := r.Upsert(beaconNode(n), false); err != nil {
			t.Fatal(err)
		}
	}
	at := t0.Add(time.Minute)
	// Unknown IDs are skipped.
	if n, err := r.MarkOnline(at, id, key(9)); err != nil || n != 1 {
		t.Fatalf("first MarkOnline: %d %v, want 1", n, err)
	}
	if n, err := r.MarkOnline(at.Add(time.Hour), id, other); err != nil || n != 1 {
		t.Fatalf("second MarkOnline: %d %v, want 1 (only the other)", n, err)
	}
	if n, _ := r.Get(id); !n.SeenOnline.Equal(at) {
		t.Fatalf("SeenOnline %v rewritten, want %v", n.SeenOnline, at)
	}
	// A later registration keeps it.
	again := beaconNode(id)
	again.LastSeen = t0.Add(2 * time.Hour)
	stored, err := r.Upsert(again, false)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.SeenOnline.Equal(at) {
		t.Fatalf("SeenOnline after re-registration %v, want %v", stored.SeenOnline, at)
	}
	if n, _ := r.Get(id); !n.SeenOnline.Equal(at) {
		t.Fatalf("stored SeenOnline %v, want %v", n.SeenOnline, at)
	}
}

func TestExpireUnseen(t *testing.T) {
	r, _ := tempRegistry(t)
	unseen, seen, recent := key(1), key(2), key(3)
	for _, id := range []string{unseen, seen} {
		if _, err := r.Upsert(beaconNode(id), false); err != nil {
			t.Fatal(err)
		}
	}
	late := beaconNode(recent)
	late.LastSeen = t0.Add(time.Hour)
	if _, err := r.Upsert(late, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.MarkOnline(t0, seen); err != nil {
		t.Fatal(err)
	}
	gone, err := r.ExpireUnseen(t0.Add(time.Minute), unseen, seen, recent, key(9))
	if err != nil {
		t.Fatal(err)
	}
	if len(gone) != 1 || gone[0] != unseen {
		t.Fatalf("expired %v, want only the never-online node registered before the cut-off", gone)
	}
	if _, err := r.Get(unseen); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired node still stored: %v", err)
	}
	for _, id := range []string{seen, recent} {
		if _, err := r.Get(id); err != nil {
			t.Errorf("kept node %s: %v", id, err)
		}
	}
	if gone, err := r.ExpireUnseen(t0.Add(time.Minute), unseen); err != nil || len(gone) != 0 {
		t.Errorf("expiring twice: %v %v", gone, err)
	}
	// The count is kept in the file too.
	if r.Len() != 2 {
		t.Errorf("Len %d, want 2", r.Len())
	}
}

func TestTrackedSinceIsDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r := open(t, path)
	r.now = func() time.Time { return t0 }
	first, err := r.TrackedSince()
	if err != nil || !first.Equal(t0) {
		t.Fatalf("TrackedSince %v %v, want %v", first, err, t0)
	}
	r.Close()
	r = open(t, path)
	defer r.Close()
	r.now = func() time.Time { return t0.Add(24 * time.Hour) }
	if again, err := r.TrackedSince(); err != nil || !again.Equal(t0) {
		t.Fatalf("after reopening: %v %v, want %v", again, err, t0)
	}
}

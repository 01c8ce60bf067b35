package registry

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestMarkOnlineOnceAndKeptByUpsert(t *testing.T) {
	r, _ := tempRegistry(t)
	id := key(1)
	if _, err := r.Upsert(beaconNode(id), false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.MarkOnline(key(9), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkOnline of an unknown node: %v, want ErrNotFound", err)
	}
	at := t0.Add(time.Minute)
	if changed, err := r.MarkOnline(id, at); err != nil || !changed {
		t.Fatalf("first MarkOnline: %v %v", changed, err)
	}
	if changed, err := r.MarkOnline(id, at.Add(time.Hour)); err != nil || changed {
		t.Fatalf("second MarkOnline wrote again: %v %v", changed, err)
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
	if _, err := r.MarkOnline(seen, t0); err != nil {
		t.Fatal(err)
	}
	cutoff := t0.Add(time.Minute)
	if err := r.ExpireUnseen(seen, cutoff); !errors.Is(err, ErrNotExpired) {
		t.Errorf("a node seen online: %v, want ErrNotExpired", err)
	}
	if err := r.ExpireUnseen(recent, cutoff); !errors.Is(err, ErrNotExpired) {
		t.Errorf("a node registered after the cut-off: %v, want ErrNotExpired", err)
	}
	if err := r.ExpireUnseen(unseen, cutoff); err != nil {
		t.Fatalf("a never-online node: %v", err)
	}
	if _, err := r.Get(unseen); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired node still stored: %v", err)
	}
	if err := r.ExpireUnseen(unseen, cutoff); !errors.Is(err, ErrNotFound) {
		t.Errorf("expiring twice: %v, want ErrNotFound", err)
	}
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

package netns

import (
	"errors"
	"os"
	"testing"
)

// Segment is a test's two hosts on one link: castd's namespace and a
// beacon's, joined by a veth pair seg0 (10.77.0.1/24, castd) – seg1
// (10.77.0.2/24, beacon). It skips the test where namespaces are
// unavailable (fails it when CI=true) and removes everything at cleanup.
func Segment(t testing.TB, prefix string) (castd, beacon *NS) {
	t.Helper()
	Require(t)
	lab := NewTestLab(t, prefix)
	var err error
	if castd, err = lab.Add("castd"); err != nil {
		t.Fatal(err)
	}
	if beacon, err = lab.Add("beacon"); err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(castd, "seg0", beacon, "seg1"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(castd.Addr("seg0", "10.77.0.1/24"), beacon.Addr("seg1", "10.77.0.2/24")); err != nil {
		t.Fatal(err)
	}
	return castd, beacon
}

// NewTestLab is NewLab for a test: a failure ends the test, and the lab is
// closed at its cleanup (registered before anything is made, so a test
// that fails half-way leaves no namespace behind). It does not skip: the
// caller decides that, as Segment does.
func NewTestLab(t testing.TB, prefix string) *Lab {
	t.Helper()
	lab, err := NewLab(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("removing namespaces: %v", err)
		}
	})
	return lab
}

// Require skips the test where namespaces are unavailable (not root, no
// ip(8)), or fails it when CI=true, where they must be.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

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
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	lab, err := NewLab(prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
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

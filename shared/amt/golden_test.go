package amt

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/blockcast/beacon/shared/goldenhex"
)

// TestGolden compares every fixture's encoding with testdata/<name>.hex and
// decodes the golden bytes back to the fixture. Regenerate with
// `go test -run TestGolden -update` and review the diff: the hand-written
// vectors in handcheck_test.go keep the goldens honest.
func TestGolden(t *testing.T) {
	for _, fx := range fixtures(t) {
		t.Run(fx.name, func(t *testing.T) {
			got, err := fx.msg.AppendTo(nil)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", fx.name+".hex")
			if *goldenhex.Update {
				if err := os.WriteFile(path, goldenhex.Format(fx.msg.Type().String()+", "+fx.name, got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			want, err := goldenhex.Parse(raw)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("encoding differs from %s:\ngot\n%swant\n%s", path, hex.Dump(got), hex.Dump(want))
			}
			m, err := Options{Strict: true}.Parse(want)
			if err != nil {
				t.Fatalf("parse golden: %v", err)
			}
			if !reflect.DeepEqual(m, fx.msg) {
				t.Errorf("parse golden = %+v, want %+v", m, fx.msg)
			}
		})
	}
}

package amt

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

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
			if *update {
				if err := os.WriteFile(path, formatHex(fx.msg.Type().String()+", "+fx.name, got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			want, err := parseHex(raw)
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

// formatHex writes a golden file: a comment line, then 16 bytes a line.
func formatHex(title string, b []byte) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s (%d bytes)\n", title, len(b))
	for len(b) > 0 {
		n := min(16, len(b))
		for i, c := range b[:n] {
			if i > 0 {
				sb.WriteByte(' ')
			}
			fmt.Fprintf(&sb, "%02x", c)
		}
		sb.WriteByte('\n')
		b = b[n:]
	}
	return []byte(sb.String())
}

// parseHex reads hex digits, ignoring whitespace and # comments.
func parseHex(raw []byte) ([]byte, error) {
	var digits strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}

// Package goldenhex keeps wire-format test vectors as hex files in testdata/:
// a comment line naming the vector, then 16 bytes a line, so a reviewer can
// read a diff of them. Tests of every package that encodes packets use it;
// nothing outside tests imports it.
package goldenhex

import (
	"encoding/hex"
	"flag"
	"fmt"
	"strings"
)

// Update makes tests rewrite their golden files: go test -run TestGolden -update.
var Update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Format renders b as a golden file titled title.
func Format(title string, b []byte) []byte {
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

// Parse reads hex digits, ignoring whitespace and # comments.
func Parse(raw []byte) ([]byte, error) {
	var digits strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}

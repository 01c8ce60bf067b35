package httpcache

import (
	"strings"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/1000", 100, 1000, true},
		{"bytes */1000", -1, 1000, true},
		{"bytes 0-0/1", 0, 1, true},
		{"bytes -5-10/100", 0, 0, false},
		{"bytes 1-2/-3", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"bytes 1-2", 0, 0, false},
		{"bytes x-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		start, total, ok := parseContentRange(tc.in)
		if ok != tc.ok || ok && (start != tc.start || total != tc.total) {
			t.Errorf("%q: %d %d %v, want %d %d %v", tc.in, start, total, ok, tc.start, tc.total, tc.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 100-199/1000", "bytes */1000", "bytes 0-0/1", "bytes 1-2", "", "bytes 99999999999999999999-1/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if total < 0 || start < -1 || !strings.HasPrefix(s, "bytes ") {
			t.Fatalf("%q: start %d total %d", s, start, total)
		}
	})
}

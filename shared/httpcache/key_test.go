package httpcache

import (
	"errors"
	"testing"

	"github.com/blockcast/beacon/shared/protocol"
)

func TestCleanKey(t *testing.T) {
	tests := []struct {
		key   string
		plain bool // takes the fast path
		ok    bool
	}{
		{"/", true, true},
		{"/a/b.ts", true, true},
		{"/a/b/", true, true},
		{"/v/seg-001_x~1.ts?q=1&r=2", true, true},
		{"/a?x=/../", true, true}, // the query is not a path
		{"/a?b?c", true, true},
		{"/.well-known/x", true, true},
		{"/a..b/c.", true, true},
		{"/A/B", true, true},
		{"//a", false, false},
		{"/a//b", false, false},
		{"/./a", false, false},
		{"/a/..", false, false},
		{"/a/.?x", false, false},
		{"/..?x", false, false},
		{"/a/%2e%2e/b", false, false},
		{"/a%20b", false, true},
		{"/a b", false, true},
		{"/a=b", false, true},
		{"/a\\b", false, false},
		{"/a\x00", false, false},
		{"a/b", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		if got := plainKey(tt.key); got != tt.plain {
			t.Errorf("plainKey(%q) = %v, want %v", tt.key, got, tt.plain)
		}
		got, err := cleanKey(tt.key)
		if (err == nil) != tt.ok || err == nil && got != tt.key || err != nil && !errors.Is(err, protocol.ErrBadPath) {
			t.Errorf("cleanKey(%q) = %q, %v; want ok %v", tt.key, got, err, tt.ok)
		}
	}
}

// FuzzCleanKey: the fast path accepts only keys CleanContentPath accepts
// unchanged.
func FuzzCleanKey(f *testing.F) {
	for _, s := range []string{"/a/b.ts?x=1", "/a/../b", "/./", "/a//b", "/..?", "/%2e/", "/a?b/../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if !plainKey(key) {
			return
		}
		if got, err := protocol.CleanContentPath(key); err != nil || got != key {
			t.Fatalf("plainKey(%q) but CleanContentPath = %q, %v", key, got, err)
		}
	})
}

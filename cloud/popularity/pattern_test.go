package popularity

import (
	"errors"
	"strings"
	"testing"
)

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pat  string
		key  string
		want bool
	}{
		{"/live/*", "/live/a", true},
		{"/live/*", "/live/ch1/seg9.ts", true},
		{"/live/*", "/live/ch1/seg9.ts?token=1", true},
		{"/live/*", "/live", false},
		{"/live/*", "/live/", false},
		{"/live/*", "/lively/a", false},
		{"/live/*", "/LIVE/a", false},
		{"/live/*", "/vod/live/a", false},
		{"/live/*.m3u8", "/live/a.m3u8", true},
		{"/live/*.m3u8", "/live/.m3u8", true},
		{"/live/*.m3u8", "/live/a/b.m3u8", false},
		{"/live/*.m3u8", "/live/a.m3u8x", false},
		{"/live/*/index.m3u8", "/live/ch1/index.m3u8", true},
		{"/live/*/index.m3u8", "/live/ch1/x/index.m3u8", false},
		{"/fw/beacon-*-mipsle.ipk", "/fw/beacon-1.2.3-mipsle.ipk", true},
		{"/fw/beacon-*-mipsle.ipk", "/fw/beacon-1.2.3-arm64.ipk", false},
		{"/a*b*c", "/abc", true},
		{"/a*b*c", "/axxbyyc", true},
		{"/a*b*c", "/axxbyy", false},
		{"/updates/latest.bin", "/updates/latest.bin", true},
		{"/updates/latest.bin", "/updates/latest.bin/x", false},
		{"/*", "/anything/at/all", true},
		{"/*", "/", false},
		// The query is not the path.
		{"/live/*", "/vod/x?/live/a", false},
		// Keys castd would refuse never match: no escaping the prefix.
		{"/live/*", "/live/../private", false},
		{"/live/*", "/live/%2e%2E/private", false},
		{"/live/*", "/live/%2fprivate", false},
		{"/live/*", "/live//x", false},
		{"/live/*", "/live/a\\b", false},
		{"/live/*", "live/a", false},
		{"/live/*", "", false},
	} {
		p, err := ParsePattern(tc.pat)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pat, err)
		}
		if got := p.Match(tc.key); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pat, tc.key, got, tc.want)
		}
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, tc := range []struct{ pat, want string }{
		{"", "must start with /"},
		{"live/*", "must start with /"},
		{"/live/**", "reserved"},
		{"/live//x", "empty segment"},
		{"/live/", "empty segment"},
		{"/", "empty segment"},
		{"/live/../x", "dot segment"},
		{"/live/./x", "dot segment"},
		{"/live/?", "not allowed"},
		{"/live/%2f", "not allowed"},
		{"/live/[ab]", "not allowed"},
		{"/live/a b", "not allowed"},
		{"/live/a\\b", "not allowed"},
		{"/" + strings.Repeat("a", maxPatternLen), "longer than"},
	} {
		_, err := ParsePattern(tc.pat)
		if err == nil || !errors.Is(err, ErrBadPattern) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePattern(%q) = %v, want ErrBadPattern with %q", tc.pat, err, tc.want)
		}
	}
}

// The matcher is linear-ish in the worst case: a many-star pattern against
// a long segment that does not match finishes at once (no exponential
// backtracking).
func TestGlobWorstCase(t *testing.T) {
	pat := "/" + strings.Repeat("a*", 400) + "b"
	p, err := ParsePattern(pat)
	if err != nil {
		t.Fatal(err)
	}
	if p.Match("/" + strings.Repeat("a", 3000)) {
		t.Fatal("matched without the b")
	}
}

func FuzzPattern(f *testing.F) {
	f.Add("/live/*", "/live/a/b")
	f.Add("/a*b*c", "/axbxc?q")
	f.Add("/x/*/y.ts", "/x/%2e%2e/y.ts")
	f.Fuzz(func(t *testing.T, pat, key string) {
		p, err := ParsePattern(pat)
		if err != nil {
			return
		}
		if p.Match(key) {
			// What matches is a clean path under the pattern's literal
			// prefix (the bytes before the first star).
			lit := pat
			if i := strings.IndexByte(pat, '*'); i >= 0 {
				lit = pat[:i]
			}
			if !strings.HasPrefix(key, lit) {
				t.Fatalf("%q matched %q outside its prefix %q", pat, key, lit)
			}
			path, _, _ := strings.Cut(key, "?")
			if strings.Contains(path, "/../") || strings.Contains(path, "//") || strings.HasSuffix(path, "/..") {
				t.Fatalf("%q matched unclean %q", pat, key)
			}
		}
	})
}

package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestCleanContentPath(t *testing.T) {
	ok := []string{"/", "/a/b.mp4", "/a/b?x=1&y=%2F", "/a%20b", "/v/.hidden", "/a/..b", "/x?y=../z"}
	bad := []string{"", "a/b", "/a/../b", "/a/./b", "/..", "/a/%2e%2e/b", "/a/%2E./b", "/a\\b", "/a%5cb", "/a%00b",
		"/a%2fb", "/a//b", "/a\x00b", "/a\nb", "/a\x7fb", "/" + strings.Repeat("a", MaxPathLen)}
	for _, p := range ok {
		if got, err := CleanContentPath(p); err != nil || got != p {
			t.Errorf("%q: %q %v", p, got, err)
		}
	}
	for _, p := range bad {
		if _, err := CleanContentPath(p); !errors.Is(err, ErrBadPath) {
			t.Errorf("%q accepted (%v)", p, err)
		}
	}
}

func TestParseBaseURL(t *testing.T) {
	ok := []string{"http://192.168.1.1:8081", "https://cdn.example/sub/", "http://[2001:db8::1]:80"}
	bad := []string{"", "ftp://x", "http://", "http:///x", "//host", "http://u:p@host", "http://h/?q", "http://h/#f",
		"http://h/a b", "http://h/é", "mailto:x@y", "http://h?"}
	for _, s := range ok {
		if _, err := ParseBaseURL(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range bad {
		if _, err := ParseBaseURL(s); !errors.Is(err, ErrBadBaseURL) {
			t.Errorf("%q accepted (%v)", s, err)
		}
	}
}

func FuzzCleanContentPath(f *testing.F) {
	for _, s := range []string{"/a/b", "/a/../b", "/%2e%2e", "/a?b=c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := CleanContentPath(p)
		if err != nil {
			return
		}
		// Whatever is accepted is unchanged, absolute and free of dot segments.
		if got != p || got[0] != '/' || len(got) > MaxPathLen {
			t.Fatalf("%q → %q", p, got)
		}
		path, _, _ := strings.Cut(got, "?")
		for _, seg := range strings.Split(path, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("dot segment in %q", got)
			}
		}
	})
}

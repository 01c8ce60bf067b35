package popularity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/blockcast/beacon/shared/protocol"
)

// ErrBadPattern is wrapped by every error of ParsePattern.
var ErrBadPattern = errors.New("bad multicast path pattern")

// maxPatternLen bounds a pattern; matching costs at most the product of a
// segment's and a pattern segment's lengths.
const maxPatternLen = 1024

// Pattern is a compiled --multicast-path pattern. The grammar, kept small
// so that an operator can tell what a pattern matches:
//
//   - A pattern is an absolute path: "/" then segments separated by "/".
//     No empty segments ("//", a trailing "/"), no "." or ".." segments.
//   - A segment is literal bytes, compared exactly with the request's
//     escaped path segment, and may hold "*", which matches any run of
//     bytes (possibly none) inside ONE segment: "/live/*.m3u8" matches
//     "/live/a.m3u8", not "/live/a/b.m3u8".
//   - A last segment that is exactly "*" matches one or more segments:
//     "/live/*" matches "/live/a" and "/live/ch1/seg9.ts", not "/live"
//     nor "/lively". "/*" matches every path.
//   - Allowed bytes: letters, digits and -._~!$&'()+,;=:@ and "*".
//     "**", "?", "%", "[", "]", "#", "\" and the rest are refused, so
//     that a later richer grammar cannot change what today's patterns mean.
//
// A request matches on its path (the key up to "?"); the query is
// ignored. Keys that protocol.CleanContentPath refuses (dot segments, also
// percent-encoded, encoded slashes, backslashes, empty segments) match no
// pattern, so "/live/%2e%2e/private" is never multicast by "/live/*".
type Pattern struct {
	src     string
	segs    []string // the segments before a trailing "*"
	subtree bool     // the pattern ended in "/*"
}

// ParsePattern compiles one pattern.
func ParsePattern(s string) (Pattern, error) {
	if s == "" || s[0] != '/' {
		return Pattern{}, fmt.Errorf("%w %q: must start with /", ErrBadPattern, s)
	}
	if len(s) > maxPatternLen {
		return Pattern{}, fmt.Errorf("%w: longer than %d bytes", ErrBadPattern, maxPatternLen)
	}
	for i := 0; i < len(s); i++ {
		if !patternByte(s[i]) {
			return Pattern{}, fmt.Errorf("%w %q: byte %q at %d is not allowed", ErrBadPattern, s, s[i], i)
		}
	}
	if strings.Contains(s, "**") {
		return Pattern{}, fmt.Errorf("%w %q: \"**\" is reserved; a trailing \"/*\" already matches every depth", ErrBadPattern, s)
	}
	segs := strings.Split(s[1:], "/")
	for _, seg := range segs {
		switch seg {
		case "":
			return Pattern{}, fmt.Errorf("%w %q: empty segment", ErrBadPattern, s)
		case ".", "..":
			return Pattern{}, fmt.Errorf("%w %q: dot segment", ErrBadPattern, s)
		}
	}
	p := Pattern{src: s, segs: segs}
	if segs[len(segs)-1] == "*" {
		p.segs, p.subtree = segs[:len(segs)-1], true
	}
	return p, nil
}

func patternByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("/-._~!$&'()+,;=:@*", c) >= 0
}

// String is the pattern as written.
func (p Pattern) String() string { return p.src }

// Match reports whether the content key (escaped path, optional "?query")
// is one the pattern names.
func (p Pattern) Match(key string) bool {
	if p.src == "" {
		return false
	}
	if _, err := protocol.CleanContentPath(key); err != nil {
		return false
	}
	return p.matchClean(key)
}

// matchClean is Match for a key CleanContentPath accepted.
func (p Pattern) matchClean(key string) bool {
	path, _, _ := strings.Cut(key, "?")
	if strings.HasSuffix(path, "/") {
		return false // an empty last segment; "/live/" is no object under /live
	}
	rest := path[1:]
	for _, ps := range p.segs {
		if rest == "" {
			return false
		}
		seg, tail, _ := strings.Cut(rest, "/")
		if !globSegment(ps, seg) {
			return false
		}
		rest = tail
	}
	if p.subtree {
		return rest != ""
	}
	return rest == ""
}

// globSegment matches one segment against one pattern segment where "*"
// is any run of bytes. Iterative with one backtrack point: O(len(p)*len(s))
// at worst, no recursion.
func globSegment(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

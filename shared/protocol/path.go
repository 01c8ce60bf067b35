package protocol

import (
	"errors"
	"fmt"
	"strings"
)

// MaxPathLen bounds a content path plus query; longer requests are refused.
const MaxPathLen = 4096

// ErrBadPath is wrapped by every content-path validation error.
var ErrBadPath = errors.New("bad content path")

// CleanContentPath checks a content path (the escaped path with an optional
// "?query", as in URL.RequestURI) and returns it as the cache key. It refuses
// what could escape the content namespace or confuse a cache: relative paths,
// dot segments (also percent-encoded), backslashes, NUL and control bytes,
// and absurd lengths. It does not rewrite anything, so one object never has
// two keys by accident and the key is exactly what is forwarded upstream.
func CleanContentPath(p string) (string, error) {
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("%w: must start with /", ErrBadPath)
	}
	if len(p) > MaxPathLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadPath, MaxPathLen)
	}
	path := p
	if i := strings.IndexByte(p, '?'); i >= 0 {
		path = p[:i]
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control byte at %d", ErrBadPath, i)
		}
	}
	lower := strings.ToLower(path)
	if strings.Contains(path, "\\") || strings.Contains(lower, "%5c") {
		return "", fmt.Errorf("%w: backslash", ErrBadPath)
	}
	if strings.Contains(lower, "%00") {
		return "", fmt.Errorf("%w: encoded NUL", ErrBadPath)
	}
	if strings.Contains(lower, "%2f") {
		return "", fmt.Errorf("%w: encoded slash", ErrBadPath)
	}
	for _, seg := range strings.Split(lower[1:], "/") {
		s := strings.ReplaceAll(seg, "%2e", ".")
		if s == "." || s == ".." {
			return "", fmt.Errorf("%w: dot segment", ErrBadPath)
		}
	}
	if strings.Contains(path, "//") {
		return "", fmt.Errorf("%w: empty segment", ErrBadPath)
	}
	return p, nil
}

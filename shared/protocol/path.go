package protocol

import (
	"errors"
	"fmt"
	"net/url"
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

// ErrBadBaseURL is wrapped by ParseBaseURL's errors.
var ErrBadBaseURL = errors.New("bad base URL")

// ParseBaseURL checks a URL that content paths are appended to (an origin,
// a beacon's LAN URL, castd's address): http or https, a host, and nothing
// that would change how an appended path is read (query, fragment) or leak
// into every redirect (user info), and no raw spaces or non-ASCII bytes.
func ParseBaseURL(s string) (*url.URL, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return nil, fmt.Errorf("%w %q: unescaped space, control or non-ASCII byte", ErrBadBaseURL, s)
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrBadBaseURL, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w %q: want an http or https URL", ErrBadBaseURL, u.Redacted())
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%w %q: want an absolute URL with a host", ErrBadBaseURL, u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("%w %q: must not contain user info", ErrBadBaseURL, u.Redacted())
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("%w %q: must not contain a query", ErrBadBaseURL, u.Redacted())
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, fmt.Errorf("%w %q: must not contain a fragment", ErrBadBaseURL, u.Redacted())
	}
	return u, nil
}

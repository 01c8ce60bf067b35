package httpcache

import "github.com/blockcast/beacon/shared/protocol"

// cleanKey is protocol.CleanContentPath with a fast path, taken on every
// request: a key made only of the bytes in plainByte, with no empty and
// no dot segment in its path, is one that CleanContentPath returns as it
// is (FuzzCleanKey checks that), and needs none of its allocations.
func cleanKey(p string) (string, error) {
	if plainKey(p) {
		return p, nil
	}
	return protocol.CleanContentPath(p)
}

// plainByte marks the bytes a plain key may hold: unreserved characters,
// "/", and in the query "=" and "&".
var plainByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~/=&" {
		t[c] = true
	}
	return t
}()

func plainKey(p string) bool {
	if len(p) == 0 || p[0] != '/' || len(p) > protocol.MaxPathLen {
		return false
	}
	seg := 1 // start of the current path segment
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '/':
			if i == seg || dotSegment(p[seg:i]) {
				return false
			}
			seg = i + 1
		case c == '?':
			if dotSegment(p[seg:i]) {
				return false
			}
			return plainQuery(p[i+1:])
		case c == '=' || c == '&' || !plainByte[c]:
			return false
		}
	}
	return !dotSegment(p[seg:])
}

func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if !plainByte[q[i]] && q[i] != '?' {
			return false
		}
	}
	return true
}

func dotSegment(s string) bool { return s == "." || s == ".." }

package httpcache

import (
	"math"
	"strings"
)

// maxDelta is where delta-seconds saturate (RFC 9111 §1.2.2): 2^31.
const maxDelta = 1 << 31

// ccFlag is one valueless (or value-ignored) Cache-Control directive.
type ccFlag uint16

const (
	ccNoStore ccFlag = 1 << iota
	ccNoCache
	ccPrivate
	ccPublic
	ccMustRevalidate
	ccProxyRevalidate
	ccImmutable
	ccOnlyIfCached
)

// cacheControl is a parsed Cache-Control field (request or response).
// Delta values are seconds; -1 means the directive is absent. An invalid
// value (max-age=abc, max-age=-1) counts as 0, so that a response with
// broken freshness information is treated as stale (RFC 9111 §4.2.1).
// The first occurrence of a repeated directive wins.
type cacheControl struct {
	flags        ccFlag
	maxAge       int64
	sMaxAge      int64
	staleIfError int64
	minFresh     int64
	maxStale     int64 // math.MaxInt64 for a bare max-stale
}

func (cc cacheControl) has(f ccFlag) bool { return cc.flags&f != 0 }

// parseCacheControl parses every line of a Cache-Control field. It never
// fails: unknown directives and junk are skipped, names are
// case-insensitive, and values may be quoted. It does not allocate.
func parseCacheControl(lines []string) cacheControl {
	cc := cacheControl{maxAge: -1, sMaxAge: -1, staleIfError: -1, minFresh: -1, maxStale: -1}
	for _, line := range lines {
		for line != "" {
			var item string
			item, line = nextItem(line)
			name, val, hasVal := splitDirective(item)
			cc.apply(name, val, hasVal)
		}
	}
	return cc
}

// nextItem returns the text before the next comma that is not inside a
// quoted string, and the rest after that comma.
func nextItem(s string) (item, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++ // quoted-pair: skip the escaped byte
		case c == '"':
			inQuote = !inQuote
		case c == ',' && !inQuote:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

// splitDirective splits `name[=value]`, trimming blanks and one level of
// quotes from the value.
func splitDirective(item string) (name, val string, hasVal bool) {
	item = trimOWS(item)
	if i := strings.IndexByte(item, '='); i >= 0 {
		name, val, hasVal = trimOWS(item[:i]), trimOWS(item[i+1:]), true
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
	} else {
		name = item
	}
	return name, val, hasVal
}

func (cc *cacheControl) apply(name, val string, hasVal bool) {
	set := func(dst *int64) {
		if *dst >= 0 {
			return // first occurrence wins
		}
		if !hasVal {
			*dst = 0
			return
		}
		*dst = parseDelta(val)
	}
	switch {
	case name == "":
	case strings.EqualFold(name, "max-age"):
		set(&cc.maxAge)
	case strings.EqualFold(name, "s-maxage"):
		set(&cc.sMaxAge)
	case strings.EqualFold(name, "stale-if-error"):
		set(&cc.staleIfError)
	case strings.EqualFold(name, "min-fresh"):
		set(&cc.minFresh)
	case strings.EqualFold(name, "max-stale"):
		if cc.maxStale < 0 {
			if hasVal {
				cc.maxStale = parseDelta(val)
			} else {
				cc.maxStale = math.MaxInt64
			}
		}
	case strings.EqualFold(name, "no-store"):
		cc.flags |= ccNoStore
	case strings.EqualFold(name, "no-cache"):
		// The qualified form (no-cache="Set-Cookie") is treated as the
		// unqualified one: revalidating more than needed is always safe.
		cc.flags |= ccNoCache
	case strings.EqualFold(name, "private"):
		cc.flags |= ccPrivate
	case strings.EqualFold(name, "public"):
		cc.flags |= ccPublic
	case strings.EqualFold(name, "must-revalidate"):
		cc.flags |= ccMustRevalidate
	case strings.EqualFold(name, "proxy-revalidate"):
		cc.flags |= ccProxyRevalidate
	case strings.EqualFold(name, "immutable"):
		cc.flags |= ccImmutable
	case strings.EqualFold(name, "only-if-cached"):
		cc.flags |= ccOnlyIfCached
	}
}

// parseDelta parses delta-seconds: digits only, saturating at 2^31; anything
// else is invalid and yields 0.
func parseDelta(s string) int64 {
	if s == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		if n < maxDelta {
			n = n*10 + int64(c-'0')
		}
	}
	if n > maxDelta {
		n = maxDelta
	}
	return n
}

func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

package httpcache

import (
	"math"
	"net/http"
	"strings"
)

// rangeResult is the outcome of evaluating a Range header.
type rangeResult int

const (
	rangeNone          rangeResult = iota // serve the whole body with 200
	rangeOK                               // serve one range with 206
	rangeUnsatisfiable                    // 416
)

// parseRange evaluates a Range field value against a body of size bytes
// (size >= 0). Only a single byte range is served: several ranges, other
// units and invalid syntax all give rangeNone, which means "ignore Range"
// (RFC 9110 §14.2 lets a server do that). On rangeOK, 0 <= start,
// length > 0 and start+length <= size.
func parseRange(v string, size int64) (start, length int64, res rangeResult) {
	const unit = "bytes="
	if len(v) < len(unit) || !strings.EqualFold(v[:len(unit)], unit) {
		return 0, 0, rangeNone
	}
	var spec string
	n := 0
	for rest := v[len(unit):]; rest != ""; {
		i := strings.IndexByte(rest, ',')
		item := rest
		if i >= 0 {
			item, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if item = trimOWS(item); item != "" { // list syntax allows empty elements
			spec = item
			n++
		}
	}
	if n != 1 {
		return 0, 0, rangeNone
	}
	dash := strings.IndexByte(spec, '-')
	if dash < 0 {
		return 0, 0, rangeNone
	}
	first, last := spec[:dash], spec[dash+1:]
	if first == "" { // suffix range: the last n bytes
		n, ok := parseDigits(last)
		if !ok {
			return 0, 0, rangeNone
		}
		if n == 0 || size == 0 {
			return 0, 0, rangeUnsatisfiable
		}
		n = min(n, size)
		return size - n, n, rangeOK
	}
	a, ok := parseDigits(first)
	if !ok {
		return 0, 0, rangeNone
	}
	b := int64(math.MaxInt64)
	if last != "" {
		if b, ok = parseDigits(last); !ok || b < a {
			return 0, 0, rangeNone
		}
	}
	if a >= size {
		return 0, 0, rangeUnsatisfiable
	}
	b = min(b, size-1)
	return a, b - a + 1, rangeOK
}

// parseDigits parses a non-empty run of ASCII digits, saturating at MaxInt64.
func parseDigits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
		} else {
			n = n*10 + d
		}
	}
	return n, true
}

// etagOpaque returns an entity-tag without its weakness prefix, and whether
// it was weak. ok is false if tag is not an entity-tag.
func etagOpaque(tag string) (opaque string, weak, ok bool) {
	if strings.HasPrefix(tag, "W/") {
		tag, weak = tag[2:], true
	}
	if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return "", false, false
	}
	return tag, weak, true
}

// noneMatch reports whether an If-None-Match field (all its lines) matches
// etag by the weak comparison; "*" matches any stored representation.
func noneMatch(lines []string, etag string) bool {
	stored, _, storedOK := etagOpaque(etag)
	for _, line := range lines {
		for line != "" {
			var item string
			item, line = nextItem(line)
			item = trimOWS(item)
			if item == "*" {
				return true
			}
			if o, _, ok := etagOpaque(item); ok && storedOK && o == stored {
				return true
			}
		}
	}
	return false
}

// ifRangeOK reports whether an If-Range value lets the Range apply: a strong
// entity-tag equal to a strong stored ETag, or a date exactly equal to the
// stored Last-Modified.
func ifRangeOK(v string, h http.Header) bool {
	v = trimOWS(v)
	if strings.HasPrefix(v, "W/") || strings.HasPrefix(v, `"`) {
		o, weak, ok := etagOpaque(v)
		if !ok || weak {
			return false
		}
		so, sweak, sok := etagOpaque(firstValue(h, "Etag"))
		return sok && !sweak && so == o
	}
	t, err := parseHTTPTime(v)
	if err != nil {
		return false
	}
	lm, ok := headerTime(h, "Last-Modified")
	return ok && lm.Equal(t)
}

func firstValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// notModified evaluates If-None-Match, or If-Modified-Since when there is no
// If-None-Match (RFC 9110 §13.2.2), against a stored response's header.
// If-Modified-Since compares with Last-Modified, else with Date (RFC 9111
// §4.3.2).
func notModified(r *http.Request, h http.Header) bool {
	if inm := r.Header["If-None-Match"]; len(inm) > 0 {
		return noneMatch(inm, firstValue(h, "Etag"))
	}
	ims := r.Header["If-Modified-Since"]
	if len(ims) == 0 {
		return false
	}
	since, err := parseHTTPTime(ims[0])
	if err != nil {
		return false
	}
	lm, ok := headerTime(h, "Last-Modified")
	if !ok {
		if lm, ok = headerTime(h, "Date"); !ok {
			return false
		}
	}
	return !lm.After(since)
}

// plan decides how to answer a GET/HEAD for a 200 representation with
// header h and body size (-1 when not known yet): 304, 206 with a range,
// 416, or 200 with the whole body.
func plan(r *http.Request, h http.Header, size int64) (status int, off, n int64) {
	if notModified(r, h) {
		return http.StatusNotModified, 0, 0
	}
	rv := r.Header["Range"]
	if len(rv) != 1 || size < 0 {
		return http.StatusOK, 0, size
	}
	if ir := r.Header["If-Range"]; len(ir) > 0 && !ifRangeOK(ir[0], h) {
		return http.StatusOK, 0, size
	}
	switch off, n, res := parseRange(rv[0], size); res {
	case rangeOK:
		return http.StatusPartialContent, off, n
	case rangeUnsatisfiable:
		return http.StatusRequestedRangeNotSatisfiable, 0, 0
	}
	return http.StatusOK, 0, size
}

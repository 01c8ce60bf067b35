package httpcache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		v             string
		size          int64
		start, length int64
		res           rangeResult
	}{
		{"bytes=0-0", 10, 0, 1, rangeOK},
		{"bytes=0-9", 10, 0, 10, rangeOK},
		{"bytes=2-5", 10, 2, 4, rangeOK},
		{"bytes=2-500", 10, 2, 8, rangeOK},
		{"bytes=7-", 10, 7, 3, rangeOK},
		{"bytes=-3", 10, 7, 3, rangeOK},
		{"bytes=-30", 10, 0, 10, rangeOK},
		{"Bytes= 2-3 ", 10, 2, 2, rangeOK},
		{"bytes=2-3,", 10, 2, 2, rangeOK}, // empty list elements are allowed
		{"bytes=10-", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=10-20", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=-0", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=0-", 0, 0, 0, rangeUnsatisfiable},
		{"bytes=-5", 0, 0, 0, rangeUnsatisfiable},
		{"bytes=99999999999999999999999-", 10, 0, 0, rangeUnsatisfiable},
		{"bytes=0-99999999999999999999999", 10, 0, 10, rangeOK},
		{"bytes=0-1,3-4", 10, 0, 0, rangeNone}, // several ranges: whole body
		{"bytes=5-2", 10, 0, 0, rangeNone},     // invalid
		{"bytes=a-b", 10, 0, 0, rangeNone},
		{"bytes=-", 10, 0, 0, rangeNone},
		{"bytes=1", 10, 0, 0, rangeNone},
		{"bytes=+1-2", 10, 0, 0, rangeNone},
		{"bytes=", 10, 0, 0, rangeNone},
		{"items=0-1", 10, 0, 0, rangeNone},
		{"bytes 0-1", 10, 0, 0, rangeNone},
		{"", 10, 0, 0, rangeNone},
	}
	for _, tt := range tests {
		start, length, res := parseRange(tt.v, tt.size)
		if res != tt.res || start != tt.start || length != tt.length {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d, %v",
				tt.v, tt.size, start, length, res, tt.start, tt.length, tt.res)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-0", int64(10))
	f.Add("bytes=-5", int64(3))
	f.Add("bytes=5-", int64(0))
	f.Add("bytes=1-2,3-4", int64(100))
	f.Add("bytes=99999999999999999999-", int64(1<<40))
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		start, length, res := parseRange(v, size)
		switch res {
		case rangeOK:
			if start < 0 || length <= 0 || start > size-length {
				t.Fatalf("parseRange(%q, %d) = %d, %d: outside the body", v, size, start, length)
			}
			// The explicit form of the answer selects the same bytes.
			s2, l2, r2 := parseRange(fmt.Sprintf("bytes=%d-%d", start, start+length-1), size)
			if r2 != rangeOK || s2 != start || l2 != length {
				t.Fatalf("parseRange(%q, %d) = %d, %d; explicit form gives %d, %d, %v", v, size, start, length, s2, l2, r2)
			}
		case rangeNone, rangeUnsatisfiable:
			if start != 0 || length != 0 {
				t.Fatalf("parseRange(%q, %d) = %d, %d with result %v", v, size, start, length, res)
			}
		default:
			t.Fatalf("parseRange(%q, %d): result %v", v, size, res)
		}
	})
}

func TestNoneMatch(t *testing.T) {
	tests := []struct {
		inm  []string
		etag string
		want bool
	}{
		{[]string{`"a"`}, `"a"`, true},
		{[]string{`W/"a"`}, `"a"`, true}, // weak comparison
		{[]string{`"a"`}, `W/"a"`, true},
		{[]string{`"b", "a"`}, `"a"`, true},
		{[]string{`"b"`, ` W/"a" `}, `"a"`, true},
		{[]string{`"a,b"`}, `"a,b"`, true}, // comma inside a tag
		{[]string{`"a,b"`}, `"a"`, false},
		{[]string{`*`}, `"x"`, true},
		{[]string{`*`}, ``, true},
		{[]string{`"b"`}, `"a"`, false},
		{[]string{`a`}, `a`, false}, // not entity-tags
		{[]string{`"a"`}, ``, false},
	}
	for _, tt := range tests {
		if got := noneMatch(tt.inm, tt.etag); got != tt.want {
			t.Errorf("noneMatch(%q, %q) = %v, want %v", tt.inm, tt.etag, got, tt.want)
		}
	}
}

func TestPlan(t *testing.T) {
	lm := httpDate(t0)
	stored := http.Header{"Etag": {`"v1"`}, "Last-Modified": {lm}, "Date": {httpDate(t0.Add(60))}}
	weak := http.Header{"Etag": {`W/"v1"`}, "Last-Modified": {lm}}
	tests := []struct {
		name   string
		req    http.Header
		h      http.Header
		size   int64
		status int
		off, n int64
	}{
		{"plain", nil, stored, 10, 200, 0, 10},
		{"INM match", http.Header{"If-None-Match": {`"v1"`}}, stored, 10, 304, 0, 0},
		{"INM miss", http.Header{"If-None-Match": {`"v0"`}}, stored, 10, 200, 0, 10},
		{"INM miss wins over IMS", http.Header{"If-None-Match": {`"v0"`}, "If-Modified-Since": {lm}}, stored, 10, 200, 0, 10},
		{"IMS equal", http.Header{"If-Modified-Since": {lm}}, stored, 10, 304, 0, 0},
		{"IMS later", http.Header{"If-Modified-Since": {httpDate(t0.Add(3600e9))}}, stored, 10, 304, 0, 0},
		{"IMS earlier", http.Header{"If-Modified-Since": {httpDate(t0.Add(-3600e9))}}, stored, 10, 200, 0, 10},
		{"IMS junk", http.Header{"If-Modified-Since": {"yesterday"}}, stored, 10, 200, 0, 10},
		{"IMS against Date", http.Header{"If-Modified-Since": {httpDate(t0.Add(3600e9))}},
			http.Header{"Date": {lm}}, 10, 304, 0, 0},
		{"range", http.Header{"Range": {"bytes=1-2"}}, stored, 10, 206, 1, 2},
		{"range unsatisfiable", http.Header{"Range": {"bytes=10-"}}, stored, 10, 416, 0, 0},
		{"range multi", http.Header{"Range": {"bytes=1-2,4-5"}}, stored, 10, 200, 0, 10},
		{"range size unknown", http.Header{"Range": {"bytes=1-2"}}, stored, -1, 200, 0, -1},
		{"two Range lines", http.Header{"Range": {"bytes=1-2", "bytes=3-4"}}, stored, 10, 200, 0, 10},
		{"If-Range etag", http.Header{"Range": {"bytes=1-2"}, "If-Range": {`"v1"`}}, stored, 10, 206, 1, 2},
		{"If-Range other etag", http.Header{"Range": {"bytes=1-2"}, "If-Range": {`"v0"`}}, stored, 10, 200, 0, 10},
		{"If-Range weak", http.Header{"Range": {"bytes=1-2"}, "If-Range": {`W/"v1"`}}, stored, 10, 200, 0, 10},
		{"If-Range stored weak", http.Header{"Range": {"bytes=1-2"}, "If-Range": {`"v1"`}}, weak, 10, 200, 0, 10},
		{"If-Range date", http.Header{"Range": {"bytes=1-2"}, "If-Range": {lm}}, stored, 10, 206, 1, 2},
		{"If-Range other date", http.Header{"Range": {"bytes=1-2"}, "If-Range": {httpDate(t0.Add(1e9))}}, stored, 10, 200, 0, 10},
		{"If-Range junk", http.Header{"Range": {"bytes=1-2"}, "If-Range": {"junk"}}, stored, 10, 200, 0, 10},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/x", nil)
		for k, v := range tt.req {
			r.Header[k] = v
		}
		status, off, n := plan(r, tt.h, tt.size)
		if status != tt.status || off != tt.off || n != tt.n {
			t.Errorf("%s: plan = %d, %d, %d; want %d, %d, %d", tt.name, status, off, n, tt.status, tt.off, tt.n)
		}
	}
}

package httpcache

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// ccString renders cc canonically, so that parsing it again must give cc.
func ccString(cc cacheControl) string {
	var parts []string
	for _, d := range []struct {
		f    ccFlag
		name string
	}{
		{ccNoStore, "no-store"}, {ccNoCache, "no-cache"}, {ccPrivate, "private"},
		{ccPublic, "public"}, {ccMustRevalidate, "must-revalidate"},
		{ccProxyRevalidate, "proxy-revalidate"}, {ccImmutable, "immutable"},
		{ccOnlyIfCached, "only-if-cached"},
	} {
		if cc.has(d.f) {
			parts = append(parts, d.name)
		}
	}
	for _, d := range []struct {
		v    int64
		name string
	}{
		{cc.maxAge, "max-age"}, {cc.sMaxAge, "s-maxage"},
		{cc.staleIfError, "stale-if-error"}, {cc.minFresh, "min-fresh"},
	} {
		if d.v >= 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", d.name, d.v))
		}
	}
	switch {
	case cc.maxStale == math.MaxInt64:
		parts = append(parts, "max-stale")
	case cc.maxStale >= 0:
		parts = append(parts, fmt.Sprintf("max-stale=%d", cc.maxStale))
	}
	return strings.Join(parts, ", ")
}

func TestParseCacheControl(t *testing.T) {
	tests := []struct {
		in   []string
		want string // ccString of the result
	}{
		{nil, ""},
		{[]string{""}, ""},
		{[]string{"max-age=60"}, "max-age=60"},
		{[]string{"MAX-AGE=60, Public"}, "public, max-age=60"},
		{[]string{`max-age="60"`}, "max-age=60"},
		{[]string{"max-age = 60 ,  s-maxage=10"}, "max-age=60, s-maxage=10"},
		{[]string{"max-age=abc"}, "max-age=0"},             // invalid: stale
		{[]string{"max-age=-5"}, "max-age=0"},              // invalid: stale
		{[]string{"max-age"}, "max-age=0"},                 // no value: stale
		{[]string{"max-age=10, max-age=99"}, "max-age=10"}, // first wins
		{[]string{"max-age=10", "max-age=99"}, "max-age=10"},
		{[]string{"max-age=99999999999999999999"}, "max-age=2147483648"}, // saturates
		{[]string{"no-store,no-cache,private"}, "no-store, no-cache, private"},
		{[]string{`no-cache="Set-Cookie, X-Foo", max-age=5`}, "no-cache, max-age=5"},
		{[]string{`private="a,b"`}, "private"},
		{[]string{"must-revalidate", "proxy-revalidate"}, "must-revalidate, proxy-revalidate"},
		{[]string{"immutable, stale-if-error=300"}, "immutable, stale-if-error=300"},
		{[]string{"max-stale"}, "max-stale"},
		{[]string{"max-stale=30, min-fresh=5, only-if-cached"}, "only-if-cached, min-fresh=5, max-stale=30"},
		{[]string{",,, ,junk, =, =5, foo=bar, max-age=7,"}, "max-age=7"},
		{[]string{`foo="unterminated, max-age=7`}, ""}, // the rest is inside the quote
		{[]string{"\tpublic\t,\tmax-age=1"}, "public, max-age=1"},
		{[]string{"max-age=1;s-maxage=2"}, "max-age=0"}, // not a separator: junk value
	}
	for _, tt := range tests {
		got := ccString(parseCacheControl(tt.in))
		if got != tt.want {
			t.Errorf("parseCacheControl(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", `no-cache="a,b", private`, "max-stale", "s-maxage=\"1\"",
		"max-age=99999999999999999999", ",,=,", `"\"`, "MUST-revalidate,immutable",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cc := parseCacheControl([]string{s})
		for _, v := range []int64{cc.maxAge, cc.sMaxAge, cc.staleIfError, cc.minFresh} {
			if v < -1 || v > maxDelta {
				t.Fatalf("%q: delta %d out of range", s, v)
			}
		}
		if cc.maxStale < -1 || cc.maxStale > maxDelta && cc.maxStale != math.MaxInt64 {
			t.Fatalf("%q: max-stale %d out of range", s, cc.maxStale)
		}
		// The canonical form parses back to the same thing.
		again := parseCacheControl([]string{ccString(cc)})
		if again != cc {
			t.Fatalf("%q: round trip %+v != %+v", s, again, cc)
		}
	})
}

func TestStorable(t *testing.T) {
	tests := []struct {
		name   string
		req    http.Header
		status int
		resp   http.Header
		ok     bool
	}{
		{"plain 200", nil, 200, http.Header{}, true},
		{"max-age", nil, 200, http.Header{"Cache-Control": {"max-age=60"}}, true},
		{"no-cache is stored", nil, 200, http.Header{"Cache-Control": {"no-cache"}}, true},
		{"404", nil, 404, http.Header{"Cache-Control": {"max-age=60"}}, false},
		{"206", nil, 206, http.Header{}, false},
		{"200 with Content-Range", nil, 200, http.Header{"Content-Range": {"bytes 0-1/2"}}, false},
		{"no-store", nil, 200, http.Header{"Cache-Control": {"max-age=60, No-Store"}}, false},
		{"private", nil, 200, http.Header{"Cache-Control": {"private, max-age=60"}}, false},
		{"qualified private", nil, 200, http.Header{"Cache-Control": {`private="X-A"`}}, false},
		{"set-cookie", nil, 200, http.Header{"Set-Cookie": {"a=b"}}, false},
		{"vary star", nil, 200, http.Header{"Vary": {"*"}}, false},
		{"vary cookie", nil, 200, http.Header{"Vary": {"Accept-Encoding, Cookie"}}, false},
		{"vary accept-encoding", nil, 200, http.Header{"Vary": {"accept-encoding", "Accept-Encoding,"}}, true},
		{"request no-store", http.Header{"Cache-Control": {"no-store"}}, 200, http.Header{}, false},
		{"authorization", http.Header{"Authorization": {"x"}}, 200, http.Header{"Cache-Control": {"max-age=60"}}, false},
		{"authorization public", http.Header{"Authorization": {"x"}}, 200, http.Header{"Cache-Control": {"public"}}, true},
		{"authorization s-maxage", http.Header{"Authorization": {"x"}}, 200, http.Header{"Cache-Control": {"s-maxage=5"}}, true},
		{"authorization must-revalidate", http.Header{"Authorization": {"x"}}, 200, http.Header{"Cache-Control": {"must-revalidate"}}, true},
	}
	for _, tt := range tests {
		err := Storable(tt.req, tt.status, tt.resp)
		if (err == nil) != tt.ok {
			t.Errorf("%s: Storable = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrNotStorable) {
			t.Errorf("%s: %v does not wrap ErrNotStorable", tt.name, err)
		}
	}
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func httpDate(t time.Time) string { return t.UTC().Format(http.TimeFormat) }

func TestFreshnessLifetime(t *testing.T) {
	date := httpDate(t0)
	tests := []struct {
		name   string
		status int
		h      http.Header
		want   time.Duration
	}{
		{"nothing", 200, http.Header{"Date": {date}}, 0},
		{"max-age", 200, http.Header{"Date": {date}, "Cache-Control": {"max-age=60"}}, time.Minute},
		{"s-maxage over max-age", 200, http.Header{"Cache-Control": {"max-age=60, s-maxage=5"}}, 5 * time.Second},
		{"max-age over Expires", 200, http.Header{"Date": {date}, "Cache-Control": {"max-age=60"},
			"Expires": {httpDate(t0.Add(time.Hour))}}, time.Minute},
		{"Expires minus Date", 200, http.Header{"Date": {date}, "Expires": {httpDate(t0.Add(time.Hour))}}, time.Hour},
		{"Expires in the past", 200, http.Header{"Date": {date}, "Expires": {httpDate(t0.Add(-time.Hour))}}, 0},
		{"invalid Expires", 200, http.Header{"Date": {date}, "Expires": {"0"},
			"Last-Modified": {httpDate(t0.Add(-100 * time.Hour))}}, 0},
		{"heuristic", 200, http.Header{"Date": {date}, "Last-Modified": {httpDate(t0.Add(-100 * time.Minute))}}, 10 * time.Minute},
		{"heuristic cap", 200, http.Header{"Date": {date}, "Last-Modified": {httpDate(t0.Add(-30 * 24 * time.Hour))}}, 24 * time.Hour},
		{"heuristic future LM", 200, http.Header{"Date": {date}, "Last-Modified": {httpDate(t0.Add(time.Hour))}}, 0},
		{"heuristic not for 404", 404, http.Header{"Date": {date}, "Last-Modified": {httpDate(t0.Add(-100 * time.Minute))}}, 0},
		{"404 max-age", 404, http.Header{"Cache-Control": {"max-age=9"}}, 9 * time.Second},
		{"junk max-age is stale", 200, http.Header{"Date": {date}, "Cache-Control": {"max-age=soon"},
			"Expires": {httpDate(t0.Add(time.Hour))}}, 0},
		{"RFC 850 and asctime dates", 200, http.Header{"Date": {"Saturday, 01-Mar-25 12:00:00 GMT"},
			"Expires": {"Sat Mar  1 13:00:00 2025"}}, time.Hour},
	}
	for _, tt := range tests {
		if got := FreshnessLifetime(tt.status, tt.h); got != tt.want {
			t.Errorf("%s: lifetime %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCurrentAge(t *testing.T) {
	tests := []struct {
		name          string
		h             http.Header
		req, resp, at time.Time
		want          time.Duration
	}{
		{"fresh from origin", http.Header{"Date": {httpDate(t0)}}, t0, t0, t0, 0},
		{"resident time", http.Header{"Date": {httpDate(t0)}}, t0, t0, t0.Add(90 * time.Second), 90 * time.Second},
		{"apparent age", http.Header{"Date": {httpDate(t0)}}, t0.Add(10 * time.Second), t0.Add(10 * time.Second), t0.Add(10 * time.Second), 10 * time.Second},
		{"Age plus response delay", http.Header{"Date": {httpDate(t0)}, "Age": {"30"}}, t0, t0.Add(2 * time.Second), t0.Add(2 * time.Second), 32 * time.Second},
		{"apparent beats corrected", http.Header{"Date": {httpDate(t0.Add(-time.Hour))}, "Age": {"30"}}, t0, t0, t0, time.Hour},
		{"Date in the future", http.Header{"Date": {httpDate(t0.Add(time.Hour))}}, t0, t0, t0.Add(time.Second), time.Second},
		{"no Date", http.Header{"Age": {"5"}}, t0, t0, t0, 5 * time.Second},
		{"junk Age", http.Header{"Date": {httpDate(t0)}, "Age": {"x"}}, t0, t0, t0, 0},
		{"clock went back", http.Header{"Date": {httpDate(t0)}}, t0, t0, t0.Add(-time.Minute), 0},
	}
	for _, tt := range tests {
		if got := CurrentAge(tt.h, tt.req, tt.resp, tt.at); got != tt.want {
			t.Errorf("%s: age %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestFreshAndStale(t *testing.T) {
	tests := []struct {
		name       string
		resp       string // response Cache-Control
		age        time.Duration
		req        string // request Cache-Control
		fresh      bool
		staleOnErr bool
	}{
		{"fresh", "max-age=60", 10 * time.Second, "", true, true},
		{"expired", "max-age=60", 60 * time.Second, "", false, true},
		{"no-cache always revalidates", "no-cache, max-age=60", 0, "", false, false},
		{"client no-cache", "max-age=60", 0, "no-cache", false, true},
		{"client max-age=0", "max-age=60", 0, "max-age=0", false, true},
		{"client max-age ok", "max-age=60", 5 * time.Second, "max-age=10", true, true},
		{"client max-age exceeded", "max-age=60", 15 * time.Second, "max-age=10", false, true},
		{"client min-fresh", "max-age=60", 55 * time.Second, "min-fresh=10", false, true},
		{"immutable ignores reload", "max-age=60, immutable", 5 * time.Second, "no-cache", true, true},
		{"immutable still expires", "max-age=60, immutable", 61 * time.Second, "", false, true},
		{"must-revalidate", "max-age=1, must-revalidate", time.Hour, "", false, false},
		{"proxy-revalidate", "max-age=1, proxy-revalidate", time.Hour, "", false, false},
		{"s-maxage implies proxy-revalidate", "s-maxage=1", time.Hour, "", false, false},
		{"stale-if-error window", "max-age=10, stale-if-error=60", 30 * time.Second, "", false, true},
		{"stale-if-error exceeded", "max-age=10, stale-if-error=60", 71 * time.Second, "", false, false},
	}
	for _, tt := range tests {
		h := http.Header{"Date": {httpDate(t0)}, "Cache-Control": {tt.resp}}
		st := stateOf(200, h, t0, t0, t0.Add(tt.age))
		if got := st.fresh(parseCacheControl([]string{tt.req})); got != tt.fresh {
			t.Errorf("%s: fresh = %v, want %v", tt.name, got, tt.fresh)
		}
		if got := st.staleOnErrorOK(); got != tt.staleOnErr {
			t.Errorf("%s: staleOnErrorOK = %v, want %v", tt.name, got, tt.staleOnErr)
		}
	}
}

func TestStripHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":          {"X-Hop, close", "x-other"},
		"X-Hop":               {"1"},
		"X-Other":             {"1"},
		"Keep-Alive":          {"timeout=5"},
		"Transfer-Encoding":   {"chunked"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-T"},
		"Upgrade":             {"h2c"},
		"Proxy-Authenticate":  {"Basic"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Something-Odd": {"1"},
		"Content-Type":        {"text/plain"},
		"Etag":                {`"a"`},
		"Proxyish":            {"kept"},
	}
	stripHopByHop(h)
	want := []string{"Content-Type", "Etag", "Proxyish"}
	if len(h) != len(want) {
		t.Errorf("left %v, want only %v", h, want)
	}
	for _, k := range want {
		if _, ok := h[k]; !ok {
			t.Errorf("%s was removed", k)
		}
	}
}

func TestParseHTTPTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time // zero: error
	}{
		{"Sat, 01 Mar 2025 12:00:00 GMT", t0},
		{"Saturday, 01-Mar-25 12:00:00 GMT", t0},
		{"Sat Mar  1 12:00:00 2025", t0},
		{"Thu, 29 Feb 2024 23:59:59 GMT", time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC)},
		{"Wed, 29 Feb 2023 00:00:00 GMT", time.Time{}},
		{"Sat, 01 Mar 2025 24:00:00 GMT", time.Time{}},
		{"Sat, 01 Mar 2025 12:00:60 GMT", time.Time{}},
		{"Sat, 00 Mar 2025 12:00:00 GMT", time.Time{}},
		{"Sat, 01 Foo 2025 12:00:00 GMT", time.Time{}},
		{"Sat, 01 Mar 2025 12:00:00 UTC", time.Time{}},
		{"0", time.Time{}},
		{"", time.Time{}},
	}
	for _, tt := range tests {
		got, err := parseHTTPTime(tt.in)
		if tt.want.IsZero() != (err != nil) || !got.Equal(tt.want) {
			t.Errorf("parseHTTPTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseHTTPTime checks that the fast path agrees with http.ParseTime.
func FuzzParseHTTPTime(f *testing.F) {
	f.Add("Sat, 01 Mar 2025 12:00:00 GMT")
	f.Add("Thu, 29 Feb 2024 23:59:59 GMT")
	f.Add("Wed, 31 Apr 2023 00:00:00 GMT")
	f.Add("Sat Mar  1 12:00:00 2025")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseHTTPTime(s)
		want, werr := http.ParseTime(s)
		if (err != nil) != (werr != nil) || !got.Equal(want) {
			t.Fatalf("parseHTTPTime(%q) = %v, %v; http.ParseTime = %v, %v", s, got, err, want, werr)
		}
	})
}

package httpcache

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ErrNotStorable is wrapped by every reason Storable gives for refusing a response.
var ErrNotStorable = errors.New("httpcache: response not storable")

var (
	errStatus      = fmt.Errorf("%w: status is not 200", ErrNotStorable)
	errNoStore     = fmt.Errorf("%w: no-store", ErrNotStorable)
	errPrivate     = fmt.Errorf("%w: private", ErrNotStorable)
	errSetCookie   = fmt.Errorf("%w: Set-Cookie", ErrNotStorable)
	errVary        = fmt.Errorf("%w: Vary", ErrNotStorable)
	errAuthorized  = fmt.Errorf("%w: request had Authorization and the response is not public", ErrNotStorable)
	errReqNoStore  = fmt.Errorf("%w: request no-store", ErrNotStorable)
	errRangeAnswer = fmt.Errorf("%w: Content-Range", ErrNotStorable)
)

// Heuristic freshness (RFC 9111 §4.2.2): a fraction of the time since
// Last-Modified, capped.
const (
	heuristicFraction = 10 // 1/10 = 10 %
	heuristicMax      = 24 * time.Hour
)

// Storable reports whether a shared cache may store a response with this
// status and header to a GET with reqHeader (RFC 9111 §3), returning nil or
// an error wrapping ErrNotStorable that names the reason. Only 200 is stored;
// Vary is accepted only when it names nothing but Accept-Encoding, because
// the upstream never negotiates encodings.
func Storable(reqHeader http.Header, status int, respHeader http.Header) error {
	if status != http.StatusOK {
		return errStatus
	}
	if len(respHeader["Content-Range"]) > 0 {
		return errRangeAnswer
	}
	cc := parseCacheControl(respHeader["Cache-Control"])
	switch {
	case cc.has(ccNoStore):
		return errNoStore
	case cc.has(ccPrivate):
		return errPrivate
	case len(respHeader["Set-Cookie"]) > 0:
		return errSetCookie
	case !varyOK(respHeader["Vary"]):
		return errVary
	}
	if reqHeader != nil {
		if parseCacheControl(reqHeader["Cache-Control"]).has(ccNoStore) {
			return errReqNoStore
		}
		if len(reqHeader["Authorization"]) > 0 &&
			!cc.has(ccPublic) && !cc.has(ccMustRevalidate) && cc.sMaxAge < 0 {
			return errAuthorized
		}
	}
	return nil
}

// varyOK reports whether Vary names at most Accept-Encoding.
func varyOK(lines []string) bool {
	for _, line := range lines {
		for line != "" {
			var item string
			item, line = nextItem(line)
			item = trimOWS(item)
			if item != "" && !strings.EqualFold(item, "Accept-Encoding") {
				return false
			}
		}
	}
	return true
}

// FreshnessLifetime is how long a response with this status and header
// stays fresh in a shared cache (RFC 9111 §4.2.1): s-maxage, else max-age,
// else Expires minus Date, else (200 only) 10 % of Date minus Last-Modified,
// capped at 24 h; otherwise 0. An unparseable Expires means already expired.
func FreshnessLifetime(status int, h http.Header) time.Duration {
	date, dateOK := headerTime(h, "Date")
	return freshnessLifetime(status, h, parseCacheControl(h["Cache-Control"]), date, dateOK)
}

// freshnessLifetime is FreshnessLifetime with Cache-Control and Date parsed.
func freshnessLifetime(status int, h http.Header, cc cacheControl, date time.Time, dateOK bool) time.Duration {
	if cc.sMaxAge >= 0 {
		return time.Duration(cc.sMaxAge) * time.Second
	}
	if cc.maxAge >= 0 {
		return time.Duration(cc.maxAge) * time.Second
	}
	if ev, ok := h["Expires"]; ok && len(ev) > 0 {
		exp, err := parseHTTPTime(ev[0])
		if err != nil || !dateOK {
			// An invalid Expires ("0", "-1") means already expired. Date is
			// always present in what the cache stores (it adds one).
			return 0
		}
		if d := exp.Sub(date); d > 0 {
			return d
		}
		return 0
	}
	if status != http.StatusOK || !dateOK {
		return 0
	}
	if lm, ok := headerTime(h, "Last-Modified"); ok {
		if d := date.Sub(lm) / heuristicFraction; d > 0 {
			return min(d, heuristicMax)
		}
	}
	return 0
}

// CurrentAge is the age of a stored response (RFC 9111 §4.2.3): the larger
// of its apparent age (response time minus Date) and its Age value plus the
// response delay, plus the time it has been resident since responseTime.
func CurrentAge(h http.Header, requestTime, responseTime, now time.Time) time.Duration {
	date, dateOK := headerTime(h, "Date")
	return currentAge(h, date, dateOK, requestTime, responseTime, now)
}

// currentAge is CurrentAge with Date parsed.
func currentAge(h http.Header, date time.Time, dateOK bool, requestTime, responseTime, now time.Time) time.Duration {
	var apparent time.Duration
	if dateOK {
		apparent = max(0, responseTime.Sub(date))
	}
	var ageValue time.Duration
	if v := h["Age"]; len(v) > 0 {
		ageValue = time.Duration(parseDelta(trimOWS(v[0]))) * time.Second
	}
	delay := max(0, responseTime.Sub(requestTime))
	corrected := ageValue + delay
	initial := max(apparent, corrected)
	resident := max(0, now.Sub(responseTime))
	return initial + resident
}

// headerTime parses the first value of an HTTP-date header field.
func headerTime(h http.Header, name string) (time.Time, bool) {
	v := h[name]
	if len(v) == 0 {
		return time.Time{}, false
	}
	t, err := parseHTTPTime(v[0])
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// parseHTTPTime is http.ParseTime with a fast path for IMF-fixdate
// ("Sun, 06 Nov 1994 08:49:37 GMT"), the only form senders may generate;
// every hit parses at least one date. Anything the fast path does not fully
// accept goes to http.ParseTime, so the results always agree.
func parseHTTPTime(s string) (time.Time, error) {
	if t, ok := parseIMFFixdate(s); ok {
		return t, nil
	}
	return http.ParseTime(s)
}

func parseIMFFixdate(s string) (time.Time, bool) {
	if len(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
		s[16] != ' ' || s[19] != ':' || s[22] != ':' || s[25:] != " GMT" {
		return time.Time{}, false
	}
	switch s[:3] {
	case "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun":
	default:
		return time.Time{}, false
	}
	month := time.Month(0)
	for i, m := range [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"} {
		if s[8:11] == m {
			month = time.Month(i + 1)
			break
		}
	}
	day, ok1 := digits(s[5:7])
	year, ok2 := digits(s[12:16])
	hh, ok3 := digits(s[17:19])
	mm, ok4 := digits(s[20:22])
	ss, ok5 := digits(s[23:25])
	if month == 0 || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || hh > 23 || mm > 59 || ss > 59 || day < 1 {
		return time.Time{}, false
	}
	t := time.Date(year, month, day, hh, mm, ss, 0, time.UTC)
	if t.Day() != day { // 31 Apr, 29 Feb 2023: let http.ParseTime say why
		return time.Time{}, false
	}
	return t, true
}

func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

// state is what the cache knows about one stored response at one moment.
type state struct {
	cc       cacheControl
	lifetime time.Duration
	age      time.Duration
}

func stateOf(status int, h http.Header, requestTime, responseTime, now time.Time) state {
	cc := parseCacheControl(h["Cache-Control"])
	date, dateOK := headerTime(h, "Date") // once: every hit needs it twice
	return state{
		cc:       cc,
		lifetime: freshnessLifetime(status, h, cc, date, dateOK),
		age:      currentAge(h, date, dateOK, requestTime, responseTime, now),
	}
}

// fresh reports whether the stored response may be served without
// contacting the upstream for a request with directives req (RFC 9111 §4.2,
// §5.2.1). A response with no-cache is always revalidated. A fresh immutable
// response ignores a client's reload (no-cache, max-age=0): that is what
// immutable is for (RFC 8246).
func (s state) fresh(req cacheControl) bool {
	if s.cc.has(ccNoCache) || s.lifetime <= s.age {
		return false
	}
	if s.cc.has(ccImmutable) {
		return true
	}
	if req.has(ccNoCache) {
		return false
	}
	if req.maxAge == 0 || req.maxAge > 0 && s.age > time.Duration(req.maxAge)*time.Second {
		return false
	}
	if req.minFresh >= 0 && s.lifetime-s.age < time.Duration(req.minFresh)*time.Second {
		return false
	}
	return true
}

// staleOnErrorOK reports whether the stale response may be served when the
// upstream cannot be reached or answers 5xx. must-revalidate,
// proxy-revalidate, s-maxage (which implies proxy-revalidate for shared
// caches) and no-cache forbid it; stale-if-error=N bounds the staleness.
func (s state) staleOnErrorOK() bool {
	if s.cc.has(ccMustRevalidate|ccProxyRevalidate|ccNoCache) || s.cc.sMaxAge >= 0 {
		return false
	}
	if s.cc.staleIfError >= 0 {
		return s.age-s.lifetime <= time.Duration(s.cc.staleIfError)*time.Second
	}
	return true
}

// hopByHop are the fields that describe one connection, never stored or forwarded.
var hopByHop = []string{
	"Connection", "Keep-Alive", "Transfer-Encoding", "Te", "Trailer", "Upgrade",
	"Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
}

// stripHopByHop removes hop-by-hop fields from h in place: the fixed list,
// everything Connection names, and every Proxy-* field.
func stripHopByHop(h http.Header) {
	for _, line := range h["Connection"] {
		for line != "" {
			var item string
			item, line = nextItem(line)
			if item = trimOWS(item); item != "" {
				delete(h, http.CanonicalHeaderKey(item))
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
	for k := range h {
		if len(k) > 6 && strings.EqualFold(k[:6], "Proxy-") {
			delete(h, k)
		}
	}
}

// canonicalize rewrites non-canonical field names in h ("ETag" to "Etag"):
// an Upstream need not build its header through net/http, and lookups here
// use canonical names.
func canonicalize(h http.Header) {
	for k, v := range h {
		if ck := http.CanonicalHeaderKey(k); ck != k {
			delete(h, k)
			h[ck] = append(h[ck], v...)
		}
	}
}

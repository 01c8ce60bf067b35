package castd

import (
	"crypto/subtle"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/ratelimit"
)

// Wrong admin tokens are limited per source address and in total, so that
// guessing the token costs an attacker time it does not have: after
// adminFailBurst wrong tries an address gets one try per adminFailEvery,
// and every address together at most adminFailTotal a second. While an
// address is limited even the right token is refused, or the limit would
// only slow the guessing down.
const (
	adminFailBurst = 10
	adminFailEvery = 10 * time.Second
	adminFailTotal = 20
	// minAdminToken is the length below which castd warns at start.
	minAdminToken = 16
)

type adminGate struct {
	perAddr *ratelimit.PerAddr
	total   *ratelimit.Bucket
	now     func() time.Time // tests move it on instead of waiting
}

func newAdminGate() adminGate {
	return adminGate{
		perAddr: ratelimit.NewPerAddr(1/adminFailEvery.Seconds(), adminFailBurst),
		total:   ratelimit.NewBucket(adminFailTotal, 5*adminFailTotal, time.Now()),
		now:     time.Now,
	}
}

// requireAdmin lets the request through when it carries the operator's
// token (Authorization: Bearer <--admin-token>); otherwise it answers and
// returns false. It is the one gate of every operator endpoint.
func (s *Server) requireAdmin(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.AdminToken == "" {
		s.fail(w, r, http.StatusForbidden, "the operator API is off: start castd with --admin-token")
		return false
	}
	return s.requireToken(w, r, "the operator's token", s.opts.AdminToken)
}

// requireToken lets the request through when it carries one of the
// non-empty tokens as a bearer; otherwise it answers (401, or 429 while
// the caller's address is limited) and returns false. what names the
// credential in the refusal.
func (s *Server) requireToken(w http.ResponseWriter, r *http.Request, what string, tokens ...string) bool {
	now := s.admin.now()
	src, _ := s.ips.Addr(r)
	if !src.IsValid() {
		src = netip.IPv6Unspecified()
	}
	if !s.admin.perAddr.Available(src, now) {
		w.Header().Set("Retry-After", strconv.Itoa(int(adminFailEvery/time.Second)))
		s.fail(w, r, http.StatusTooManyRequests, "too many wrong tokens from this address; try again later")
		return false
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		for _, want := range tokens {
			if want != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(want)) == 1 {
				return true
			}
		}
	}
	s.admin.perAddr.Allow(src, now) // spend one of the address's tries
	if !s.admin.total.Allow(now) {
		w.Header().Set("Retry-After", "1")
		s.fail(w, r, http.StatusTooManyRequests, "too many wrong tokens; try again later")
		return false
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="castd"`)
	s.fail(w, r, http.StatusUnauthorized, "this needs "+what+": Authorization: Bearer <token>")
	return false
}

// onlyRead answers 405 (Allow: GET, HEAD, and msg) to any other method and
// reports whether the request may go on.
func (s *Server) onlyRead(w http.ResponseWriter, r *http.Request, msg string) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	s.fail(w, r, http.StatusMethodNotAllowed, msg)
	return false
}

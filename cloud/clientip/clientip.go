// Package clientip finds the address of the party that made an HTTP request:
// the connection's peer, or, only when that peer is a configured trusted
// proxy, the last untrusted address in X-Forwarded-For. A node's public IP is
// what the router matches end users against, so it must never come from a
// header that anyone could set.
package clientip

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ErrNoAddr means the request's remote address could not be parsed.
var ErrNoAddr = errors.New("clientip: no usable remote address")

// Resolver takes client addresses from requests.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver that believes X-Forwarded-For only from peers inside trusted.
func New(trusted []netip.Prefix) *Resolver {
	return &Resolver{trusted: trusted}
}

// ParsePrefixes parses a comma-separated list of CIDRs or bare addresses.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", f, err)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (r *Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr returns the client address of req (IPv4-mapped addresses unmapped).
func (r *Resolver) Addr(req *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %q", ErrNoAddr, req.RemoteAddr)
	}
	addr := ap.Addr().Unmap()
	if len(r.trusted) == 0 || !r.isTrusted(addr) {
		return addr, nil
	}
	// Walk X-Forwarded-For from the right: each hop was appended by the
	// proxy before it; the first address that is not a trusted proxy is the
	// client. Anything left of it could have been forged by the client.
	var hops []string
	for _, h := range req.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%w: bad X-Forwarded-For entry %q from trusted proxy %s", ErrNoAddr, hops[i], addr)
		}
		a = a.Unmap()
		if !r.isTrusted(a) {
			return a, nil
		}
		addr = a
	}
	return addr, nil
}

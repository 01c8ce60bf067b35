// Package netguard is castd's policy for the addresses it connects to on a
// node's word: a relay names its own URL, and castd probing it must not be
// turned into a way to reach castd's own host, its private network or
// anything else that is not a public unicast destination (SSRF).
//
// The check is made on the address actually dialed (Control, for a
// net.Dialer), so a name that resolves or rebinds to a forbidden address
// is refused as surely as a literal one. Embedded IPv4 addresses
// (IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64, 6to4, Teredo) are
// judged as the IPv4 address they lead to.
package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
)

// ErrForbidden is wrapped by every refusal.
var ErrForbidden = errors.New("destination not allowed")

// Kind names why an address is refused.
type Kind string

// Kinds of refused addresses.
const (
	Unspecified Kind = "unspecified"
	Loopback    Kind = "loopback"
	Private     Kind = "private"    // RFC 1918, ULA fc00::/7, site-local fec0::/10
	SharedCGNAT Kind = "cgnat"      // 100.64.0.0/10, RFC 6598
	LinkLocal   Kind = "link-local" // 169.254/16, fe80::/10
	Multicast   Kind = "multicast"
	Broadcast   Kind = "broadcast"
	Reserved    Kind = "reserved" // other special-purpose ranges that are not globally reachable
)

// Error is a refusal: the address (or name) and why.
type Error struct {
	Dest string
	Kind Kind
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s is a %s address: %v", e.Dest, e.Kind, ErrForbidden)
}

func (e *Error) Unwrap() error { return ErrForbidden }

type rangeKind struct {
	p netip.Prefix
	k Kind
}

// Special-purpose IPv4 ranges that are not globally reachable (IANA IPv4
// Special-Purpose Address Registry). 0.0.0.0/8 is "this network": Linux
// dials 0.0.0.0 as the local host.
var v4ranges = []rangeKind{
	{netip.MustParsePrefix("0.0.0.0/8"), Unspecified},
	{netip.MustParsePrefix("10.0.0.0/8"), Private},
	{netip.MustParsePrefix("100.64.0.0/10"), SharedCGNAT},
	{netip.MustParsePrefix("127.0.0.0/8"), Loopback},
	{netip.MustParsePrefix("169.254.0.0/16"), LinkLocal},
	{netip.MustParsePrefix("172.16.0.0/12"), Private},
	{netip.MustParsePrefix("192.0.0.0/24"), Reserved}, // IETF protocol assignments (DS-Lite, ...)
	{netip.MustParsePrefix("192.0.2.0/24"), Reserved}, // documentation
	{netip.MustParsePrefix("192.88.99.0/24"), Reserved},
	{netip.MustParsePrefix("192.168.0.0/16"), Private},
	{netip.MustParsePrefix("198.18.0.0/15"), Reserved}, // benchmarking
	{netip.MustParsePrefix("198.51.100.0/24"), Reserved},
	{netip.MustParsePrefix("203.0.113.0/24"), Reserved},
	{netip.MustParsePrefix("224.0.0.0/4"), Multicast},
	{netip.MustParsePrefix("255.255.255.255/32"), Broadcast},
	{netip.MustParsePrefix("240.0.0.0/4"), Reserved},
}

// IPv6 ranges refused outright. Prefixes that embed an IPv4 address are
// handled by embedded, not here.
var v6ranges = []rangeKind{
	{netip.MustParsePrefix("::1/128"), Loopback},
	{netip.MustParsePrefix("::/128"), Unspecified},
	{netip.MustParsePrefix("64:ff9b:1::/48"), Reserved}, // local-use NAT64, RFC 8215
	{netip.MustParsePrefix("100::/64"), Reserved},       // discard-only
	{netip.MustParsePrefix("2001:2::/48"), Reserved},    // benchmarking
	{netip.MustParsePrefix("2001:10::/28"), Reserved},   // ORCHID
	{netip.MustParsePrefix("2001:20::/28"), Reserved},   // ORCHIDv2
	{netip.MustParsePrefix("2001:db8::/32"), Reserved},  // documentation
	{netip.MustParsePrefix("3fff::/20"), Reserved},      // documentation
	{netip.MustParsePrefix("5f00::/16"), Reserved},      // SRv6 SIDs
	{netip.MustParsePrefix("fc00::/7"), Private},
	{netip.MustParsePrefix("fe80::/10"), LinkLocal},
	{netip.MustParsePrefix("fec0::/10"), Private},
	{netip.MustParsePrefix("ff00::/8"), Multicast},
}

var (
	mapped     = netip.MustParsePrefix("::ffff:0:0/96")   // IPv4-mapped
	translated = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated, RFC 2765
	compat     = netip.MustParsePrefix("::/96")           // IPv4-compatible (deprecated)
	nat64      = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052 well-known prefix
	sixToFour  = netip.MustParsePrefix("2002::/16")       // RFC 3056
	teredo     = netip.MustParsePrefix("2001::/32")       // RFC 4380
)

// Check returns nil for an address castd may connect to on a node's word,
// and an *Error wrapping ErrForbidden otherwise.
func Check(a netip.Addr) error {
	if k, bad := kind(a.WithZone("")); bad {
		return &Error{Dest: a.String(), Kind: k}
	}
	return nil
}

func kind(a netip.Addr) (Kind, bool) {
	if !a.IsValid() {
		return Unspecified, true
	}
	if a.Is4() {
		for _, r := range v4ranges {
			if r.p.Contains(a) {
				return r.k, true
			}
		}
		return "", false
	}
	for _, r := range v6ranges {
		if r.p.Contains(a) {
			return r.k, true
		}
	}
	for _, v4 := range embedded(a) {
		if k, bad := kind(v4); bad {
			return k, true
		}
	}
	return "", false
}

// embedded returns the IPv4 addresses an IPv6 address leads to.
func embedded(a netip.Addr) []netip.Addr {
	b := a.As16()
	low := netip.AddrFrom4([4]byte(b[12:16]))
	switch {
	case mapped.Contains(a), translated.Contains(a), compat.Contains(a), nat64.Contains(a):
		return []netip.Addr{low}
	case sixToFour.Contains(a):
		return []netip.Addr{netip.AddrFrom4([4]byte(b[2:6]))}
	case teredo.Contains(a):
		// Server in bits 32-63, client (obfuscated: inverted) in the low 32.
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []netip.Addr{netip.AddrFrom4([4]byte(b[4:8])), netip.AddrFrom4(client)}
	}
	return nil
}

// CheckHost judges the host part of a URL (brackets optional) when it is
// a literal address. Names pass: they are judged when dialed, on every
// address they resolve to then.
func CheckHost(host string) error {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(h); err == nil {
		return Check(a)
	}
	return nil
}

// Control is a net.Dialer Control function that refuses a forbidden
// address just before the socket connects to it.
func Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// The dialer always passes a literal address; anything else is
		// refused rather than connected to unjudged.
		return &Error{Dest: address, Kind: Reserved}
	}
	return Check(ap.Addr())
}

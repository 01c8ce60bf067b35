package registry

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/blockcast/beacon/shared/protocol"
)

// Bounds on what one registration may carry. They keep a record small and a
// hostile node from inflating the registry or the router.
const (
	MaxCIDRs         = 1024 // per relay
	MaxURLLen        = 2048
	MaxVersionLen    = 64
	MaxCapabilities  = 64
	MaxCapabilityLen = 64
)

// normalize checks a registration and returns it in stored form: CIDRs in
// canonical text, the public IP unmapped and without zone, times in UTC.
func (r *Registry) normalize(n Node) (Node, error) {
	if !plausibleKey(n.ID) {
		return Node{}, fmt.Errorf("%w: node ID %q is not a base58 32-byte public key", ErrInvalid, clip(n.ID))
	}
	if n.Owner != "" && !plausibleKey(n.Owner) {
		return Node{}, fmt.Errorf("%w: owner %q is not a base58 32-byte public key", ErrInvalid, clip(n.Owner))
	}
	switch n.Role {
	case protocol.RoleBeacon, protocol.RoleRelay:
	default:
		return Node{}, fmt.Errorf("%w: role %q: want %q or %q", ErrInvalid, clip(n.Role), protocol.RoleBeacon, protocol.RoleRelay)
	}
	if err := checkLANURL(n.LANURL); err != nil {
		return Node{}, fmt.Errorf("%w: lan_url: %v", ErrInvalid, err)
	}
	if !n.PublicIP.IsValid() {
		return Node{}, fmt.Errorf("%w: no public IP", ErrInvalid)
	}
	// The router matches clients by their unmapped address.
	n.PublicIP = n.PublicIP.Unmap().WithZone("")
	if len(n.Version) > MaxVersionLen {
		return Node{}, fmt.Errorf("%w: version longer than %d bytes", ErrInvalid, MaxVersionLen)
	}
	if i := strings.IndexFunc(n.Version, func(c rune) bool { return c < 0x20 || c > 0x7e }); i >= 0 {
		return Node{}, fmt.Errorf("%w: version %q: only printable ASCII", ErrInvalid, clip(n.Version))
	}
	if err := checkCapabilities(n.Capabilities); err != nil {
		return Node{}, fmt.Errorf("%w: capabilities: %v", ErrInvalid, err)
	}
	if len(n.CIDRs) > 0 && n.Role != protocol.RoleRelay {
		return Node{}, fmt.Errorf("%w: only relays may register CIDRs", ErrInvalid)
	}
	cidrs, err := canonicalCIDRs(n.CIDRs)
	if err != nil {
		return Node{}, fmt.Errorf("%w: cidrs: %v", ErrInvalid, err)
	}
	n.CIDRs = cidrs
	n.Capabilities = append([]string(nil), n.Capabilities...)
	if len(n.Capabilities) == 0 {
		n.Capabilities = nil
	}
	if n.LastSeen.IsZero() {
		n.LastSeen = r.nowUTC()
	}
	n.LastSeen = n.LastSeen.UTC().Round(0)
	n.FirstSeen = n.FirstSeen.UTC().Round(0)
	return n, nil
}

// checkLANURL accepts an absolute http(s) URL that can serve as the base of
// a redirect: a host, an optional path, and nothing that would change how
// the appended content path is read (query, fragment) or that leaks
// credentials into every redirect (user info).
func checkLANURL(s string) error {
	if s == "" {
		return fmt.Errorf("missing (end users are redirected there)")
	}
	if len(s) > MaxURLLen {
		return fmt.Errorf("longer than %d bytes", MaxURLLen)
	}
	_, err := protocol.ParseBaseURL(s)
	return err
}

func checkCapabilities(caps []string) error {
	if len(caps) > MaxCapabilities {
		return fmt.Errorf("more than %d", MaxCapabilities)
	}
	seen := make(map[string]bool, len(caps))
	for _, c := range caps {
		if c == "" || len(c) > MaxCapabilityLen {
			return fmt.Errorf("%q: want 1 to %d bytes", clip(c), MaxCapabilityLen)
		}
		for i := 0; i < len(c); i++ {
			if !isTokenByte(c[i]) {
				return fmt.Errorf("%q: only letters, digits and . _ - : /", clip(c))
			}
		}
		if seen[c] {
			return fmt.Errorf("%q listed twice", c)
		}
		seen[c] = true
	}
	return nil
}

func isTokenByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == ':' || c == '/'
}

// canonicalCIDRs parses relay CIDRs and returns them in canonical text. A
// prefix with host bits set is refused rather than masked: "10.0.0.1/8" is
// more likely a typo for a /32 (or a /24) than a wish to serve all of 10/8,
// and guessing wrong would send a whole network to the relay.
func canonicalCIDRs(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > MaxCIDRs {
		return nil, fmt.Errorf("%d CIDRs, at most %d per relay", len(in), MaxCIDRs)
	}
	out := make([]string, len(in))
	seen := make(map[netip.Prefix]bool, len(in))
	for i, s := range in {
		p, err := ParseCIDR(s)
		if err != nil {
			return nil, err
		}
		if seen[p] {
			return nil, fmt.Errorf("%s listed twice", p)
		}
		seen[p] = true
		out[i] = p.String()
	}
	return out, nil
}

// ParseCIDR parses one relay prefix by the rules every source of relay
// coverage shares (registrations, operator approvals, the coverage-zone
// file): a prefix in CIDR notation, without host bits set, and not an
// IPv4-mapped IPv6 prefix.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", clip(s))
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %s (or %s/%d)?", s, m, p.Addr(), p.Addr().BitLen())
	}
	if p.Addr().Is4In6() {
		// Clients are matched by their unmapped address, so such a
		// prefix could never match.
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: write the IPv4 prefix", s)
	}
	return p, nil
}

// CanonicalCIDRs checks a list of relay prefixes by ParseCIDR's rules, at
// most MaxCIDRs and none twice, and returns them in canonical text.
func CanonicalCIDRs(in []string) ([]string, error) { return canonicalCIDRs(in) }

// clip shortens hostile input before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

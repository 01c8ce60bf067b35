package amtgw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/blockcast/beacon/firmware/driad"
	"github.com/blockcast/beacon/shared/amt"
)

// Relay is a candidate relay.
type Relay struct {
	// Addr is where the gateway sends Relay Discovery (Discover) or
	// Requests (!Discover). A relay found by discovery is assumed to
	// listen on this port too.
	Addr netip.AddrPort
	// Discover: send a Relay Discovery to Addr first and use the relay the
	// Advertisement names. RFC 8777 requires it for AMTRELAY records with
	// the D bit clear; the anycast addresses need it.
	Discover bool
}

func (r Relay) String() string {
	if r.Discover {
		return "discover " + r.Addr.String()
	}
	return r.Addr.String()
}

// RelaySource finds the relays for a multicast source, most preferred
// first. It may return relays together with an error describing a partial
// failure (a Chain whose first member failed); the gateway then uses the
// relays and logs the error.
type RelaySource interface {
	Relays(ctx context.Context, source netip.Addr) ([]Relay, error)
}

// Static is a fixed list of relays, for every source.
type Static []Relay

// Relays returns s.
func (s Static) Relays(context.Context, netip.Addr) ([]Relay, error) {
	if len(s) == 0 {
		return nil, errors.New("no static relay configured")
	}
	return s, nil
}

// Anycast is the relay discovery anycast addresses of RFC 7450 §7,
// 192.52.193.1 and 2001:3::1, on port 2268.
var Anycast = Static{
	{Addr: netip.AddrPortFrom(amt.DiscoveryAddr4, amt.Port), Discover: true},
	{Addr: netip.AddrPortFrom(amt.DiscoveryAddr6, amt.Port), Discover: true},
}

// Lookuper is what DRIAD needs of a *driad.Resolver (an interface so that
// tests can stub it).
type Lookuper interface {
	Lookup(ctx context.Context, source netip.Addr) ([]driad.Relay, error)
}

// DRIAD finds relays with the AMTRELAY records of the source's reverse
// DNS name (RFC 8777). The order is the resolver's: precedence, random
// among equals. Records with the D bit clear become Discover relays.
type DRIAD struct {
	Resolver Lookuper
	// Port the relays listen on [2268]. DNS does not carry one.
	Port uint16
}

// Relays looks up source's AMTRELAY records.
func (d DRIAD) Relays(ctx context.Context, source netip.Addr) ([]Relay, error) {
	if d.Resolver == nil {
		return nil, errors.New("DRIAD without a resolver")
	}
	rs, err := d.Resolver.Lookup(ctx, source)
	if err != nil {
		return nil, err
	}
	port := d.Port
	if port == 0 {
		port = amt.Port
	}
	out := make([]Relay, 0, len(rs))
	for _, r := range rs {
		if !r.Addr.IsValid() {
			continue // type 0 or an unresolved name
		}
		out = append(out, Relay{Addr: netip.AddrPortFrom(r.Addr.Unmap(), port), Discover: !r.DiscoveryOptional})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("DRIAD %v: %w", source, driad.ErrNotFound)
	}
	return out, nil
}

// Chain asks each source in turn and returns all their relays in that
// order, without duplicates: the first source's relays are tried first,
// the next ones are the fallback. It fails only if every source fails.
type Chain []RelaySource

// Relays concatenates the members' relays.
func (c Chain) Relays(ctx context.Context, source netip.Addr) ([]Relay, error) {
	var out []Relay
	var errs []error
	seen := map[netip.AddrPort]bool{}
	for _, s := range c {
		rs, err := s.Relays(ctx, source)
		if err != nil {
			errs = append(errs, err)
		}
		for _, r := range rs {
			if !seen[r.Addr] {
				seen[r.Addr] = true
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no relay source gave a relay"))
	}
	return out, errors.Join(errs...)
}

package amtgw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/blockcast/beacon/shared/amt"
)

// ErrRelayName: a relay host name that does not resolve to a usable
// address.
var ErrRelayName = errors.New("relay name does not resolve")

// Named is a relay configured by host name. The name is resolved whenever
// the gateway looks relays up: when a channel of a new source is joined,
// when the answer's cache (Options.ResolveCache) has expired, and at once
// after the relay stopped answering or every address failed. So a relay
// that moves to a new address is found again, as a DRIAD answer's is.
// Each address the name has is a candidate, in the order LookupHost gives.
type Named struct {
	Host string
	// Port the relay listens on [2268].
	Port uint16
	// LookupHost resolves Host; (*driad.Resolver).LookupHost fits, and
	// net.DefaultResolver.LookupNetIP with "ip" bound does too.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
}

func (n Named) String() string { return fmt.Sprintf("%s port %d", n.Host, n.port()) }

func (n Named) port() uint16 {
	if n.Port == 0 {
		return amt.Port
	}
	return n.Port
}

// Relays resolves n.Host; the source does not matter.
func (n Named) Relays(ctx context.Context, _ netip.Addr) ([]Relay, error) {
	if n.Host == "" || n.LookupHost == nil {
		return nil, fmt.Errorf("relay %q: no host name or resolver: %w", n.Host, ErrRelayName)
	}
	addrs, err := n.LookupHost(ctx, n.Host)
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w: %w", n.Host, ErrRelayName, err)
	}
	var out []Relay
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, Relay{Addr: netip.AddrPortFrom(a, n.port())})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("relay %s: no unicast address among %v: %w", n.Host, addrs, ErrRelayName)
	}
	return out, nil
}

package amtgw

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"golang.org/x/net/ipv4"
)

// newReemitter opens a send-only raw socket (IPPROTO_RAW, which implies
// IP_HDRINCL and receives nothing) whose multicast goes out of iface.
func newReemitter(iface string, ttl uint8, qlen, size int, log *slog.Logger) (*reemitter, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("amtgw: re-emission interface %q: %w", iface, err)
	}
	if ifi.Flags&net.FlagMulticast == 0 {
		return nil, fmt.Errorf("amtgw: re-emission interface %s does not do multicast: %w", iface, ErrReemit)
	}
	c, err := net.ListenIP("ip4:255", nil)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("amtgw: re-emission on %s needs root or CAP_NET_RAW (a raw socket): %w", iface, err)
		}
		return nil, fmt.Errorf("amtgw: re-emission socket: %w", err)
	}
	if err := ipv4.NewPacketConn(c).SetMulticastInterface(ifi); err != nil {
		c.Close()
		return nil, fmt.Errorf("amtgw: re-emission on %s: IP_MULTICAST_IF: %w", iface, err)
	}
	return newReemitterOn(iface, c, ttl, qlen, size, log), nil
}

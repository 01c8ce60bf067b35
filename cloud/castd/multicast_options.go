package castd

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/cloud/popularity"
)

// Defaults of the multicast Options (see Options.Multicast).
const (
	DefaultMulticastThreshold = 3
	DefaultMulticastWindow    = 30 * time.Second
	// DefaultMulticastRate is 20 Mbit/s a channel: well under what a
	// router's receive path keeps up with (50 Mbit/s).
	DefaultMulticastRate = 20e6 / 8
	// DefaultMulticastRateTotal is 200 Mbit/s over all channels.
	DefaultMulticastRateTotal = 200e6 / 8
	DefaultDTLSListen         = ":4433"
	// DefaultRepairRate is 2 Mbit/s of early media and repairs a node.
	DefaultRepairRate = 2e6 / 8
)

// multicastDefaults gives the multicast fields their defaults; part of
// ensureDefaults.
func (o *Options) multicastDefaults() {
	if o.MulticastThreshold == 0 {
		o.MulticastThreshold = DefaultMulticastThreshold
	}
	if o.MulticastWindow == 0 {
		o.MulticastWindow = DefaultMulticastWindow
	}
	if o.MulticastRanges == "" {
		o.MulticastRanges = channels.DefaultRanges
	}
	if o.MulticastRate == 0 {
		o.MulticastRate = DefaultMulticastRate
	}
	if o.MulticastRateTotal == 0 {
		o.MulticastRateTotal = DefaultMulticastRateTotal
	}
	if o.DTLSListen == "" {
		o.DTLSListen = DefaultDTLSListen
	}
	if o.RepairRate == 0 {
		o.RepairRate = DefaultRepairRate
	}
}

// checkMulticast validates the multicast fields; part of check. The forms
// of what is set are checked even when Multicast is off, so that a typo
// does not wait for the day multicast is turned on.
func (o *Options) checkMulticast() error {
	if o.MulticastThreshold > popularity.MaxThreshold {
		return fieldError("MulticastThreshold", fmt.Errorf("must be at most %d", popularity.MaxThreshold))
	}
	if o.MulticastWindow < 0 {
		return fieldError("MulticastWindow", errors.New("must not be negative"))
	}
	for _, p := range o.MulticastPaths {
		if _, err := popularity.ParsePattern(p); err != nil {
			return fieldError("MulticastPaths", err)
		}
	}
	if _, err := channels.ParseRanges(o.MulticastRanges); err != nil {
		return fieldError("MulticastRanges", err)
	}
	for _, r := range []struct {
		field string
		v     float64
	}{{"MulticastRate", o.MulticastRate}, {"MulticastRateTotal", o.MulticastRateTotal}, {"RepairRate", o.RepairRate}} {
		if math.IsNaN(r.v) || r.v > channels.MaxRate {
			return fieldError(r.field, fmt.Errorf("must be a number of bytes a second up to %g", float64(channels.MaxRate)))
		}
	}
	var v4, v6 int
	for _, a := range o.MulticastSources {
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() {
			return fieldError("MulticastSources", fmt.Errorf("%v is not a unicast address", a))
		}
		if a.Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return fieldError("MulticastSources", errors.New("must hold at most one IPv4 and one IPv6 address"))
	}
	if _, err := splitUDPAddr(o.DTLSListen, true); err != nil {
		return fieldError("DTLSListen", err)
	}
	if o.DTLSPublic != "" {
		if _, err := splitUDPAddr(o.DTLSPublic, false); err != nil {
			return fieldError("DTLSPublic", err)
		}
	}
	if !o.Multicast {
		return nil
	}
	if o.MulticastIface == "" && len(o.MulticastSources) == 0 {
		return fieldError("MulticastSources", errors.New("is required without MulticastIface (the SSM source address beacons join)"))
	}
	if o.MulticastIface != "" {
		if _, err := net.InterfaceByName(o.MulticastIface); err != nil {
			return fieldError("MulticastIface", fmt.Errorf("%q: %w", o.MulticastIface, err))
		}
	}
	if o.DTLSPublic == "" {
		if host, _ := splitUDPAddr(o.DTLSListen, true); !host.IsValid() || host.IsUnspecified() {
			return fieldError("DTLSPublic", errors.New("is required when DTLSListen has no host (the address beacons reach the DTLS channel at)"))
		}
	}
	return nil
}

// splitUDPAddr checks a host:port UDP address and returns its host when it
// is an IP address (invalid for a name or an empty host). anyPort allows
// port 0 (a listener's "any").
func splitUDPAddr(s string, anyPort bool) (netip.Addr, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (p == 0 && !anyPort) {
		return netip.Addr{}, fmt.Errorf("%q: bad port", s)
	}
	if host == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		if anyPort {
			return netip.Addr{}, fmt.Errorf("%q: the listen host must be an IP address", s)
		}
		return netip.Addr{}, nil // a name beacons resolve
	}
	return a, nil
}

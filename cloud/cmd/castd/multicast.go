package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/blockcast/beacon/cloud/castd"
	"github.com/blockcast/beacon/cloud/channels"
)

// multicastFlags adds the multicast transport's flags to fs; the returned
// function, called after parsing, converts what Options spell differently
// (rates, sources, "0: no cap").
func multicastFlags(fs *flag.FlagSet, o *castd.Options) func() error {
	var (
		paths   listFlag
		sources listFlag
		rate    = "20Mbit"
		total   = "200Mbit"
		repair  = "2Mbit"
	)
	fs.BoolVar(&o.Multicast, "multicast", false, "send popular objects once by multicast (SSM) to beacons that support it")
	fs.IntVar(&o.MulticastThreshold, "multicast-threshold", castd.DefaultMulticastThreshold, "distinct beacons asking for one object within --multicast-window that make it multicast (0: only --multicast-path)")
	fs.DurationVar(&o.MulticastWindow, "multicast-window", castd.DefaultMulticastWindow, "sliding window of --multicast-threshold")
	fs.Var(&paths, "multicast-path", "path pattern always sent by multicast, e.g. '/live/*' or '/updates/*.bin' (repeatable; * matches within a segment, a last /* any depth)")
	fs.StringVar(&o.MulticastRanges, "multicast-range", channels.DefaultRanges, "SSM group ranges channels come from (comma-separated CIDRs)")
	fs.StringVar(&rate, "multicast-rate", rate, "cap on each channel, e.g. 20Mbit, 5MB (0: no cap)")
	fs.StringVar(&total, "multicast-rate-total", total, "cap on all channels together (0: no cap)")
	fs.StringVar(&o.MulticastIface, "multicast-iface", "", "send natively on this interface, from its address (empty: only through the AMT relay)")
	fs.Var(&sources, "multicast-source", "SSM source address of the channels without --multicast-iface (one IPv4 and/or one IPv6; comma-separated or repeated)")
	fs.StringVar(&o.DTLSListen, "dtls-listen", castd.DefaultDTLSListen, "UDP address of the DTLS channel beacons get early media and repairs on")
	fs.StringVar(&o.DTLSPublic, "dtls-public", "", "host:port beacons reach the DTLS channel at (required when --dtls-listen has no host)")
	fs.StringVar(&repair, "repair-rate", repair, "early media and repairs per beacon over DTLS, e.g. 2Mbit (0: no cap)")
	return func() error {
		o.MulticastPaths = paths
		if o.MulticastThreshold == 0 {
			o.MulticastThreshold = -1 // Options: zero is the default, negative is off
		}
		for _, r := range []struct {
			flag, v string
			dst     *float64
		}{{"multicast-rate", rate, &o.MulticastRate}, {"multicast-rate-total", total, &o.MulticastRateTotal}, {"repair-rate", repair, &o.RepairRate}} {
			v, err := channels.ParseRate(r.v)
			if err != nil {
				return fmt.Errorf("--%s: %w", r.flag, err)
			}
			if v == 0 {
				v = -1
			}
			*r.dst = v
		}
		for _, s := range sources {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("--multicast-source: %w", err)
			}
			o.MulticastSources = append(o.MulticastSources, a)
		}
		return nil
	}
}

// listFlag is a repeatable flag; each use may also hold a comma-separated
// list.
type listFlag []string

func (l *listFlag) String() string { return strconv.Quote(strings.Join(*l, ",")) }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

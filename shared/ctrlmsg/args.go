package ctrlmsg

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/receipt"
)

// The grammar of each op's Arg lives here, beside the ops, so that castd
// refuses a bad argument before it signs and sends a command and the beacon
// applies the very same rules when it runs one.

// ErrBadArg is wrapped by every error of CheckArg and the Parse functions
// below.
var ErrBadArg = errors.New("bad command argument")

// ErrUnknownOp is CheckArg's error for an op that is not an Op constant.
var ErrUnknownOp = errors.New("unknown op")

// CheckArg checks arg against op's grammar: a content path for purge (or a
// prefix ending in '*') and prefetch, a ChannelSpec for amt-join and
// amt-leave; reregister takes no argument and ignores one.
func CheckArg(op, arg string) error {
	var err error
	switch op {
	case OpPurge:
		_, _, err = ParsePurgeArg(arg)
	case OpPrefetch:
		_, err = ParsePrefetchArg(arg)
	case OpAMTJoin, OpAMTLeave:
		_, err = ParseChannelSpec(arg)
	case OpReregister:
	case OpReceiptAck:
		if _, err = receipt.ParseAck(arg); err != nil {
			err = fmt.Errorf("%w: %w", ErrBadArg, err)
		}
	case OpReceiptRecords:
		if _, _, err = receipt.ParseAudit(arg); err != nil {
			err = fmt.Errorf("%w: %w", ErrBadArg, err)
		}
	default:
		return fmt.Errorf("%w %q", ErrUnknownOp, op)
	}
	return err
}

// ParsePurgeArg parses a purge argument: a content path, or a prefix ending
// in '*' (prefix true, the '*' dropped). "/*" purges everything.
func ParsePurgeArg(arg string) (key string, prefix bool, err error) {
	if p, ok := strings.CutSuffix(arg, "*"); ok {
		// The prefix is checked as a path that continues it would be.
		if _, err := protocol.CleanContentPath(p + "x"); err != nil && p != "/" {
			return "", false, fmt.Errorf("%w: purge prefix: %w", ErrBadArg, err)
		}
		return p, true, nil
	}
	key, err = protocol.CleanContentPath(arg)
	if err != nil {
		return "", false, fmt.Errorf("%w: purge: %w", ErrBadArg, err)
	}
	return key, false, nil
}

// ParsePrefetchArg parses a prefetch argument: a content path.
func ParsePrefetchArg(arg string) (string, error) {
	key, err := protocol.CleanContentPath(arg)
	if err != nil {
		return "", fmt.Errorf("%w: prefetch: %w", ErrBadArg, err)
	}
	return key, nil
}

// ChannelSpec is one AMT join: "SOURCE@GROUP", optionally followed by
// " relay=ADDR[:PORT]" and " reemit" (the form of the beacon's --amt-join
// entries, its local AMT API and the amt-join and amt-leave commands).
type ChannelSpec struct {
	Channel amt.Channel
	// AMTRelay is the AMT relay to tunnel through; zero: the gateway
	// selects one.
	AMTRelay netip.AddrPort
	Reemit   bool
}

// ParseChannelSpec parses a ChannelSpec. The channel is source-specific:
// a unicast source and an SSM group (232/8, ff3x::/32) of the same family.
func ParseChannelSpec(s string) (ChannelSpec, error) {
	var spec ChannelSpec
	f := strings.Fields(s)
	if len(f) == 0 {
		return spec, fmt.Errorf("%w: empty channel: want SOURCE@GROUP", ErrBadArg)
	}
	src, grp, ok := strings.Cut(f[0], "@")
	if !ok {
		return spec, fmt.Errorf("%w: channel %q: want SOURCE@GROUP", ErrBadArg, f[0])
	}
	var err error
	if spec.Channel.Source, err = netip.ParseAddr(src); err != nil {
		return spec, fmt.Errorf("%w: channel %q: source: %w", ErrBadArg, f[0], err)
	}
	if spec.Channel.Group, err = netip.ParseAddr(grp); err != nil {
		return spec, fmt.Errorf("%w: channel %q: group: %w", ErrBadArg, f[0], err)
	}
	s4, g := spec.Channel.Source, spec.Channel.Group
	switch {
	case !amt.IsSSM(g):
		return spec, fmt.Errorf("%w: channel %q: %s is not a source-specific multicast group (232/8, ff3x::/32)", ErrBadArg, f[0], g)
	case s4.IsUnspecified() || s4.IsMulticast():
		return spec, fmt.Errorf("%w: channel %q: source %s is not a unicast address", ErrBadArg, f[0], s4)
	case s4.Is4() != g.Is4():
		return spec, fmt.Errorf("%w: channel %q: source and group of different families", ErrBadArg, f[0])
	case s4.Zone() != "" || g.Zone() != "":
		return spec, fmt.Errorf("%w: channel %q: addresses with zones", ErrBadArg, f[0])
	}
	for _, opt := range f[1:] {
		switch {
		case opt == "reemit":
			spec.Reemit = true
		case strings.HasPrefix(opt, "relay="):
			if spec.AMTRelay, err = parseJoinAMTRelay(strings.TrimPrefix(opt, "relay=")); err != nil {
				return spec, err
			}
		default:
			return spec, fmt.Errorf("%w: channel %q: unknown option %q (relay=ADDR[:PORT], reemit)", ErrBadArg, f[0], opt)
		}
	}
	return spec, nil
}

// parseJoinAMTRelay takes "ADDR" or "ADDR:PORT" ("[v6]:PORT"), port 2268
// by default: the AMT relay a join names (a castd offer, the local API),
// which is used as given.
func parseJoinAMTRelay(s string) (netip.AddrPort, error) {
	t, err := ParseAMTRelayTarget(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if t.Host != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: relay %q: want ADDR or ADDR:PORT here (an AMT relay host name goes in --amt-relay)", ErrBadArg, s)
	}
	return t.Addr, nil
}

// AMTRelayTarget is a configured AMT relay: an address, or a host name that
// the gateway resolves when a channel is joined and again when the relay
// stops answering.
type AMTRelayTarget struct {
	Addr netip.AddrPort // when given as an address
	Host string         // else the name, resolved later
	Port uint16
}

// ParseAMTRelayTarget takes HOST, ADDR, HOST:PORT, ADDR:PORT or
// [ADDR]:PORT, port 2268 by default.
func ParseAMTRelayTarget(s string) (AMTRelayTarget, error) {
	bad := func(why string) (AMTRelayTarget, error) {
		return AMTRelayTarget{}, fmt.Errorf("%w: relay %q: %s (want HOST, ADDR, HOST:PORT or [ADDR]:PORT)", ErrBadArg, s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if a, err := netip.ParseAddr(s); err == nil { // v4, or v6 without brackets
		return amtRelayAddr(s, a, amt.Port)
	}
	host, port := s, uint16(amt.Port)
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("no closing bracket")
		}
		host = s[1:end]
		switch rest := s[end+1:]; {
		case rest == "":
		case strings.HasPrefix(rest, ":"):
			p, err := parsePort(rest[1:])
			if err != nil {
				return bad(err.Error())
			}
			port = p
		default:
			return bad("junk after the bracket")
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Is4In6() {
			return bad("brackets hold an IPv6 address")
		}
		return amtRelayAddr(s, a, port)
	}
	if h, p, ok := strings.Cut(s, ":"); ok {
		pp, err := parsePort(p)
		if err != nil {
			return bad(err.Error())
		}
		host, port = h, pp
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return amtRelayAddr(s, a, port)
	}
	if err := CheckHostName(host); err != nil {
		return bad(err.Error())
	}
	return AMTRelayTarget{Host: host, Port: port}, nil
}

func amtRelayAddr(s string, a netip.Addr, port uint16) (AMTRelayTarget, error) {
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return AMTRelayTarget{}, fmt.Errorf("%w: relay %q: %v is not a unicast address", ErrBadArg, s, a)
	}
	return AMTRelayTarget{Addr: netip.AddrPortFrom(a, port), Port: port}, nil
}

func parsePort(p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	return uint16(n), nil
}

// CheckHostName accepts a DNS host name (RFC 1123: letters, digits and
// hyphens, labels of 1 to 63, 253 in all, an optional final dot) that
// cannot be mistaken for an address.
func CheckHostName(h string) error {
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return errors.New("not a host name")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a host name", h)
		}
		for _, c := range []byte(l) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("%q is not a host name", h)
			}
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return fmt.Errorf("%q is neither an address nor a host name", h)
	}
	return nil
}

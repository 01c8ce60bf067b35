package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/blockcast/beacon/firmware/amtgw"
	"github.com/blockcast/beacon/firmware/driad"
	"github.com/blockcast/beacon/shared/amt"
	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/protocol"
)

// ChannelSpec is one AMT join: "SOURCE@GROUP", optionally followed by
// " relay=ADDR[:PORT]" and " reemit" (the form of --amt-join entries, the
// local API and castd's amt-join command).
type ChannelSpec struct {
	Channel amtgw.Channel
	Relay   netip.AddrPort // zero: the gateway selects one
	Reemit  bool
}

// ParseChannelSpec parses a ChannelSpec.
func ParseChannelSpec(s string) (ChannelSpec, error) {
	var spec ChannelSpec
	f := strings.Fields(s)
	if len(f) == 0 {
		return spec, errors.New("empty channel: want SOURCE@GROUP")
	}
	src, grp, ok := strings.Cut(f[0], "@")
	if !ok {
		return spec, fmt.Errorf("channel %q: want SOURCE@GROUP", f[0])
	}
	var err error
	if spec.Channel.Source, err = netip.ParseAddr(src); err != nil {
		return spec, fmt.Errorf("channel %q: source: %w", f[0], err)
	}
	if spec.Channel.Group, err = netip.ParseAddr(grp); err != nil {
		return spec, fmt.Errorf("channel %q: group: %w", f[0], err)
	}
	if !amt.IsSSM(spec.Channel.Group) {
		return spec, fmt.Errorf("channel %q: %s is not a source-specific multicast group (232/8, ff3x::/32)", f[0], spec.Channel.Group)
	}
	for _, opt := range f[1:] {
		switch {
		case opt == "reemit":
			spec.Reemit = true
		case strings.HasPrefix(opt, "relay="):
			if spec.Relay, err = parseRelay(strings.TrimPrefix(opt, "relay=")); err != nil {
				return spec, err
			}
		default:
			return spec, fmt.Errorf("channel %q: unknown option %q (relay=ADDR[:PORT], reemit)", f[0], opt)
		}
	}
	return spec, nil
}

// parseRelay takes "ADDR" or "ADDR:PORT" ("[v6]:PORT"), port 2268 by
// default: the relay a join names (a castd offer, the local API), which is
// used as given.
func parseRelay(s string) (netip.AddrPort, error) {
	t, err := parseRelayTarget(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if t.host != "" {
		return netip.AddrPort{}, fmt.Errorf("relay %q: want ADDR or ADDR:PORT here (a relay host name goes in --amt-relay)", s)
	}
	return t.addr, nil
}

// relayTarget is a configured relay: an address, or a host name that the
// gateway resolves when a channel is joined and again when the relay stops
// answering.
type relayTarget struct {
	addr netip.AddrPort // when given as an address
	host string         // else the name, resolved later
	port uint16
}

// parseRelayTarget takes HOST, ADDR, HOST:PORT, ADDR:PORT or [ADDR]:PORT,
// port 2268 by default.
func parseRelayTarget(s string) (relayTarget, error) {
	bad := func(why string) (relayTarget, error) {
		return relayTarget{}, fmt.Errorf("relay %q: %s (want HOST, ADDR, HOST:PORT or [ADDR]:PORT)", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	if a, err := netip.ParseAddr(s); err == nil { // v4, or v6 without brackets
		return relayAddr(s, a, amt.Port)
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
		return relayAddr(s, a, port)
	}
	if h, p, ok := strings.Cut(s, ":"); ok {
		pp, err := parsePort(p)
		if err != nil {
			return bad(err.Error())
		}
		host, port = h, pp
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return relayAddr(s, a, port)
	}
	if err := checkHostName(host); err != nil {
		return bad(err.Error())
	}
	return relayTarget{host: host, port: port}, nil
}

func relayAddr(s string, a netip.Addr, port uint16) (relayTarget, error) {
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return relayTarget{}, fmt.Errorf("relay %q: %v is not a unicast address", s, a)
	}
	return relayTarget{addr: netip.AddrPortFrom(a, port), port: port}, nil
}

func parsePort(p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	return uint16(n), nil
}

// checkHostName accepts a DNS host name (RFC 1123: letters, digits and
// hyphens, labels of 1 to 63, 253 in all, an optional final dot) that
// cannot be mistaken for an address.
func checkHostName(h string) error {
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

// newGateway builds the AMT gateway from the options. A channel's relay is
// the one its join names (a castd offer); else the configured --amt-relay;
// else DRIAD (RFC 8777) when no relay is configured; then, only if asked
// for, the discovery anycast address. Nothing is looked up or sent until a
// channel is joined.
func (b *Beacon) newGateway() (*amtgw.Gateway, error) {
	var chain amtgw.Chain
	var target relayTarget
	if b.opts.AMTRelay != "" {
		var err error
		if target, err = parseRelayTarget(b.opts.AMTRelay); err != nil {
			return nil, fmt.Errorf("--amt-relay: %w", err)
		}
	}
	switch {
	case target.addr.IsValid():
		chain = append(chain, amtgw.Static{{Addr: target.addr}})
	case target.host != "" || b.opts.AMTDRIAD:
		// A relay name is resolved as DRIAD resolves the names in AMTRELAY
		// records: by the same resolver, at join time, again on failure.
		r, err := driad.New(driad.Config{Logger: b.log.With("component", "driad")})
		if err != nil {
			return nil, fmt.Errorf("resolver for AMT relays: %w", err)
		}
		if target.host != "" {
			chain = append(chain, amtgw.Named{Host: target.host, Port: target.port, LookupHost: r.LookupHost})
		} else {
			chain = append(chain, amtgw.DRIAD{Resolver: r})
		}
	}
	if b.opts.AMTAnycast {
		chain = append(chain, amtgw.Anycast)
	}
	return amtgw.New(amtgw.Options{
		Relays:          chain,
		Logger:          b.log.With("component", "amt-gateway"),
		ReemitInterface: b.opts.LANInterface,
		ReemitTTL:       b.opts.AMTReemitTTL,
	})
}

// joinConfigured joins the --amt-join channels.
func (b *Beacon) joinConfigured() error {
	for _, s := range b.opts.AMTJoins {
		spec, err := ParseChannelSpec(s)
		if err != nil {
			return fmt.Errorf("--amt-join: %w", err)
		}
		if spec.Reemit && b.opts.LANInterface == "" {
			return fmt.Errorf("--amt-join %q: reemit needs --lan-iface", s)
		}
		if err := b.gw.Join(spec.Channel, spec.Relay, spec.Reemit); err != nil {
			return fmt.Errorf("--amt-join %q: %w", s, err)
		}
	}
	return nil
}

// amtHealth is the tunnel part of a health report.
func (b *Beacon) amtHealth() *ctrlmsg.AMTState {
	st := b.gw.State()
	if len(st.Channels) == 0 && len(st.Tunnels) == 0 {
		return nil
	}
	out := &ctrlmsg.AMTState{State: "idle"}
	for _, t := range st.Tunnels {
		out.State = string(t.Phase)
		out.Relay = t.Relay.String()
		if t.Phase == amtgw.PhaseJoined {
			break
		}
	}
	for _, c := range st.Channels {
		if len(out.Channels) == 16 {
			break
		}
		out.Channels = append(out.Channels, c.Source.String()+"@"+c.Group.String()+" "+c.Status)
	}
	return out
}

// runAMTCommand runs castd's amt-join / amt-leave.
func (b *Beacon) runAMTCommand(op, arg string) (string, error) {
	spec, err := ParseChannelSpec(arg)
	if err != nil {
		return "", err
	}
	if op == ctrlmsg.OpAMTLeave {
		if err := b.gw.Leave(spec.Channel); err != nil {
			return "", err
		}
		return "left " + arg, nil
	}
	if spec.Reemit && b.opts.LANInterface == "" {
		return "", errors.New("reemit needs the beacon to run with --lan-iface")
	}
	if err := b.gw.Join(spec.Channel, spec.Relay, spec.Reemit); err != nil {
		return "", err
	}
	return "joined " + arg, nil
}

// handleAMT is the local API: GET /v1/amt (state), POST /v1/amt/join and
// /v1/amt/leave with {"channel": "SOURCE@GROUP [relay=...] [reemit]"}.
func (b *Beacon) handleAMT(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	op := strings.TrimPrefix(r.URL.Path, protocol.PathAMT)
	if op == "" || op == "/" {
		if r.Method != http.MethodGet {
			http.Error(w, `{"error":"GET the state; POST to /v1/amt/join or /v1/amt/leave"}`, http.StatusMethodNotAllowed)
			return
		}
		json.NewEncoder(w).Encode(b.gw.State())
		return
	}
	if r.Method != http.MethodPost || (op != protocol.AMTJoin && op != protocol.AMTLeave) {
		http.Error(w, `{"error":"POST to /v1/amt/join or /v1/amt/leave"}`, http.StatusNotFound)
		return
	}
	var req struct {
		Channel string `json:"channel"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, `{"error":`+strconv.Quote("bad JSON: "+err.Error())+`}`, http.StatusBadRequest)
		return
	}
	cmd := ctrlmsg.OpAMTJoin
	if op == "/leave" {
		cmd = ctrlmsg.OpAMTLeave
	}
	detail, err := b.runAMTCommand(cmd, req.Channel)
	if err != nil {
		b.log.Info("local AMT request refused", "op", op, "channel", req.Channel, "err", err)
		status := http.StatusBadRequest
		if errors.Is(err, amtgw.ErrNotJoined) {
			status = http.StatusNotFound
		}
		http.Error(w, `{"error":`+strconv.Quote(err.Error())+`}`, status)
		return
	}
	b.log.Info("local AMT request", "op", op, "channel", req.Channel)
	json.NewEncoder(w).Encode(map[string]string{"result": detail})
}

// runGateway runs the gateway until ctx ends.
func (b *Beacon) runGateway(ctx context.Context) error {
	if err := b.joinConfigured(); err != nil {
		return err
	}
	return b.gw.Run(ctx)
}

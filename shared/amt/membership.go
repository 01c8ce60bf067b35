package amt

import (
	"fmt"
	"net/netip"
)

// Link-local destinations of IGMPv3 and MLDv2 messages.
var (
	allSystems4   = netip.AddrFrom4([4]byte{224, 0, 0, 1})  // queries
	igmpv3Routers = netip.AddrFrom4([4]byte{224, 0, 0, 22}) // IGMPv3 reports
	allNodes6     = netip.MustParseAddr("ff02::1")          // queries
	mldv2Routers  = netip.MustParseAddr("ff02::16")         // MLDv2 reports
)

// igmpTOS is IP precedence Internetwork Control, which RFC 3376 §4 asks of
// every IGMPv3 message.
const igmpTOS = 0xc0

// Envelope is what the IP header of an encapsulated query or report says.
type Envelope struct {
	Src, Dst netip.Addr
	HopLimit uint8 // TTL for IPv4
	// RouterAlert: the IPv4 Router Alert option, or the IPv6 Hop-by-Hop
	// Router Alert with value 0 (MLD).
	RouterAlert bool
}

// QueryPacket is a decoded encapsulated general query.
type QueryPacket struct {
	Envelope
	Query Query
}

// ReportPacket is a decoded encapsulated membership report.
type ReportPacket struct {
	Envelope
	Records []GroupRecord
}

// AppendQueryPacket appends the whole IP packet a relay encapsulates in a
// Membership Query: for an IPv4 src an IPv4 header (TTL 1, TOS 0xc0, Router
// Alert, to 224.0.0.1) and an IGMPv3 query, 36 bytes for a general query;
// for an IPv6 src an IPv6 header (hop limit 1, Hop-by-Hop Router Alert, to
// ff02::1) and an MLDv2 query. q.Group must be of src's family or invalid.
func AppendQueryPacket(dst []byte, src netip.Addr, q Query) ([]byte, error) {
	start := len(dst)
	if src.Unmap().Is4() {
		body, err := AppendIGMPQuery(nil, q)
		if err != nil {
			return dst, err
		}
		h := IPv4Header{TOS: igmpTOS, TTL: 1, Protocol: ProtoIGMP, Src: src, Dst: allSystems4, RouterAlert: true}
		if dst, err = AppendIPv4(dst, h, len(body)); err != nil {
			return dst[:start], err
		}
		return append(dst, body...), nil
	}
	return appendMLDPacket(dst, src, allNodes6, func(b []byte) ([]byte, error) {
		return AppendMLDQuery(b, src, allNodes6, q)
	})
}

// AppendReportPacket appends the whole IP packet a gateway encapsulates in a
// Membership Update: for an IPv4 src an IPv4 header (TTL 1, TOS 0xc0,
// Router Alert, to 224.0.0.22) and an IGMPv3 report; for an IPv6 src an
// IPv6 header (hop limit 1, Hop-by-Hop Router Alert, to ff02::16) and an
// MLDv2 report. src may be 0.0.0.0 or :: when the gateway has no address of
// its own to use, as RFC 3376 and RFC 3810 allow for reports.
func AppendReportPacket(dst []byte, src netip.Addr, recs []GroupRecord) ([]byte, error) {
	start := len(dst)
	if src.Unmap().Is4() {
		body, err := AppendIGMPReport(nil, recs)
		if err != nil {
			return dst, err
		}
		h := IPv4Header{TOS: igmpTOS, TTL: 1, Protocol: ProtoIGMP, Src: src, Dst: igmpv3Routers, RouterAlert: true}
		if dst, err = AppendIPv4(dst, h, len(body)); err != nil {
			return dst[:start], err
		}
		return append(dst, body...), nil
	}
	return appendMLDPacket(dst, src, mldv2Routers, func(b []byte) ([]byte, error) {
		return AppendMLDReport(b, src, mldv2Routers, recs)
	})
}

func appendMLDPacket(dst []byte, src, to netip.Addr, body func([]byte) ([]byte, error)) ([]byte, error) {
	msg, err := body(nil)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	h := IPv6Header{NextHeader: ProtoICMPv6, HopLimit: 1, Src: src, Dst: to, RouterAlert: true}
	if dst, err = AppendIPv6(dst, h, len(msg)); err != nil {
		return dst[:start], err
	}
	return append(dst, msg...), nil
}

// ParseQueryPacket decodes an encapsulated general query with the default
// (lenient) options.
func ParseQueryPacket(b []byte) (QueryPacket, error) { return Options{}.ParseQueryPacket(b) }

// ParseQueryPacket decodes the IP packet of a Membership Query: IPv4 with
// IGMPv3 or IPv6 with MLDv2, by the version nibble. Strict also requires the
// envelope AppendQueryPacket writes: hop limit 1, Router Alert, and a
// destination of 224.0.0.1 / ff02::1 (or the queried group).
func (o Options) ParseQueryPacket(b []byte) (QueryPacket, error) {
	var p QueryPacket
	env, payload, err := parseEnvelope(b, ProtoIGMP)
	if err != nil {
		return p, err
	}
	p.Envelope = env
	if env.Src.Is4() {
		p.Query, err = ParseIGMPQuery(payload)
	} else {
		p.Query, err = ParseMLDQuery(payload, env.Src, env.Dst)
	}
	if err != nil {
		return QueryPacket{}, err
	}
	if o.Strict {
		want := allSystems4
		if env.Src.Is6() {
			want = allNodes6
		}
		if !p.Query.Group.IsUnspecified() {
			want = p.Query.Group
		}
		if err := env.check(want); err != nil {
			return QueryPacket{}, fmt.Errorf("query: %w", err)
		}
	}
	return p, nil
}

// ParseReportPacket decodes an encapsulated report with the default
// (lenient) options.
func ParseReportPacket(b []byte) (ReportPacket, error) { return Options{}.ParseReportPacket(b) }

// ParseReportPacket decodes the IP packet of a Membership Update: IPv4 with
// an IGMPv3 report or IPv6 with an MLDv2 report. By default it accepts what
// deployed gateways send (to the group address, from 0.0.0.0 or the source,
// without Router Alert, any TTL); Strict requires TTL/hop limit 1, Router
// Alert and 224.0.0.22 / ff02::16, as RFC 3376 §4 and RFC 3810 §5
// prescribe.
func (o Options) ParseReportPacket(b []byte) (ReportPacket, error) {
	var p ReportPacket
	env, payload, err := parseEnvelope(b, ProtoIGMP)
	if err != nil {
		return p, err
	}
	p.Envelope = env
	if env.Src.Is4() {
		p.Records, err = ParseIGMPReport(payload)
	} else {
		p.Records, err = ParseMLDReport(payload, env.Src, env.Dst)
	}
	if err != nil {
		return ReportPacket{}, err
	}
	if o.Strict {
		want := igmpv3Routers
		if env.Src.Is6() {
			want = mldv2Routers
		}
		if err := env.check(want); err != nil {
			return ReportPacket{}, fmt.Errorf("report: %w", err)
		}
	}
	return p, nil
}

// parseEnvelope reads the IP header of an encapsulated IGMP (IPv4) or
// ICMPv6 (IPv6) message.
func parseEnvelope(b []byte, proto4 uint8) (Envelope, []byte, error) {
	if len(b) == 0 {
		return Envelope{}, nil, fmt.Errorf("empty IP packet: %w", ErrShort)
	}
	switch b[0] >> 4 {
	case 4:
		h, payload, err := ParseIPv4(b)
		if err != nil {
			return Envelope{}, nil, err
		}
		if h.Protocol != proto4 {
			return Envelope{}, nil, fmt.Errorf("ipv4: protocol %d, want IGMP: %w", h.Protocol, ErrProtocol)
		}
		return Envelope{Src: h.Src, Dst: h.Dst, HopLimit: h.TTL, RouterAlert: h.RouterAlert}, payload, nil
	case 6:
		h, payload, err := ParseIPv6(b)
		if err != nil {
			return Envelope{}, nil, err
		}
		if h.NextHeader != ProtoICMPv6 {
			return Envelope{}, nil, fmt.Errorf("ipv6: next header %d, want ICMPv6: %w", h.NextHeader, ErrProtocol)
		}
		return Envelope{Src: h.Src, Dst: h.Dst, HopLimit: h.HopLimit, RouterAlert: h.RouterAlert}, payload, nil
	}
	return Envelope{}, nil, fmt.Errorf("IP version %d: %w", b[0]>>4, ErrVersion)
}

// check enforces the envelope rules of RFC 3376 §4 and RFC 3810 §5.
func (e Envelope) check(dst netip.Addr) error {
	switch {
	case e.HopLimit != 1:
		return fmt.Errorf("hop limit %d, want 1: %w", e.HopLimit, ErrProtocol)
	case !e.RouterAlert:
		return fmt.Errorf("no router alert: %w", ErrProtocol)
	case e.Dst != dst:
		return fmt.Errorf("destination %v, want %v: %w", e.Dst, dst, ErrProtocol)
	}
	return nil
}

// Channel is a source-specific multicast channel (S,G).
type Channel struct {
	Source, Group netip.Addr
}

func (c Channel) String() string { return fmt.Sprintf("(%v,%v)", c.Source, c.Group) }

// ChangeRecords returns the state-change records for joining and leaving
// channels in INCLUDE mode (RFC 3376 §5.1, RFC 3810 §6.1: a change from
// INCLUDE(A) to INCLUDE(B) sends ALLOW(B-A) and BLOCK(A-B)): one
// ALLOW_NEW_SOURCES record per group joined, listing the sources joined, and
// one BLOCK_OLD_SOURCES record per group left. Groups and sources keep the
// order of first appearance; duplicates are dropped. join and leave should
// be disjoint.
func ChangeRecords(join, leave []Channel) []GroupRecord {
	recs := groupChannels(nil, AllowNewSources, join)
	return groupChannels(recs, BlockOldSources, leave)
}

// CurrentStateRecords returns the current-state records a gateway sends in
// answer to a general query: one MODE_IS_INCLUDE record per group, listing
// the joined sources.
func CurrentStateRecords(joined []Channel) []GroupRecord {
	return groupChannels(nil, ModeIsInclude, joined)
}

func groupChannels(recs []GroupRecord, t RecordType, chans []Channel) []GroupRecord {
	first := len(recs)
next:
	for _, c := range chans {
		for i := first; i < len(recs); i++ {
			if recs[i].Group != c.Group {
				continue
			}
			for _, s := range recs[i].Sources {
				if s == c.Source {
					continue next
				}
			}
			recs[i].Sources = append(recs[i].Sources, c.Source)
			continue next
		}
		recs = append(recs, GroupRecord{Type: t, Group: c.Group, Sources: []netip.Addr{c.Source}})
	}
	return recs
}

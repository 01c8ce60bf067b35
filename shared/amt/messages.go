package amt

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Message is one AMT message. AppendTo appends its wire form to dst and
// refuses values that cannot be encoded faithfully.
type Message interface {
	Type() Type
	AppendTo(dst []byte) ([]byte, error)
}

// Wire sizes (RFC 7450 §5.1.1–§5.1.7).
const (
	discoveryLen        = 8  // V/Type, 3 reserved, nonce
	advertisementLen4   = 12 // ... + IPv4 relay address
	advertisementLen6   = 24 // ... + IPv6 relay address
	requestLen          = 8  // V/Type, reserved+P, 2 reserved, nonce
	macNonceHeaderLen   = 12 // V/Type, flags/reserved, MAC (6), nonce (4)
	gatewayFieldsLen    = 18 // gateway port (2) + gateway IP (16)
	teardownLen         = macNonceHeaderLen + gatewayFieldsLen
	requestFlagP        = 0x01 // lowest bit of the second byte
	queryFlagG          = 0x01 // lowest bit of the second byte
	queryFlagL          = 0x02 // the bit above G
	requestReservedMask = 0xfe
	queryReservedMask   = 0xfc
)

// RelayDiscovery (type 1) solicits a Relay Advertisement. Gateway → relay.
type RelayDiscovery struct {
	Nonce uint32 // discovery nonce, random and non-zero
}

// RelayAdvertisement (type 2) answers a Relay Discovery with the address
// the gateway should use. Relay → gateway. The message length tells an IPv4
// relay address from an IPv6 one.
type RelayAdvertisement struct {
	Nonce uint32 // the discovery nonce, echoed
	Relay netip.Addr
}

// Request (type 3) asks the relay for a Membership Query. Gateway → relay.
type Request struct {
	Nonce uint32 // request nonce: new per cycle, the same on retransmission
	// IPv6 is the P flag: false asks for an IPv4/IGMPv3 general query,
	// true for an IPv6/MLDv2 one.
	IPv6 bool
}

// MembershipQuery (type 4) carries a general query and the response MAC the
// gateway must echo. Relay → gateway.
type MembershipQuery struct {
	// Limit is the L flag: the relay takes no updates from new gateways.
	Limit bool
	MAC   [6]byte // response MAC
	Nonce uint32  // the request nonce, echoed
	// Query is the encapsulated general query, a whole IP packet (IPv4 with
	// IGMPv3 or IPv6 with MLDv2); see AppendQueryPacket and ParseQueryPacket.
	Query []byte
	// Gateway, when valid, sets the G flag and appends the gateway's
	// address and port as the relay saw them. An IPv4 address travels in
	// IPv4-compatible form. Keep it opt-in: some gateways expect no G tail.
	Gateway netip.AddrPort
}

// MembershipUpdate (type 5) carries the gateway's report. Gateway → relay.
type MembershipUpdate struct {
	MAC   [6]byte // the response MAC of the Query, echoed
	Nonce uint32  // the request nonce
	// Report is the encapsulated membership report, a whole IP packet
	// (IPv4 with IGMPv3 or IPv6 with MLDv2); see AppendReportPacket.
	Report []byte
}

// MulticastData (type 6) carries one multicast IP datagram. Relay → gateway.
// The hot paths are AppendData and ParseDataHeader.
type MulticastData struct {
	Packet []byte // the whole inner IP datagram
}

// Teardown (type 7) ends the tunnel state the relay holds for the gateway
// address of an earlier Query with the G flag. Gateway → relay.
type Teardown struct {
	MAC     [6]byte // response MAC of that Query
	Nonce   uint32  // its request nonce
	Gateway netip.AddrPort
}

// Type methods implement Message.

func (RelayDiscovery) Type() Type     { return TypeRelayDiscovery }
func (RelayAdvertisement) Type() Type { return TypeRelayAdvertisement }
func (Request) Type() Type            { return TypeRequest }
func (MembershipQuery) Type() Type    { return TypeMembershipQuery }
func (MembershipUpdate) Type() Type   { return TypeMembershipUpdate }
func (MulticastData) Type() Type      { return TypeMulticastData }
func (Teardown) Type() Type           { return TypeTeardown }

// AppendTo appends the 8-byte Relay Discovery.
func (m RelayDiscovery) AppendTo(dst []byte) ([]byte, error) {
	dst = append(dst, byte(TypeRelayDiscovery), 0, 0, 0)
	return binary.BigEndian.AppendUint32(dst, m.Nonce), nil
}

// AppendTo appends the Relay Advertisement: 12 bytes for an IPv4 relay, 24
// for IPv6. An IPv4-mapped IPv6 address is sent as IPv4.
func (m RelayAdvertisement) AppendTo(dst []byte) ([]byte, error) {
	relay := m.Relay.Unmap()
	if !usableRelay(relay) {
		return dst, fmt.Errorf("amt: relay advertisement: relay address %v: %w", m.Relay, ErrAddress)
	}
	dst = append(dst, byte(TypeRelayAdvertisement), 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, m.Nonce)
	if relay.Is4() {
		a := relay.As4()
		return append(dst, a[:]...), nil
	}
	a := relay.As16()
	return append(dst, a[:]...), nil
}

// usableRelay reports whether a relay address can be a unicast destination.
func usableRelay(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast()
}

// AppendTo appends the 8-byte Request.
func (m Request) AppendTo(dst []byte) ([]byte, error) {
	var p byte
	if m.IPv6 {
		p = requestFlagP
	}
	dst = append(dst, byte(TypeRequest), p, 0, 0)
	return binary.BigEndian.AppendUint32(dst, m.Nonce), nil
}

// AppendTo appends the Membership Query. Query must be one whole IP packet.
func (m MembershipQuery) AppendTo(dst []byte) ([]byte, error) {
	if err := ipPacketLen(m.Query); err != nil {
		return dst, fmt.Errorf("amt: membership query: %w", err)
	}
	var flags byte
	if m.Limit {
		flags |= queryFlagL
	}
	if m.Gateway.IsValid() {
		flags |= queryFlagG
	}
	dst = append(dst, byte(TypeMembershipQuery), flags)
	dst = append(dst, m.MAC[:]...)
	dst = binary.BigEndian.AppendUint32(dst, m.Nonce)
	dst = append(dst, m.Query...)
	if m.Gateway.IsValid() {
		dst = appendGateway(dst, m.Gateway)
	}
	return dst, nil
}

// AppendTo appends the Membership Update. Report must be one whole IP packet.
func (m MembershipUpdate) AppendTo(dst []byte) ([]byte, error) {
	if err := ipPacketLen(m.Report); err != nil {
		return dst, fmt.Errorf("amt: membership update: %w", err)
	}
	dst = append(dst, byte(TypeMembershipUpdate), 0)
	dst = append(dst, m.MAC[:]...)
	dst = binary.BigEndian.AppendUint32(dst, m.Nonce)
	return append(dst, m.Report...), nil
}

// AppendTo appends the Multicast Data message after checking that Packet is
// one whole IP packet. AppendData is the unchecked fast path.
func (m MulticastData) AppendTo(dst []byte) ([]byte, error) {
	if err := ipPacketLen(m.Packet); err != nil {
		return dst, fmt.Errorf("amt: multicast data: %w", err)
	}
	return AppendData(dst, m.Packet), nil
}

// AppendTo appends the 30-byte Teardown.
func (m Teardown) AppendTo(dst []byte) ([]byte, error) {
	if !m.Gateway.IsValid() {
		return dst, fmt.Errorf("amt: teardown: no gateway address: %w", ErrAddress)
	}
	dst = append(dst, byte(TypeTeardown), 0)
	dst = append(dst, m.MAC[:]...)
	dst = binary.BigEndian.AppendUint32(dst, m.Nonce)
	return appendGateway(dst, m.Gateway), nil
}

// appendGateway appends the gateway port and the 16-byte gateway address,
// an IPv4 address as IPv4-compatible IPv6 (96 zero bits, then the 4 bytes;
// RFC 7450 §5.1.4, §5.1.7).
func appendGateway(dst []byte, ap netip.AddrPort) []byte {
	dst = binary.BigEndian.AppendUint16(dst, ap.Port())
	var a [16]byte
	if addr := ap.Addr().Unmap(); addr.Is4() {
		v4 := addr.As4()
		copy(a[12:], v4[:])
	} else {
		a = addr.As16()
	}
	return append(dst, a[:]...)
}

// gatewayFrom decodes the 18 gateway bytes. IPv4-compatible and IPv4-mapped
// addresses decode as IPv4. All zeros (a port-0, "::" Teardown that some
// gateways send), and the mapped 0.0.0.0, decode as the IPv6 unspecified
// address. The IPv4-compatible
// form makes ::/96 ambiguous; no gateway has such an address.
func gatewayFrom(b []byte) netip.AddrPort {
	port := binary.BigEndian.Uint16(b[0:2])
	addr := netip.AddrFrom16([16]byte(b[2:18]))
	a := addr.As16()
	if addr.Is4In6() {
		addr = addr.Unmap()
	} else if [12]byte(a[:12]) == ([12]byte{}) && !addr.IsUnspecified() {
		addr = netip.AddrFrom4([4]byte(a[12:16]))
	}
	if addr.IsUnspecified() {
		// ::ffff:0.0.0.0 too: "no address" has one form, which encodes
		// back to the same bytes as it decodes from (found by FuzzParse).
		addr = netip.IPv6Unspecified()
	}
	return netip.AddrPortFrom(addr, port)
}

// Parse decodes one AMT message with the default (lenient) options.
func Parse(b []byte) (Message, error) { return Options{}.Parse(b) }

// Parse decodes one AMT message: a *RelayDiscovery, *RelayAdvertisement,
// *Request, *MembershipQuery, *MembershipUpdate, *MulticastData or
// *Teardown. Encapsulated packets are checked only for a consistent IP
// length; ParseQueryPacket, ParseReportPacket and ParseInnerUDP read them.
func (o Options) Parse(b []byte) (Message, error) {
	t, err := TypeOf(b)
	if err != nil {
		return nil, err
	}
	switch t {
	case TypeRelayDiscovery:
		if err := o.fixed(t, b, discoveryLen); err != nil {
			return nil, err
		}
		if err := o.reserved(t, b[1]|b[2]|b[3]); err != nil {
			return nil, err
		}
		return &RelayDiscovery{Nonce: binary.BigEndian.Uint32(b[4:8])}, nil

	case TypeRelayAdvertisement:
		m := &RelayAdvertisement{}
		switch len(b) {
		case advertisementLen4:
			m.Relay = netip.AddrFrom4([4]byte(b[8:12]))
		case advertisementLen6:
			// An IPv4-mapped address means IPv4, as it does when encoding.
			m.Relay = netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		default:
			if len(b) < advertisementLen4 {
				return nil, fmt.Errorf("amt: %v of %d bytes: %w", t, len(b), ErrShort)
			}
			// The length is the only thing that tells the address family,
			// so a relay address of another size cannot be read at all.
			return nil, fmt.Errorf("amt: %v: relay address of %d bytes, want 4 or 16: %w",
				t, len(b)-8, ErrLength)
		}
		if err := o.reserved(t, b[1]|b[2]|b[3]); err != nil {
			return nil, err
		}
		if !usableRelay(m.Relay) {
			// Nothing can be sent to it; refuse rather than hand it on.
			return nil, fmt.Errorf("amt: %v: relay address %v: %w", t, m.Relay, ErrAddress)
		}
		m.Nonce = binary.BigEndian.Uint32(b[4:8])
		return m, nil

	case TypeRequest:
		if err := o.fixed(t, b, requestLen); err != nil {
			return nil, err
		}
		if err := o.reserved(t, b[1]&requestReservedMask|b[2]|b[3]); err != nil {
			return nil, err
		}
		return &Request{
			IPv6:  b[1]&requestFlagP != 0,
			Nonce: binary.BigEndian.Uint32(b[4:8]),
		}, nil

	case TypeMembershipQuery:
		if len(b) < macNonceHeaderLen {
			return nil, fmt.Errorf("amt: %v of %d bytes: %w", t, len(b), ErrShort)
		}
		if err := o.reserved(t, b[1]&queryReservedMask); err != nil {
			return nil, err
		}
		m := &MembershipQuery{
			Limit: b[1]&queryFlagL != 0,
			MAC:   [6]byte(b[2:8]),
			Nonce: binary.BigEndian.Uint32(b[8:12]),
		}
		end := len(b)
		if b[1]&queryFlagG != 0 {
			// The gateway fields are the datagram's last 18 bytes.
			if end < macNonceHeaderLen+gatewayFieldsLen {
				return nil, fmt.Errorf("amt: %v with G flag of %d bytes: %w", t, len(b), ErrShort)
			}
			end -= gatewayFieldsLen
			m.Gateway = gatewayFrom(b[end:])
		}
		m.Query = b[macNonceHeaderLen:end:end]
		if err := ipPacketLen(m.Query); err != nil {
			return nil, fmt.Errorf("amt: %v: %w", t, err)
		}
		return m, nil

	case TypeMembershipUpdate:
		if len(b) < macNonceHeaderLen {
			return nil, fmt.Errorf("amt: %v of %d bytes: %w", t, len(b), ErrShort)
		}
		if err := o.reserved(t, b[1]); err != nil {
			return nil, err
		}
		m := &MembershipUpdate{
			MAC:    [6]byte(b[2:8]),
			Nonce:  binary.BigEndian.Uint32(b[8:12]),
			Report: b[macNonceHeaderLen:],
		}
		if err := ipPacketLen(m.Report); err != nil {
			return nil, fmt.Errorf("amt: %v: %w", t, err)
		}
		return m, nil

	case TypeMulticastData:
		p, err := o.ParseDataHeader(b)
		if err != nil {
			return nil, err
		}
		return &MulticastData{Packet: p}, nil

	case TypeTeardown:
		if err := o.fixed(t, b, teardownLen); err != nil {
			return nil, err
		}
		if err := o.reserved(t, b[1]); err != nil {
			return nil, err
		}
		return &Teardown{
			MAC:     [6]byte(b[2:8]),
			Nonce:   binary.BigEndian.Uint32(b[8:12]),
			Gateway: gatewayFrom(b[12:30]),
		}, nil
	}
	panic("unreachable: TypeOf returned an unknown type")
}

// fixed checks the length of a fixed-size message. Lenient decoding ignores
// trailing bytes: VLC's gateway sends a 9-byte Request.
func (o Options) fixed(t Type, b []byte, n int) error {
	if len(b) < n {
		return fmt.Errorf("amt: %v of %d bytes, want %d: %w", t, len(b), n, ErrShort)
	}
	if o.Strict && len(b) > n {
		return fmt.Errorf("amt: %v of %d bytes, want %d: %w", t, len(b), n, ErrLength)
	}
	return nil
}

// reserved refuses non-zero reserved bits when strict; bits is the OR of
// the message's reserved fields, already masked.
func (o Options) reserved(t Type, bits byte) error {
	if o.Strict && bits != 0 {
		return fmt.Errorf("amt: %v: %w", t, ErrReserved)
	}
	return nil
}

// Package amt encodes and decodes Automatic Multicast Tunneling (AMT,
// RFC 7450) messages and the packets they carry: IPv4/IGMPv3 and
// IPv6/MLDv2 general queries and membership reports, and the multicast
// UDP datagrams a relay replicates to its gateways.
//
// It is the shared wire codec of the beacon's AMT gateway and castd's AMT
// relay. It imports only the standard library because it runs on routers
// with little flash.
//
// # Strict and lenient decoding
//
// RFC 7450 says reserved bits are sent as zero and ignored on receipt, and
// deployed gateways stray further (VLC sends a 9-byte Request; some send
// reports to the group address without a Router Alert). The package is
// strict in what it sends and, by default, liberal in what it accepts, so a
// relay that serves the public interoperates. Options{Strict: true} refuses
// what the default ignores: non-zero reserved bits (ErrReserved), bytes after
// a fixed-length message (ErrLength), and encapsulated reports and queries
// whose IP envelope is not the one RFC 3376/3810 prescribe.
//
// What the RFCs make mandatory is refused in both modes: a version other
// than 0, unknown types, truncation, bad checksums, inconsistent lengths.
//
// Slices in decoded values alias the input buffer; copy them to keep them
// past the buffer's reuse.
package amt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Port is the IANA UDP port of an AMT relay.
const Port = 2268

// Encapsulation sizes, for fitting Multicast Data into a path MTU. The relay
// never fragments and sets DF on the outer packet (RFC 7450).
const (
	// DataHeaderLen is the AMT header of a Multicast Data message.
	DataHeaderLen = 2
	// Overhead4 is what AMT over IPv4 adds to an inner datagram:
	// outer IPv4 header 20 + UDP 8 + AMT 2.
	Overhead4 = 20 + 8 + DataHeaderLen
	// Overhead6 is the same over IPv6: 40 + 8 + 2.
	Overhead6 = 40 + 8 + DataHeaderLen
)

// Relay discovery anycast prefixes and addresses (RFC 7450 §7).
var (
	DiscoveryPrefix4 = netip.MustParsePrefix("192.52.193.0/24")
	DiscoveryAddr4   = netip.MustParseAddr("192.52.193.1")
	DiscoveryPrefix6 = netip.MustParsePrefix("2001:3::/32")
	DiscoveryAddr6   = netip.MustParseAddr("2001:3::1")
)

// SSMPrefix4 is the IPv4 source-specific multicast range (RFC 4607).
var SSMPrefix4 = netip.MustParsePrefix("232.0.0.0/8")

// IsSSM reports whether group is in a source-specific multicast range:
// 232.0.0.0/8, or ff3x::/32 for any scope x (RFC 4607 §1).
func IsSSM(group netip.Addr) bool {
	group = group.Unmap()
	if group.Is4() {
		return SSMPrefix4.Contains(group)
	}
	if !group.Is6() {
		return false
	}
	a := group.As16()
	return a[0] == 0xff && a[1]>>4 == 0x3 && a[2] == 0 && a[3] == 0
}

// Errors that decoders wrap (use errors.Is). Encoders return ErrAddress,
// ErrLength or ErrMalformed for values that cannot be put on the wire.
var (
	// ErrShort: the input ends before the fields it must hold.
	ErrShort = errors.New("truncated")
	// ErrLength: a length is wrong: trailing bytes after a fixed-length
	// message or packet, an address that is neither 4 nor 16 bytes, or a
	// length field that disagrees with the bytes present.
	ErrLength = errors.New("bad length")
	// ErrVersion: AMT version not 0, or an IP version not 4/6 where one is
	// required.
	ErrVersion = errors.New("unsupported version")
	// ErrType: unknown AMT message type, or not the IGMP/MLD type expected.
	ErrType = errors.New("unexpected message type")
	// ErrReserved: non-zero reserved bits (strict decoding only).
	ErrReserved = errors.New("reserved bits set")
	// ErrChecksum: an IPv4 header, IGMP, ICMPv6 or UDP checksum is wrong.
	ErrChecksum = errors.New("bad checksum")
	// ErrAddress: an address of the wrong family or kind.
	ErrAddress = errors.New("bad address")
	// ErrProtocol: the IP packet does not carry the protocol expected
	// (IGMP, ICMPv6/MLD, UDP), or its envelope breaks the protocol's rules.
	ErrProtocol = errors.New("unexpected protocol")
	// ErrFragment: an IP fragment; this package never reassembles.
	ErrFragment = errors.New("fragmented packet")
	// ErrMalformed: a structural error not covered above (bad header
	// length, malformed IP options).
	ErrMalformed = errors.New("malformed")
)

// Type is an AMT message type (RFC 7450 §5.1).
type Type uint8

// AMT message types.
const (
	TypeRelayDiscovery     Type = 1
	TypeRelayAdvertisement Type = 2
	TypeRequest            Type = 3
	TypeMembershipQuery    Type = 4
	TypeMembershipUpdate   Type = 5
	TypeMulticastData      Type = 6
	TypeTeardown           Type = 7
)

func (t Type) String() string {
	switch t {
	case TypeRelayDiscovery:
		return "Relay Discovery"
	case TypeRelayAdvertisement:
		return "Relay Advertisement"
	case TypeRequest:
		return "Request"
	case TypeMembershipQuery:
		return "Membership Query"
	case TypeMembershipUpdate:
		return "Membership Update"
	case TypeMulticastData:
		return "Multicast Data"
	case TypeTeardown:
		return "Teardown"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// TypeOf returns the type of the AMT message in b, checking only the first
// byte (version 0 and a known type), so a receiver can dispatch cheaply.
func TypeOf(b []byte) (Type, error) {
	if len(b) < 1 {
		return 0, fmt.Errorf("amt: empty message: %w", ErrShort)
	}
	if v := b[0] >> 4; v != 0 {
		return 0, fmt.Errorf("amt: version %d: %w", v, ErrVersion)
	}
	t := Type(b[0] & 0x0f)
	if t < TypeRelayDiscovery || t > TypeTeardown {
		return 0, fmt.Errorf("amt: type %d: %w", uint8(t), ErrType)
	}
	return t, nil
}

// Options selects how decoders treat what the RFCs say a receiver ignores.
// The zero value is the lenient default.
type Options struct {
	// Strict refuses non-zero reserved bits (ErrReserved), bytes after a
	// fixed-length message (ErrLength), and encapsulated queries/reports
	// whose IP envelope is not the prescribed one (ErrProtocol: wrong
	// destination, TTL/hop limit not 1, no Router Alert). The Linux kernel's
	// AMT driver behaves this way; the default ignores them, as RFC 7450
	// §5.1 specifies for reserved fields, so a public relay accepts the
	// gateways found in the wild.
	Strict bool
}

// ipPacketLen checks that b starts with an IPv4 or IPv6 header whose length
// field covers exactly b. It is the cheap sanity check applied to every
// encapsulated packet: it catches truncation and misplaced trailing fields
// (e.g. a Query whose G flag does not match its tail).
func ipPacketLen(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("no encapsulated IP packet: %w", ErrShort)
	}
	var total int
	switch b[0] >> 4 {
	case 4:
		if len(b) < ipv4MinHeaderLen {
			return fmt.Errorf("encapsulated IPv4 packet of %d bytes: %w", len(b), ErrShort)
		}
		total = int(binary.BigEndian.Uint16(b[2:4]))
	case 6:
		if len(b) < ipv6HeaderLen {
			return fmt.Errorf("encapsulated IPv6 packet of %d bytes: %w", len(b), ErrShort)
		}
		total = ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	default:
		return fmt.Errorf("encapsulated packet has IP version %d: %w", b[0]>>4, ErrVersion)
	}
	if total != len(b) {
		return fmt.Errorf("encapsulated IP packet says %d bytes, has %d: %w", total, len(b), ErrLength)
	}
	return nil
}

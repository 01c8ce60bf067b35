package driad

import (
	"fmt"
	"net/netip"
)

// TypeAMTRELAY is the DNS RR type code of AMTRELAY (RFC 8777 §4.1).
const TypeAMTRELAY = 260

// RelayType says what the relay field of an AMTRELAY record holds
// (RFC 8777 §4.2.3).
type RelayType uint8

// Relay types. Types 4–127 are unassigned; records with them are ignored.
const (
	RelayNone RelayType = 0 // no relay: do not use AMT for this source
	RelayIPv4 RelayType = 1 // a 4-byte IPv4 address
	RelayIPv6 RelayType = 2 // a 16-byte IPv6 address
	RelayName RelayType = 3 // an uncompressed wire-format domain name
)

func (t RelayType) String() string {
	switch t {
	case RelayNone:
		return "none"
	case RelayIPv4:
		return "ipv4"
	case RelayIPv6:
		return "ipv6"
	case RelayName:
		return "name"
	}
	return fmt.Sprintf("RelayType(%d)", uint8(t))
}

// Relay is one AMT relay a source's operator publishes.
type Relay struct {
	// Precedence orders relays: lower values are tried first.
	Precedence uint8
	// DiscoveryOptional is the D bit. When false the gateway must send a
	// Relay Discovery to Addr and use the relay the Advertisement names;
	// when true it may send a Request to Addr directly.
	DiscoveryOptional bool
	Type              RelayType
	// Addr is the relay address: the record's for types 1 and 2, one of the
	// name's A/AAAA addresses for type 3 after Lookup resolved it.
	Addr netip.Addr
	// Name is the relay's domain name for type 3, absolute with a trailing
	// dot (e.g. "amtrelays.example.com.").
	Name string
}

func (r Relay) String() string {
	d := 0
	if r.DiscoveryOptional {
		d = 1
	}
	var relay string
	switch {
	case r.Type == RelayName && r.Addr.IsValid():
		relay = r.Name + "(" + r.Addr.String() + ")"
	case r.Type == RelayName:
		relay = r.Name
	case r.Type == RelayNone:
		relay = "."
	default:
		relay = r.Addr.String()
	}
	return fmt.Sprintf("%d %d %d %s", r.Precedence, d, uint8(r.Type), relay)
}

// ParseRDATA decodes the RDATA of one AMTRELAY record. It is strict: the
// relay field must have exactly the length its type gives, and a type 3
// name must be uncompressed (RFC 8777 §4.2.3) and end exactly at the end of
// rdata. Unassigned relay types return ErrUnknownType.
func ParseRDATA(rdata []byte) (Relay, error) {
	return parseRDATA(rdata, 0, len(rdata), false)
}

// parseRDATA decodes msg[off:end]. Inside a whole DNS message, ptrOK
// accepts a compressed type 3 name, which RFC 8777 forbids but a resolver
// may still hand on; pointers resolve against msg.
func parseRDATA(msg []byte, off, end int, ptrOK bool) (Relay, error) {
	var r Relay
	if end-off < 2 {
		return r, fmt.Errorf("driad: AMTRELAY RDATA of %d bytes: %w", end-off, ErrMalformed)
	}
	r.Precedence = msg[off]
	r.DiscoveryOptional = msg[off+1]&0x80 != 0
	r.Type = RelayType(msg[off+1] & 0x7f)
	body := msg[off+2 : end]
	want := -1
	switch r.Type {
	case RelayNone:
		want = 0
	case RelayIPv4:
		want = 4
	case RelayIPv6:
		want = 16
	case RelayName:
		name, next, err := readName(msg[:end], off+2, ptrOK)
		if err != nil {
			return Relay{}, fmt.Errorf("driad: AMTRELAY relay name: %w", err)
		}
		if next != end {
			return Relay{}, fmt.Errorf("driad: AMTRELAY: %d bytes after the relay name: %w", end-next, ErrMalformed)
		}
		if name == "." {
			return Relay{}, fmt.Errorf("driad: AMTRELAY: relay name is the root: %w", ErrMalformed)
		}
		r.Name = name
		return r, nil
	default:
		return Relay{}, fmt.Errorf("driad: AMTRELAY relay type %d: %w", uint8(r.Type), ErrUnknownType)
	}
	if len(body) != want {
		return Relay{}, fmt.Errorf("driad: AMTRELAY type %d relay of %d bytes, want %d: %w", uint8(r.Type), len(body), want, ErrMalformed)
	}
	switch r.Type {
	case RelayIPv4:
		r.Addr = netip.AddrFrom4([4]byte(body))
	case RelayIPv6:
		r.Addr = netip.AddrFrom16([16]byte(body))
	}
	return r, nil
}

// AppendRDATA appends r as AMTRELAY RDATA: the inverse of ParseRDATA. Addr
// must match Type (an IPv4-mapped address counts as IPv4), and Name must be
// a valid domain name for type 3.
func (r Relay) AppendRDATA(dst []byte) ([]byte, error) {
	if r.Type > 0x7f {
		return dst, fmt.Errorf("driad: relay type %d does not fit 7 bits: %w", uint8(r.Type), ErrUnknownType)
	}
	dt := byte(r.Type)
	if r.DiscoveryOptional {
		dt |= 0x80
	}
	start := len(dst)
	dst = append(dst, r.Precedence, dt)
	switch r.Type {
	case RelayNone:
		return dst, nil
	case RelayIPv4:
		a := r.Addr.Unmap()
		if !a.Is4() {
			return dst[:start], fmt.Errorf("driad: type 1 relay %v is not IPv4: %w", r.Addr, ErrMalformed)
		}
		b := a.As4()
		return append(dst, b[:]...), nil
	case RelayIPv6:
		// RFC 8777 §4.2.3: 16 octets of IPv6 address. An IPv4-mapped one is
		// kept as it was published, so that parsing and encoding agree; the
		// gateway unmaps it when it dials.
		if !r.Addr.Is6() {
			return dst[:start], fmt.Errorf("driad: type 2 relay %v is not IPv6: %w", r.Addr, ErrMalformed)
		}
		b := r.Addr.As16()
		return append(dst, b[:]...), nil
	case RelayName:
		if r.Name == "" || r.Name == "." {
			return dst[:start], fmt.Errorf("driad: type 3 relay without a name: %w", ErrMalformed)
		}
		out, err := appendName(dst, r.Name)
		if err != nil {
			return dst[:start], fmt.Errorf("driad: type 3 relay: %w", err)
		}
		return out, nil
	}
	return dst[:start], fmt.Errorf("driad: relay type %d: %w", uint8(r.Type), ErrUnknownType)
}

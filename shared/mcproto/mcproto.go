// Package mcproto is what castd and a beacon say to each other about an
// object sent by multicast, apart from the ALC packets themselves: the offer
// castd answers a beacon's miss with, and the control messages that travel
// next to ALC packets on the unicast DTLS channel (shared/dtlschan).
//
// An offer replaces the object's body in castd's answer to a signed GET of
// protocol.PathObjectPrefix+key: status 200, Content-Type OfferType, a small
// JSON document naming the signed manifest (the TOI-0 ALC packet, so the
// beacon handles it exactly as one that came in-band) and where to get the
// packets: the AMT relay for tunnelled beacons and the DTLS address for early
// media, NACKs and repairs. The manifest carries its own CAST-key signature;
// the addresses are hints, since whatever arrives from them is checked
// against that manifest.
//
// On the DTLS channel every datagram is one message. A datagram whose first
// byte has the high nibble 1 is an ALC packet (LCT version 1); otherwise the
// first byte is a message type. All integers are big-endian.
//
//	Join    0xC1 | TSI (32) | TOI (32) | early blocks (16)
//	Nack    0xC2 | TSI (32) | TOI (32) | n (16) | n × range
//	        range: SBN (32) | kind (8) | first (16) | count (16) | need (16)
//	Leave   0xC3 | TSI (32) | TOI (32) | reason (8)
//	Status  0xD1 | TSI (32) | TOI (32) | code (8) | retry after ms (32)
//
// A beacon sends Join when it takes an offer (asking for the first "early
// blocks" blocks over the channel while its multicast join takes effect),
// Nack with what objrecv.Assembler.Missing lists, and Leave when it is done
// or gives up. castd answers with ALC packets and, when it will not serve a
// request, Status.
package mcproto

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// OfferType is the Content-Type of castd's offer.
const OfferType = "application/vnd.blockcast.offer+json"

// OfferVersion is the offer document's version; a beacon refuses others.
const OfferVersion = 1

// MaxOffer bounds an offer document: a manifest packet (at most one ALC
// packet) in base64 plus two addresses.
const MaxOffer = 4096

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("mcproto: malformed")

// Offer is castd's answer to a miss for an object it sends by multicast.
type Offer struct {
	Version int `json:"version"`
	// Manifest is the TOI-0 ALC packet carrying the signed manifest.
	Manifest []byte `json:"manifest"`
	// AMTRelay is castd's AMT relay (for beacons whose network does not
	// carry multicast); empty when castd runs none.
	AMTRelay string `json:"amt_relay,omitempty"`
	// Unicast is castd's DTLS channel for early media, NACKs and repairs.
	Unicast string `json:"unicast"`
}

// EncodeOffer returns o as the body of castd's answer.
func EncodeOffer(o *Offer) ([]byte, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxOffer {
		return nil, fmt.Errorf("%w: offer of %d bytes, more than %d", ErrMalformed, len(b), MaxOffer)
	}
	return b, nil
}

// DecodeOffer reads an offer from r (at most MaxOffer bytes), strictly:
// unknown fields, trailing data, another version or bad addresses are errors.
func DecodeOffer(r io.Reader) (*Offer, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxOffer+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading offer: %w", ErrMalformed, err)
	}
	if len(b) > MaxOffer {
		return nil, fmt.Errorf("%w: offer longer than %d bytes", ErrMalformed, MaxOffer)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var o Offer
	if err := d.Decode(&o); err != nil {
		return nil, fmt.Errorf("%w: offer: %w", ErrMalformed, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: data after the offer", ErrMalformed)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	return &o, nil
}

func (o *Offer) check() error {
	if o.Version != OfferVersion {
		return fmt.Errorf("%w: offer version %d, want %d", ErrMalformed, o.Version, OfferVersion)
	}
	if len(o.Manifest) == 0 {
		return fmt.Errorf("%w: offer without a manifest", ErrMalformed)
	}
	if o.AMTRelay != "" {
		if _, err := netip.ParseAddrPort(o.AMTRelay); err != nil {
			return fmt.Errorf("%w: offer's AMT relay: %w", ErrMalformed, err)
		}
	}
	if _, err := netip.ParseAddrPort(o.Unicast); err != nil {
		return fmt.Errorf("%w: offer's unicast address: %w", ErrMalformed, err)
	}
	return nil
}

// Type is a control message's first byte.
type Type uint8

// Message types.
const (
	TypeJoin   Type = 0xC1
	TypeNack   Type = 0xC2
	TypeLeave  Type = 0xC3
	TypeStatus Type = 0xD1
)

// IsALC reports whether a datagram on the channel is an ALC packet rather
// than a control message.
func IsALC(b []byte) bool { return len(b) > 0 && b[0]>>4 == 1 }

// Object names one object's session: the ALC TSI and the object's TOI.
type Object struct{ TSI, TOI uint32 }

// Join asks castd for an object's first blocks over the channel.
type Join struct {
	Object
	EarlyBlocks uint16
}

// Kind says what a Range asks for (objrecv's kinds).
type Kind uint8

// Range kinds.
const (
	Symbols   Kind = 0 // source symbols First..First+Count-1 of block SBN
	HashChunk Kind = 1 // hash-list chunks First..First+Count-1 of block SBN
)

// Range is one NACK entry.
type Range struct {
	SBN   uint32
	Kind  Kind
	First uint16
	Count uint16
	Need  uint16 // symbols of any ESI the block still needs
}

const (
	headerLen = 1 + 4 + 4
	rangeLen  = 4 + 1 + 2 + 2 + 2
)

// MaxRanges is how many ranges fit one Nack on a channel of maxPayload bytes.
func MaxRanges(maxPayload int) int {
	n := (maxPayload - headerLen - 2) / rangeLen
	return max(n, 0)
}

// Nack lists what a beacon lacks of one object.
type Nack struct {
	Object
	Ranges []Range
}

// LeaveReason says why a beacon leaves.
type LeaveReason uint8

// Leave reasons.
const (
	LeaveDone     LeaveReason = 0 // the object is complete
	LeaveFallback LeaveReason = 1 // gave up; fetching the rest by HTTP
	LeaveAborted  LeaveReason = 2 // the end users went away, or an error
)

// Leave ends a beacon's interest in an object.
type Leave struct {
	Object
	Reason LeaveReason
}

// StatusCode says why castd does not serve a request.
type StatusCode uint8

// Status codes.
const (
	StatusUnknown StatusCode = 1 // no such session (ended or never offered)
	StatusLimited StatusCode = 2 // the node's repair budget is spent: retry later
	StatusEnded   StatusCode = 3 // the session ended; fetch by HTTP
)

// Status is castd's refusal of a Join or Nack.
type Status struct {
	Object
	Code         StatusCode
	RetryAfterMs uint32
}

func appendHeader(b []byte, t Type, o Object) []byte {
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint32(b, o.TSI)
	return binary.BigEndian.AppendUint32(b, o.TOI)
}

// AppendTo appends j's encoding to b.
func (j *Join) AppendTo(b []byte) []byte {
	b = appendHeader(b, TypeJoin, j.Object)
	return binary.BigEndian.AppendUint16(b, j.EarlyBlocks)
}

// AppendTo appends n's encoding to b. It fails when n has more than 65535
// ranges or a kind it does not know; the caller bounds the count with
// MaxRanges for its channel.
func (n *Nack) AppendTo(b []byte) ([]byte, error) {
	if len(n.Ranges) > 0xffff {
		return b, fmt.Errorf("%w: %d ranges", ErrMalformed, len(n.Ranges))
	}
	b = appendHeader(b, TypeNack, n.Object)
	b = binary.BigEndian.AppendUint16(b, uint16(len(n.Ranges)))
	for _, r := range n.Ranges {
		if r.Kind > HashChunk || r.Count == 0 {
			return b, fmt.Errorf("%w: range %+v", ErrMalformed, r)
		}
		b = binary.BigEndian.AppendUint32(b, r.SBN)
		b = append(b, byte(r.Kind))
		b = binary.BigEndian.AppendUint16(b, r.First)
		b = binary.BigEndian.AppendUint16(b, r.Count)
		b = binary.BigEndian.AppendUint16(b, r.Need)
	}
	return b, nil
}

// AppendTo appends l's encoding to b.
func (l *Leave) AppendTo(b []byte) []byte {
	return append(appendHeader(b, TypeLeave, l.Object), byte(l.Reason))
}

// AppendTo appends s's encoding to b.
func (s *Status) AppendTo(b []byte) []byte {
	b = append(appendHeader(b, TypeStatus, s.Object), byte(s.Code))
	return binary.BigEndian.AppendUint32(b, s.RetryAfterMs)
}

// Decode decodes one control message: a *Join, *Nack, *Leave or *Status.
// ALC packets (IsALC) are not control messages and are refused.
func Decode(b []byte) (any, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d-byte message", ErrMalformed, len(b))
	}
	o := Object{TSI: binary.BigEndian.Uint32(b[1:5]), TOI: binary.BigEndian.Uint32(b[5:9])}
	rest := b[headerLen:]
	switch Type(b[0]) {
	case TypeJoin:
		if len(rest) != 2 {
			return nil, fmt.Errorf("%w: join of %d bytes", ErrMalformed, len(b))
		}
		return &Join{Object: o, EarlyBlocks: binary.BigEndian.Uint16(rest)}, nil
	case TypeNack:
		if len(rest) < 2 {
			return nil, fmt.Errorf("%w: short nack", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if len(rest) != n*rangeLen {
			return nil, fmt.Errorf("%w: nack says %d ranges in %d bytes", ErrMalformed, n, len(rest))
		}
		m := &Nack{Object: o, Ranges: make([]Range, n)}
		for i := range m.Ranges {
			r := rest[i*rangeLen:]
			m.Ranges[i] = Range{
				SBN:   binary.BigEndian.Uint32(r),
				Kind:  Kind(r[4]),
				First: binary.BigEndian.Uint16(r[5:]),
				Count: binary.BigEndian.Uint16(r[7:]),
				Need:  binary.BigEndian.Uint16(r[9:]),
			}
			if m.Ranges[i].Kind > HashChunk {
				return nil, fmt.Errorf("%w: range kind %d", ErrMalformed, r[4])
			}
			if m.Ranges[i].Count == 0 {
				return nil, fmt.Errorf("%w: empty range", ErrMalformed)
			}
		}
		return m, nil
	case TypeLeave:
		if len(rest) != 1 || rest[0] > byte(LeaveAborted) {
			return nil, fmt.Errorf("%w: leave", ErrMalformed)
		}
		return &Leave{Object: o, Reason: LeaveReason(rest[0])}, nil
	case TypeStatus:
		if len(rest) != 5 || rest[0] < byte(StatusUnknown) || rest[0] > byte(StatusEnded) {
			return nil, fmt.Errorf("%w: status", ErrMalformed)
		}
		return &Status{Object: o, Code: StatusCode(rest[0]), RetryAfterMs: binary.BigEndian.Uint32(rest[1:])}, nil
	}
	return nil, fmt.Errorf("%w: message type %#x", ErrMalformed, b[0])
}

// Package manifest is the signed description of an object sent by
// multicast, our own in place of FLUTE's FDT: what the object is (URL,
// length, type, validators, expiry), where it travels (channel, TSI, TOI),
// how it is coded (FEC parameters) and a commitment that lets a receiver
// check every symbol, source or parity, before it enters a block or a
// decoder.
//
// The commitment: each symbol has a 16-byte digest, truncated SHA-256
// domain-separated by TOI, SBN and ESI (SymbolDigest). A block's digests
// cover its k source symbols and all MaxParity parity symbols the sender
// may ever make, so parity made later on demand is covered too. They are
// cut into chunks of up to ChunkDigests; every chunk of every block is a
// leaf of one Merkle tree whose root the manifest carries under the CAST
// key's ed25519 signature. A chunk travels in its own ALC packet (a
// HashPart: TOI = the object's TOI | HashListBit) with its Merkle path, so
// a receiver verifies each such packet alone, from one signature check
// per manifest and a few hashes per packet, whatever else it lost.
//
// The manifest itself travels in-band, repeated, as one ALC packet on
// TOI 0 (ManifestTOI), and over the unicast channel in the same form.
package manifest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
)

// Wire constants.
const (
	// Version is the manifest and hash-part encoding version.
	Version = 1
	// ManifestTOI is the TOI of manifest packets (as FLUTE's FDT uses 0).
	ManifestTOI = 0
	// HashListBit marks the TOI of an object's hash-part packets: object
	// TOIs are 1..2^31-1 and their hash parts travel on TOI | HashListBit.
	HashListBit = 1 << 31
	// MaxSize bounds a manifest's encoding: it fits one ALC packet.
	MaxSize = alc.MaxSymbolSize
	// MaxURL, MaxContentType and MaxETag bound the strings.
	MaxURL         = 1024
	MaxContentType = 255
	MaxETag        = 255
)

// Sentinel errors callers branch on.
var (
	// ErrMalformed: the bytes are not a well-formed, canonical manifest or
	// hash part, or a value is out of range.
	ErrMalformed = errors.New("manifest: malformed")
	// ErrSignature: the manifest is not signed by the expected CAST key.
	ErrSignature = errors.New("manifest: bad signature")
	// ErrMismatch: a hash part or symbol does not match the manifest (wrong
	// object, block, digest or Merkle path).
	ErrMismatch = errors.New("manifest: does not match the manifest")
	// ErrTooLarge: the object or a field does not fit the format.
	ErrTooLarge = errors.New("manifest: too large")
	// ErrReplay: a manifest older than (or conflicting with) one already
	// accepted for the same URL.
	ErrReplay = errors.New("manifest: replayed or superseded")
	// ErrExpired: the manifest's expiry has passed, or it was issued in
	// the future.
	ErrExpired = errors.New("manifest: expired or not yet valid")
)

// Channel is the SSM channel an object travels on.
type Channel struct {
	Source netip.Addr // S, unicast
	Group  netip.Addr // G, multicast, same family as S
	Port   uint16     // UDP destination port
}

// FEC holds the FEC Object Transmission Information.
type FEC struct {
	EncodingID  uint8  // fec.EncodingID (129)
	InstanceID  uint16 // fec.InstanceID
	SymbolLen   uint16 // E, bytes
	MaxBlockLen uint16 // B, source symbols a block at most
	MaxParity   uint16 // parity symbols a block may ever have; B+MaxParity <= 256
}

// Node is a Merkle tree node (and the root): truncated SHA-256.
type Node [16]byte

// Manifest describes one object. Build makes and signs it; Decode parses
// it and Verify checks the signature.
type Manifest struct {
	Sequence      uint64    // increases for each new manifest of the URL
	Issued        time.Time // seconds resolution, UTC
	Expires       time.Time // after it the manifest must not be used
	URL           string    // the object's path, as requested ("/...")
	ContentLength uint64
	ContentType   string
	ETag          string
	LastModified  time.Time // zero when the origin gave none
	TSI           uint32
	TOI           uint32 // 1..2^31-1
	Channel       Channel
	FEC           FEC
	Root          Node // Merkle root over every block's hash-list chunks
	Signature     [identity.SignatureSize]byte
}

// signContext separates manifest signatures from anything else the CAST
// key signs.
const signContext = "blockcast beacon object manifest v1\x00"

const (
	magic0, magic1 = 'B', 'M'
	// fixed bytes: magic 2, version 1, family 1, sequence 8, issued 8,
	// expires 8, last-modified 8, content length 8, TSI 4, TOI 4, FEC 9,
	// port 2, root 16, URL length 2, content type length 1, ETag length 1.
	fixedLen = 2 + 1 + 1 + 8*5 + 4 + 4 + 9 + 2 + 16 + 2 + 1 + 1
)

// Packet returns the ALC packet that carries m in-band: TOI 0 on m's TSI,
// FEC Payload ID (0, 1, 0).
func (m *Manifest) Packet() (alc.Packet, error) {
	b, err := m.MarshalBinary()
	if err != nil {
		return alc.Packet{}, err
	}
	return alc.Packet{Codepoint: alc.EncodingID, TSI: uint64(m.TSI), TOI: ManifestTOI, SBN: 0, SBL: 1, ESI: 0, Payload: b}, nil
}

// FromPacket decodes the manifest an ALC packet carries (TOI 0). It does
// not verify the signature: call Verify.
func FromPacket(p *alc.Packet) (*Manifest, error) {
	if p.TOI != ManifestTOI || p.SBN != 0 || p.ESI != 0 {
		return nil, fmt.Errorf("%w: packet TOI %d SBN %d ESI %d is not a manifest", ErrMalformed, p.TOI, p.SBN, p.ESI)
	}
	m, err := Decode(p.Payload)
	if err != nil {
		return nil, err
	}
	if uint64(m.TSI) != p.TSI {
		return nil, fmt.Errorf("%w: manifest for TSI %d on TSI %d", ErrMismatch, m.TSI, p.TSI)
	}
	return m, nil
}

// signed appends the bytes the signature covers (everything but itself).
func (m *Manifest) signed(dst []byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return dst, err
	}
	fam := byte(4)
	if m.Channel.Source.Is6() {
		fam = 6
	}
	dst = append(dst, magic0, magic1, Version, fam)
	dst = binary.BigEndian.AppendUint64(dst, m.Sequence)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Issued.Unix()))
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.Expires.Unix()))
	var lm uint64
	if !m.LastModified.IsZero() {
		lm = uint64(m.LastModified.Unix())
	}
	dst = binary.BigEndian.AppendUint64(dst, lm)
	dst = binary.BigEndian.AppendUint64(dst, m.ContentLength)
	dst = binary.BigEndian.AppendUint32(dst, m.TSI)
	dst = binary.BigEndian.AppendUint32(dst, m.TOI)
	dst = append(dst, m.FEC.EncodingID)
	dst = binary.BigEndian.AppendUint16(dst, m.FEC.InstanceID)
	dst = binary.BigEndian.AppendUint16(dst, m.FEC.SymbolLen)
	dst = binary.BigEndian.AppendUint16(dst, m.FEC.MaxBlockLen)
	dst = binary.BigEndian.AppendUint16(dst, m.FEC.MaxParity)
	dst = append(dst, m.Channel.Source.AsSlice()...)
	dst = append(dst, m.Channel.Group.AsSlice()...)
	dst = binary.BigEndian.AppendUint16(dst, m.Channel.Port)
	dst = append(dst, m.Root[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(m.URL)))
	dst = append(dst, m.URL...)
	dst = append(dst, byte(len(m.ContentType)))
	dst = append(dst, m.ContentType...)
	dst = append(dst, byte(len(m.ETag)))
	dst = append(dst, m.ETag...)
	return dst, nil
}

// MarshalBinary returns m's canonical encoding, signature last.
func (m *Manifest) MarshalBinary() ([]byte, error) {
	b, err := m.signed(make([]byte, 0, 256))
	if err != nil {
		return nil, err
	}
	b = append(b, m.Signature[:]...)
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes above %d", ErrTooLarge, len(b), MaxSize)
	}
	return b, nil
}

// Sign sets m's signature with the CAST key.
func (m *Manifest) Sign(key *identity.Keypair) error {
	msg, err := m.signed([]byte(signContext))
	if err != nil {
		return err
	}
	if len(msg)-len(signContext)+identity.SignatureSize > MaxSize {
		return fmt.Errorf("%w: manifest of %d bytes above %d", ErrTooLarge, len(msg)-len(signContext)+identity.SignatureSize, MaxSize)
	}
	copy(m.Signature[:], key.Sign(msg))
	return nil
}

// Verify checks m's signature against the CAST key (one ed25519 verify).
func (m *Manifest) Verify(cast identity.PublicKey) error {
	msg, err := m.signed([]byte(signContext))
	if err != nil {
		return err
	}
	if !cast.Verify(msg, m.Signature[:]) {
		return fmt.Errorf("%w: %s (sequence %d) not signed by %s", ErrSignature, m.URL, m.Sequence, cast)
	}
	return nil
}

// printable reports whether s is only ASCII from lo to '~'.
func printable(s string, lo byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < lo || s[i] > '~' {
			return false
		}
	}
	return true
}

// validate checks every field's range; Decode and encoders share it, so
// what one side accepts the other can produce.
func (m *Manifest) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	c, f := m.Channel, m.FEC
	switch {
	case m.URL == "" || m.URL[0] != '/' || len(m.URL) > MaxURL || !printable(m.URL, '!'):
		return bad("URL %q: want a path of printable ASCII, at most %d bytes", m.URL, MaxURL)
	case len(m.ContentType) > MaxContentType || !printable(m.ContentType, ' '):
		return bad("content type %q", m.ContentType)
	case len(m.ETag) > MaxETag || !printable(m.ETag, '!'):
		return bad("ETag %q", m.ETag)
	case m.Issued.Unix() < 0 || m.Expires.Unix() < 0 || m.LastModified.Unix() < 0 && !m.LastModified.IsZero():
		return bad("times before 1970")
	case !m.Expires.After(m.Issued):
		return bad("expires %v not after issued %v", m.Expires, m.Issued)
	case m.ContentLength > fec.MaxTransferLength:
		return bad("content length %d above %d", m.ContentLength, uint64(fec.MaxTransferLength))
	case m.TOI == ManifestTOI || m.TOI&HashListBit != 0:
		return bad("TOI %#x: want 1..2^31-1", m.TOI)
	case !c.Source.IsValid() || c.Source.Is4In6() || c.Source.IsMulticast() || c.Source.IsUnspecified():
		return bad("channel source %v", c.Source)
	case !c.Group.IsMulticast() || c.Group.Is4In6() || c.Group.Is4() != c.Source.Is4() || c.Group.Zone() != "" || c.Source.Zone() != "":
		return bad("channel group %v for source %v", c.Group, c.Source)
	case c.Port == 0:
		return bad("channel port 0")
	case f.EncodingID != fec.EncodingID || f.InstanceID != fec.InstanceID:
		return bad("FEC encoding %d instance %d, want %d/%d", f.EncodingID, f.InstanceID, fec.EncodingID, fec.InstanceID)
	case f.SymbolLen == 0 || f.SymbolLen > alc.MaxSymbolSize:
		return bad("symbol length %d not in 1..%d", f.SymbolLen, alc.MaxSymbolSize)
	case f.MaxBlockLen == 0 || int(f.MaxBlockLen)+int(f.MaxParity) > fec.MaxSymbols:
		return bad("max block length %d + max parity %d: want 1..%d in all", f.MaxBlockLen, f.MaxParity, fec.MaxSymbols)
	}
	if _, err := newLayout(m); err != nil {
		return err
	}
	return nil
}

// Decode parses a manifest's canonical encoding: every field in range,
// nothing after the signature, at most MaxSize bytes. It does not verify
// the signature (Verify does). It never panics and allocates only the
// strings.
func Decode(b []byte) (*Manifest, error) {
	bad := func(format string, args ...any) (*Manifest, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	if len(b) > MaxSize {
		return bad("%d bytes, above %d", len(b), MaxSize)
	}
	if len(b) < fixedLen+8+identity.SignatureSize {
		return bad("%d bytes, too short", len(b))
	}
	if b[0] != magic0 || b[1] != magic1 {
		return bad("not a manifest (magic %x)", b[:2])
	}
	if b[2] != Version {
		return bad("version %d, want %d", b[2], Version)
	}
	alen := 4
	switch b[3] {
	case 4:
	case 6:
		alen = 16
	default:
		return bad("address family %d", b[3])
	}
	r := reader{b: b[4:]}
	m := &Manifest{}
	m.Sequence = r.u64()
	issued, expires, lm := r.u64(), r.u64(), r.u64()
	if issued > 1<<62 || expires > 1<<62 || lm > 1<<62 {
		return bad("time out of range")
	}
	m.Issued, m.Expires = time.Unix(int64(issued), 0).UTC(), time.Unix(int64(expires), 0).UTC()
	if lm != 0 {
		m.LastModified = time.Unix(int64(lm), 0).UTC()
	}
	m.ContentLength = r.u64()
	m.TSI, m.TOI = r.u32(), r.u32()
	m.FEC = FEC{EncodingID: r.u8(), InstanceID: r.u16(), SymbolLen: r.u16(), MaxBlockLen: r.u16(), MaxParity: r.u16()}
	src, _ := netip.AddrFromSlice(r.bytes(alen))
	grp, _ := netip.AddrFromSlice(r.bytes(alen))
	m.Channel = Channel{Source: src, Group: grp, Port: r.u16()}
	copy(m.Root[:], r.bytes(len(m.Root)))
	m.URL = string(r.bytes(int(r.u16())))
	m.ContentType = string(r.bytes(int(r.u8())))
	m.ETag = string(r.bytes(int(r.u8())))
	copy(m.Signature[:], r.bytes(identity.SignatureSize))
	if r.short {
		return bad("truncated")
	}
	if len(r.b) != 0 {
		return bad("%d bytes after the signature", len(r.b))
	}
	if err := m.validate(); err != nil {
		if !errors.Is(err, ErrMalformed) {
			err = fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return nil, err
	}
	// Canonical: the encoding of what was read is what was read.
	if enc, err := m.MarshalBinary(); err != nil || !bytes.Equal(enc, b) {
		return bad("not in canonical form")
	}
	return m, nil
}

// reader reads big-endian fields, remembering a short read instead of
// panicking.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) bytes(n int) []byte {
	if n > len(r.b) {
		r.short, r.b = true, nil
		return make([]byte, n)
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) u8() uint8   { return r.bytes(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.bytes(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.bytes(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.bytes(8)) }

// String is a one-line summary for logs.
func (m *Manifest) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "manifest %s seq %d toi %d (%d bytes, %s) on %v,%v:%d", m.URL, m.Sequence, m.TOI,
		m.ContentLength, m.ContentType, m.Channel.Source, m.Channel.Group, m.Channel.Port)
	return sb.String()
}

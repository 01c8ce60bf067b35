// Package offchain encodes and verifies Solana off-chain messages, and with
// them an owner wallet's delegation to a node key: the operator signs, once,
// a short text naming the node with the wallet (the solana CLI's
// sign-offchain-message, a hardware wallet, or a browser wallet through a
// page that builds the message), and the owner key never goes near the
// router.
//
// # Wire format
//
// An off-chain message is the signing domain "\xffsolana offchain" (16
// bytes; 0xff cannot start a transaction message), a header version byte
// (only 0 is accepted), a v0 header and the body. Two v0 headers are in use,
// and both are accepted:
//
//   - LayoutV0 is the header of the off-chain message signing proposal
//     (docs/src/proposals/off-chain-message-signing.md in anza-xyz/agave) and
//     of the solana-offchain-message crate from 3.0: application domain (32
//     bytes), format (u8), signer count (u8, not 0), the signers' public keys
//     (32 bytes each), body length (u16 little-endian, not 0), body. `solana
//     sign-offchain-message` in Agave 3.x signs this with an all-zero
//     application domain and the signing key as the only signer.
//   - LayoutLegacy is what solana-sdk up to 2.x implemented and what the
//     Agave 1.x/2.x and Solana 1.x CLIs sign: format (u8), body length (u16
//     little-endian, not 0), body; no application domain, no signers.
//
// The formats limit the whole message (preamble and body): 0 is printable
// ASCII (0x20..0x7e) within 1232 bytes, 1 is UTF-8 within 1232 bytes, 2 is
// UTF-8 within 65535 bytes. NewMessage picks the format the Rust
// implementation picks for the same body. Encode and Decode are checked
// against the vectors in solana-sdk's tests (testdata/solana-sdk.json).
//
// Not accepted: header version 1 (the newer "v1" of @solana/kit and
// SRFC 3, without application domain, format or body length, and the
// earlier sRFC 24 proposal that reused the v0 header with newlines allowed
// in format 0). Both were still being settled when this was written.
package offchain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/blockcast/beacon/shared/identity"
)

// SigningDomain starts every Solana off-chain message.
const SigningDomain = "\xffsolana offchain"

// Size limits of a whole message (preamble and body), from the proposal.
const (
	MaxLenLedger = 1232  // formats 0 and 1: what a hardware wallet can hold
	MaxLen       = 65535 // format 2
)

// Sentinel errors for messages.
var (
	// ErrMalformed is wrapped by structural errors: truncated input, a
	// length field that does not match, trailing bytes, no signers, an
	// empty body, a zero key among several signers.
	ErrMalformed = errors.New("offchain: malformed message")
	// ErrSigningDomain means the input does not start with SigningDomain.
	ErrSigningDomain = errors.New("offchain: not a Solana off-chain message")
	// ErrVersion means a header version other than 0.
	ErrVersion = errors.New("offchain: unsupported header version")
	// ErrFormat means an unknown format, or a body its format does not
	// allow (non-printable bytes in format 0, invalid UTF-8).
	ErrFormat = errors.New("offchain: body does not fit its message format")
	// ErrTooLong means the message exceeds its format's length limit.
	ErrTooLong = errors.New("offchain: message too long")
	// ErrAmbiguous means the input is a valid message in both layouts (only
	// possible for a legacy message whose body holds control characters);
	// it is refused rather than guessed.
	ErrAmbiguous = errors.New("offchain: message is valid in both v0 layouts")
)

// Layout is a v0 header layout.
type Layout uint8

// Layouts.
const (
	LayoutV0     Layout = 1 // the proposal's header, with application domain and signers
	LayoutLegacy Layout = 2 // format and length only (solana-sdk up to 2.x)
)

func (l Layout) String() string {
	switch l {
	case LayoutV0:
		return "v0"
	case LayoutLegacy:
		return "legacy"
	}
	return fmt.Sprintf("Layout(%d)", uint8(l))
}

// Format is the v0 message format.
type Format uint8

// Formats.
const (
	FormatRestrictedASCII Format = 0
	FormatLimitedUTF8     Format = 1
	FormatExtendedUTF8    Format = 2
)

// Message is a decoded off-chain message.
type Message struct {
	Layout Layout
	// AppDomain and Signers are in LayoutV0 only (zero and nil in
	// LayoutLegacy). Signers has 1..255 keys.
	AppDomain [32]byte
	Signers   []identity.PublicKey
	Format    Format
	Body      []byte // not empty
}

const (
	versionOffset = len(SigningDomain)
	legacyHeader  = versionOffset + 1 + 1 + 2          // ... format, length
	v0FixedHeader = versionOffset + 1 + 32 + 1 + 1 + 2 // ... domain, format, count, length
)

// preambleLen is the length of m's preamble.
func (m *Message) preambleLen() int {
	if m.Layout == LayoutLegacy {
		return legacyHeader
	}
	return v0FixedHeader + 32*len(m.Signers)
}

// NewMessage returns the message the Solana tools build for body in layout,
// with the format they pick: 0 if body is printable ASCII and the message
// fits MaxLenLedger, 1 if it is other UTF-8 and fits, else 2 if it is UTF-8
// and fits MaxLen. LayoutV0 needs at least one signer (the CLI puts the
// signing key there) and gets a zero application domain; LayoutLegacy takes
// no signers.
func NewMessage(layout Layout, body []byte, signers ...identity.PublicKey) (Message, error) {
	m := Message{Layout: layout, Body: body, Signers: signers}
	if err := m.checkShape(); err != nil {
		return Message{}, err
	}
	total := m.preambleLen() + len(body)
	switch {
	case total <= MaxLenLedger && printableASCII(body):
		m.Format = FormatRestrictedASCII
	case total <= MaxLenLedger && utf8.Valid(body):
		m.Format = FormatLimitedUTF8
	case total <= MaxLen && utf8.Valid(body):
		m.Format = FormatExtendedUTF8
	case total > MaxLen:
		return Message{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLong, total, MaxLen)
	default:
		return Message{}, fmt.Errorf("%w: body is not UTF-8", ErrFormat)
	}
	return m, nil
}

// checkShape checks what does not depend on the format.
func (m *Message) checkShape() error {
	switch m.Layout {
	case LayoutV0:
		if len(m.Signers) == 0 {
			return fmt.Errorf("%w: no signers", ErrMalformed)
		}
		if len(m.Signers) > 255 {
			return fmt.Errorf("%w: %d signers, at most 255", ErrMalformed, len(m.Signers))
		}
		if len(m.Signers) > 1 {
			// As solana-offchain-message 3.x: the all-zero key stands for
			// "the signer" only when it is alone.
			for _, s := range m.Signers {
				if s.IsZero() {
					return fmt.Errorf("%w: zero key among %d signers", ErrMalformed, len(m.Signers))
				}
			}
		}
	case LayoutLegacy:
		if len(m.Signers) != 0 || m.AppDomain != [32]byte{} {
			return fmt.Errorf("%w: the legacy layout has no signers or application domain", ErrMalformed)
		}
	default:
		return fmt.Errorf("%w: unknown layout %d", ErrMalformed, m.Layout)
	}
	if len(m.Body) == 0 {
		return fmt.Errorf("%w: empty body", ErrMalformed)
	}
	return nil
}

// check validates m completely.
func (m *Message) check() error {
	if err := m.checkShape(); err != nil {
		return err
	}
	total := m.preambleLen() + len(m.Body)
	limit := MaxLenLedger
	switch m.Format {
	case FormatRestrictedASCII:
		if !printableASCII(m.Body) {
			return fmt.Errorf("%w: format 0 body has bytes outside 0x20..0x7e", ErrFormat)
		}
	case FormatLimitedUTF8:
		if !utf8.Valid(m.Body) {
			return fmt.Errorf("%w: format 1 body is not UTF-8", ErrFormat)
		}
	case FormatExtendedUTF8:
		if !utf8.Valid(m.Body) {
			return fmt.Errorf("%w: format 2 body is not UTF-8", ErrFormat)
		}
		limit = MaxLen
	default:
		return fmt.Errorf("%w: unknown format %d", ErrFormat, m.Format)
	}
	if total > limit {
		return fmt.Errorf("%w: %d bytes in format %d, limit %d", ErrTooLong, total, m.Format, limit)
	}
	return nil
}

// Encode returns the bytes of m, the exact bytes a wallet signs. It refuses
// a message that Decode would refuse.
func Encode(m Message) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, m.preambleLen()+len(m.Body))
	b = append(b, SigningDomain...)
	b = append(b, 0) // header version
	if m.Layout == LayoutV0 {
		b = append(b, m.AppDomain[:]...)
		b = append(b, byte(m.Format), byte(len(m.Signers)))
		for _, s := range m.Signers {
			b = append(b, s[:]...)
		}
	} else {
		b = append(b, byte(m.Format))
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Body)))
	return append(b, m.Body...), nil
}

// Decode parses an off-chain message in either layout and checks it as
// strictly as Encode. The returned Message does not alias b.
func Decode(b []byte) (Message, error) {
	switch {
	case len(b) > MaxLen:
		return Message{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLong, len(b), MaxLen)
	case !bytes.HasPrefix(b, []byte(SigningDomain)):
		return Message{}, ErrSigningDomain
	case len(b) == versionOffset:
		return Message{}, fmt.Errorf("%w: no header", ErrMalformed)
	case b[versionOffset] != 0:
		return Message{}, fmt.Errorf("%w: %d", ErrVersion, b[versionOffset])
	}
	v0, errV0 := decodeV0(b)
	legacy, errLegacy := decodeLegacy(b)
	switch {
	case errV0 == nil && errLegacy == nil:
		return Message{}, ErrAmbiguous
	case errV0 == nil:
		return v0, nil
	case errLegacy == nil:
		return legacy, nil
	case len(b) >= legacyHeader && legacyHeader+int(binary.LittleEndian.Uint16(b[legacyHeader-2:])) == len(b):
		// The legacy length field adds up: report why that failed.
		return Message{}, fmt.Errorf("legacy layout: %w", errLegacy)
	default:
		return Message{}, errV0
	}
}

func decodeV0(b []byte) (Message, error) {
	if len(b) < v0FixedHeader {
		return Message{}, fmt.Errorf("%w: %d bytes, shorter than a v0 header", ErrMalformed, len(b))
	}
	m := Message{Layout: LayoutV0}
	i := versionOffset + 1
	copy(m.AppDomain[:], b[i:i+32])
	i += 32
	m.Format = Format(b[i])
	n := int(b[i+1])
	i += 2
	if n == 0 {
		return Message{}, fmt.Errorf("%w: no signers", ErrMalformed)
	}
	if len(b) < i+32*n+2 {
		return Message{}, fmt.Errorf("%w: truncated in the %d signers", ErrMalformed, n)
	}
	m.Signers = make([]identity.PublicKey, n)
	for k := range m.Signers {
		copy(m.Signers[k][:], b[i:i+32])
		i += 32
	}
	bodyLen := int(binary.LittleEndian.Uint16(b[i:]))
	i += 2
	if rest := len(b) - i; rest != bodyLen {
		return Message{}, fmt.Errorf("%w: length field says %d body bytes, %d follow", ErrMalformed, bodyLen, rest)
	}
	m.Body = append([]byte(nil), b[i:]...)
	if err := m.check(); err != nil {
		return Message{}, err
	}
	return m, nil
}

func decodeLegacy(b []byte) (Message, error) {
	if len(b) < legacyHeader {
		return Message{}, fmt.Errorf("%w: %d bytes, shorter than a header", ErrMalformed, len(b))
	}
	m := Message{Layout: LayoutLegacy, Format: Format(b[versionOffset+1])}
	bodyLen := int(binary.LittleEndian.Uint16(b[versionOffset+2:]))
	if rest := len(b) - legacyHeader; rest != bodyLen {
		return Message{}, fmt.Errorf("%w: length field says %d body bytes, %d follow", ErrMalformed, bodyLen, rest)
	}
	m.Body = append([]byte(nil), b[legacyHeader:]...)
	if err := m.check(); err != nil {
		return Message{}, err
	}
	return m, nil
}

func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

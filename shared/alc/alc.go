// Package alc encodes and decodes ALC packets (RFC 5775) with their LCT
// header (RFC 5651): one encoding symbol a packet, after a FEC Payload ID
// of the Small Block Systematic scheme (FEC Encoding ID 129, RFC 5445:
// Source Block Number 32 bits, Source Block Length 16, Encoding Symbol ID
// 16). The Codepoint carries the FEC Encoding ID, the convention FLUTE
// senders use and Wireshark's ALC dissector assumes.
//
// Header layout (RFC 5651 §5.1), all big-endian:
//
//	 0                   1                   2                   3
//	|V=1 (4)| C |PSI|S| O |H|Res|A|B|  HDR_LEN (8)  | Codepoint (8) |
//	| Congestion Control Information, 32*(C+1) bits                  |
//	| Transport Session Identifier, 32*S+16*H bits                   |
//	| Transport Object Identifier, 32*O+16*H bits                    |
//	| Header extensions, up to HDR_LEN 32-bit words in all          |
//	| FEC Payload ID: SBN (32) | SBL (16) | ESI (16)                 |
//	| Encoding symbol ...                                            |
//
// Extensions with HET 0..127 are HET (8), HEL (8, in 32-bit words, the
// whole extension), content; HET 128..255 are one word: HET and 24 bits.
//
// Size (MaxSymbolSize): a packet must cross a 1500-byte path inside AMT
// over IPv6, which costs outer IPv6 40 + UDP 8 + AMT Multicast Data 2 +
// inner IPv6 40 + UDP 8 = 98 bytes (IPv4: 20+8+2+20+8 = 58), leaving
// MaxPacketSize = 1402 bytes for the ALC packet. A data packet's header
// is at most 40 bytes: 4 fixed + CCI 4 + TSI 4 + TOI 4 + EXT_FTI 16 + FEC
// Payload ID 8, so a symbol may have 1362 bytes; MaxSymbolSize is 1344,
// the largest multiple of 64 below that (Reed–Solomon runs its SIMD paths
// on 64-byte multiples), which also leaves room for PPPoE's 8 bytes
// (1492-byte WAN links: 1492 - 98 - 40 = 1354 ≥ 1344).
package alc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sizes, in bytes.
const (
	// MaxPacketSize is the most an ALC packet may be: 1500 - 98 (see the
	// package comment).
	MaxPacketSize = 1500 - 40 - 8 - 2 - 40 - 8
	// MaxDataHeader is the largest header a data packet of ours carries:
	// LCT 16 (32-bit CCI, TSI, TOI) + EXT_FTI 16 + FEC Payload ID 8.
	MaxDataHeader = 16 + FTILen + PayloadIDLen
	// MaxSymbolSize is the largest encoding symbol a packet carries:
	// MaxPacketSize - MaxDataHeader = 1362, rounded down to 64.
	MaxSymbolSize = (MaxPacketSize - MaxDataHeader) &^ 63
	// PayloadIDLen is the FEC Payload ID of Encoding ID 129.
	PayloadIDLen = 8
	// FTILen is the EXT_FTI extension of Encoding ID 129 (HEL 4).
	FTILen = 16
	// MaxHeaderLen is the largest LCT header HDR_LEN can express.
	MaxHeaderLen = 255 * 4
)

// Protocol numbers.
const (
	// Version is the LCT and ALC version (RFC 5651, RFC 5775).
	Version = 1
	// EncodingID is the FEC Encoding ID whose FEC Payload ID and EXT_FTI
	// this package knows: 129, Small Block Systematic (RFC 5445).
	EncodingID = 129
)

// Header Extension Types (IANA LCT Header Extension Types).
const (
	ExtNOP  = 0  // EXT_NOP (RFC 5651)
	ExtAuth = 1  // EXT_AUTH (RFC 5651)
	ExtTime = 2  // EXT_TIME (RFC 5651)
	ExtFTI  = 64 // EXT_FTI (RFC 5775)
)

// Errors that Decode and AppendTo wrap (use errors.Is).
var (
	// ErrMalformed: the bytes are not a well-formed ALC packet.
	ErrMalformed = errors.New("alc: malformed packet")
	// ErrUnsupported: well formed, but uses what this package does not
	// implement (a Codepoint other than 129, a TSI or TOI over 64 bits).
	ErrUnsupported = errors.New("alc: unsupported packet")
	// ErrTooLarge: the packet would exceed MaxPacketSize or a header
	// field's range.
	ErrTooLarge = errors.New("alc: packet too large")
)

// FTI is the FEC Object Transmission Information of Encoding ID 129
// (RFC 5445 §5.2.2), carried in EXT_FTI:
//
//	| HET=64 | HEL=4 | Transfer Length (48)                        |
//	| FEC Instance ID (16) | Encoding Symbol Length (16)            |
//	| Max Source Block Length (16) | Max Number of Encoding Symbols (16) |
type FTI struct {
	TransferLength uint64 // object bytes, below 2^48
	InstanceID     uint16
	SymbolLen      uint16 // E
	MaxBlockLen    uint16 // B, source symbols
	MaxSymbols     uint16 // source + parity symbols a block may have
}

// Ext is a header extension this package does not interpret (EXT_NOP,
// EXT_AUTH, EXT_TIME, others), kept as it came.
type Ext struct {
	Type uint8
	// Data is the content after HET and HEL for Type < 128 (its length a
	// multiple of 4 plus 2), or the 3 bytes after HET for Type >= 128.
	Data []byte
}

// Packet is one ALC packet.
type Packet struct {
	PSI          uint8  // Protocol-Specific Indication, 2 bits (0 for ID 129)
	CloseSession bool   // A flag
	CloseObject  bool   // B flag
	Codepoint    uint8  // the FEC Encoding ID; Encode uses EncodingID when 0
	CCI          []byte // 4, 8, 12 or 16 bytes; nil encodes 4 zero bytes
	TSI          uint64 // Transport Session Identifier, below 2^48
	TOI          uint64 // Transport Object Identifier
	FTI          *FTI   // EXT_FTI, when present
	Exts         []Ext  // other header extensions, in order, after EXT_FTI

	SBN uint32 // Source Block Number
	SBL uint16 // Source Block Length (k of the block)
	ESI uint16 // Encoding Symbol ID

	// Payload is the encoding symbol. Decode makes it a sub-slice of its
	// input (no copy).
	Payload []byte
}

// sizes returns the TSI and TOI field lengths Encode uses: 32-bit TSI
// (48 with H when it does not fit), TOI 32 or 64 bits (48 with H).
func (p *Packet) sizes() (s, o, h int, err error) {
	switch {
	case p.TSI < 1<<32 && p.TOI < 1<<32:
		return 1, 1, 0, nil
	case p.TSI < 1<<32:
		return 1, 2, 0, nil
	case p.TSI < 1<<48 && p.TOI < 1<<48:
		return 1, 1, 1, nil
	}
	return 0, 0, 0, fmt.Errorf("%w: TSI %#x with TOI %#x needs more than 48+48 bits", ErrTooLarge, p.TSI, p.TOI)
}

// headerLen returns the LCT header length Encode writes.
func (p *Packet) headerLen() (int, error) {
	s, o, h, err := p.sizes()
	if err != nil {
		return 0, err
	}
	n := 4 + max(len(p.CCI), 4) + 4*s + 2*h + 4*o + 2*h
	if p.FTI != nil {
		n += FTILen
	}
	for _, e := range p.Exts {
		n += 2 + len(e.Data)
		if e.Type >= 128 {
			n--
		}
	}
	return n, nil
}

// Len returns the encoded size of p, or 0 if it cannot be encoded.
func (p *Packet) Len() int {
	n, err := p.headerLen()
	if err != nil {
		return 0
	}
	return n + PayloadIDLen + len(p.Payload)
}

// AppendTo appends p's wire form to dst. It refuses what cannot be
// encoded faithfully, and packets above MaxPacketSize.
func (p *Packet) AppendTo(dst []byte) ([]byte, error) {
	s, o, h, err := p.sizes()
	if err != nil {
		return dst, err
	}
	hl, _ := p.headerLen()
	switch {
	case p.PSI > 3:
		return dst, fmt.Errorf("%w: PSI %d is 2 bits", ErrMalformed, p.PSI)
	case p.Codepoint != 0 && p.Codepoint != EncodingID:
		return dst, fmt.Errorf("%w: codepoint %d (only FEC Encoding ID %d)", ErrUnsupported, p.Codepoint, EncodingID)
	case p.CCI != nil && (len(p.CCI) < 4 || len(p.CCI) > 16 || len(p.CCI)%4 != 0):
		return dst, fmt.Errorf("%w: CCI of %d bytes, want 4, 8, 12 or 16", ErrMalformed, len(p.CCI))
	case hl > MaxHeaderLen:
		return dst, fmt.Errorf("%w: LCT header of %d bytes above %d", ErrTooLarge, hl, MaxHeaderLen)
	case hl+PayloadIDLen+len(p.Payload) > MaxPacketSize:
		return dst, fmt.Errorf("%w: %d bytes above %d", ErrTooLarge, hl+PayloadIDLen+len(p.Payload), MaxPacketSize)
	}
	if f := p.FTI; f != nil && f.TransferLength >= 1<<48 {
		return dst, fmt.Errorf("%w: transfer length %d needs more than 48 bits", ErrTooLarge, f.TransferLength)
	}
	for _, e := range p.Exts {
		switch {
		case e.Type == ExtFTI:
			return dst, fmt.Errorf("%w: EXT_FTI goes in FTI, not Exts", ErrMalformed)
		case e.Type >= 128 && len(e.Data) != 3:
			return dst, fmt.Errorf("%w: fixed-length extension %d with %d bytes, want 3", ErrMalformed, e.Type, len(e.Data))
		case e.Type < 128 && (len(e.Data)+2)%4 != 0:
			return dst, fmt.Errorf("%w: extension %d with %d bytes, want 4n+2", ErrMalformed, e.Type, len(e.Data))
		}
	}
	c := max(len(p.CCI), 4)/4 - 1
	var flags uint16 = Version<<12 | uint16(c)<<10 | uint16(p.PSI)<<8 | uint16(s)<<7 | uint16(o)<<5 | uint16(h)<<4
	if p.CloseSession {
		flags |= 2
	}
	if p.CloseObject {
		flags |= 1
	}
	cp := p.Codepoint
	if cp == 0 {
		cp = EncodingID
	}
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = append(dst, byte(hl/4), cp)
	if p.CCI == nil {
		dst = append(dst, 0, 0, 0, 0)
	} else {
		dst = append(dst, p.CCI...)
	}
	dst = appendUint(dst, p.TSI, 4*s+2*h)
	dst = appendUint(dst, p.TOI, 4*o+2*h)
	if f := p.FTI; f != nil {
		dst = append(dst, ExtFTI, FTILen/4)
		dst = appendUint(dst, f.TransferLength, 6)
		dst = binary.BigEndian.AppendUint16(dst, f.InstanceID)
		dst = binary.BigEndian.AppendUint16(dst, f.SymbolLen)
		dst = binary.BigEndian.AppendUint16(dst, f.MaxBlockLen)
		dst = binary.BigEndian.AppendUint16(dst, f.MaxSymbols)
	}
	for _, e := range p.Exts {
		dst = append(dst, e.Type)
		if e.Type < 128 {
			dst = append(dst, byte((len(e.Data)+2)/4))
		}
		dst = append(dst, e.Data...)
	}
	dst = binary.BigEndian.AppendUint32(dst, p.SBN)
	dst = binary.BigEndian.AppendUint16(dst, p.SBL)
	dst = binary.BigEndian.AppendUint16(dst, p.ESI)
	return append(dst, p.Payload...), nil
}

func appendUint(dst []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(v>>(8*i)))
	}
	return dst
}

func readUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// Decode parses one ALC packet from b into p, reusing p's Exts storage.
// The work is linear in len(b) and it never panics; on error p is left
// zeroed. Payload, CCI and Exts' Data alias b.
func (p *Packet) Decode(b []byte) error {
	exts := p.Exts[:0]
	*p = Packet{}
	if err := p.decode(b, exts); err != nil {
		*p = Packet{}
		return err
	}
	return nil
}

// Decode parses one ALC packet; see (*Packet).Decode.
func Decode(b []byte) (*Packet, error) {
	p := new(Packet)
	if err := p.Decode(b); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Packet) decode(b []byte, exts []Ext) error {
	if len(b) < 4 {
		return fmt.Errorf("%w: %d bytes, shorter than the LCT fixed header", ErrMalformed, len(b))
	}
	flags := binary.BigEndian.Uint16(b)
	if v := flags >> 12; v != Version {
		return fmt.Errorf("%w: LCT version %d, want %d", ErrMalformed, v, Version)
	}
	c := int(flags>>10) & 3
	p.PSI = uint8(flags>>8) & 3
	s := int(flags>>7) & 1
	o := int(flags>>5) & 3
	h := int(flags>>4) & 1
	// Res (2 bits) is ignored on receipt (RFC 5651 §5.1).
	p.CloseSession = flags&2 != 0
	p.CloseObject = flags&1 != 0
	hl := int(b[2]) * 4
	p.Codepoint = b[3]
	tsiLen, toiLen := 4*s+2*h, 4*o+2*h
	fixed := 4 + 4*(c+1) + tsiLen + toiLen
	switch {
	case hl < fixed:
		return fmt.Errorf("%w: HDR_LEN %d bytes, the fields the flags announce need %d", ErrMalformed, hl, fixed)
	case hl > len(b):
		return fmt.Errorf("%w: HDR_LEN %d bytes, packet is %d", ErrMalformed, hl, len(b))
	case p.Codepoint != EncodingID:
		return fmt.Errorf("%w: codepoint (FEC Encoding ID) %d, want %d", ErrUnsupported, p.Codepoint, EncodingID)
	case toiLen > 8:
		return fmt.Errorf("%w: TOI of %d bits", ErrUnsupported, 8*toiLen)
	}
	p.CCI = b[4 : 8+4*c : 8+4*c]
	off := 8 + 4*c
	p.TSI = readUint(b[off : off+tsiLen])
	off += tsiLen
	p.TOI = readUint(b[off : off+toiLen])
	off += toiLen
	for off < hl {
		het := b[off]
		n := 4
		if het < 128 {
			if off+1 >= hl {
				return fmt.Errorf("%w: extension %d at offset %d cut by HDR_LEN", ErrMalformed, het, off)
			}
			n = int(b[off+1]) * 4
			if n == 0 {
				return fmt.Errorf("%w: extension %d with HEL 0", ErrMalformed, het)
			}
		}
		if off+n > hl {
			return fmt.Errorf("%w: extension %d of %d bytes at offset %d overruns HDR_LEN %d", ErrMalformed, het, n, off, hl)
		}
		ext := b[off : off+n : off+n]
		off += n
		if het == ExtFTI {
			if p.FTI != nil {
				return fmt.Errorf("%w: two EXT_FTI", ErrMalformed)
			}
			if n != FTILen {
				return fmt.Errorf("%w: EXT_FTI of %d bytes for FEC Encoding ID %d, want %d", ErrMalformed, n, EncodingID, FTILen)
			}
			p.FTI = &FTI{
				TransferLength: readUint(ext[2:8]),
				InstanceID:     binary.BigEndian.Uint16(ext[8:]),
				SymbolLen:      binary.BigEndian.Uint16(ext[10:]),
				MaxBlockLen:    binary.BigEndian.Uint16(ext[12:]),
				MaxSymbols:     binary.BigEndian.Uint16(ext[14:]),
			}
			continue
		}
		if het < 128 {
			exts = append(exts, Ext{Type: het, Data: ext[2:]})
		} else {
			exts = append(exts, Ext{Type: het, Data: ext[1:]})
		}
	}
	if len(exts) > 0 {
		p.Exts = exts
	}
	if len(b)-hl < PayloadIDLen {
		return fmt.Errorf("%w: %d bytes after the LCT header, the FEC Payload ID needs %d", ErrMalformed, len(b)-hl, PayloadIDLen)
	}
	p.SBN = binary.BigEndian.Uint32(b[hl:])
	p.SBL = binary.BigEndian.Uint16(b[hl+4:])
	p.ESI = binary.BigEndian.Uint16(b[hl+6:])
	if len(b) > hl+PayloadIDLen {
		p.Payload = b[hl+PayloadIDLen:]
	}
	return nil
}

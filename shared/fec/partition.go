// Package fec is the forward error correction of the multicast object
// transport: RFC 5052 §9.1 block partitioning, and a systematic Reed–Solomon
// erasure code over GF(2^8) (github.com/klauspost/reedsolomon with its
// Cauchy matrix) that makes parity symbols of a block on demand and decodes
// a block from any k distinct symbols.
//
// The code is signalled as the Under-Specified FEC Encoding ID 129 (RFC 5445
// "Small Block Systematic") with an FEC Instance ID of ours, InstanceID:
// klauspost's Cauchy generator matrix is not RFC 5510's, so claiming
// Encoding ID 5 would make a standard receiver decode wrong bytes.
package fec

import (
	"errors"
	"fmt"
)

// Code points of the FEC scheme, carried in the LCT Codepoint and EXT_FTI.
const (
	// EncodingID is RFC 5445's Small Block Systematic FEC (under-specified).
	EncodingID = 129
	// InstanceID names the code under EncodingID: systematic Reed–Solomon
	// over GF(2^8), generator = identity on top of klauspost/reedsolomon's
	// Cauchy rows (row r, column c = 1/(r XOR c) in its field). Wireshark
	// shows the Instance ID as 8 bits, so it stays below 256.
	InstanceID = 0xBC
	// MaxSymbols is the most encoding symbols (source + parity) one block
	// can have over GF(2^8).
	MaxSymbols = 256
	// MaxTransferLength is the largest object the 48-bit EXT_FTI transfer
	// length field can carry.
	MaxTransferLength = 1<<48 - 1
)

// Sentinel errors callers branch on.
var (
	// ErrParams is wrapped when FEC parameters are out of range.
	ErrParams = errors.New("fec: bad parameters")
	// ErrSymbol is wrapped when a symbol handed to a Decoder does not
	// belong to it (ESI out of range, wrong length).
	ErrSymbol = errors.New("fec: bad symbol")
	// ErrNotEnough means a Decoder has fewer than k distinct symbols.
	ErrNotEnough = errors.New("fec: not enough symbols to decode")
)

// Blocks is the partition of an object of L bytes into source blocks of
// source symbols of E bytes (RFC 5052 §9.1): T = ceil(L/E) symbols, N =
// ceil(T/B) blocks, the first NumLarge blocks of LargeLen symbols and the
// rest of SmallLen = floor(T/N). Every source symbol is E bytes except the
// object's last, which the code pads with zeros to E.
type Blocks struct {
	L        uint64 // transfer length, bytes
	E        int    // encoding symbol length, bytes
	B        int    // maximum source block length, symbols
	T        uint64 // source symbols
	N        uint32 // source blocks
	LargeLen int    // A_large
	SmallLen int    // A_small
	NumLarge uint32 // I: blocks of LargeLen symbols, at the start
}

// Partition applies RFC 5052 §9.1 to an object of l bytes, symbols of e
// bytes and at most b source symbols a block. L = 0 yields zero blocks.
func Partition(l uint64, e, b int) (Blocks, error) {
	if l > MaxTransferLength {
		return Blocks{}, fmt.Errorf("%w: transfer length %d above %d", ErrParams, l, uint64(MaxTransferLength))
	}
	if e < 1 || e > 0xFFFF {
		return Blocks{}, fmt.Errorf("%w: symbol length %d not in 1..65535", ErrParams, e)
	}
	if b < 1 || b >= MaxSymbols {
		return Blocks{}, fmt.Errorf("%w: max source block length %d not in 1..%d", ErrParams, b, MaxSymbols-1)
	}
	p := Blocks{L: l, E: e, B: b}
	p.T = (l + uint64(e) - 1) / uint64(e)
	n := (p.T + uint64(b) - 1) / uint64(b)
	if n > 1<<32-1 {
		return Blocks{}, fmt.Errorf("%w: %d source blocks do not fit a 32-bit SBN", ErrParams, n)
	}
	p.N = uint32(n)
	if p.N == 0 {
		return p, nil
	}
	p.LargeLen = int((p.T + n - 1) / n)
	p.SmallLen = int(p.T / n)
	p.NumLarge = uint32(p.T - uint64(p.SmallLen)*n)
	return p, nil
}

// BlockLen returns k, the number of source symbols of block sbn (0 when
// sbn is out of range).
func (p Blocks) BlockLen(sbn uint32) int {
	switch {
	case sbn >= p.N:
		return 0
	case sbn < p.NumLarge:
		return p.LargeLen
	default:
		return p.SmallLen
	}
}

// FirstSymbol returns the index, within the object, of block sbn's first
// source symbol.
func (p Blocks) FirstSymbol(sbn uint32) uint64 {
	if sbn > p.N {
		sbn = p.N
	}
	if sbn <= p.NumLarge {
		return uint64(sbn) * uint64(p.LargeLen)
	}
	return uint64(p.NumLarge)*uint64(p.LargeLen) + uint64(sbn-p.NumLarge)*uint64(p.SmallLen)
}

// Offset returns the byte offset in the object of block sbn's first byte.
func (p Blocks) Offset(sbn uint32) uint64 {
	return p.FirstSymbol(sbn) * uint64(p.E)
}

// Bytes returns how many object bytes block sbn holds (its last symbol
// may be short).
func (p Blocks) Bytes(sbn uint32) int {
	if sbn >= p.N {
		return 0
	}
	start := p.Offset(sbn)
	end := min(p.Offset(sbn+1), p.L)
	return int(end - start)
}

// SymbolLen returns how many object bytes source symbol esi of block sbn
// carries: E, less for the object's last symbol, 0 out of range (and for
// parity ESIs, which are always E bytes on the wire).
func (p Blocks) SymbolLen(sbn uint32, esi int) int {
	k := p.BlockLen(sbn)
	if esi < 0 || esi >= k {
		return 0
	}
	start := p.Offset(sbn) + uint64(esi)*uint64(p.E)
	return int(min(p.L-start, uint64(p.E)))
}

// Source returns block sbn's k source symbols, each E bytes: sub-slices
// of obj where whole, a zero-padded copy for the object's last symbol.
// obj must be the whole object (len L).
func (p Blocks) Source(obj []byte, sbn uint32) ([][]byte, error) {
	if uint64(len(obj)) != p.L {
		return nil, fmt.Errorf("%w: object is %d bytes, partition is for %d", ErrParams, len(obj), p.L)
	}
	k := p.BlockLen(sbn)
	if k == 0 {
		return nil, fmt.Errorf("%w: block %d of %d", ErrParams, sbn, p.N)
	}
	off := p.Offset(sbn)
	syms := make([][]byte, k)
	for i := range syms {
		start := off + uint64(i)*uint64(p.E)
		end := start + uint64(p.E)
		if end <= p.L {
			syms[i] = obj[start:end:end]
			continue
		}
		s := make([]byte, p.E)
		copy(s, obj[start:])
		syms[i] = s
	}
	return syms, nil
}

package manifest

import (
	"crypto/subtle"
	"encoding/binary"
	"fmt"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
)

// Commitment sizes.
const (
	// DigestLen is a symbol digest's length: SHA-256 truncated to 128 bits.
	DigestLen = 16
	// ChunkDigests is the most digests one hash part carries.
	ChunkDigests = 64
	// MaxDepth bounds a Merkle path: a hash part of ChunkDigests digests
	// and MaxDepth nodes fits MaxSymbolSize (18 + 64*16 + 18*16 = 1330).
	// That allows 2^18 chunks: with blocks of 200 source + 56 parity
	// symbols of 1344 bytes, objects up to about 17 GB.
	MaxDepth = (alc.MaxSymbolSize - hashPartFixed - ChunkDigests*DigestLen) / len(Node{})
	// hashPartFixed: magic 2, version 1, reserved 1, TOI 4, SBN 4, chunk
	// 2, first ESI 2, digest count 1, path length 1 (see HashPart).
	hashPartFixed = 18
)

// Digest is a symbol's truncated SHA-256.
type Digest [DigestLen]byte

// Domain separation prefixes: a symbol digest, a leaf and an inner node
// can never be mistaken for one another.
const (
	tagSymbol = 0x53 // 'S'
	tagLeaf   = 0x4c // 'L'
	tagNode   = 0x4e // 'N'
)

// SymbolDigest is the digest of symbol esi of block sbn of object toi, as
// sent (the object's last source symbol unpadded).
func SymbolDigest(toi, sbn uint32, esi uint16, data []byte) Digest {
	var hdr [1 + 4 + 4 + 2 + 4]byte
	hdr[0] = tagSymbol
	binary.BigEndian.PutUint32(hdr[1:], toi)
	binary.BigEndian.PutUint32(hdr[5:], sbn)
	binary.BigEndian.PutUint16(hdr[9:], esi)
	binary.BigEndian.PutUint32(hdr[11:], uint32(len(data)))
	h := newHasher()
	h.Write(hdr[:])
	h.Write(data)
	sum := h.Sum()
	var d Digest
	copy(d[:], sum[:])
	return d
}

func leafHash(toi, sbn uint32, chunk, first uint16, digests []Digest) Node {
	var hdr [1 + 4 + 4 + 2 + 2 + 2]byte
	hdr[0] = tagLeaf
	binary.BigEndian.PutUint32(hdr[1:], toi)
	binary.BigEndian.PutUint32(hdr[5:], sbn)
	binary.BigEndian.PutUint16(hdr[9:], chunk)
	binary.BigEndian.PutUint16(hdr[11:], first)
	binary.BigEndian.PutUint16(hdr[13:], uint16(len(digests)))
	h := newHasher()
	h.Write(hdr[:])
	for _, d := range digests {
		h.Write(d[:])
	}
	sum := h.Sum()
	var n Node
	copy(n[:], sum[:])
	return n
}

func nodeHash(l, r Node) Node {
	var buf [1 + 2*len(Node{})]byte
	buf[0] = tagNode
	copy(buf[1:], l[:])
	copy(buf[1+len(l):], r[:])
	h := newHasher()
	h.Write(buf[:])
	sum := h.Sum()
	var n Node
	copy(n[:], sum[:])
	return n
}

// layout is where each block's chunks sit among the tree's leaves.
type layout struct {
	blocks    fec.Blocks
	maxParity int
	large     int // chunks of a block of LargeLen source symbols
	small     int
	leaves    uint64
}

func chunks(symbols int) int { return (symbols + ChunkDigests - 1) / ChunkDigests }

func newLayout(m *Manifest) (layout, error) {
	p, err := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen))
	if err != nil {
		return layout{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	l := layout{blocks: p, maxParity: int(m.FEC.MaxParity)}
	if p.N == 0 {
		return l, nil
	}
	l.large = chunks(p.LargeLen + l.maxParity)
	l.small = chunks(p.SmallLen + l.maxParity)
	l.leaves = uint64(p.NumLarge)*uint64(l.large) + uint64(p.N-p.NumLarge)*uint64(l.small)
	if depth(l.leaves) > MaxDepth {
		return layout{}, fmt.Errorf("%w: %d hash chunks need a Merkle path of %d nodes, at most %d fit a packet", ErrTooLarge, l.leaves, depth(l.leaves), MaxDepth)
	}
	return l, nil
}

// depth is the longest Merkle path in a tree of n leaves.
func depth(n uint64) int {
	d := 0
	for n > 1 {
		n = (n + 1) / 2
		d++
	}
	return d
}

// symbols returns how many ESIs block sbn has digests for (k + MaxParity).
func (l layout) symbols(sbn uint32) int { return l.blocks.BlockLen(sbn) + l.maxParity }

// chunksOf returns block sbn's chunk count.
func (l layout) chunksOf(sbn uint32) int {
	if sbn < l.blocks.NumLarge {
		return l.large
	}
	return l.small
}

// leaf returns the tree index of chunk c of block sbn.
func (l layout) leaf(sbn uint32, c int) uint64 {
	if sbn <= l.blocks.NumLarge {
		return uint64(sbn)*uint64(l.large) + uint64(c)
	}
	return uint64(l.blocks.NumLarge)*uint64(l.large) + uint64(sbn-l.blocks.NumLarge)*uint64(l.small) + uint64(c)
}

// tree is a Merkle tree built bottom up: adjacent nodes pair, an odd last
// node moves up unchanged (the same shape as RFC 9162's).
type tree [][]Node

func buildTree(leaves []Node) tree {
	t := tree{leaves}
	for lv := leaves; len(lv) > 1; {
		next := make([]Node, (len(lv)+1)/2)
		for i := range next {
			if 2*i+1 < len(lv) {
				next[i] = nodeHash(lv[2*i], lv[2*i+1])
			} else {
				next[i] = lv[2*i]
			}
		}
		t = append(t, next)
		lv = next
	}
	return t
}

func (t tree) root() Node {
	if len(t) == 0 || len(t[len(t)-1]) == 0 {
		return Node{}
	}
	return t[len(t)-1][0]
}

func (t tree) path(i uint64) []Node {
	var p []Node
	for _, lv := range t[:len(t)-1] {
		if s := i ^ 1; s < uint64(len(lv)) {
			p = append(p, lv[s])
		}
		i >>= 1
	}
	return p
}

// rootFrom computes the root from leaf i of n with its path, or reports
// that the path has the wrong length for that position.
func rootFrom(leaf Node, i, n uint64, path []Node) (Node, bool) {
	if i >= n {
		return Node{}, false
	}
	h := leaf
	for n > 1 {
		if s := i ^ 1; s < n {
			if len(path) == 0 {
				return Node{}, false
			}
			if i&1 == 0 {
				h = nodeHash(h, path[0])
			} else {
				h = nodeHash(path[0], h)
			}
			path = path[1:]
		}
		i >>= 1
		n = (n + 1) / 2
	}
	return h, len(path) == 0
}

// HashPart is one chunk of a block's hash list: the digests of ESIs
// FirstESI.. of block SBN, with the Merkle path from its leaf to the
// manifest's root. Encoding (the payload of its ALC packet):
//
//	'B' 'H' | version | 0 | TOI (32) | SBN (32) | chunk (16) | first ESI (16)
//	| digest count (8) | path length (8) | digests (16 each) | path (16 each)
type HashPart struct {
	TOI      uint32
	SBN      uint32
	Chunk    uint16
	FirstESI uint16
	Digests  []Digest
	Path     []Node
}

// Verify checks that h belongs to m: its object, a block and chunk that
// exist, the ESI range and count that chunk must have, and a Merkle path
// to m.Root. Cost: one SHA-256 over the chunk and one per path node.
func (h *HashPart) Verify(m *Manifest) error {
	l, err := newLayout(m)
	if err != nil {
		return err
	}
	if h.TOI != m.TOI {
		return fmt.Errorf("%w: hash part for TOI %d, manifest is TOI %d", ErrMismatch, h.TOI, m.TOI)
	}
	if h.SBN >= l.blocks.N || int(h.Chunk) >= l.chunksOf(h.SBN) {
		return fmt.Errorf("%w: block %d chunk %d does not exist (%d blocks)", ErrMismatch, h.SBN, h.Chunk, l.blocks.N)
	}
	first := int(h.Chunk) * ChunkDigests
	count := min(ChunkDigests, l.symbols(h.SBN)-first)
	if int(h.FirstESI) != first || len(h.Digests) != count {
		return fmt.Errorf("%w: block %d chunk %d has ESIs %d+%d, want %d+%d", ErrMismatch, h.SBN, h.Chunk, h.FirstESI, len(h.Digests), first, count)
	}
	root, ok := rootFrom(leafHash(h.TOI, h.SBN, h.Chunk, h.FirstESI, h.Digests), l.leaf(h.SBN, int(h.Chunk)), l.leaves, h.Path)
	if !ok || subtle.ConstantTimeCompare(root[:], m.Root[:]) != 1 {
		return fmt.Errorf("%w: block %d chunk %d: Merkle path does not lead to the manifest's root", ErrMismatch, h.SBN, h.Chunk)
	}
	return nil
}

// MarshalBinary returns h's encoding.
func (h *HashPart) MarshalBinary() ([]byte, error) {
	if len(h.Digests) == 0 || len(h.Digests) > ChunkDigests || len(h.Path) > MaxDepth {
		return nil, fmt.Errorf("%w: hash part with %d digests and a path of %d", ErrMalformed, len(h.Digests), len(h.Path))
	}
	b := make([]byte, 0, hashPartFixed+DigestLen*len(h.Digests)+len(Node{})*len(h.Path))
	b = append(b, 'B', 'H', Version, 0)
	b = binary.BigEndian.AppendUint32(b, h.TOI)
	b = binary.BigEndian.AppendUint32(b, h.SBN)
	b = binary.BigEndian.AppendUint16(b, h.Chunk)
	b = binary.BigEndian.AppendUint16(b, h.FirstESI)
	b = append(b, byte(len(h.Digests)), byte(len(h.Path)))
	for _, d := range h.Digests {
		b = append(b, d[:]...)
	}
	for _, n := range h.Path {
		b = append(b, n[:]...)
	}
	return b, nil
}

// DecodeHashPart parses a hash part's encoding. It checks the form only;
// Verify checks it against the manifest. It never panics.
func DecodeHashPart(b []byte) (*HashPart, error) {
	if len(b) < hashPartFixed {
		return nil, fmt.Errorf("%w: hash part of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != 'B' || b[1] != 'H' || b[2] != Version || b[3] != 0 {
		return nil, fmt.Errorf("%w: not a version %d hash part (%x)", ErrMalformed, Version, b[:4])
	}
	h := &HashPart{
		TOI:      binary.BigEndian.Uint32(b[4:]),
		SBN:      binary.BigEndian.Uint32(b[8:]),
		Chunk:    binary.BigEndian.Uint16(b[12:]),
		FirstESI: binary.BigEndian.Uint16(b[14:]),
	}
	nd, np := int(b[16]), int(b[17])
	if nd == 0 || nd > ChunkDigests || np > MaxDepth {
		return nil, fmt.Errorf("%w: hash part with %d digests and a path of %d", ErrMalformed, nd, np)
	}
	if want := hashPartFixed + nd*DigestLen + np*len(Node{}); len(b) != want {
		return nil, fmt.Errorf("%w: hash part of %d bytes, its counts say %d", ErrMalformed, len(b), want)
	}
	rest := b[hashPartFixed:]
	h.Digests = make([]Digest, nd)
	for i := range h.Digests {
		copy(h.Digests[i][:], rest[i*DigestLen:])
	}
	rest = rest[nd*DigestLen:]
	if np > 0 {
		h.Path = make([]Node, np)
		for i := range h.Path {
			copy(h.Path[i][:], rest[i*len(Node{}):])
		}
	}
	return h, nil
}

// Packet returns the ALC packet that carries h: TOI = h.TOI|HashListBit,
// FEC Payload ID (SBN, chunks in the block, chunk).
func (h *HashPart) Packet(m *Manifest) (alc.Packet, error) {
	l, err := newLayout(m)
	if err != nil {
		return alc.Packet{}, err
	}
	b, err := h.MarshalBinary()
	if err != nil {
		return alc.Packet{}, err
	}
	return alc.Packet{Codepoint: alc.EncodingID, TSI: uint64(m.TSI), TOI: uint64(h.TOI) | HashListBit,
		SBN: h.SBN, SBL: uint16(l.chunksOf(h.SBN)), ESI: h.Chunk, Payload: b}, nil
}

// HashPartFromPacket decodes the hash part an ALC packet carries and checks
// that the packet's header names the same object, block and chunk.
func HashPartFromPacket(p *alc.Packet) (*HashPart, error) {
	if p.TOI&HashListBit == 0 || p.TOI>>32 != 0 {
		return nil, fmt.Errorf("%w: TOI %#x is not a hash list's", ErrMalformed, p.TOI)
	}
	h, err := DecodeHashPart(p.Payload)
	if err != nil {
		return nil, err
	}
	if uint64(h.TOI)|HashListBit != p.TOI || h.SBN != p.SBN || h.Chunk != p.ESI {
		return nil, fmt.Errorf("%w: hash part for TOI %d block %d chunk %d in a packet for TOI %#x block %d ESI %d",
			ErrMalformed, h.TOI, h.SBN, h.Chunk, p.TOI, p.SBN, p.ESI)
	}
	return h, nil
}

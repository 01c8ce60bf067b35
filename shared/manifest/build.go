package manifest

import (
	"crypto/subtle"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
)

// Defaults for Params' FEC fields.
//
// A block of 100 symbols: each symbol a receiver rebuilds from parity costs
// a multiply-add over every symbol of its block, so the block length sets
// the decode cost per lost packet. With 200 a MIPS router (one 880 MHz
// core) fell to 44 Mbit/s at 5% loss; with 100 it keeps 50 Mbit/s
// (test/mipscount). 28 parity symbols a block at most: the hash list
// covers every symbol the sender may send, so more would cost
// authentication bytes (the manifest and hash lists stay under 3%).
const (
	DefaultMaxBlockLen = 100
	DefaultMaxParity   = 28
)

// Params is what the sender knows about an object before Build.
type Params struct {
	URL          string
	ContentType  string
	ETag         string
	LastModified time.Time
	Sequence     uint64
	Issued       time.Time
	Expires      time.Time
	TSI, TOI     uint32
	Channel      Channel
	SymbolLen    int // 0: alc.MaxSymbolSize
	MaxBlockLen  int // 0: DefaultMaxBlockLen
	MaxParity    int // 0: DefaultMaxParity (256 - MaxBlockLen when that is set)
}

// Build reads the object (size bytes from r), makes every block's parity
// up to MaxParity with codec, hashes every symbol, builds the Merkle tree
// and returns the manifest signed with key and each block's hash list.
func Build(r io.ReaderAt, size int64, p Params, key *identity.Keypair, codec *fec.Codec) (*Manifest, []*HashList, error) {
	if size < 0 {
		return nil, nil, fmt.Errorf("%w: size %d", ErrMalformed, size)
	}
	e, b, mp := p.SymbolLen, p.MaxBlockLen, p.MaxParity
	if e == 0 {
		e = alc.MaxSymbolSize
	}
	if mp == 0 {
		mp = DefaultMaxParity
		if b != 0 {
			mp = fec.MaxSymbols - b
		}
	}
	if b == 0 {
		b = DefaultMaxBlockLen
	}
	if e < 0 || e > 0xFFFF || b < 0 || b > 0xFFFF || mp < 0 || mp > 0xFFFF {
		return nil, nil, fmt.Errorf("%w: symbol %d, block %d, parity %d", ErrMalformed, e, b, mp)
	}
	m := &Manifest{
		Sequence: p.Sequence, Issued: p.Issued.Truncate(time.Second).UTC(), Expires: p.Expires.Truncate(time.Second).UTC(),
		URL: p.URL, ContentLength: uint64(size), ContentType: p.ContentType, ETag: p.ETag,
		TSI: p.TSI, TOI: p.TOI, Channel: p.Channel,
		FEC: FEC{EncodingID: fec.EncodingID, InstanceID: fec.InstanceID, SymbolLen: uint16(e), MaxBlockLen: uint16(b), MaxParity: uint16(mp)},
	}
	if !p.LastModified.IsZero() {
		m.LastModified = p.LastModified.Truncate(time.Second).UTC()
	}
	m.Channel.Source, m.Channel.Group = m.Channel.Source.Unmap(), m.Channel.Group.Unmap()
	if err := m.validate(); err != nil {
		return nil, nil, err
	}
	l, _ := newLayout(m)
	lists := make([]*HashList, l.blocks.N)
	leaves := make([]Node, 0, l.leaves)
	buf := make([]byte, l.blocks.LargeLen*e)
	for sbn := range l.blocks.N {
		n := l.blocks.Bytes(sbn)
		blk := buf[:l.blocks.BlockLen(sbn)*e]
		if got, err := r.ReadAt(blk[:n], int64(l.blocks.Offset(sbn))); err != nil && (err != io.EOF || got != n) {
			return nil, nil, fmt.Errorf("manifest: read block %d: %w", sbn, err)
		}
		clear(blk[n:])
		k := l.blocks.BlockLen(sbn)
		src := make([][]byte, k)
		for i := range src {
			src[i] = blk[i*e : (i+1)*e]
		}
		parity, err := codec.Parity(src, k, k+mp)
		if err != nil {
			return nil, nil, err
		}
		hl := newHashList(m, l, sbn)
		for esi := range hl.digests {
			sym := blk[0:0]
			if esi < k {
				sym = src[esi][:l.blocks.SymbolLen(sbn, esi)]
			} else {
				sym = parity[esi-k]
			}
			hl.digests[esi] = SymbolDigest(m.TOI, sbn, uint16(esi), sym)
			hl.known[esi] = true
		}
		for c := range l.chunksOf(sbn) {
			first := c * ChunkDigests
			part := HashPart{TOI: m.TOI, SBN: sbn, Chunk: uint16(c), FirstESI: uint16(first),
				Digests: hl.digests[first:min(first+ChunkDigests, len(hl.digests))]}
			hl.parts = append(hl.parts, part)
			leaves = append(leaves, leafHash(m.TOI, sbn, part.Chunk, part.FirstESI, part.Digests))
		}
		lists[sbn] = hl
	}
	t := buildTree(leaves)
	m.Root = t.root()
	for _, hl := range lists {
		for i := range hl.parts {
			hl.parts[i].Path = t.path(l.leaf(hl.SBN, int(hl.parts[i].Chunk)))
		}
	}
	if err := m.Sign(key); err != nil {
		return nil, nil, err
	}
	return m, lists, nil
}

// HashList is one block's symbol digests. Build returns them complete,
// for the sender; a receiver starts from NewHashList and Adds the hash
// parts it receives, each verified on arrival, and Checks symbols against
// the digests it has.
type HashList struct {
	TOI, SBN uint32
	blocks   fec.Blocks
	digests  []Digest
	known    []bool
	parts    []HashPart
}

func newHashList(m *Manifest, l layout, sbn uint32) *HashList {
	n := l.symbols(sbn)
	return &HashList{TOI: m.TOI, SBN: sbn, blocks: l.blocks, digests: make([]Digest, n), known: make([]bool, n)}
}

// NewHashList returns an empty hash list for block sbn of m's object.
func NewHashList(m *Manifest, sbn uint32) (*HashList, error) {
	l, err := newLayout(m)
	if err != nil {
		return nil, err
	}
	if sbn >= l.blocks.N {
		return nil, fmt.Errorf("%w: block %d of %d", ErrMismatch, sbn, l.blocks.N)
	}
	return newHashList(m, l, sbn), nil
}

// Add verifies h against m and, when it is this list's block, keeps its
// digests. A part already held is verified and ignored.
func (hl *HashList) Add(m *Manifest, h *HashPart) error {
	if h.TOI != hl.TOI || h.SBN != hl.SBN {
		return fmt.Errorf("%w: hash part for TOI %d block %d, list is TOI %d block %d", ErrMismatch, h.TOI, h.SBN, hl.TOI, hl.SBN)
	}
	if err := h.Verify(m); err != nil {
		return err
	}
	for i, d := range h.Digests {
		esi := int(h.FirstESI) + i
		hl.digests[esi], hl.known[esi] = d, true
	}
	for _, p := range hl.parts {
		if p.Chunk == h.Chunk {
			return nil
		}
	}
	hl.parts = append(hl.parts, *h)
	return nil
}

// Parts returns the hash parts held, to send or forward.
func (hl *HashList) Parts() []HashPart { return hl.parts }

// Complete reports whether every ESI's digest is held.
func (hl *HashList) Complete() bool {
	for _, k := range hl.known {
		if !k {
			return false
		}
	}
	return true
}

// Verify checks that the list is complete and that each of its parts
// belongs to m and to this block.
func (hl *HashList) Verify(m *Manifest) error {
	if !hl.Complete() {
		return fmt.Errorf("%w: block %d hash list incomplete", ErrMismatch, hl.SBN)
	}
	for i := range hl.parts {
		h := &hl.parts[i]
		if h.TOI != hl.TOI || h.SBN != hl.SBN {
			return fmt.Errorf("%w: hash part for TOI %d block %d in list for TOI %d block %d", ErrMismatch, h.TOI, h.SBN, hl.TOI, hl.SBN)
		}
		if err := h.Verify(m); err != nil {
			return err
		}
		for j, d := range h.Digests {
			if hl.digests[int(h.FirstESI)+j] != d {
				return fmt.Errorf("%w: block %d ESI %d digest differs from its part", ErrMismatch, hl.SBN, int(h.FirstESI)+j)
			}
		}
	}
	return nil
}

// Check reports whether data is symbol esi of this block: its digest is
// held and matches, and its length is right (the symbol size, or the
// object's last source symbol's own length). Cost: one SHA-256 of the
// symbol. A false answer means drop the packet.
func (hl *HashList) Check(esi uint16, data []byte) bool {
	i := int(esi)
	if i >= len(hl.digests) || !hl.known[i] {
		return false
	}
	want := hl.blocks.E
	if i < hl.blocks.BlockLen(hl.SBN) {
		want = hl.blocks.SymbolLen(hl.SBN, i)
	}
	if len(data) != want {
		return false
	}
	d := SymbolDigest(hl.TOI, hl.SBN, esi, data)
	return subtle.ConstantTimeCompare(d[:], hl.digests[i][:]) == 1
}

// Overhead returns the bytes authentication adds on the wire for m's
// object, ALC headers included: one manifest packet and every hash-part
// packet once.
func Overhead(m *Manifest) (int64, error) {
	l, err := newLayout(m)
	if err != nil {
		return 0, err
	}
	mp, err := m.Packet()
	if err != nil {
		return 0, err
	}
	total := int64(mp.Len())
	hdr := alc.Packet{TSI: uint64(m.TSI), TOI: uint64(m.TOI) | HashListBit}
	perPacket := int64(hdr.Len()) + hashPartFixed
	for sbn := range l.blocks.N {
		syms := l.symbols(sbn)
		for c := range l.chunksOf(sbn) {
			n := min(ChunkDigests, syms-c*ChunkDigests)
			total += perPacket + int64(n*DigestLen) + int64(pathLen(l.leaf(sbn, c), l.leaves)*len(Node{}))
		}
	}
	return total, nil
}

// pathLen is the Merkle path length of leaf i of n.
func pathLen(i, n uint64) int {
	d := 0
	for n > 1 {
		if i^1 < n {
			d++
		}
		i >>= 1
		n = (n + 1) / 2
	}
	return d
}

// ChannelOf is a convenience for tests and callers holding addresses.
func ChannelOf(source, group string, port uint16) (Channel, error) {
	s, err := netip.ParseAddr(source)
	if err != nil {
		return Channel{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	g, err := netip.ParseAddr(group)
	if err != nil {
		return Channel{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return Channel{Source: s, Group: g, Port: port}, nil
}

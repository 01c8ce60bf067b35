// Package objrecv is the receiving end of the multicast object transport:
// an Assembler rebuilds one object from ALC packets (shared/alc) that
// arrive by any path — the multicast channel, early media and repairs over
// the unicast channel, all in the same format — checking every packet
// against the object's signed manifest (shared/manifest) before it enters
// a block or a decoder, decoding each source block (shared/fec) as soon as
// it holds k verified symbols and writing completed blocks to an io.Writer
// in order, so bytes flow to waiting clients as blocks complete.
//
// Trust: New verifies the manifest's signature against the pinned CAST
// key itself (one ed25519 verify), so an Assembler can never run on an
// unsigned manifest. The replay guard (manifest.Replay) spans objects and
// stays with the caller, which must Check the manifest before New.
// Hash-list packets are verified against the manifest's Merkle root on
// arrival; a data symbol is decoded only after its digest matched a
// verified hash list. A symbol whose hash-list chunk has not arrived is
// held, unverified, in a small FIFO (Config.MaxHeld; the oldest is
// evicted and counted) and checked when the chunk arrives.
//
// Memory: at most Config.MaxBlocks blocks have state at once (hash list,
// decoder, or decoded bytes waiting for an earlier block): the lowest
// blocks not yet written. When all slots are taken the farthest block
// gives way to a nearer one, so the next block to write always finds a
// slot and out-of-order or replayed packets can never starve it; a packet
// for a block farther than all held ones is dropped and counted
// (RejectNoRoom) and shows up again in Missing. With the defaults
// (8 blocks of 100 symbols of 1344 bytes, 256 held symbols) that is about
// 1.1 MB of symbols plus 0.35 MB held.
//
// Loss: Missing lists, per incomplete block, the hash-list chunks and the
// source ESIs not held, as compact ranges for a NACK; Stalled reports a
// bounded time without progress, after which the caller fetches
// Fallback's byte ranges over HTTP and hands them to Fill.
package objrecv

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
)

// Defaults for Config's zero fields.
const (
	DefaultMaxBlocks = 8
	DefaultMaxHeld   = 256
	DefaultStall     = 10 * time.Second
)

// Sentinel errors; Feed's errors wrap ErrRejected (and a Reason in the
// message), ErrDuplicate or ErrDone.
var (
	// ErrRejected: the packet failed a check and was dropped.
	ErrRejected = errors.New("objrecv: packet rejected")
	// ErrDuplicate: the packet repeats what is already held or written.
	ErrDuplicate = errors.New("objrecv: duplicate")
	// ErrNoRoom: the packet's block has no slot (Config.MaxBlocks).
	ErrNoRoom = errors.New("objrecv: no room for another block")
	// ErrWriter: the io.Writer failed; the Assembler stops.
	ErrWriter = errors.New("objrecv: writing the object failed")
	// ErrMismatch: bytes handed to Fill do not match the hash list.
	ErrMismatch = errors.New("objrecv: bytes do not match the manifest")
)

// Reason names why a packet was rejected (Stats.Rejected's keys).
type Reason string

// Reasons, in the order Feed checks them.
const (
	RejectMalformed Reason = "malformed" // not an ALC packet of ours
	RejectTSI       Reason = "tsi"       // another session
	RejectTOI       Reason = "toi"       // another object
	RejectSBN       Reason = "sbn"       // block number past the object
	RejectSBL       Reason = "sbl"       // source block length not the block's k
	RejectESI       Reason = "esi"       // ESI past k + MaxParity
	RejectLength    Reason = "length"    // payload not the symbol's length
	RejectDigest    Reason = "digest"    // symbol does not match its hash-list digest
	RejectHashPart  Reason = "hashpart"  // hash-list packet malformed or not under the root
	RejectNoRoom    Reason = "noroom"    // block has no slot (Config.MaxBlocks)
	RejectEvicted   Reason = "evicted"   // held unverified symbol pushed out of the FIFO
	RejectManifest  Reason = "manifest"  // a manifest packet (TOI 0): the caller's, not ours
	RejectAfterFail Reason = "afterfail" // the writer failed earlier
	RejectLate      Reason = "late"      // block already decoded
)

// Config tunes an Assembler; the zero value uses the defaults.
type Config struct {
	MaxBlocks int              // blocks with state at once, >= 2; 0: DefaultMaxBlocks
	MaxHeld   int              // unverified symbols held awaiting their hash list; 0: DefaultMaxHeld
	Stall     time.Duration    // no progress for this long: Stalled; 0: DefaultStall
	Codec     *fec.Codec       // shared encoder cache; nil: a new one
	Now       func() time.Time // clock; nil: time.Now
}

// Stats are an Assembler's counters.
type Stats struct {
	Bytes         map[string]uint64 // verified symbol bytes accepted, by path label
	Packets       map[string]uint64 // verified symbols accepted, by path label
	Rejected      map[Reason]uint64 // packets dropped, by reason
	Duplicates    uint64            // symbols or hash chunks already held, or for a decoded block
	ParityUsed    uint64            // parity symbols that went into a decode
	ParityByte    uint64            // their bytes
	HashParts     uint64            // hash-list chunks verified and kept
	BlocksEvicted uint64            // far blocks dropped from memory for nearer ones
	Held          int               // unverified symbols held now
	Blocks        uint32            // blocks written
	Written       uint64            // object bytes written
}

// Kind says what a Range asks for.
type Kind uint8

// Range kinds.
const (
	Symbols   Kind = iota // source symbols First..First+Count-1 of block SBN
	HashChunk             // hash-list chunks First..First+Count-1 of block SBN
)

// Range is one NACK entry: a run of ESIs (or hash chunks) of one block.
type Range struct {
	SBN   uint32
	Kind  Kind
	First uint16
	Count uint16
	Need  uint16 // symbols of any ESI (source or parity) the block still needs
}

// ByteRange is [Off, Off+Len) of the object.
type ByteRange struct{ Off, Len uint64 }

type held struct {
	sbn   uint32
	esi   uint16
	label string
	data  []byte
}

type block struct {
	sbn    uint32
	k      int
	hl     *manifest.HashList
	chunks uint8 // bit c: hash-list chunk c verified and held
	dec    *fec.Decoder
	out    [][]byte // decoded source symbols, waiting for earlier blocks
}

// Assembler rebuilds one object. It is safe for concurrent use: paths may
// feed it from their own goroutines. The io.Writer is called from Feed or
// Fill with the Assembler's lock held, so it must not block for long
// (a cache file, a buffered fan-out to clients).
type Assembler struct {
	m     *manifest.Manifest
	part  fec.Blocks
	codec *fec.Codec
	cfg   Config

	mu       sync.Mutex
	w        io.Writer
	err      error
	next     uint32 // next block to write
	blocks   map[uint32]*block
	held     []held // FIFO
	progress time.Time
	st       Stats
	pkt      alc.Packet
	pad      []byte
}

// New returns an Assembler for m's object writing to w. It verifies m's
// signature against cast; the caller has run the replay guard.
func New(m *manifest.Manifest, cast identity.PublicKey, w io.Writer, cfg Config) (*Assembler, error) {
	if err := m.Verify(cast); err != nil {
		return nil, fmt.Errorf("objrecv: %w", err)
	}
	return newAssembler(m, w, cfg)
}

// newAssembler is New after the signature check.
func newAssembler(m *manifest.Manifest, w io.Writer, cfg Config) (*Assembler, error) {
	p, err := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen))
	if err != nil {
		return nil, fmt.Errorf("objrecv: %w", err)
	}
	if cfg.MaxBlocks == 0 {
		cfg.MaxBlocks = DefaultMaxBlocks
	}
	if cfg.MaxBlocks < 2 {
		return nil, fmt.Errorf("objrecv: MaxBlocks %d, want at least 2", cfg.MaxBlocks)
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.Stall <= 0 {
		cfg.Stall = DefaultStall
	}
	if cfg.Codec == nil {
		cfg.Codec = fec.NewCodec()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Assembler{m: m, part: p, codec: cfg.Codec, cfg: cfg, w: w, blocks: make(map[uint32]*block),
		pad: make([]byte, p.E)}
	a.st.Bytes, a.st.Packets, a.st.Rejected = map[string]uint64{}, map[string]uint64{}, map[Reason]uint64{}
	a.progress = cfg.Now()
	return a, nil
}

// Manifest returns the object's manifest.
func (a *Assembler) Manifest() *manifest.Manifest { return a.m }

// Feed checks one ALC packet that arrived by path label (e.g.
// "multicast", "early", "repair") and takes what it carries. A nil error
// means it was kept (verified, or held awaiting its hash list); otherwise
// the error wraps ErrRejected, ErrDuplicate or ErrWriter and the packet
// was dropped and counted. Feed does not keep b.
func (a *Assembler) Feed(b []byte, label string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.reject(RejectAfterFail, "%w", a.err)
	}
	p := &a.pkt
	if err := p.Decode(b); err != nil {
		return a.reject(RejectMalformed, "%w", err)
	}
	if p.TSI != uint64(a.m.TSI) {
		return a.reject(RejectTSI, "TSI %d, want %d", p.TSI, a.m.TSI)
	}
	switch p.TOI {
	case uint64(a.m.TOI):
		return a.feedSymbol(p, label)
	case uint64(a.m.TOI) | manifest.HashListBit:
		return a.feedHashPart(p)
	case manifest.ManifestTOI:
		return a.reject(RejectManifest, "manifest packet")
	}
	return a.reject(RejectTOI, "TOI %#x, want %d", p.TOI, a.m.TOI)
}

func (a *Assembler) reject(r Reason, format string, args ...any) error {
	a.st.Rejected[r]++
	return fmt.Errorf("%w (%s): "+format, append([]any{ErrRejected, r}, args...)...)
}

// symbols is how many ESIs block sbn has (k + MaxParity).
func (a *Assembler) symbols(k int) int { return k + int(a.m.FEC.MaxParity) }

func chunkCount(symbols int) int {
	return (symbols + manifest.ChunkDigests - 1) / manifest.ChunkDigests
}

func (a *Assembler) feedSymbol(p *alc.Packet, label string) error {
	k := a.part.BlockLen(p.SBN)
	switch {
	case k == 0:
		return a.reject(RejectSBN, "block %d of %d", p.SBN, a.part.N)
	case int(p.SBL) != k:
		return a.reject(RejectSBL, "block %d SBL %d, want %d", p.SBN, p.SBL, k)
	case int(p.ESI) >= a.symbols(k):
		return a.reject(RejectESI, "block %d ESI %d, at most %d", p.SBN, p.ESI, a.symbols(k)-1)
	}
	want := a.part.E
	if int(p.ESI) < k {
		want = a.part.SymbolLen(p.SBN, int(p.ESI))
	}
	if len(p.Payload) != want {
		return a.reject(RejectLength, "block %d ESI %d of %d bytes, want %d", p.SBN, p.ESI, len(p.Payload), want)
	}
	if a.decoded(p.SBN) {
		a.st.Duplicates++
		return fmt.Errorf("%w: block %d already decoded", ErrDuplicate, p.SBN)
	}
	blk := a.blocks[p.SBN]
	if blk == nil || blk.chunks&(1<<(p.ESI/manifest.ChunkDigests)) == 0 {
		// No verified digest yet: hold a copy, never trusted.
		a.hold(held{sbn: p.SBN, esi: p.ESI, label: label, data: append([]byte(nil), p.Payload...)})
		return nil
	}
	return a.take(blk, p.ESI, p.Payload, label)
}

// decoded reports whether block sbn is written or decoded.
func (a *Assembler) decoded(sbn uint32) bool {
	if sbn < a.next {
		return true
	}
	b := a.blocks[sbn]
	return b != nil && b.out != nil
}

// take checks a symbol of a block whose hash-list chunk is held and adds it.
func (a *Assembler) take(blk *block, esi uint16, data []byte, label string) error {
	if blk.dec.Has(int(esi)) || blk.dec.Ready() {
		a.st.Duplicates++
		return fmt.Errorf("%w: block %d ESI %d", ErrDuplicate, blk.sbn, esi)
	}
	if !blk.hl.Check(esi, data) {
		return a.reject(RejectDigest, "block %d ESI %d does not match its digest", blk.sbn, esi)
	}
	sym := data
	if len(sym) < a.part.E { // the object's last symbol: the code sees it padded
		sym = append(append(make([]byte, 0, a.part.E), data...), a.pad[:a.part.E-len(data)]...)
	}
	if _, err := blk.dec.Add(int(esi), sym); err != nil {
		return a.reject(RejectLength, "%w", err) // unreachable: length and ESI checked above
	}
	a.st.Bytes[label] += uint64(len(data))
	a.st.Packets[label]++
	a.progress = a.cfg.Now()
	if !blk.dec.Ready() {
		return nil
	}
	src, err := blk.dec.Decode()
	if err != nil {
		return a.reject(RejectLength, "%w", err) // unreachable: k verified symbols held
	}
	for e := blk.k; e < a.symbols(blk.k); e++ {
		if blk.dec.Has(e) {
			a.st.ParityUsed++
			a.st.ParityByte += uint64(a.part.E)
		}
	}
	blk.out = src
	blk.dec, blk.hl = nil, nil
	a.dropHeld(blk.sbn)
	return a.flush()
}

// flush writes every decoded block that is next in order.
func (a *Assembler) flush() error {
	for {
		blk := a.blocks[a.next]
		if blk == nil || blk.out == nil {
			return nil
		}
		n := a.part.Bytes(a.next)
		for _, s := range blk.out {
			s = s[:min(len(s), n)]
			if _, err := a.w.Write(s); err != nil {
				a.err = fmt.Errorf("%w: block %d: %w", ErrWriter, a.next, err)
				return a.err
			}
			a.st.Written += uint64(len(s))
			n -= len(s)
		}
		delete(a.blocks, a.next)
		a.next++
		a.st.Blocks++
	}
}

// admit returns block sbn's state, making it when a slot is free or can
// be freed: memory holds the lowest blocks not yet written, so when all
// MaxBlocks slots are taken the farthest block above sbn gives way (its
// symbols are asked for again later). The next block to write therefore
// always finds a slot, and genuine packets replayed early for far-off
// blocks cannot keep nearer ones out.
func (a *Assembler) admit(sbn uint32) (*block, error) {
	if blk := a.blocks[sbn]; blk != nil {
		return blk, nil
	}
	if len(a.blocks) >= a.cfg.MaxBlocks {
		victim, found := sbn, false
		for b := range a.blocks {
			if b > victim {
				victim, found = b, true
			}
		}
		if !found {
			return nil, a.reject(RejectNoRoom, "block %d: %d nearer blocks in progress", sbn, len(a.blocks))
		}
		delete(a.blocks, victim)
		a.st.BlocksEvicted++
	}
	hl, err := manifest.NewHashList(a.m, sbn)
	if err != nil {
		return nil, a.reject(RejectSBN, "%w", err)
	}
	k := a.part.BlockLen(sbn)
	dec, err := a.codec.NewDecoder(k, int(a.m.FEC.MaxParity), a.part.E)
	if err != nil {
		return nil, a.reject(RejectSBN, "%w", err)
	}
	blk := &block{sbn: sbn, k: k, hl: hl, dec: dec}
	a.blocks[sbn] = blk
	return blk, nil
}

func (a *Assembler) feedHashPart(p *alc.Packet) error {
	h, err := manifest.HashPartFromPacket(p)
	if err != nil {
		return a.reject(RejectHashPart, "%w", err)
	}
	if h.SBN >= a.part.N {
		return a.reject(RejectHashPart, "block %d of %d", h.SBN, a.part.N)
	}
	if a.decoded(h.SBN) {
		a.st.Duplicates++
		return fmt.Errorf("%w: hash part for decoded block %d", ErrDuplicate, h.SBN)
	}
	if int(h.Chunk) >= chunkCount(a.symbols(a.part.BlockLen(h.SBN))) {
		return a.reject(RejectHashPart, "block %d chunk %d does not exist", h.SBN, h.Chunk)
	}
	if blk := a.blocks[h.SBN]; blk != nil && blk.chunks&(1<<h.Chunk) != 0 {
		a.st.Duplicates++
		return fmt.Errorf("%w: block %d hash chunk %d", ErrDuplicate, h.SBN, h.Chunk)
	}
	// Verify before taking a slot: a forged hash part must not hold one.
	if err := h.Verify(a.m); err != nil {
		return a.reject(RejectHashPart, "%w", err)
	}
	blk, err := a.admit(h.SBN)
	if err != nil {
		return err
	}
	if err := blk.hl.Add(a.m, h); err != nil {
		return a.reject(RejectHashPart, "%w", err) // unreachable: verified above
	}
	blk.chunks |= 1 << h.Chunk
	a.st.HashParts++
	a.progress = a.cfg.Now()
	// Check the held symbols this chunk covers.
	first := uint16(h.Chunk) * manifest.ChunkDigests
	last := first + uint16(len(h.Digests))
	for i := 0; i < len(a.held); {
		e := a.held[i]
		if e.sbn != h.SBN || e.esi < first || e.esi >= last {
			i++
			continue
		}
		a.held = append(a.held[:i], a.held[i+1:]...)
		if blk.out != nil {
			continue
		}
		// A held symbol that fails is counted by take; the hash part
		// itself was good, so only a writer failure is returned.
		if err := a.take(blk, e.esi, e.data, e.label); errors.Is(err, ErrWriter) {
			return err
		}
		if a.blocks[h.SBN] != blk { // decoded and written
			a.dropHeld(h.SBN)
			break
		}
	}
	return nil
}

// hold queues an unverified symbol, evicting the oldest when full.
func (a *Assembler) hold(e held) {
	if len(a.held) >= a.cfg.MaxHeld {
		a.held = append(a.held[:0], a.held[1:]...)
		a.st.Rejected[RejectEvicted]++
	}
	a.held = append(a.held, e)
}

func (a *Assembler) dropHeld(sbn uint32) {
	kept := a.held[:0]
	for _, e := range a.held {
		if e.sbn != sbn {
			kept = append(kept, e)
		} else {
			a.st.Duplicates++
		}
	}
	clear(a.held[len(kept):])
	a.held = kept
}

// Done reports whether the whole object has been written.
func (a *Assembler) Done() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.next >= a.part.N
}

// Err returns the writer's error, if it failed.
func (a *Assembler) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// Stalled reports whether Config.Stall has passed since the last verified
// symbol or hash chunk while the object is incomplete: the caller then
// gives up on multicast and repairs and fetches Fallback's ranges.
func (a *Assembler) Stalled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.next < a.part.N && a.cfg.Now().Sub(a.progress) >= a.cfg.Stall
}

// Deadline is when Stalled turns true if nothing progresses.
func (a *Assembler) Deadline() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.progress.Add(a.cfg.Stall)
}

// Stats returns a copy of the counters.
func (a *Assembler) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.st
	s.Bytes, s.Packets, s.Rejected = map[string]uint64{}, map[string]uint64{}, map[Reason]uint64{}
	for k, v := range a.st.Bytes {
		s.Bytes[k] = v
	}
	for k, v := range a.st.Packets {
		s.Packets[k] = v
	}
	for k, v := range a.st.Rejected {
		s.Rejected[k] = v
	}
	s.Held = len(a.held)
	return s
}

// Missing returns at most max NACK ranges, in block order from the next
// block to write: for each incomplete block, the hash-list chunks not
// held, then the runs of source ESIs not held (Need says how many symbols
// of any ESI would complete it, so the sender may send parity instead).
// Only the lowest MaxBlocks unwritten blocks are listed: packets for
// farther ones would find no slot. The caller chooses when to ask (end of
// a pass, CloseObject, a quiet interval).
func (a *Assembler) Missing(max int) []Range {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Range
	end := min(uint64(a.next)+uint64(a.cfg.MaxBlocks), uint64(a.part.N))
	for sbn := a.next; uint64(sbn) < end && len(out) < max; sbn++ {
		blk := a.blocks[sbn]
		if blk != nil && blk.out != nil {
			continue
		}
		k := a.part.BlockLen(sbn)
		need := k
		var chunks uint8
		if blk != nil {
			need, chunks = k-blk.dec.Count(), blk.chunks
		}
		add := func(r Range) {
			if len(out) < max {
				r.SBN, r.Need = sbn, uint16(need)
				out = append(out, r)
			}
		}
		nc := chunkCount(a.symbols(k))
		for c := 0; c < nc; {
			if chunks&(1<<c) != 0 {
				c++
				continue
			}
			start := c
			for c < nc && chunks&(1<<c) == 0 {
				c++
			}
			add(Range{Kind: HashChunk, First: uint16(start), Count: uint16(c - start)})
		}
		for e := 0; e < k; {
			if blk != nil && blk.dec.Has(e) {
				e++
				continue
			}
			start := e
			for e < k && !(blk != nil && blk.dec.Has(e)) {
				e++
			}
			add(Range{Kind: Symbols, First: uint16(start), Count: uint16(e - start)})
		}
	}
	return out
}

// Fallback returns the byte ranges of the blocks not yet decoded, merged,
// for an HTTP range fetch; hand what comes back to Fill.
func (a *Assembler) Fallback() []ByteRange {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []ByteRange
	for sbn := a.next; sbn < a.part.N; sbn++ {
		if blk := a.blocks[sbn]; blk != nil && blk.out != nil {
			continue
		}
		off, n := a.part.Offset(sbn), uint64(a.part.Bytes(sbn))
		if l := len(out); l > 0 && out[l-1].Off+out[l-1].Len == off {
			out[l-1].Len += n
			continue
		}
		out = append(out, ByteRange{Off: off, Len: n})
	}
	return out
}

// Fill takes object bytes fetched by other means (an HTTP range fetch)
// starting at off, and completes every whole block they cover that is
// not yet decoded. Where the block's hash list is held each source symbol
// is checked against it and a mismatch refuses the block (ErrMismatch);
// where it is not, the bytes are trusted as unicast responses always
// were. Bytes count under label. A block that finds no slot returns
// ErrNoRoom: fill in order.
func (a *Assembler) Fill(off uint64, data []byte, label string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	for sbn := a.next; sbn < a.part.N; sbn++ {
		start, n := a.part.Offset(sbn), uint64(a.part.Bytes(sbn))
		if start < off {
			continue
		}
		if start+n > off+uint64(len(data)) {
			break
		}
		if a.decoded(sbn) {
			continue
		}
		b := data[start-off : start+n-off]
		k := a.part.BlockLen(sbn)
		blk := a.blocks[sbn]
		src := make([][]byte, k)
		for esi := range src {
			s := b[esi*a.part.E : min(len(b), (esi+1)*a.part.E)]
			if blk != nil && blk.chunks&(1<<(esi/manifest.ChunkDigests)) != 0 && !blk.hl.Check(uint16(esi), s) {
				return fmt.Errorf("%w: block %d symbol %d from %s", ErrMismatch, sbn, esi, label)
			}
			src[esi] = append(make([]byte, 0, a.part.E), s...)
			src[esi] = src[esi][:a.part.E]
		}
		if blk == nil {
			var err error
			if blk, err = a.admit(sbn); err != nil {
				return fmt.Errorf("%w: block %d", ErrNoRoom, sbn)
			}
		}
		blk.out, blk.dec, blk.hl = src, nil, nil
		a.dropHeld(sbn)
		a.st.Bytes[label] += n
		a.progress = a.cfg.Now()
		if err := a.flush(); err != nil {
			return err
		}
	}
	return nil
}

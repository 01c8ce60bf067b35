package mcsend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
)

// ErrExpired: the session's manifest expired while beacons still wanted
// the object; the session ends (castd offers a new one on the next miss).
var ErrExpired = errors.New("mcsend: manifest expired")

// retryAfterMs is what a node told StatusLimited waits before asking again.
const retryAfterMs = 1000

// Session is one object's multicast session: its lease, signed manifest
// and carousel.
type Session struct {
	s      *Sender
	obj    Object
	m      *manifest.Manifest
	part   fec.Blocks
	mpkt   []byte     // the manifest's ALC packet
	hashes [][][]byte // hash-list packets by block and chunk
	pacer  *channels.Session
	st     counters
	cache  symCache
	wake   chan struct{}
	done   chan struct{}
	err    error

	// Run-loop state, touched only by run's goroutine.
	lease    channels.Lease
	renewAt  time.Time
	nextPar  []uint16 // per block: the next parity ESI never sent on the channel
	proact   []uint16 // per block: proactive parity symbols a pass sends
	sinceMan int
	buf      []byte // the carousel's packet
	rbuf     []byte // a channel repair's packet

	mu      sync.Mutex
	members map[string]*member
	pending map[uint32]*agg
	inPass  bool
	started bool      // the first pass has begun (JoinGrace is over)
	cursor  uint32    // first block not yet wholly sent this pass
	offered time.Time // last Offer that returned the session: joiners are on their way
}

// member is a node that joined the session.
type member struct {
	peer     Peer
	lastSeen time.Time
	early    bool // early media sent
	pending  int  // blocks with repairs pending for it
	// gapFrom..gapTo are the blocks it joined too late to get from the
	// carousel and that no later pass has sent yet.
	gapFrom, gapTo uint32
}

// agg gathers one block's NACKs over the aggregation window.
type agg struct {
	opened time.Time
	nodes  map[string]*want
}

// want is what one node lacks of one block.
type want struct {
	peer   Peer
	need   int
	syms   [fec.MaxSymbols / 64]uint64 // source ESIs it named
	chunks uint64                      // hash-list chunks it named
}

func newSession(s *Sender, obj Object, lease channels.Lease, m *manifest.Manifest, lists []*manifest.HashList, now time.Time) (*Session, error) {
	part, err := fec.Partition(m.ContentLength, int(m.FEC.SymbolLen), int(m.FEC.MaxBlockLen))
	if err != nil {
		return nil, fmt.Errorf("mcsend: %w", err)
	}
	mp, err := m.Packet()
	if err != nil {
		return nil, fmt.Errorf("mcsend: manifest packet: %w", err)
	}
	mpkt, err := mp.AppendTo(nil)
	if err != nil {
		return nil, fmt.Errorf("mcsend: manifest packet: %w", err)
	}
	ss := &Session{s: s, obj: obj, m: m, part: part, mpkt: mpkt, lease: lease,
		hashes: make([][][]byte, part.N), nextPar: make([]uint16, part.N), proact: make([]uint16, part.N),
		wake: make(chan struct{}, 1), done: make(chan struct{}),
		members: map[string]*member{}, pending: map[uint32]*agg{}}
	ss.cache.init(obj.R, part, s.o.Codec, int(m.FEC.MaxParity))
	for sbn, hl := range lists {
		for _, h := range hl.Parts() {
			p, err := h.Packet(m)
			if err != nil {
				return nil, fmt.Errorf("mcsend: hash part packet: %w", err)
			}
			b, err := p.AppendTo(nil)
			if err != nil {
				return nil, fmt.Errorf("mcsend: hash part packet: %w", err)
			}
			ss.hashes[sbn] = append(ss.hashes[sbn], b)
		}
		k := part.BlockLen(uint32(sbn))
		p := min(int(math.Ceil(s.o.Parity*float64(k))), int(m.FEC.MaxParity))
		ss.proact[sbn] = uint16(p)
		ss.nextPar[sbn] = uint16(k + p)
	}
	if s.o.Shaper != nil {
		ss.pacer = s.o.Shaper.Session(now)
	}
	ss.renewAt = now.Add(lease.Expires.Sub(now) / 2)
	ss.offered = now
	return ss, nil
}

// Manifest is the session's signed manifest.
func (ss *Session) Manifest() *manifest.Manifest { return ss.m }

// ManifestPacket is the manifest's ALC packet (TOI 0), the offer's
// "manifest" field. The caller must not modify it.
func (ss *Session) ManifestPacket() []byte { return ss.mpkt }

// Key is the object's content key.
func (ss *Session) Key() string { return ss.obj.Key }

// Channel is the (S,G,port) the session sends on.
func (ss *Session) Channel() manifest.Channel { return ss.m.Channel }

// Done is closed when the session has ended and released its lease.
func (ss *Session) Done() <-chan struct{} { return ss.done }

// Err is why the session ended: nil when it went idle, otherwise a lost
// lease, ErrExpired or ErrClosed. Valid after Done.
func (ss *Session) Err() error {
	select {
	case <-ss.done:
		return ss.err
	default:
		return nil
	}
}

// Stats returns the session's counters.
func (ss *Session) Stats() Stats { return ss.st.snapshot() }

// touch notes an offer of the session: a beacon is about to join.
func (ss *Session) touch(now time.Time) {
	ss.mu.Lock()
	ss.offered = now
	ss.mu.Unlock()
}

func (ss *Session) object() mcproto.Object { return mcproto.Object{TSI: ss.m.TSI, TOI: ss.m.TOI} }

func (ss *Session) finish(err error) {
	ss.err = err
	close(ss.done)
	if err != nil && !errors.Is(err, ErrClosed) {
		ss.s.log.Warn("multicast session ended", "key", ss.obj.Key, "tsi", ss.m.TSI, "err", err)
	} else {
		ss.s.log.Info("multicast session ended", "key", ss.obj.Key, "tsi", ss.m.TSI)
	}
}

func (ss *Session) poke() {
	select {
	case ss.wake <- struct{}{}:
	default:
	}
}

// run is the carousel; it returns when the session ends.
func (ss *Session) run(ctx context.Context) error {
	o := &ss.s.o
	// The beacons this session was offered to join while it waits: they
	// get the whole first pass by multicast, none of it as early media.
	if o.JoinGrace > 0 {
		if err := ss.sleep(ctx, o.JoinGrace); err != nil {
			return err
		}
	}
	for pass := 0; ; pass++ {
		ss.mu.Lock()
		ss.inPass, ss.started, ss.cursor = true, true, 0
		ss.mu.Unlock()
		ss.sinceMan = 0
		if err := ss.send(ctx, KindAuth, ss.mpkt); err != nil {
			return err
		}
		full := true
		for sbn := range ss.part.N {
			if pass >= o.MinPasses && !ss.gaps(o.Now()) {
				full = false
				break
			}
			ss.mu.Lock()
			ss.cursor = sbn
			ss.mu.Unlock()
			if err := ss.sendBlock(ctx, sbn); err != nil {
				return err
			}
			ss.mu.Lock()
			for _, m := range ss.members {
				if sbn >= m.gapFrom && sbn < m.gapTo {
					m.gapFrom = sbn + 1
				}
			}
			ss.mu.Unlock()
		}
		ss.mu.Lock()
		ss.inPass, ss.cursor = false, ss.part.N
		ss.mu.Unlock()
		if full {
			ss.st.passes.Add(1)
			ss.s.st.passes.Add(1)
		}
		if pass+1 < o.MinPasses {
			continue
		}
		// Between passes: serve repairs while beacons are active; start
		// another pass when one joined too late for what was sent.
		for {
			if err := ss.service(ctx); err != nil {
				return err
			}
			now := o.Now()
			if err := ss.keep(now); err != nil {
				return err // a quiet channel keeps its lease too
			}
			if ss.gaps(now) {
				break
			}
			next, busy := ss.nextEvent(now)
			if !busy {
				return nil
			}
			if err := ss.idle(ctx, min(next.Sub(now), o.NackWindow)); err != nil {
				return err
			}
		}
	}
}

// sendBlock sends block sbn: its hash-list packets, source symbols and
// proactive parity.
func (ss *Session) sendBlock(ctx context.Context, sbn uint32) error {
	for _, h := range ss.hashes[sbn] {
		if err := ss.emit(ctx, KindAuth, h); err != nil {
			return err
		}
	}
	k := ss.part.BlockLen(sbn)
	n := k + int(ss.proact[sbn])
	for esi := range n {
		kind := KindData
		if esi >= k {
			kind = KindParity
		}
		pkt, err := ss.cache.packet(ss.buf[:0], ss.m, sbn, esi, sbn == ss.part.N-1 && esi == n-1)
		if err != nil {
			return err
		}
		ss.buf = pkt
		if esi == n-1 {
			// The block is out once this goes: NACKs for it count from now.
			ss.mu.Lock()
			ss.cursor = sbn + 1
			ss.mu.Unlock()
		}
		if err := ss.emit(ctx, kind, pkt); err != nil {
			return err
		}
	}
	return nil
}

// gaps reports whether an active member still lacks blocks the carousel
// sent before it joined.
func (ss *Session) gaps(now time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, m := range ss.members {
		if m.gapFrom < m.gapTo && now.Sub(m.lastSeen) < ss.s.o.Idle {
			return true
		}
	}
	return false
}

// nextEvent is when the run loop has something to do next: a NACK
// window closing, the last member going idle, or the wait for beacons
// offered the session ending. busy is false when none of these is ahead:
// the session is over.
func (ss *Session) nextEvent(now time.Time) (next time.Time, busy bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, a := range ss.pending {
		if t := a.opened.Add(ss.s.o.NackWindow); !busy || t.Before(next) {
			next, busy = t, true
		}
	}
	for _, m := range ss.members {
		if t := m.lastSeen.Add(ss.s.o.Idle); t.After(now) && (!busy || t.Before(next)) {
			next, busy = t, true
		}
	}
	if t := ss.offered.Add(ss.s.o.Idle); t.After(now) && (!busy || t.Before(next)) {
		next, busy = t, true
	}
	return next, busy
}

// idle waits d (a fake clock's Sleep, or a timer a NACK cuts short).
func (ss *Session) idle(ctx context.Context, d time.Duration) error {
	d = max(d, time.Millisecond)
	if ss.s.o.Sleep != nil {
		return ss.s.o.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ss.wake:
	case <-ctx.Done():
		return ErrClosed
	}
	return nil
}

func (ss *Session) sleep(ctx context.Context, d time.Duration) error {
	if ss.s.o.Sleep != nil {
		return ss.s.o.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ErrClosed
	}
}

// emit serves due repairs, then sends one carousel packet.
func (ss *Session) emit(ctx context.Context, k Kind, pkt []byte) error {
	if err := ss.service(ctx); err != nil {
		return err
	}
	return ss.put(ctx, k, pkt)
}

// put sends one packet on the channel, and the manifest again every
// ManifestEvery packets.
func (ss *Session) put(ctx context.Context, k Kind, pkt []byte) error {
	if err := ss.send(ctx, k, pkt); err != nil {
		return err
	}
	if ss.sinceMan++; ss.sinceMan >= ss.s.o.ManifestEvery {
		ss.sinceMan = 0
		return ss.send(ctx, KindAuth, ss.mpkt)
	}
	return nil
}

// keep renews the lease at half its life, and ends the session when the
// lease is lost or the manifest has expired: nothing may go on the
// channel then.
func (ss *Session) keep(now time.Time) error {
	if !now.Before(ss.m.Expires) {
		return ErrExpired
	}
	if !now.Before(ss.renewAt) {
		l, err := ss.s.o.Alloc.Renew(ss.lease.ID, now)
		if err != nil {
			return fmt.Errorf("mcsend: renew lease: %w", err)
		}
		ss.lease, ss.renewAt = l, now.Add(l.Expires.Sub(now)/2)
	}
	return nil
}

// send paces and sends one packet on the channel, within the lease and
// the manifest's validity.
func (ss *Session) send(ctx context.Context, k Kind, pkt []byte) error {
	if ctx.Err() != nil {
		return ErrClosed
	}
	now := ss.s.o.Now()
	if err := ss.keep(now); err != nil {
		return err
	}
	if ss.pacer != nil {
		if d := ss.pacer.Reserve(now, len(pkt)); d > 0 {
			if err := ss.sleep(ctx, d); err != nil {
				return err
			}
		}
	}
	for _, sink := range []Sink{ss.s.o.Native, ss.s.o.AMT} {
		if sink == nil {
			continue
		}
		if err := sink.Send(ss.m.Channel, pkt); err != nil {
			// A transient socket error loses one packet, which NACKs
			// repair; the session goes on.
			ss.st.sendErrs.Add(1)
			ss.s.st.sendErrs.Add(1)
			ss.s.log.Debug("multicast send failed", "channel", ss.m.Channel, "err", err)
		}
	}
	ss.st.sent(k, len(pkt))
	ss.s.st.sent(k, len(pkt))
	return nil
}

// join makes p a member (sending early media on its first Join).
func (ss *Session) join(p Peer, early int, now time.Time) {
	e := uint32(min(early, ss.s.o.MaxEarly, int(ss.part.N)))
	ss.mu.Lock()
	m, send := ss.member(p, now)
	if m == nil {
		ss.mu.Unlock()
		return
	}
	// Early media covers the blocks this pass has sent or is sending
	// (the first one when a Join starts the next pass), which a beacon
	// whose join has not taken effect misses; the blocks after them
	// reach it on the channel, and before the first pass (JoinGrace) all
	// of them do. Sending more cost castd's uplink ~2% of the
	// object per beacon for bytes that also came by multicast (test/mcnet).
	switch {
	case !ss.started:
		e = 0 // the first pass has not begun: all of it comes by multicast
	case ss.inPass:
		e = min(e, ss.cursor+1)
	default:
		e = min(e, 1)
	}
	if !m.early && e > 0 {
		m.early, send = true, true
		if m.gapFrom < e && m.gapFrom < m.gapTo {
			m.gapFrom = min(e, m.gapTo)
		}
	} else {
		send = false
	}
	ss.mu.Unlock()
	ss.poke()
	if !send {
		return
	}
	var buf []byte
	if err := ss.unicast(p, KindEarly, ss.mpkt); err != nil {
		return
	}
	for sbn := range e {
		for _, h := range ss.hashes[sbn] {
			if err := ss.unicast(p, KindEarly, h); err != nil {
				return
			}
		}
		for esi := range ss.part.BlockLen(sbn) {
			pkt, err := ss.cache.packet(buf[:0], ss.m, sbn, esi, false)
			if err != nil {
				ss.s.log.Warn("early media", "key", ss.obj.Key, "err", err)
				return
			}
			buf = pkt
			if err := ss.unicast(p, KindEarly, pkt); err != nil {
				return
			}
		}
	}
}

// member returns p's membership, making it if the cap allows; created
// reports a new one. ss.mu is held.
func (ss *Session) member(p Peer, now time.Time) (m *member, created bool) {
	id := p.NodeID()
	m = ss.members[id]
	if m == nil {
		if len(ss.members) >= ss.s.o.MaxNodes {
			ss.s.refuse(ss, RefuseNodes, 1)
			return nil, false
		}
		// Blocks the carousel already sent this pass are a gap the next
		// pass fills (a Join between passes: the whole object).
		m = &member{gapTo: ss.cursor}
		ss.members[id] = m
		created = true
	}
	m.peer, m.lastSeen = p, now
	return m, created
}

// leave forgets node id and its pending repairs.
func (ss *Session) leave(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, ok := ss.members[id]; !ok {
		return
	}
	delete(ss.members, id)
	for sbn, a := range ss.pending {
		delete(a.nodes, id)
		if len(a.nodes) == 0 {
			delete(ss.pending, sbn)
		}
	}
}

// nack records what p lacks, for the run loop to serve when the block's
// window closes.
func (ss *Session) nack(p Peer, ranges []mcproto.Range, now time.Time) {
	if extra := len(ranges) - ss.s.o.MaxRanges; extra > 0 {
		ss.s.refuse(ss, RefuseRanges, uint64(extra))
		ranges = ranges[:ss.s.o.MaxRanges]
	}
	id := p.NodeID()
	ss.mu.Lock()
	defer ss.poke()
	defer ss.mu.Unlock()
	m, _ := ss.member(p, now)
	if m == nil {
		return
	}
	for _, r := range ranges {
		k := ss.part.BlockLen(r.SBN)
		end := int(r.First) + int(r.Count)
		bad := k == 0 || int(r.Need) > k
		switch r.Kind {
		case mcproto.Symbols:
			bad = bad || end > k
		case mcproto.HashChunk:
			bad = bad || end > len(ss.hashes[r.SBN])
		default:
			bad = true
		}
		if bad {
			ss.s.refuse(ss, RefuseRanges, 1)
			continue
		}
		if ss.inPass && r.SBN >= ss.cursor {
			continue // not sent yet this pass: it is on its way
		}
		a := ss.pending[r.SBN]
		if a == nil {
			a = &agg{opened: now, nodes: map[string]*want{}}
		}
		w := a.nodes[id]
		if w == nil {
			if m.pending >= ss.s.o.MaxPending {
				ss.s.refuse(ss, RefusePending, 1)
				continue
			}
			w = &want{}
			a.nodes[id] = w
			ss.pending[r.SBN] = a
			m.pending++
		}
		w.peer = p
		w.need = int(r.Need)
		for i := int(r.First); i < end; i++ {
			if r.Kind == mcproto.Symbols {
				w.syms[i/64] |= 1 << (i % 64)
			} else {
				w.chunks |= 1 << i
			}
		}
	}
}

// service serves every block whose NACK window has closed.
func (ss *Session) service(ctx context.Context) error {
	now := ss.s.o.Now()
	type due struct {
		sbn uint32
		a   *agg
	}
	var ready []due
	ss.mu.Lock()
	for sbn, a := range ss.pending {
		if now.Sub(a.opened) >= ss.s.o.NackWindow {
			ready = append(ready, due{sbn, a})
			delete(ss.pending, sbn)
			for id := range a.nodes {
				if m := ss.members[id]; m != nil {
					m.pending--
				}
			}
		}
	}
	ss.mu.Unlock()
	slices.SortFunc(ready, func(a, b due) int { return cmp.Compare(a.sbn, b.sbn) }) // nearest first
	for _, d := range ready {
		if err := ss.repair(ctx, d.sbn, d.a); err != nil {
			return err
		}
	}
	return nil
}

// repair serves one block's gathered NACKs: what several nodes lack goes
// on the channel (new parity, one symbol repairing different losses at
// different nodes), what one node alone lacks goes to it by unicast.
func (ss *Session) repair(ctx context.Context, sbn uint32, a *agg) error {
	k := ss.part.BlockLen(sbn)
	var chunkNodes [64][]*want
	var needers, chunky []*want
	maxNeed := 0
	var union [fec.MaxSymbols / 64]uint64
	for _, w := range a.nodes {
		for c := range len(ss.hashes[sbn]) {
			if w.chunks&(1<<c) != 0 {
				chunkNodes[c] = append(chunkNodes[c], w)
			}
		}
		switch {
		case w.need == 0:
		case w.chunks != 0:
			// It holds that chunk's symbols unverified, uncounted in
			// its Need: its Need would inflate the channel's parity.
			// It gets the chunk now and says what it still needs once
			// they verify.
			chunky = append(chunky, w)
		default:
			needers = append(needers, w)
			maxNeed = max(maxNeed, w.need)
			for i := range union {
				union[i] |= w.syms[i]
			}
		}
	}
	if all := uint64(1)<<len(ss.hashes[sbn]) - 1; len(needers) == 0 && len(chunky) == 1 && chunky[0].chunks == all {
		// The only node short of this block, and it has none of it (a
		// late joiner whose early media was lost): the symbols it named
		// go with the chunks, saving a round trip.
		needers = chunky
	}
	ss.s.log.Debug("repair", "key", ss.obj.Key, "sbn", sbn, "nodes", len(a.nodes), "needers", len(needers), "chunky", len(chunky), "max_need", maxNeed)
	limited := map[*want]bool{}
	for c, ws := range chunkNodes[:len(ss.hashes[sbn])] {
		switch {
		case len(ws) >= 2:
			if err := ss.put(ctx, KindAuth, ss.hashes[sbn][c]); err != nil {
				return err
			}
		case len(ws) == 1 && !limited[ws[0]]:
			if ss.unicast(ws[0].peer, KindRepair, ss.hashes[sbn][c]) != nil {
				limited[ws[0]] = true
			}
		}
	}
	switch {
	case len(needers) >= 2:
		sent := 0
		for ; sent < maxNeed && int(ss.nextPar[sbn]) < k+int(ss.m.FEC.MaxParity); sent++ {
			if err := ss.putSymbol(ctx, KindNackParity, sbn, int(ss.nextPar[sbn])); err != nil {
				return err
			}
			ss.nextPar[sbn]++
		}
		// Parity spent: the source symbols they named.
		for esi := 0; esi < k && sent < maxNeed; esi++ {
			if union[esi/64]&(1<<(esi%64)) != 0 {
				if err := ss.putSymbol(ctx, KindNackParity, sbn, esi); err != nil {
					return err
				}
				sent++
			}
		}
	case len(needers) == 1 && !limited[needers[0]]:
		w := needers[0]
		var buf []byte
		for esi, n := 0, 0; esi < k && n < w.need; esi++ {
			if w.syms[esi/64]&(1<<(esi%64)) == 0 {
				continue
			}
			pkt, err := ss.cache.packet(buf[:0], ss.m, sbn, esi, false)
			if err != nil {
				return err
			}
			buf = pkt
			if ss.unicast(w.peer, KindRepair, pkt) != nil {
				break
			}
			n++
		}
	}
	return nil
}

// putSymbol puts a repair symbol on the channel. It has a buffer of its
// own: repairs go out between the carousel's packets, whose buffer holds
// the packet about to go.
func (ss *Session) putSymbol(ctx context.Context, k Kind, sbn uint32, esi int) error {
	pkt, err := ss.cache.packet(ss.rbuf[:0], ss.m, sbn, esi, false)
	if err != nil {
		return err
	}
	ss.rbuf = pkt
	return ss.put(ctx, k, pkt)
}

// unicast sends one packet to a node within its repair budget: queued
// on its outbox, or written at once for a peer without one. When the
// budget is spent the node is told (StatusLimited) and it returns an
// error.
func (ss *Session) unicast(p Peer, k Kind, pkt []byte) error {
	if ob := ss.s.outbox(p); ob != nil {
		if !ob.put(ss, k, pkt) {
			return dtlschan.ErrRateLimited
		}
		return nil
	}
	if _, err := p.WriteLimited(pkt); err != nil {
		if errors.Is(err, dtlschan.ErrRateLimited) {
			ss.s.refuse(ss, RefuseLimited, 1)
			st := mcproto.Status{Object: ss.object(), Code: mcproto.StatusLimited, RetryAfterMs: retryAfterMs}
			_, _ = p.Write(st.AppendTo(nil))
		}
		return err
	}
	ss.st.sent(k, len(pkt))
	ss.s.st.sent(k, len(pkt))
	return nil
}

// symCache keeps the source symbols and parity of the last few blocks
// read, so the carousel reads the object once a pass and a repair of a
// recent block costs no read.
type symCache struct {
	r interface {
		ReadAt([]byte, int64) (int, error)
	}
	part      fec.Blocks
	codec     *fec.Codec
	maxParity int

	mu     sync.Mutex
	blocks []*cached // most recent last
}

type cached struct {
	sbn    uint32
	src    [][]byte
	parity [][]byte // ESIs k..k+len-1
}

const cacheBlocks = 4

func (c *symCache) init(r interface {
	ReadAt([]byte, int64) (int, error)
}, part fec.Blocks, codec *fec.Codec, maxParity int) {
	c.r, c.part, c.codec, c.maxParity = r, part, codec, maxParity
}

// symbol returns the wire payload of symbol esi of block sbn.
func (c *symCache) symbol(sbn uint32, esi int) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b *cached
	for i, x := range c.blocks {
		if x.sbn == sbn {
			b = x
			c.blocks = append(append(c.blocks[:i], c.blocks[i+1:]...), x)
			break
		}
	}
	if b == nil {
		k, e := c.part.BlockLen(sbn), c.part.E
		buf := make([]byte, k*e)
		n := c.part.Bytes(sbn)
		if got, err := c.r.ReadAt(buf[:n], int64(c.part.Offset(sbn))); got != n {
			return nil, fmt.Errorf("mcsend: read block %d: %d of %d bytes: %w", sbn, got, n, err)
		}
		b = &cached{sbn: sbn, src: make([][]byte, k)}
		for i := range b.src {
			b.src[i] = buf[i*e : (i+1)*e : (i+1)*e]
		}
		if len(c.blocks) >= cacheBlocks {
			c.blocks = append(c.blocks[:0], c.blocks[1:]...)
		}
		c.blocks = append(c.blocks, b)
	}
	k := len(b.src)
	if esi < k {
		return b.src[esi][:c.part.SymbolLen(sbn, esi)], nil
	}
	if esi-k >= len(b.parity) {
		// Parity is made in two steps: what a pass sends, then all of it.
		to := k + c.maxParity
		if len(b.parity) == 0 {
			to = min(to, max(esi+1, k+16))
		}
		p, err := c.codec.Parity(b.src, k, to)
		if err != nil {
			return nil, fmt.Errorf("mcsend: parity of block %d: %w", sbn, err)
		}
		b.parity = p
	}
	if esi-k >= len(b.parity) {
		return nil, fmt.Errorf("mcsend: block %d has no ESI %d", sbn, esi)
	}
	return b.parity[esi-k], nil
}

// packet appends the ALC packet of symbol esi of block sbn to dst.
// last sets the B flag (Close Object): the carousel's last packet of a
// pass, when receivers should NACK what they lack without waiting.
func (c *symCache) packet(dst []byte, m *manifest.Manifest, sbn uint32, esi int, last bool) ([]byte, error) {
	sym, err := c.symbol(sbn, esi)
	if err != nil {
		return dst, err
	}
	p := alc.Packet{Codepoint: alc.EncodingID, TSI: uint64(m.TSI), TOI: uint64(m.TOI),
		SBN: sbn, SBL: uint16(c.part.BlockLen(sbn)), ESI: uint16(esi), Payload: sym, CloseObject: last}
	return p.AppendTo(dst)
}

package mcsend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"hash"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/channels"
	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
	"github.com/blockcast/beacon/shared/ratelimit"
)

// The simulated segment: the real Sender and N real objrecv Assemblers in
// one process, joined by an in-memory multicast segment with loss and a
// unicast path per receiver (the DTLS channel's stand-in, with the same
// per-node budget semantics as WriteLimited). Time is a fake clock that
// the sender's pacing advances, so a run is deterministic for a seed.

var (
	t0        = time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	testCodec = fec.NewCodec()
)

func testKey(t testing.TB, seed byte) *identity.Keypair {
	t.Helper()
	k, err := identity.FromSeed(bytes.Repeat([]byte{seed}, identity.SeedSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testObject(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func testPool(t testing.TB) *channels.Pool {
	t.Helper()
	r, err := channels.ParseRanges("232.1.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	p, err := channels.New(channels.Options{Ranges: r, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type simConfig struct {
	n          int
	size       int
	loss       float64 // independent, per receiver, on the segment and its unicast path
	corr       float64 // on the whole segment (every receiver loses the packet)
	seed       uint64
	rate       float64 // channel cap, bytes a second
	repairRate float64 // per-node unicast budget, bytes a second
	early      uint16  // early blocks a Join asks for
	// drop, when set, drops more: receiver r loses segment packet p.
	drop func(r int, p *alc.Packet) bool
	opts func(*Options)
	// lateAt: receivers with index >= lateFrom join when the carousel
	// reaches this block (0: all at the start).
	lateFrom, lateAt int
	maxSim           time.Duration // simulated time allowed; 0: 10 minutes
	sent             func(at time.Time, pkt []byte)
}

type sim struct {
	t       testing.TB
	cfg     simConfig
	clk     time.Time
	key     *identity.Keypair
	obj     []byte
	snd     *Sender
	rcv     []*simRecv
	segRng  *rand.Rand
	started time.Time
	failed  error
	scratch alc.Packet
	hold    time.Duration // a receiver's NACK holdoff per block
	mpkt    []byte        // the manifest packet (the offer's)
}

type simRecv struct {
	sim      *sim
	i        int
	name     string
	rng      *rand.Rand
	asm      *objrecv.Assembler
	obj      mcproto.Object
	out      hashWriter
	maxSeen  int64
	lastPkt  time.Time
	nacked   map[uint32]time.Time
	done     bool
	doneAt   time.Time
	budget   *ratelimit.Bucket
	statuses []mcproto.Status
	unicast  uint64 // bytes that reached it by unicast
}

func (r *simRecv) NodeID() string { return r.name }

// Write is a Status from castd.
func (r *simRecv) Write(p []byte) (int, error) {
	if m, err := mcproto.Decode(p); err == nil {
		if st, ok := m.(*mcproto.Status); ok {
			r.statuses = append(r.statuses, *st)
		}
	}
	return len(p), nil
}

// WriteLimited is the unicast path: the node's budget, then loss.
func (r *simRecv) WriteLimited(p []byte) (int, error) {
	if r.budget != nil && !r.budget.AllowN(r.sim.clk, len(p)) {
		return 0, dtlschan.ErrRateLimited
	}
	if r.rng.Float64() >= r.sim.cfg.loss {
		r.unicast += uint64(len(p))
		r.deliver(p, "repair")
	}
	return len(p), nil
}

func (s *sim) Send(ch manifest.Channel, pkt []byte) error {
	if s.cfg.sent != nil {
		s.cfg.sent(s.clk, pkt)
	}
	if s.segRng.Float64() < s.cfg.corr {
		return nil
	}
	var hdr *alc.Packet
	if s.mpkt == nil {
		if err := s.scratch.Decode(pkt); err == nil && s.scratch.TOI == manifest.ManifestTOI {
			s.mpkt = append([]byte(nil), pkt...)
		}
	}
	if s.cfg.drop != nil {
		if err := s.scratch.Decode(pkt); err != nil {
			return err
		}
		hdr = &s.scratch
	}
	for _, r := range s.rcv {
		if r.asm == nil && s.mpkt != nil {
			// The offer carried the manifest: a beacon has it before
			// it joins, whatever the channel loses.
			r.deliver(s.mpkt, "offer")
		}
		if r.rng.Float64() < s.cfg.loss || hdr != nil && s.cfg.drop(r.i, hdr) {
			continue
		}
		r.deliver(pkt, "multicast")
	}
	return nil
}

func (s *sim) sleep(ctx context.Context, d time.Duration) error {
	s.clk = s.clk.Add(d)
	if max := s.cfg.maxSim; s.clk.Sub(s.started) > max {
		s.failed = fmt.Errorf("simulated time past %v", max)
		return s.failed
	}
	for _, r := range s.rcv {
		r.tick()
	}
	return ctx.Err()
}

func (r *simRecv) deliver(pkt []byte, label string) {
	if r.done {
		return
	}
	var p alc.Packet
	if err := p.Decode(pkt); err != nil {
		r.sim.t.Errorf("receiver %d: sender sent a malformed packet: %v", r.i, err)
		return
	}
	if r.asm == nil {
		if p.TOI != manifest.ManifestTOI {
			return
		}
		if r.i >= r.sim.cfg.lateFrom && r.sim.cfg.lateAt > 0 && r.maxSeen < int64(r.sim.cfg.lateAt) {
			return // not joined yet
		}
		m, err := manifest.FromPacket(&p)
		if err != nil {
			r.sim.t.Errorf("receiver %d: manifest: %v", r.i, err)
			return
		}
		r.asm, err = objrecv.New(m, r.sim.key.Public(), &r.out, objrecv.Config{Codec: testCodec, Now: func() time.Time { return r.sim.clk }})
		if err != nil {
			r.sim.t.Errorf("receiver %d: %v", r.i, err)
			return
		}
		r.obj = mcproto.Object{TSI: m.TSI, TOI: m.TOI}
		r.maxSeen, r.lastPkt = -1, r.sim.clk
		j := mcproto.Join{Object: r.obj, EarlyBlocks: r.sim.cfg.early}
		r.sim.snd.Handle(r, j.AppendTo(nil))
		return
	}
	if p.TOI == manifest.ManifestTOI {
		return
	}
	r.asm.Feed(pkt, label)
	r.lastPkt = r.sim.clk
	if r.asm.Done() {
		r.done, r.doneAt = true, r.sim.clk
		l := mcproto.Leave{Object: r.obj, Reason: mcproto.LeaveDone}
		r.sim.snd.Handle(r, l.AppendTo(nil))
		return
	}
	if p.CloseObject {
		r.nack(int64(r.asm.Manifest().ContentLength)) // the pass ended: every block
		return
	}
	if label == "multicast" && int64(p.SBN) > r.maxSeen {
		r.maxSeen = int64(p.SBN)
		r.nack(r.maxSeen)
	}
}

// tick is the receiver's timer: when the channel has been quiet for a
// while, it NACKs everything it lacks up to what it saw.
func (r *simRecv) tick() {
	if r.asm == nil || r.done || r.sim.clk.Sub(r.lastPkt) < r.sim.hold {
		return
	}
	r.nack(int64(r.asm.Manifest().ContentLength)) // every block
}

// nack asks for what it lacks of blocks below upTo, each block at most
// once per holdoff.
func (r *simRecv) nack(upTo int64) {
	now := r.sim.clk
	var rs []mcproto.Range
	for _, m := range r.asm.Missing(mcproto.MaxRanges(dtlschan.DefaultMTU - 64)) {
		if int64(m.SBN) >= upTo {
			continue
		}
		if t, ok := r.nacked[m.SBN]; ok && now.Sub(t) < r.sim.hold && !t.Equal(now) {
			continue
		}
		r.nacked[m.SBN] = now
		rs = append(rs, mcproto.Range{SBN: m.SBN, Kind: mcproto.Kind(m.Kind), First: m.First, Count: m.Count, Need: m.Need})
	}
	if len(rs) == 0 {
		return
	}
	if debugNack != nil {
		debugNack(r, rs)
	}
	n := mcproto.Nack{Object: r.obj, Ranges: rs}
	b, err := n.AppendTo(nil)
	if err != nil {
		r.sim.t.Errorf("receiver %d: %v", r.i, err)
		return
	}
	r.sim.snd.Handle(r, b)
	r.lastPkt = now // the timer restarts
}

// hashWriter keeps what a receiver wrote as its SHA-256 and length.
type hashWriter struct {
	h hash.Hash
	n int
}

func (w *hashWriter) Write(p []byte) (int, error) {
	if w.h == nil {
		w.h = sha256.New()
	}
	w.n += len(p)
	return w.h.Write(p)
}

func (w *hashWriter) sum() (s [sha256.Size]byte) {
	if w.h == nil {
		w.h = sha256.New()
	}
	copy(s[:], w.h.Sum(nil))
	return s
}

var debugNack func(r *simRecv, rs []mcproto.Range)

type simResult struct {
	size      int
	st        Stats
	segment   float64 // channel bytes (data, parity, auth) / size
	dataPar   float64 // channel data and parity only / size
	unicast   float64 // early media and repairs / size
	complete  time.Duration
	unicastT  time.Duration // one unicast download of the object at the channel rate
	parityUse uint64
}

func runSim(t testing.TB, cfg simConfig) simResult {
	t.Helper()
	if cfg.maxSim == 0 {
		cfg.maxSim = 10 * time.Minute
	}
	if cfg.rate == 0 {
		cfg.rate = 50e6 / 8
	}
	s := &sim{t: t, cfg: cfg, clk: t0, started: t0, key: testKey(t, 9), obj: testObject(cfg.size, cfg.seed),
		segRng: rand.New(rand.NewPCG(cfg.seed, 1000))}
	o := Options{Key: s.key, Alloc: testPool(t), Native: s, Codec: testCodec,
		Now: func() time.Time { return s.clk }, Sleep: s.sleep}
	if cfg.opts != nil {
		cfg.opts(&o)
	}
	s.hold = 2 * max(o.NackWindow, DefaultNackWindow)
	if o.Shaper == nil {
		sh, err := channels.NewShaper(cfg.rate, 0, 0, s.clk)
		if err != nil {
			t.Fatal(err)
		}
		o.Shaper = sh
	}
	for i := range cfg.n {
		r := &simRecv{sim: s, i: i, name: fmt.Sprintf("node-%03d", i), rng: rand.New(rand.NewPCG(cfg.seed, uint64(i)+1)),
			nacked: map[uint32]time.Time{}, maxSeen: -1}
		if cfg.repairRate > 0 {
			r.budget = ratelimit.NewBucket(cfg.repairRate, max(int(cfg.repairRate/4), 1500), s.clk)
		}
		s.rcv = append(s.rcv, r)
	}
	var err error
	s.snd, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.snd.Close()
	ss, err := s.snd.Offer(context.Background(), Object{Key: "/obj", URL: "/obj", R: bytes.NewReader(s.obj), Size: int64(len(s.obj)),
		ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ss.Done():
	case <-time.After(5 * time.Minute):
		t.Fatal("session did not end")
	}
	if s.failed != nil {
		t.Fatalf("sim: %v", s.failed)
	}
	if err := ss.Err(); err != nil {
		t.Fatalf("session: %v", err)
	}
	res := simResult{size: cfg.size, st: ss.Stats(), unicastT: time.Duration(float64(cfg.size) / cfg.rate * float64(time.Second))}
	for _, r := range s.rcv {
		if !r.done {
			t.Fatalf("receiver %d did not finish: %d of %d bytes", r.i, r.out.n, cfg.size)
		}
		if r.out.n != len(s.obj) || r.out.sum() != sha256.Sum256(s.obj) {
			t.Fatalf("receiver %d: wrong bytes (%d of %d)", r.i, r.out.n, len(s.obj))
		}
		res.complete = max(res.complete, r.doneAt.Sub(s.started))
		res.parityUse += r.asm.Stats().ParityUsed
	}
	st := res.st
	res.segment = float64(st.MulticastBytes()) / float64(cfg.size)
	res.dataPar = float64(st.Bytes[KindData]+st.Bytes[KindParity]+st.Bytes[KindNackParity]) / float64(cfg.size)
	res.unicast = float64(st.UnicastBytes()) / float64(cfg.size)
	return res
}

func TestSegmentLossy(t *testing.T) {
	for _, tc := range []struct {
		name       string
		n          int
		loss, corr float64
	}{
		{"clean", 5, 0, 0},
		{"independent 5%", 20, 0.05, 0},
		{"independent 20%", 10, 0.20, 0},
		{"correlated 5% + independent 1%", 20, 0.01, 0.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runSim(t, simConfig{n: tc.n, size: 600_000, loss: tc.loss, corr: tc.corr, seed: 42})
			t.Logf("segment %.3f (data+parity %.3f), unicast %.3f, complete %v vs %v unicast; %+v",
				r.segment, r.dataPar, r.unicast, r.complete, r.unicastT, r.st.Bytes)
			if tc.loss == 0 && tc.corr == 0 && (r.st.Bytes[KindNackParity] != 0 || r.unicast != 0) {
				t.Errorf("no loss, yet repairs: %+v", r.st.Bytes)
			}
		})
	}
}

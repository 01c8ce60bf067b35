package mcrecv

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/alc"
	"github.com/blockcast/beacon/shared/fec"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
)

// receivePath is the beacon's receive path for one block of k = 200
// symbols of 1344 bytes (the defaults), as a channel's reader runs it:
// dispatch (ALC header, object lookup), NACK bookkeeping, the Assembler's
// checks (one SHA-256 per symbol) and the in-order write to the pipe.
type receivePath struct {
	r    *Receiver
	m    *manifest.Manifest
	pkts [][]byte
	cast identity.PublicKey
}

func newReceivePath(t testing.TB, lost int) *receivePath {
	t.Helper()
	k, e := manifest.DefaultMaxBlockLen, alc.MaxSymbolSize
	obj := testObject(k * e)
	cast := key(t, 1)
	ch, _ := manifest.ChannelOf("127.0.0.2", "232.1.2.3", 5001)
	now := time.Now().Truncate(time.Second)
	mp := max(lost, 1)
	m, lists, err := manifest.Build(bytes.NewReader(obj), int64(len(obj)), manifest.Params{
		URL: "/b", Sequence: 1, Issued: now, Expires: now.Add(time.Hour), TSI: 1, TOI: 2, Channel: ch, MaxParity: mp,
	}, cast, codec)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := fec.Partition(m.ContentLength, e, k)
	src, _ := part.Source(obj, 0)
	par, err := codec.Parity(src, k, k+mp)
	if err != nil {
		t.Fatal(err)
	}
	syms := append(src, par...)
	rp := &receivePath{m: m, cast: cast.Public()}
	for _, h := range lists[0].Parts() {
		p, _ := h.Packet(m)
		b, _ := p.AppendTo(nil)
		rp.pkts = append(rp.pkts, b)
	}
	for esi := lost; esi < k+lost; esi++ {
		p := alc.Packet{TSI: 1, TOI: 2, SBN: 0, SBL: uint16(k), ESI: uint16(esi), Payload: syms[esi]}
		b, _ := p.AppendTo(nil)
		rp.pkts = append(rp.pkts, b)
	}
	rp.r, err = New(Options{Mode: Off, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rp.r.codec = codec
	return rp
}

// object returns a fresh object in reception and its channel subscription.
func (rp *receivePath) object(t testing.TB) (*subscription, *pipe) {
	pw := newPipe(1 << 30)
	pw.buf = make([]byte, 0, rp.m.ContentLength) // as if a reader drained it: no growth
	a, err := objrecv.New(rp.m, rp.cast, pw, objrecv.Config{Codec: codec})
	if err != nil {
		t.Fatal(err)
	}
	o := newObject(rp.r, rp.m.URL, &mcproto.Offer{}, rp.m, a, pw)
	return &subscription{c: rp.r.chans, key: subKey{ch: rp.m.Channel}, objs: map[mcproto.Object]*object{o.id: o}}, pw
}

func (rp *receivePath) run(t testing.TB, s *subscription, pw *pipe) {
	for _, p := range rp.pkts {
		s.dispatch(p)
	}
	o := s.objs[mcproto.Object{TSI: 1, TOI: 2}]
	if !o.a.Done() {
		t.Fatalf("block not done: %+v", o.a.Stats())
	}
	pw.buf, pw.off = pw.buf[:0], 0
}

func benchReceive(b *testing.B, lost int) {
	rp := newReceivePath(b, lost)
	b.SetBytes(int64(rp.m.ContentLength))
	b.ReportAllocs()
	var d time.Duration
	for range b.N {
		s, pw := rp.object(b) // setup, with its ed25519 verify, not timed
		start := time.Now()
		rp.run(b, s, pw)
		d += time.Since(start)
	}
	perPkt := float64(d.Nanoseconds()) / float64(b.N) / float64(len(rp.pkts))
	b.ReportMetric(perPkt, "ns/pkt")
	b.ReportMetric(1e9/perPkt, "pkt/s")
	// Symbol bytes only (alc.MaxSymbolSize a packet), as the issue counts 50 Mbit/s.
	b.ReportMetric(1e9/perPkt*float64(alc.MaxSymbolSize)*8/1e6, "Mbit/s")
}

// Measured with blocks of 200 (the default until test/mipscount showed
// 44 Mbit/s at 5% loss; it is 100 now: `make bench` prints today's).
// (2026-12-05, k = 200, E = 1344, a block's 204 packets: 4 hash
// parts and 200 symbols; mipsle counted under qemu by TestCountReceive,
// below; packets/s and Mbit/s of symbols on one 880 MHz core at one
// instruction a cycle; loss amortised over the block's packets):
//
//	                   before (M instr/pkt, pkt/s, Mbit/s)   after
//	no loss            0.203  4,330  46.6                    0.121  7,260  78.1
//	1% (2 of 200)      0.352  2,500  26.9                    0.143  6,150  66.1
//	5% (10 of 200)     0.703  1,250  13.5                    0.230  3,830  41.2
//	10% (20 of 200)    1.160    760   8.2                    0.342  2,570  27.7
//
// Where they went: SHA-256 of each symbol was 0.153 M of the 0.203 M
// (crypto/sha256's generic loop; no assembly on MIPS): shared/sha256soft's
// unrolled rounds take 0.091 M. The Reed–Solomon decode inverted the whole
// surviving 200×200 submatrix (klauspost) for any loss; shared/fec now
// solves only for the lost symbols (7.3 instructions a byte multiply-add).
// The Assembler's clock read per symbol is a system call on 32-bit MIPS,
// which qemu does not count: mcrecv hands it a coarse clock (clock.go).
// amd64 (EPYC, 2 cores shared, load ~17, so noisy): ~1.5 µs a packet with
// no loss, unchanged (crypto/sha256 has assembly there); a (200,20)
// block's decode of 20 lost symbols went from ~10 ms to ~4.5 ms
// (shared/fec BenchmarkDecode).
func BenchmarkReceiveNoLoss(b *testing.B)   { benchReceive(b, 0) }
func BenchmarkReceiveLoss1pc(b *testing.B)  { benchReceive(b, 2) }
func BenchmarkReceiveLoss5pc(b *testing.B)  { benchReceive(b, 10) }
func BenchmarkReceiveParity20(b *testing.B) { benchReceive(b, 20) }

// TestCountReceive runs one block through the receive path
// $MCRECV_COUNT_N times (0 to 2), to count guest instructions under qemu
// user emulation: run it with N = 0 and N = 2 and halve the difference;
// setup cancels out.
//
//	GOARCH=mipsle GOMIPS=softfloat go test -c -o mcrecv.mipsle ./firmware/mcrecv
//	MCRECV_COUNT_N=2 qemu-mipsel-static -d in_asm,exec,nochain -D log \
//	  ./mcrecv.mipsle -test.run CountReceive
//
// then sum, over the log's "Trace" lines, the instruction count of the
// block at that PC (its "IN:" listing). Counting "Trace" lines under
// -singlestep instead overcounts: on a loop of known length it gave 21.6
// lines an iteration where blocks give 9.3 instructions (2.3 times).
func TestCountReceive(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("MCRECV_COUNT_N"))
	if err != nil {
		t.Skip("set MCRECV_COUNT_N (and MCRECV_COUNT_LOST) to count instructions under qemu")
	}
	lost, _ := strconv.Atoi(os.Getenv("MCRECV_COUNT_LOST"))
	rp := newReceivePath(t, lost)
	// Two objects set up whatever N is (each with its ed25519 verify), so
	// that the setup cancels out of the difference.
	subs := make([]*subscription, 2)
	pipes := make([]*pipe, 2)
	for i := range 2 {
		subs[i], pipes[i] = rp.object(t)
	}
	if _, err := codec.NewDecoder(manifest.DefaultMaxBlockLen, max(lost, 1), alc.MaxSymbolSize); err != nil {
		t.Fatal(err)
	}
	for i := range min(n, 2) {
		rp.run(t, subs[i], pipes[i])
	}
}

package mcsend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/manifest"
	"github.com/blockcast/beacon/shared/mcproto"
	"github.com/blockcast/beacon/shared/objrecv"
)

// countSink counts what the carousel puts on the channel.
type countSink struct {
	mu      sync.Mutex
	packets int
	bytes   int
}

func (c *countSink) Send(_ manifest.Channel, pkt []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.packets++
	c.bytes += len(pkt)
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// service is a Sender serving a real dtlschan listener on loopback.
type service struct {
	snd  *Sender
	srv  *dtlschan.Server
	cast *identity.Keypair
	ss   *Session
	obj  []byte
}

func startService(t *testing.T, lc dtlschan.ListenConfig, registered []*identity.Keypair, o Options) *service {
	t.Helper()
	cast := testKey(t, 1)
	ids := map[string]bool{}
	for _, k := range registered {
		ids[k.ID()] = true
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := lc.Listen(ctx, "127.0.0.1:0", cast, func(id string) bool { return ids[id] }, log)
	if err != nil {
		t.Fatal(err)
	}
	o.Key, o.Alloc, o.Log = cast, testPool(t), log
	if o.Native == nil {
		o.Native = &countSink{}
	}
	if o.Idle == 0 {
		o.Idle = time.Minute
	}
	snd, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- snd.Serve(ctx, srv) }()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		snd.Close()
	})
	obj := testObject(600_000, 3) // 447 symbols of 1344 bytes: 5 blocks
	ss, err := snd.Offer(ctx, Object{Key: "/x", URL: "/x", R: bytes.NewReader(obj), Size: int64(len(obj))})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first pass", func() bool { return ss.Stats().Passes >= 1 })
	return &service{snd: snd, srv: srv, cast: cast, ss: ss, obj: obj}
}

// beacon is a node's side: a DTLS session feeding an Assembler.
type beacon struct {
	sess *dtlschan.Session
	asm  *objrecv.Assembler
	out  hashWriter

	mu       sync.Mutex
	statuses []mcproto.Status
	alc      int
}

func dialBeacon(t *testing.T, svc *service, key *identity.Keypair) (*beacon, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := dtlschan.Dial(ctx, svc.srv.Addr().String(), key, svc.cast.Public())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { sess.Close() })
	b := &beacon{sess: sess}
	b.asm, err = objrecv.New(svc.ss.Manifest(), svc.cast.Public(), &b.out, objrecv.Config{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, sess.MaxPayload())
		for {
			n, err := sess.Read(buf)
			if err != nil {
				return
			}
			if mcproto.IsALC(buf[:n]) {
				b.asm.Feed(buf[:n], "unicast")
				b.mu.Lock()
				b.alc++
				b.mu.Unlock()
				continue
			}
			if m, err := mcproto.Decode(buf[:n]); err == nil {
				if st, ok := m.(*mcproto.Status); ok {
					b.mu.Lock()
					b.statuses = append(b.statuses, *st)
					b.mu.Unlock()
				}
			}
		}
	}()
	return b, nil
}

func (b *beacon) status(code mcproto.StatusCode) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.statuses {
		if s.Code == code {
			return true
		}
	}
	return false
}

// nack sends what the assembler lacks; it returns the ranges sent.
func (b *beacon) nack(t *testing.T, obj mcproto.Object) int {
	t.Helper()
	n := mcproto.Nack{Object: obj}
	for _, m := range b.asm.Missing(mcproto.MaxRanges(b.sess.MaxPayload())) {
		n.Ranges = append(n.Ranges, mcproto.Range{SBN: m.SBN, Kind: mcproto.Kind(m.Kind), First: m.First, Count: m.Count, Need: m.Need})
	}
	if len(n.Ranges) == 0 {
		return 0
	}
	msg, err := n.AppendTo(nil)
	if err != nil {
		t.Fatal(err)
	}
	b.send(t, msg)
	return len(n.Ranges)
}

func (b *beacon) send(t *testing.T, msg []byte) {
	t.Helper()
	if _, err := b.sess.Write(msg); err != nil {
		t.Fatal(err)
	}
}

func TestServiceEarlyMediaAndRepair(t *testing.T) {
	node := testKey(t, 2)
	svc := startService(t, dtlschan.ListenConfig{}, []*identity.Keypair{node}, Options{})
	b, err := dialBeacon(t, svc, node)
	if err != nil {
		t.Fatal(err)
	}
	obj := mcproto.Object{TSI: svc.ss.Manifest().TSI, TOI: svc.ss.Manifest().TOI}
	j := mcproto.Join{Object: obj, EarlyBlocks: 2}
	b.send(t, j.AppendTo(nil))
	// Between passes: the first block early (the pass it starts may go out
	// before the beacon's join takes effect), the rest on the channel.
	waitFor(t, "the first block early", func() bool { return b.asm.Stats().Blocks == 1 })
	// It joined after the first pass: a second pass sends what it missed
	// (to the channel, which this beacon does not receive).
	waitFor(t, "the second pass", func() bool { return svc.ss.Stats().Passes >= 2 })
	if got, blk := svc.snd.Stats().Bytes[KindEarly], uint64(svc.ss.part.BlockLen(0)*svc.ss.part.E); got < blk || got > 2*blk {
		t.Errorf("early bytes %d, want one block's worth (%d)", got, blk)
	}
	// The third block by NACK: one node lacks it, so it comes by unicast.
	if b.nack(t, obj) == 0 {
		t.Fatal("nothing missing after early media")
	}
	// It lacked the block's hash list too: that comes first with the
	// symbols it named; a beacon NACKs again until it is whole.
	last := time.Now()
	waitFor(t, "the repaired object", func() bool {
		if time.Since(last) > 200*time.Millisecond {
			b.nack(t, obj)
			last = time.Now()
		}
		return b.asm.Done()
	})
	if b.out.n != len(svc.obj) || b.out.sum() != sha256.Sum256(svc.obj) {
		t.Fatal("repaired object differs")
	}
	st := svc.snd.Stats()
	if st.Bytes[KindRepair] == 0 || st.Bytes[KindNackParity] != 0 {
		t.Errorf("one node's NACK: repair %d bytes by unicast, %d on the channel; want unicast only", st.Bytes[KindRepair], st.Bytes[KindNackParity])
	}
	// Leave ends its membership.
	l := mcproto.Leave{Object: obj}
	b.send(t, l.AppendTo(nil))
	waitFor(t, "the leave", func() bool { return svc.snd.Stats().Leaves == 1 })
}

func TestServiceRefusals(t *testing.T) {
	node, stranger := testKey(t, 2), testKey(t, 3)
	svc := startService(t, dtlschan.ListenConfig{}, []*identity.Keypair{node}, Options{})

	// An unregistered key never gets a session.
	if _, err := dialBeacon(t, svc, stranger); err == nil {
		t.Fatal("unregistered node got a session")
	}
	waitFor(t, "the refusal count", func() bool { return svc.srv.Stats().Unregistered >= 1 })

	b, err := dialBeacon(t, svc, node)
	if err != nil {
		t.Fatal(err)
	}
	// A Join and a Nack for an object never offered: StatusUnknown, nothing sent.
	ghost := mcproto.Object{TSI: 999, TOI: 7}
	j := mcproto.Join{Object: ghost, EarlyBlocks: 100}
	b.send(t, j.AppendTo(nil))
	n := mcproto.Nack{Object: ghost, Ranges: []mcproto.Range{{SBN: 0, Count: 10, Need: 10}}}
	msg, _ := n.AppendTo(nil)
	b.send(t, msg)
	waitFor(t, "StatusUnknown", func() bool { return b.status(mcproto.StatusUnknown) })
	waitFor(t, "both refusals", func() bool { return svc.snd.Stats().Refused[RefuseUnknown] == 2 })
	// An ALC packet or garbage from a node is dropped and counted.
	b.send(t, svc.ss.ManifestPacket())
	b.send(t, []byte{0x00, 1, 2})
	waitFor(t, "malformed refusals", func() bool { return svc.snd.Stats().Refused[RefuseMalformed] == 2 })
	st := svc.snd.Stats()
	if st.UnicastBytes() != 0 {
		t.Errorf("refused requests got %d bytes", st.UnicastBytes())
	}
}

// A registered node floods NACKs with the most ranges a datagram holds,
// for blocks past the object, ranges past the block, and real blocks: the
// message rate, the ranges honoured per message, the pending blocks and
// the repair budget all hold, every refusal is counted, and the node is
// told it is limited.
func TestServiceNackFlood(t *testing.T) {
	node := testKey(t, 2)
	const rate = 100_000 // repair budget, bytes a second
	svc := startService(t, dtlschan.ListenConfig{SendRate: rate, SendBurst: 20_000}, []*identity.Keypair{node},
		Options{NackRate: 200, NackBurst: 50, MaxRanges: 16, MaxPending: 2})
	b, err := dialBeacon(t, svc, node)
	if err != nil {
		t.Fatal(err)
	}
	obj := mcproto.Object{TSI: svc.ss.Manifest().TSI, TOI: svc.ss.Manifest().TOI}
	j := mcproto.Join{Object: obj}
	b.send(t, j.AppendTo(nil))
	waitFor(t, "the second pass", func() bool { return svc.ss.Stats().Passes >= 2 })
	maxRanges := mcproto.MaxRanges(b.sess.MaxPayload())
	start := time.Now()
	const msgs = 500
	for i := range msgs {
		n := mcproto.Nack{Object: obj}
		for r := range maxRanges {
			switch r % 4 {
			case 0:
				n.Ranges = append(n.Ranges, mcproto.Range{SBN: uint32(i*maxRanges + r), Count: 1, Need: 1}) // past the object
			case 1:
				n.Ranges = append(n.Ranges, mcproto.Range{SBN: 0, First: 100, Count: 60000, Need: 60000}) // past the block
			default:
				k := uint16(svc.ss.part.BlockLen(uint32(r % 3)))
				n.Ranges = append(n.Ranges, mcproto.Range{SBN: uint32(r % 3), First: 0, Count: k, Need: k}) // whole blocks
			}
		}
		msg, err := n.AppendTo(nil)
		if err != nil {
			t.Fatal(err)
		}
		b.send(t, msg)
	}
	// Wait until the counts settle (the listener may drop datagrams of a
	// flood whose queue is full: that is a bound too).
	prev := uint64(0)
	waitFor(t, "the flood counted", func() bool {
		time.Sleep(100 * time.Millisecond)
		st := svc.snd.Stats()
		n := st.Nacks + st.Refused[RefuseRate]
		settled := n == prev && n > 0
		prev = n
		return settled
	})
	elapsed := time.Since(start)
	st := svc.snd.Stats()
	b.mu.Lock()
	got := b.alc
	b.mu.Unlock()
	t.Logf("after %v: %d NACKs taken, refused %v, repair %d bytes, %d ALC packets received", elapsed, st.Nacks, st.Refused, st.Bytes[KindRepair], got)
	if st.Refused[RefuseRate] == 0 {
		t.Error("no NACK was refused by the node's message rate")
	}
	if st.Refused[RefuseRanges] == 0 {
		t.Error("no range was refused (past MaxRanges, the object or the block)")
	}
	if max := uint64(20_000 + rate*elapsed.Seconds() + 1500); st.Bytes[KindRepair] > max {
		t.Errorf("repairs %d bytes, over the budget %d", st.Bytes[KindRepair], max)
	}
	if st.Bytes[KindNackParity] != 0 {
		t.Errorf("one node's flood put %d bytes on the channel", st.Bytes[KindNackParity])
	}
	if st.Refused[RefuseLimited] == 0 || !b.status(mcproto.StatusLimited) {
		waitFor(t, "StatusLimited", func() bool { return b.status(mcproto.StatusLimited) })
	}
	svc.ss.mu.Lock()
	for id, m := range svc.ss.members {
		if m.pending > 2 {
			t.Errorf("node %s has %d blocks pending, cap 2", id, m.pending)
		}
	}
	if len(svc.ss.pending) > 3 {
		t.Errorf("%d blocks pending, the object has 3", len(svc.ss.pending))
	}
	svc.ss.mu.Unlock()
	if errors.Is(svc.ss.Err(), ErrClosed) {
		t.Error("the flood ended the session")
	}
}

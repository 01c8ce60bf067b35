package receipts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

var t0 = time.UnixMilli(1700000000000)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func openBook(t testing.TB, c *clock, opts Options) *Book {
	t.Helper()
	opts.Path = filepath.Join(t.TempDir(), "receipts.db")
	opts.Now = c.Now
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func key(t testing.TB, n byte) *identity.Keypair {
	kp, err := identity.FromSeed(bytes.Repeat([]byte{n}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// recs makes n records of path key, one a second from start.
func recs(start time.Time, key string, n int, size uint64) []receipt.Record {
	out := make([]receipt.Record, n)
	for i := range out {
		out[i] = receipt.Record{TS: start.Add(time.Duration(i+1) * time.Second).UnixMilli(), Key: receipt.HexHash(receipt.KeyHash(key)), Bytes: size, Status: 200, Path: receipt.PathHit}
	}
	return out
}

func sign(t testing.TB, kp *identity.Keypair, seq uint64, start, end time.Time, rs []receipt.Record) *receipt.Signed {
	t.Helper()
	s, err := receipt.Sign(kp, receipt.Summarize(kp.ID(), seq, start.UnixMilli(), end.UnixMilli(), rs, receipt.Overflow{}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func reasonIs(t *testing.T, err error, want string) {
	t.Helper()
	if got := ReasonOf(err); err == nil || got != want {
		t.Fatalf("err %v (reason %q), want reason %q", err, got, want)
	}
}

func hasFlag(flags []Flag, reason string) bool {
	for _, f := range flags {
		if f.Reason == reason {
			return true
		}
	}
	return false
}

// TestRefusals: forged, replayed, future-dated, duplicate, conflicting and
// overlapping receipts are refused with their reason and counted; a good
// one is accepted, acknowledged and audited.
func TestRefusals(t *testing.T) {
	c := &clock{now: t0}
	b := openBook(t, c, Options{})
	kp, other := key(t, 1), key(t, 2)
	id := kp.ID()
	b.NoteObject(id, "/a")
	for range 10 {
		b.NoteRedirect(id)
	}
	c.now = t0.Add(20 * time.Minute)
	good := sign(t, kp, 1, t0, t0.Add(10*time.Minute), recs(t0, "/a", 5, 100))
	out, err := b.Accept(kp.Public(), good.Marshal())
	if err != nil || !out.Ack || out.Seq != 1 || len(out.Flags) != 0 || len(out.Audit) != 4 {
		t.Fatalf("good receipt: %+v %v", out, err)
	}

	// Duplicate: refused, but acknowledged again (the ack was lost).
	out, err = b.Accept(kp.Public(), good.Marshal())
	reasonIs(t, err, ReasonDuplicate)
	if !out.Ack {
		t.Fatal("duplicate not acknowledged again")
	}
	// Forged: a receipt signed by another key, sent on this node's topic.
	forged := sign(t, other, 2, t0.Add(10*time.Minute), t0.Add(11*time.Minute), recs(t0.Add(10*time.Minute), "/a", 1, 1))
	_, err = b.Accept(kp.Public(), forged.Marshal())
	reasonIs(t, err, ReasonForged)
	// Forged: the node's receipt with a number changed.
	tampered := bytes.Replace(good.Marshal(), []byte(`"seq":1,`), []byte(`"seq":3,`), 1)
	_, err = b.Accept(kp.Public(), tampered)
	reasonIs(t, err, ReasonForged)
	// Future-dated.
	future := sign(t, kp, 4, c.now, c.now.Add(time.Hour), recs(c.now, "/a", 1, 1))
	_, err = b.Accept(kp.Public(), future.Marshal())
	reasonIs(t, err, ReasonFuture)
	// Replayed from long ago.
	old := sign(t, kp, 5, t0.Add(-40*24*time.Hour), t0.Add(-40*24*time.Hour+time.Minute), recs(t0.Add(-40*24*time.Hour), "/a", 1, 1))
	_, err = b.Accept(kp.Public(), old.Marshal())
	reasonIs(t, err, ReasonReplayed)
	// Conflict: seq 1 again with other content.
	conflict := sign(t, kp, 1, t0, t0.Add(10*time.Minute), recs(t0, "/a", 6, 100))
	_, err = b.Accept(kp.Public(), conflict.Marshal())
	reasonIs(t, err, ReasonConflict)
	// Overlap: seq 2 claiming part of seq 1's time.
	overlap := sign(t, kp, 2, t0.Add(5*time.Minute), t0.Add(15*time.Minute), recs(t0.Add(5*time.Minute), "/a", 1, 1))
	_, err = b.Accept(kp.Public(), overlap.Marshal())
	reasonIs(t, err, ReasonOverlap)
	// Malformed.
	_, err = b.Accept(kp.Public(), []byte(`{"sig":"x"}`))
	reasonIs(t, err, ReasonMalformed)

	st := b.Stats()
	for r, want := range map[string]uint64{ReasonDuplicate: 1, ReasonForged: 2, ReasonFuture: 1, ReasonReplayed: 1, ReasonConflict: 1, ReasonOverlap: 1, ReasonMalformed: 1} {
		if st.Refused[r] != want {
			t.Errorf("refused[%s] = %d, want %d", r, st.Refused[r], want)
		}
	}
	if st.Accepted != 1 {
		t.Errorf("accepted %d", st.Accepted)
	}
	v := b.View(id)
	if v == nil || v.Accepted != 1 || v.Requests != 5 || v.Bytes != 500 || v.Refused[ReasonForged] != 2 ||
		!hasFlag(v.Flags, FlagConflict) || !hasFlag(v.Flags, FlagOverlap) {
		t.Fatalf("view %+v", v)
	}
	// The next interval is accepted.
	next := sign(t, kp, 2, t0.Add(10*time.Minute), t0.Add(12*time.Minute), recs(t0.Add(10*time.Minute), "/a", 1, 1))
	if _, err := b.Accept(kp.Public(), next.Marshal()); err != nil {
		t.Fatal(err)
	}
}

// TestBudget: a node that sends receipts faster than its byte budget
// (tiny intervals to fill castd's disk) is refused, not acknowledged, and
// counted; another node is not affected.
func TestBudget(t *testing.T) {
	c := &clock{now: t0}
	b := openBook(t, c, Options{ByteRate: 1, ByteBurst: 4 << 10, AuditSample: -1})
	kp, other := key(t, 1), key(t, 2)
	c.now = t0.Add(time.Hour)
	accepted := 0
	var last error
	for i := range 20 {
		start := t0.Add(time.Duration(i) * time.Millisecond * 2)
		out, err := b.Accept(kp.Public(), sign(t, kp, uint64(i+1), start, start.Add(time.Millisecond), nil).Marshal())
		if err == nil {
			accepted++
		} else if out.Ack {
			t.Fatal("a refused receipt was acknowledged")
		}
		last = err
	}
	reasonIs(t, last, ReasonRateLimited)
	if accepted == 0 || accepted >= 20 || b.Stats().Refused[ReasonRateLimited] != uint64(20-accepted) {
		t.Fatalf("accepted %d of 20, stats %+v", accepted, b.Stats())
	}
	if _, err := b.Accept(other.Public(), sign(t, other, 1, t0, t0.Add(time.Minute), nil).Marshal()); err != nil {
		t.Fatalf("another node: %v", err)
	}
}

// TestCrossChecks: claims castd cannot account for are flagged, with the
// reason, on a receipt that is otherwise accepted.
func TestCrossChecks(t *testing.T) {
	kp := key(t, 1)
	id := kp.ID()
	for _, c := range []struct {
		name  string
		setup func(b *Book, c *clock)
		recs  []receipt.Record
		want  string // "" for no flag
	}{
		{"fetched object", func(b *Book, c *clock) { b.NoteObject(id, "/a"); b.NoteRedirect(id) }, recs(t0, "/a", 3, 10), ""},
		{"object never fetched", func(b *Book, c *clock) { b.NoteObject(id, "/a"); b.NoteRedirect(id) }, recs(t0, "/stolen", 3, 10), FlagUnknownObject},
		{"another node's object", func(b *Book, c *clock) { b.NoteObject(key(t, 9).ID(), "/b"); b.NoteRedirect(id) }, recs(t0, "/b", 3, 10), FlagUnknownObject},
		{"object sent by multicast", func(b *Book, c *clock) { b.NoteMulticast("/m"); b.NoteRedirect(id) }, recs(t0, "/m", 3, 10), ""},
		{"within redirects", func(b *Book, c *clock) {
			b.NoteObject(id, "/a")
			for range 10 {
				b.NoteRedirect(id)
			}
		}, recs(t0, "/a", 10*DefaultRequestsPerRedirect+DefaultRequestSlack, 1), ""},
		{"more requests than redirects", func(b *Book, c *clock) {
			b.NoteObject(id, "/a")
			for range 10 {
				b.NoteRedirect(id)
			}
		}, recs(t0, "/a", 10*DefaultRequestsPerRedirect+DefaultRequestSlack+1, 1), FlagOverRedirects},
		{"served while offline", func(b *Book, c *clock) {
			b.NoteObject(id, "/a")
			b.NoteRedirect(id)
			c.now = t0.Add(-time.Hour)
			b.NoteState(id, false)
			c.now = t0.Add(time.Hour)
		}, recs(t0, "/a", 2, 1), FlagOffline},
		{"online during the interval", func(b *Book, c *clock) {
			b.NoteObject(id, "/a")
			b.NoteRedirect(id)
			c.now = t0.Add(-time.Hour)
			b.NoteState(id, false)
			c.now = t0.Add(time.Second)
			b.NoteState(id, true)
			c.now = t0.Add(2 * time.Second)
			b.NoteState(id, true) // a load change: not a new state
			c.now = t0.Add(time.Hour)
		}, recs(t0, "/a", 2, 1), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck := &clock{now: t0}
			b := openBook(t, ck, Options{})
			c.setup(b, ck)
			ck.now = t0.Add(time.Hour)
			s := sign(t, kp, 1, t0, t0.Add(30*time.Minute), c.recs)
			out, err := b.Accept(kp.Public(), s.Marshal())
			if err != nil || !out.Ack {
				t.Fatalf("%+v %v", out, err)
			}
			if c.want == "" && len(out.Flags) > 0 {
				t.Fatalf("flagged: %+v", out.Flags)
			}
			if c.want != "" && !hasFlag(out.Flags, c.want) {
				t.Fatalf("flags %+v, want %s", out.Flags, c.want)
			}
			if c.want != "" && (b.Stats().Flagged[c.want] != 1 || !hasFlag(b.View(id).Flags, c.want)) {
				t.Fatalf("flag not counted or not in the view: %+v", b.View(id))
			}
		})
	}
}

// TestNotesSurviveRestart: what castd noted (objects fetched, redirects)
// is on disk, so a restarted castd does not flag honest receipts.
func TestNotesSurviveRestart(t *testing.T) {
	c := &clock{now: t0}
	path := filepath.Join(t.TempDir(), "r.db")
	b, err := Open(Options{Path: path, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	kp := key(t, 1)
	b.NoteObject(kp.ID(), "/a")
	b.NoteRedirect(kp.ID())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err = Open(Options{Path: path, Now: c.Now}); err != nil {
		t.Fatal(err)
	}
	// Pruning an hour on keeps what a receipt of the last hour needs.
	c.now = t0.Add(time.Hour)
	if err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out, err := b.Accept(kp.Public(), sign(t, kp, 1, t0, t0.Add(time.Minute), recs(t0, "/a", 3, 10)).Marshal())
	if err != nil || len(out.Flags) != 0 {
		t.Fatalf("%+v %v", out, err)
	}
	// Far later, the notes are gone: an object fetched then no longer
	// vouches for bytes now.
	c.now = t0.Add(DefaultObjectTTL + DefaultMaxAge + 2*time.Hour)
	if err := b.Prune(); err != nil {
		t.Fatal(err)
	}
	start := c.now.Add(-time.Hour)
	out, err = b.Accept(kp.Public(), sign(t, kp, 2, start, start.Add(time.Minute), recs(start, "/a", 3, 10)).Marshal())
	if err != nil || !hasFlag(out.Flags, FlagUnknownObject) {
		t.Fatalf("after pruning: %+v %v", out, err)
	}
	if v := b.View(kp.ID()); v == nil || v.Accepted != 2 {
		t.Fatalf("view %+v", v)
	}
}

func auditReply(t testing.TB, rs []receipt.Record, seq uint64, idx []uint64, tamper func(*receipt.Records)) []byte {
	l := make([]receipt.Hash, len(rs))
	for i, r := range rs {
		l[i] = r.LeafHash()
	}
	out := receipt.Records{Seq: seq, Root: receipt.HexHash(receipt.Root(l)), N: uint64(len(l))}
	for _, i := range idx {
		p, _ := receipt.Proof(l, int(i))
		it := receipt.Item{I: i, Record: rs[i]}
		for _, h := range p {
			it.Proof = append(it.Proof, receipt.HexHash(h))
		}
		out.Items = append(out.Items, it)
	}
	if tamper != nil {
		tamper(&out)
	}
	raw := fmt.Appendf(nil, "%s", mustJSON(t, out))
	return raw
}

// TestAudit: records that prove against the receipt's root pass; records
// changed after the receipt was signed, or not the ones asked for, flag
// the node; a reply nobody asked for is refused.
func TestAudit(t *testing.T) {
	kp := key(t, 1)
	for _, c := range []struct {
		name   string
		tamper func(*receipt.Records)
		ok     bool
	}{
		{"honest", nil, true},
		{"bytes raised", func(r *receipt.Records) { r.Items[0].Record.Bytes++ }, false},
		{"other records", func(r *receipt.Records) { r.Items = r.Items[:1] }, false},
		{"root of another tree", func(r *receipt.Records) { r.Root[0] ^= 1 }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck := &clock{now: t0}
			b := openBook(t, ck, Options{AuditSample: 2})
			b.NoteObject(kp.ID(), "/a")
			b.NoteRedirect(kp.ID())
			ck.now = t0.Add(time.Hour)
			rs := recs(t0, "/a", 7, 10)
			out, err := b.Accept(kp.Public(), sign(t, kp, 1, t0, t0.Add(time.Minute), rs).Marshal())
			if err != nil || len(out.Audit) != 2 {
				t.Fatalf("%+v %v", out, err)
			}
			err = b.Audit(kp.Public(), auditReply(t, rs, 1, out.Audit, c.tamper))
			if err != nil {
				t.Fatal(err)
			}
			st := b.Stats()
			if c.ok != (st.AuditsOK == 1) || c.ok == (st.Flagged[FlagAuditFailed] == 1) {
				t.Fatalf("stats %+v, view %+v", st, b.View(kp.ID()))
			}
			// The same reply again: nobody asked.
			if err := b.Audit(kp.Public(), auditReply(t, rs, 1, out.Audit, nil)); ReasonOf(err) != ReasonReplayed {
				t.Fatalf("second reply: %v", err)
			}
		})
	}
}

// BenchmarkAccept measures receipts verified and stored per second on one
// core: signature, consistency, cross-checks and the bbolt commit.
func BenchmarkAccept(b *testing.B) {
	ck := &clock{now: t0}
	bk := openBook(b, ck, Options{AuditSample: -1})
	kp := key(b, 1)
	bk.NoteObject(kp.ID(), "/a")
	wires := make([][]byte, b.N)
	for i := range wires {
		start := t0.Add(time.Duration(i) * time.Minute)
		wires[i] = sign(b, kp, uint64(i+1), start, start.Add(time.Minute), recs(start, "/a", 20, 1000)).Marshal()
	}
	ck.now = t0.Add(time.Duration(b.N+1) * time.Minute)
	b.ResetTimer()
	for i := range b.N {
		if _, err := bk.Accept(kp.Public(), wires[i]); err != nil && !errors.Is(err, errFlagOnly) {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "receipts/s")
}

// BenchmarkVerify is the signature and decoding share alone.
func BenchmarkVerify(b *testing.B) {
	kp := key(b, 1)
	w := sign(b, kp, 1, t0, t0.Add(time.Minute), recs(t0, "/a", 20, 1000)).Marshal()
	b.ResetTimer()
	for range b.N {
		if _, err := receipt.Open(w, kp.Public()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "receipts/s")
}

var errFlagOnly = errors.New("never")

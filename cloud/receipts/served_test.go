package receipts

import (
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

// mixed makes hit records of hitSize bytes and fill records of fillSize,
// n of each, spread over [start, start+span).
func mixed(start time.Time, span time.Duration, key string, n int, hitSize, fillSize uint64) []receipt.Record {
	out := make([]receipt.Record, 0, 2*n)
	step := span / time.Duration(2*n+1)
	for i := range 2 * n {
		r := receipt.Record{TS: start.Add(time.Duration(i+1) * step).UnixMilli(), Key: receipt.HexHash(receipt.KeyHash(key)), Status: 200, Bytes: hitSize, Path: receipt.PathHit}
		if i%2 == 1 {
			r.Bytes, r.Path = fillSize, receipt.PathFill
		}
		out = append(out, r)
	}
	return out
}

// honest accepts an unflagged receipt [start, start+span) of n hit and n
// fill records.
func honest(t *testing.T, b *Book, kp *identity.Keypair, seq uint64, start time.Time, span time.Duration, n int, hit, fill uint64) {
	t.Helper()
	out, err := b.Accept(kp.Public(), sign(t, kp, seq, start, start.Add(span), mixed(start, span, "/a", n, hit, fill)).Marshal())
	if err != nil || len(out.Flags) > 0 {
		t.Fatalf("receipt %d: %+v %v", seq, out, err)
	}
}

// TestServedBytes: a node's accepted receipts sum right, hit ratio from
// bytes by path; one straddling the window's edge counts pro rata; a node
// that has sent none yet is not Received (castd falls back to its health
// reports), one that has is measured by receipts even where it sent none.
func TestServedBytes(t *testing.T) {
	kp := key(t, 1)
	id := kp.ID()
	ck := &clock{now: t0}
	b := openBook(t, ck, Options{AuditSample: -1})
	b.NoteObject(id, "/a")
	for range 10 {
		b.NoteRedirect(id)
	}
	ck.now = t0.Add(time.Hour)
	// Two 10-minute receipts: 4 hits of 300 and 4 fills of 100 bytes
	// (1600 bytes, 8 requests, 75% hit), then 2 of 1000 and 2 of 1000
	// (4000 bytes, 4 requests, 50% hit).
	honest(t, b, kp, 1, t0, 10*time.Minute, 4, 300, 100)
	honest(t, b, kp, 2, t0.Add(10*time.Minute), 10*time.Minute, 2, 1000, 1000)
	other := key(t, 2)

	for _, c := range []struct {
		name           string
		node           string
		from, to       time.Time
		bytes, reqs    uint64
		hit            float64
		receipts       int
		received       bool
		wantNoReceipts bool
	}{
		{"both whole", id, t0, t0.Add(20 * time.Minute), 5600, 12, (1200 + 2000) / 5600.0, 2, true, false},
		{"a wider window", id, t0.Add(-time.Hour), t0.Add(time.Hour), 5600, 12, (1200 + 2000) / 5600.0, 2, true, false},
		{"the first only", id, t0, t0.Add(10 * time.Minute), 1600, 8, 0.75, 1, true, false},
		{"the second only", id, t0.Add(10 * time.Minute), t0.Add(20 * time.Minute), 4000, 4, 0.5, 1, true, false},
		// Half of the first (800 bytes, 4 requests, 600 hit) and a
		// quarter of the second (1000, 1, 500 hit).
		{"straddling both edges", id, t0.Add(5 * time.Minute), t0.Add(12*time.Minute + 30*time.Second), 1800, 5, 1100 / 1800.0, 2, true, false},
		{"before its first receipt", id, t0.Add(-time.Hour), t0, 0, 0, 0, 0, false, true},
		{"after its last receipt", id, t0.Add(30 * time.Minute), t0.Add(time.Hour), 0, 0, 0, 0, true, true},
		{"another node", other.ID(), t0, t0.Add(time.Hour), 0, 0, 0, 0, false, true},
		{"an empty window", id, t0.Add(time.Minute), t0.Add(time.Minute), 0, 0, 0, 0, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := b.ServedBytes(c.node, c.from, c.to)
			if err != nil {
				t.Fatal(err)
			}
			if f.Source != SourceReceipts || f.Bytes != c.bytes || f.Requests != c.reqs || f.Receipts != c.receipts ||
				f.Received != c.received || f.Excluded != 0 || len(f.Flagged) != 0 {
				t.Fatalf("figures %+v, want %d bytes, %d requests, %d receipts, received %v", f, c.bytes, c.reqs, c.receipts, c.received)
			}
			if d := f.HitRatio - c.hit; d > 1e-9 || d < -1e-9 {
				t.Fatalf("hit ratio %v, want %v", f.HitRatio, c.hit)
			}
		})
	}
}

// TestServedFlaggedDoNotPay: a receipt the cross-checks flag is accepted
// (and acknowledged) but pays nothing; the figures say which and why.
// Each case's attack would be paid in full by summing accepted receipts.
func TestServedFlaggedDoNotPay(t *testing.T) {
	kp := key(t, 1)
	id := kp.ID()
	type step func(t *testing.T, b *Book, ck *clock)
	accept := func(seq uint64, start time.Time, span time.Duration, rs []receipt.Record) step {
		return func(t *testing.T, b *Book, ck *clock) {
			b.Accept(kp.Public(), sign(t, kp, seq, start, start.Add(span), rs).Marshal())
		}
	}
	good := accept(1, t0, 10*time.Minute, mixed(t0, 10*time.Minute, "/a", 2, 100, 100)) // 400 bytes
	for _, c := range []struct {
		name     string
		audit    int
		steps    []step
		want     string // reason shown
		excluded int
		exBytes  uint64
		bytes    uint64
	}{
		{"bytes for an object castd never gave", -1, []step{good,
			accept(2, t0.Add(10*time.Minute), 10*time.Minute, mixed(t0.Add(10*time.Minute), 10*time.Minute, "/stolen", 2, 5000, 5000))},
			"seq 2: " + FlagUnknownObject, 1, 20000, 400},
		{"more requests than redirects", -1, []step{good,
			accept(2, t0.Add(10*time.Minute), 10*time.Minute, mixed(t0.Add(10*time.Minute), 10*time.Minute, "/a", 200, 10, 10))},
			"seq 2: " + FlagOverRedirects, 1, 4000, 400},
		{"served while offline", -1, []step{good,
			func(t *testing.T, b *Book, ck *clock) {
				ck.now = t0.Add(10 * time.Minute)
				b.NoteState(id, false)
				ck.now = t0.Add(time.Hour)
			},
			accept(2, t0.Add(20*time.Minute), 10*time.Minute, mixed(t0.Add(20*time.Minute), 10*time.Minute, "/a", 2, 100, 100))},
			"seq 2: " + FlagOffline, 1, 400, 400},
		{"a second receipt for the same seq", -1, []step{good,
			accept(1, t0, 10*time.Minute, mixed(t0, 10*time.Minute, "/a", 2, 100, 101))},
			"seq 1: " + FlagConflict, 1, 400, 0},
		{"a second receipt for the same time", -1, []step{good,
			accept(2, t0.Add(5*time.Minute), 10*time.Minute, mixed(t0.Add(5*time.Minute), 10*time.Minute, "/a", 2, 100, 100))},
			"seq 1: " + FlagOverlap, 1, 400, 0},
		{"records that do not prove against the root", 2, []step{
			func(t *testing.T, b *Book, ck *clock) {
				rs := mixed(t0, 10*time.Minute, "/a", 2, 100, 100)
				out, err := b.Accept(kp.Public(), sign(t, kp, 1, t0, t0.Add(10*time.Minute), rs).Marshal())
				if err != nil || len(out.Audit) == 0 {
					t.Fatalf("%+v %v", out, err)
				}
				if f, _ := b.ServedBytes(id, t0, t0.Add(time.Hour)); f.Bytes != 400 {
					t.Fatalf("before the audit: %+v", f)
				}
				b.Audit(kp.Public(), auditReply(t, rs, 1, out.Audit, func(r *receipt.Records) { r.Items[0].Record.Bytes++ }))
			}},
			"seq 1: " + FlagAuditFailed, 1, 400, 0},
		{"records the node will not show", 2, []step{
			func(t *testing.T, b *Book, ck *clock) {
				rs := mixed(t0, 10*time.Minute, "/a", 2, 100, 100)
				b.Accept(kp.Public(), sign(t, kp, 1, t0, t0.Add(10*time.Minute), rs).Marshal())
				b.Audit(kp.Public(), mustJSON(t, receipt.Records{Seq: 1, Error: "gone"}))
			}},
			"seq 1: " + FlagAuditUnanswered, 1, 400, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck := &clock{now: t0}
			b := openBook(t, ck, Options{AuditSample: c.audit})
			b.NoteObject(id, "/a")
			for range 4 {
				b.NoteRedirect(id)
			}
			ck.now = t0.Add(time.Hour)
			for _, s := range c.steps {
				s(t, b, ck)
			}
			f, err := b.ServedBytes(id, t0, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if f.Bytes != c.bytes || f.Excluded != c.excluded || f.ExcludedBytes != c.exBytes || !f.Received ||
				!strings.Contains(strings.Join(f.Flagged, "|"), c.want) {
				t.Fatalf("figures %+v, want %d bytes paid, %d excluded (%d bytes) for %q", f, c.bytes, c.excluded, c.exBytes, c.want)
			}
		})
	}
}

// TestServedFlagsSurviveRestart: the flags are in the file, not only in
// memory.
func TestServedFlagsSurviveRestart(t *testing.T) {
	kp := key(t, 1)
	ck := &clock{now: t0}
	opts := Options{Path: t.TempDir() + "/r.db", Now: ck.Now, AuditSample: -1}
	b, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.NoteRedirect(kp.ID())
	ck.now = t0.Add(time.Hour)
	b.Accept(kp.Public(), sign(t, kp, 1, t0, t0.Add(10*time.Minute), mixed(t0, 10*time.Minute, "/stolen", 1, 10, 10)).Marshal())
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err = Open(opts); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if f, err := b.ServedBytes(kp.ID(), t0, t0.Add(time.Hour)); err != nil || f.Bytes != 0 || f.Excluded != 1 {
		t.Fatalf("%+v %v", f, err)
	}
}

// BenchmarkServedBytes measures one node's figures for a day out of 30
// days of 10-minute receipts (4,320): the bisection finds the day's first.
func BenchmarkServedBytes(b *testing.B) {
	kp := key(b, 1)
	ck := &clock{now: t0}
	book := openBook(b, ck, Options{AuditSample: -1, ByteRate: -1})
	book.NoteObject(kp.ID(), "/a")
	const n = 30 * 144
	for i := range n {
		start := t0.Add(time.Duration(i) * 10 * time.Minute)
		ck.now = start.Add(10 * time.Minute)
		book.NoteRedirect(kp.ID())
		if _, err := book.Accept(kp.Public(), sign(b, kp, uint64(i+1), start, start.Add(10*time.Minute), mixed(start, 10*time.Minute, "/a", 1, 100, 100)).Marshal()); err != nil {
			b.Fatal(err)
		}
	}
	from := t0.Add(15 * 24 * time.Hour)
	b.ResetTimer()
	for range b.N {
		f, err := book.ServedBytes(kp.ID(), from, from.Add(24*time.Hour))
		if err != nil || f.Receipts != 144 {
			b.Fatalf("%+v %v", f, err)
		}
	}
}

package receipts

import (
	"bytes"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

// TestDayRootAndProof: every receipt accepted in a day proves against the
// day's root (what the daily anchor publishes); a changed receipt does not.
func TestDayRootAndProof(t *testing.T) {
	c := &clock{now: t0}
	b := openBook(t, c, Options{AuditSample: -1})
	a, z := key(t, 1), key(t, 2)
	for _, kp := range []*identity.Keypair{a, z} {
		b.NoteObject(kp.ID(), "/a")
	}
	c.now = t0.Add(time.Hour)
	for i, kp := range []*identity.Keypair{a, z, a} {
		start := t0.Add(time.Duration(i) * time.Minute)
		seq := uint64(1 + i/2)
		if _, err := b.Accept(kp.Public(), sign(t, kp, seq, start, start.Add(time.Minute), recs(start, "/a", 2, 5)).Marshal()); err != nil {
			t.Fatal(err)
		}
	}
	root, n, err := b.DayRoot(c.now)
	if err != nil || n != 3 {
		t.Fatalf("day root: %d %v", n, err)
	}
	if _, n2, _ := b.DayRoot(c.now.Add(-48 * time.Hour)); n2 != 0 {
		t.Fatalf("another day has %d receipts", n2)
	}
	for _, c := range []struct {
		id  string
		seq uint64
	}{{a.ID(), 1}, {a.ID(), 2}, {z.ID(), 1}} {
		p, err := b.Prove(c.id, c.seq)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Check(); err != nil || receipt.Hash(p.Root) != root || p.N != 3 {
			t.Fatalf("%s/%d: %v (root %s)", c.id, c.seq, err, p.Root)
		}
		// The same proof with the receipt's signature or bytes changed
		// does not check.
		good := p.Receipt
		sigAt := bytes.Index(good, []byte(`"sig":"`)) + len(`"sig":"`)
		p.Receipt = bytes.Clone(good)
		p.Receipt[sigAt] ^= 'A' ^ 'B'
		if p.Receipt[sigAt] == good[sigAt] || p.Check() == nil {
			t.Fatal("receipt with another signature checks")
		}
		p.Receipt = bytes.Replace(good, []byte(`"seq":`), []byte(`"seq":1`), 1)
		if p.Check() == nil {
			t.Fatal("changed receipt checks")
		}
	}
	if _, err := b.Prove(a.ID(), 9); err == nil {
		t.Fatal("proof of a receipt castd does not have")
	}
}

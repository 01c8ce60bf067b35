package castd

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockcast/beacon/cloud/history"
	"github.com/blockcast/beacon/cloud/receipts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

// TestServedFigures: contracts are measured by a node's receipts once it
// has sent any, by its health reports before that (old beacons still get
// a verdict); a node that sends receipts cannot withhold them, nor send
// only flagged ones, to be measured by its own counters instead.
func TestServedFigures(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0).UTC().Truncate(time.Hour)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	node, _ := identity.Generate()
	id := node.ID()
	sign := func(seq uint64, start time.Time, key string) []byte {
		rs := []receipt.Record{{TS: start.Add(time.Second).UnixMilli(), Key: receipt.HexHash(receipt.KeyHash(key)), Bytes: 1000, Status: 200, Path: receipt.PathHit}}
		s, err := receipt.Sign(node, receipt.Summarize(id, seq, start.UnixMilli(), start.Add(10*time.Minute).UnixMilli(), rs, receipt.Overflow{}))
		if err != nil {
			t.Fatal(err)
		}
		return s.Marshal()
	}
	for _, c := range []struct {
		name     string
		receipts func(b *receipts.Book)
		source   string
		bytes    uint64
	}{
		{"no receipts: health reports", func(*receipts.Book) {}, history.SourceHealth, 60e6},
		{"receipts in the window", func(b *receipts.Book) { b.Accept(node.Public(), sign(1, t0, "/a")) }, receipts.SourceReceipts, 1000},
		{"receipts withheld in the window", func(b *receipts.Book) { b.Accept(node.Public(), sign(1, t0.Add(-2*time.Hour), "/a")) }, receipts.SourceReceipts, 0},
		{"only flagged receipts", func(b *receipts.Book) { b.Accept(node.Public(), sign(1, t0, "/never-fetched")) }, receipts.SourceReceipts, 0},
		{"receipts only after the window", func(b *receipts.Book) { b.Accept(node.Public(), sign(1, t0.Add(2*time.Hour), "/a")) }, history.SourceHealth, 60e6},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			now := t0.Add(-3 * time.Hour)
			book, err := receipts.Open(receipts.Options{Path: filepath.Join(dir, "receipts.db"), Logger: quiet, Now: func() time.Time { return now }, AuditSample: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer book.Close()
			h, err := history.Open(filepath.Join(dir, "history.db"), 0, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			// The node's own counters say 1 MB a minute over the hour.
			for m := 0; m <= 60; m++ {
				if err := h.Record(t0.Add(time.Duration(m)*time.Minute), 2*time.Minute, []history.Sample{{Node: id, Online: true, HasHealth: true,
					BytesServed: uint64(m) * 1e6, StorageBytes: 1}}); err != nil {
					t.Fatal(err)
				}
			}
			book.NoteObject(id, "/a")
			book.NoteRedirect(id)
			now = t0.Add(3 * time.Hour)
			c.receipts(book)
			f, err := servedFigures{book: book, history: h}.ServedBytes(id, t0, t0.Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if f.Source != c.source || f.Bytes != c.bytes {
				t.Fatalf("figures %+v, want %d bytes from %s", f, c.bytes, c.source)
			}
		})
	}
}

package receipts

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blockcast/beacon/shared/ctrlmsg"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/receipt"
)

type sink struct {
	mu   sync.Mutex
	fail bool
	got  []json.RawMessage
	recs []*receipt.Records
}

func (s *sink) publish(kind ctrlmsg.Kind, body any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("broker away")
	}
	switch kind {
	case ctrlmsg.KindReceipt:
		s.got = append(s.got, append(json.RawMessage(nil), body.(json.RawMessage)...))
	case ctrlmsg.KindRecords:
		s.recs = append(s.recs, body.(*receipt.Records))
	}
	return nil
}

func testKey(t testing.TB) *identity.Keypair {
	kp, err := identity.FromSeed(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func open(t *testing.T, path string, s *sink) *Book {
	t.Helper()
	b, err := Open(Options{Path: path, Key: testKey(t), Publish: s.publish, MaxRecords: 4,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecordSealAck: responses through Wrap become records (path from
// X-Cache, no client address), a seal signs them into a receipt that stays
// on disk across a reopen until acknowledged, and an audit proves records
// against the receipt's root.
func TestRecordSealAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "receipts.db")
	s := &sink{fail: true}
	b := open(t, path, s)
	h := b.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status":
			io.WriteString(w, "not a delivery")
			return
		case "/hit":
			w.Header().Set(protocol.HeaderCache, "HIT")
		case "/mc":
			// A fill from a multicast offer, as the cache answers it.
			w.Header().Set(protocol.HeaderCache, "MISS")
			w.Header().Set(protocol.HeaderDelivery, protocol.DeliveryMulticast)
		default:
			w.Header().Set(protocol.HeaderCache, "MISS")
		}
		// Through ReadFrom, as the cache sends files.
		io.Copy(w, bytes.NewReader(make([]byte, 1000)))
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, p := range []string{"/hit", "/hit", "/fill?x=1", "/status", "/mc", "/hit", "/hit"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	b.resend(true) // the broker is away: kept
	if st := b.Stats(); st.Pending != 1 || st.Sealed != 1 || st.Overflow != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Reopen, as after a restart: the receipt is still there.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = open(t, path, s)
	defer b.Close()
	s.mu.Lock()
	s.fail = false
	s.mu.Unlock()
	b.Kick()
	b.resend(true)
	if len(s.got) != 1 {
		t.Fatalf("sent %d receipts", len(s.got))
	}
	sr, err := receipt.Open(s.got[0], testKey(t).Public())
	if err != nil {
		t.Fatal(err)
	}
	r := sr.Receipt
	if r.Requests != 6 || r.Records != 4 || r.Bytes != 6000 || r.ByPath.Hit != 4000 || r.ByPath.Fill != 1000 || r.ByPath.Multicast != 1000 {
		// (4 recorded: hit, hit, fill, mc; 2 hits counted over MaxRecords)
		t.Fatalf("receipt %+v", r)
	}
	// Audit: the beacon answers with records proved against the root.
	res := b.HandleCommand(ctrlmsg.Command{ID: "a", Op: ctrlmsg.OpReceiptRecords, Arg: receipt.FormatAudit(r.Seq, []uint64{0, 3})})
	if !res.OK || len(s.recs) != 1 {
		t.Fatalf("audit: %+v", res)
	}
	raw, _ := json.Marshal(s.recs[0])
	rs, err := receipt.DecodeRecords(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Verify(receipt.Hash(r.Root), r.Records); err != nil || len(rs.Items) != 2 || rs.Items[1].Record.Path != receipt.PathMulticast {
		t.Fatalf("audit reply %+v: %v", rs, err)
	}
	// Ack: gone from disk, not sent again.
	res = b.HandleCommand(ctrlmsg.Command{ID: "b", Op: ctrlmsg.OpReceiptAck, Arg: receipt.FormatAck([]uint64{r.Seq, 99})})
	if !res.OK || b.Stats().Pending != 0 {
		t.Fatalf("ack: %+v, %+v", res, b.Stats())
	}
	b.resend(true)
	if len(s.got) != 1 {
		t.Fatal("acknowledged receipt sent again")
	}
	// An empty interval gives no receipt.
	if err := b.Seal(); err != nil || b.Stats().LastSeq != r.Seq {
		t.Fatalf("empty seal: %v %+v", err, b.Stats())
	}
	// Bad arguments are refused with a reason.
	if res := b.HandleCommand(ctrlmsg.Command{ID: "c", Op: ctrlmsg.OpReceiptAck, Arg: "x"}); res.OK || res.Error == "" {
		t.Fatalf("bad ack: %+v", res)
	}
}

// TestCrashLeavesOpenRecords: records flushed but not sealed when the
// beacon dies are sealed at the next start, not lost.
func TestCrashLeavesOpenRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "receipts.db")
	s := &sink{fail: true}
	b := open(t, path, s)
	k := receipt.HexHash(receipt.KeyHash("/a"))
	b.Record(receipt.Record{TS: time.Now().UnixMilli(), Key: k, Bytes: 10, Status: 200})
	if err := b.flush(); err != nil {
		t.Fatal(err)
	}
	b.db.Close() // no Seal, no Close: as a kill -9 after the flush
	b = open(t, path, s)
	defer b.Close()
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Pending != 1 || st.Sealed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPendingBound: unacknowledged receipts are bounded on disk.
func TestPendingBound(t *testing.T) {
	s := &sink{fail: true}
	b, err := Open(Options{Path: filepath.Join(t.TempDir(), "r.db"), Key: testKey(t), Publish: s.publish, MaxPending: 3,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for range 5 {
		b.Record(receipt.Record{TS: time.Now().UnixMilli(), Key: receipt.HexHash(receipt.KeyHash("/a")), Bytes: 1, Status: 200})
		time.Sleep(2 * time.Millisecond)
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.Stats(); st.Pending != 3 || st.Dropped != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestWipedStateNumbersAhead: a beacon whose receipts file is lost (a
// reflash, a new SD card) keeps its wallet; its new receipts must not reuse
// sequence numbers castd already holds, which castd refuses as conflicts.
func TestWipedStateNumbersAhead(t *testing.T) {
	s := &sink{fail: true}
	seal := func(path string) uint64 {
		b := open(t, path, s)
		defer b.Close()
		b.Record(receipt.Record{TS: time.Now().UnixMilli(), Key: receipt.HexHash(receipt.KeyHash("/a")), Bytes: 1, Status: 200})
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
		return b.Stats().LastSeq
	}
	first := seal(filepath.Join(t.TempDir(), "r.db"))
	for range 3 {
		time.Sleep(2 * time.Millisecond)
		if again := seal(filepath.Join(t.TempDir(), "r.db")); again <= first {
			t.Fatalf("after a wipe: seq %d, before %d", again, first)
		}
	}
}

package anchor_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"

	"github.com/blockcast/beacon/cloud/anchor"
	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/cloud/receipts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/receipt"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

var day0 = time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)

type env struct {
	chain *solanatest.Chain
	rpc   *solrpc.Client
	book  *receipts.Book
	clock *clock
	cast  *identity.Keypair
	a     *anchor.Anchorer
	nodes []*identity.Keypair
	ctx   context.Context
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func setup(t *testing.T) *env {
	t.Helper()
	ch := solanatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e := &env{chain: ch, ctx: ctx, clock: &clock{now: day0.Add(time.Hour)}}
	e.cast, _ = identity.Generate()
	if err := ch.Call(ctx, "requestAirdrop", []any{e.cast.ID(), 1_000_000_000}, nil); err != nil {
		t.Fatal(err)
	}
	e.rpc, _ = solrpc.New(ch.URL)
	var err error
	e.book, err = receipts.Open(receipts.Options{Path: filepath.Join(t.TempDir(), "receipts.db"), Now: e.clock.Now,
		AuditSample: -1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.book.Close() })
	e.a, err = anchor.New(anchor.Options{Book: e.book, RPC: cloudon.NewRPC(ch.URL), Key: e.cast, Poll: 20 * time.Millisecond,
		Now: e.clock.Now, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	// Three nodes, two receipts each, accepted in day0.
	for i := range 3 {
		kp, _ := identity.Generate()
		e.nodes = append(e.nodes, kp)
		e.book.NoteObject(kp.ID(), "/a")
		for seq := uint64(1); seq <= 2; seq++ {
			start := day0.Add(time.Duration(i*10+int(seq)) * time.Minute)
			s := signReceipt(t, kp, seq, start)
			if _, err := e.book.Accept(kp.Public(), s.Marshal()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return e
}

func signReceipt(t testing.TB, kp *identity.Keypair, seq uint64, start time.Time) *receipt.Signed {
	t.Helper()
	rs := []receipt.Record{{TS: start.Add(time.Second).UnixMilli(), Key: receipt.HexHash(receipt.KeyHash("/a")), Bytes: 1000, Status: 200, Path: receipt.PathHit}}
	s, err := receipt.Sign(kp, receipt.Summarize(kp.ID(), seq, start.UnixMilli(), start.Add(time.Minute).UnixMilli(), rs, receipt.Overflow{}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) balance(t *testing.T) uint64 {
	t.Helper()
	var r struct{ Value uint64 }
	if err := e.chain.Call(e.ctx, "getBalance", []any{e.cast.ID()}, &r); err != nil {
		t.Fatal(err)
	}
	return r.Value
}

// proof is node i's receipt seq with the day's anchor attached (as castd's
// API gives it).
func (e *env) proof(t *testing.T, i int, seq uint64) *onchain.DayProof {
	t.Helper()
	p, err := e.book.Prove(e.nodes[i].ID(), seq)
	if err != nil {
		t.Fatal(err)
	}
	st, ok, err := e.book.AnchorState(day0)
	if err != nil || !ok || !st.Anchored() {
		t.Fatalf("day not anchored: %+v %v", st, err)
	}
	p.Anchor = &onchain.Anchor{Signature: st.Signature, Slot: st.Slot, Memo: st.Memo, CastKey: e.cast.ID()}
	return p
}

// TestAnchorOncePerDay: a day is anchored only after it closes, once,
// with its root and count; its receipts prove against the chain.
func TestAnchorOncePerDay(t *testing.T) {
	e := setup(t)
	before := e.balance(t)
	if err := e.a.Pass(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := e.book.AnchorState(day0); ok || e.balance(t) != before {
		t.Fatal("an open day was anchored")
	}
	e.clock.set(day0.Add(25 * time.Hour))
	for range 3 {
		if err := e.a.Pass(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if spent := before - e.balance(t); spent != 5000 {
		t.Fatalf("spent %d lamports, want one transaction's 5000", spent)
	}
	root, n, _ := e.book.DayRoot(day0)
	st, _, _ := e.book.AnchorState(day0)
	if st.Memo != onchain.DayMemo("2026-12-04", root, 6) || n != 6 || !st.Anchored() || len(st.Pending) != 0 {
		t.Fatalf("state %+v", st)
	}
	for i := range e.nodes {
		p := e.proof(t, i, 2)
		s, rec, err := p.Verify(e.ctx, e.rpc, e.cast.Public())
		if err != nil || s.Receipt.Node != e.nodes[i].ID() || rec.Signature.String() != st.Signature {
			t.Fatalf("node %d: %v", i, err)
		}
	}
}

// TestAnchorCrashBetweenSendAndRecord: castd sent the day's transaction
// and died before recording it; the next pass finds it on chain and does
// not pay for another. A transaction that may still land holds the day
// back; one whose blockhash expired unseen does not.
func TestAnchorCrashBetweenSendAndRecord(t *testing.T) {
	e := setup(t)
	e.clock.set(day0.Add(25 * time.Hour))
	root, n, _ := e.book.DayRoot(day0)
	st := receipts.AnchorState{Day: "2026-12-04", Root: receipt.HexHash(root).String(), Count: uint64(n),
		Memo: onchain.DayMemo("2026-12-04", root, uint64(n))}
	// The "crashed" castd: records the signature, sends, dies.
	sig, _, err := cloudon.Publish(e.ctx, cloudon.NewRPC(e.chain.URL), e.cast, st.Memo, cloudon.PublishOptions{Poll: 20 * time.Millisecond,
		BeforeSend: func(sig solana.Signature, lastValid uint64) error {
			st.Pending = append(st.Pending, anchor.PendingTx(sig, lastValid))
			return e.book.PutAnchorState(day0, st)
		}})
	if err != nil {
		t.Fatal(err)
	}
	before := e.balance(t)
	if err := e.a.Pass(e.ctx); err != nil {
		t.Fatal(err)
	}
	got, _, _ := e.book.AnchorState(day0)
	if e.balance(t) != before || got.Signature != sig.String() {
		t.Fatalf("published the day again (spent %d) or lost the sent one: %+v", before-e.balance(t), got)
	}

	// A signed transaction that was never seen, still valid: wait.
	e2 := setup(t)
	e2.clock.set(day0.Add(25 * time.Hour))
	ghost := solana.SignatureFromBytes(bytes.Repeat([]byte{7}, 64))
	e2.book.PutAnchorState(day0, receipts.AnchorState{Pending: []receipts.PendingTx{{Signature: ghost.String(), LastValid: 1 << 40}}})
	before = e2.balance(t)
	if err := e2.a.Pass(e2.ctx); !errors.Is(err, anchor.ErrInFlight) || e2.balance(t) != before {
		t.Fatalf("published while an earlier transaction may land: %v", err)
	}
	// Expired unseen: publish.
	e2.book.PutAnchorState(day0, receipts.AnchorState{Pending: []receipts.PendingTx{{Signature: ghost.String(), LastValid: 0}}})
	if err := e2.a.Pass(e2.ctx); err != nil || before-e2.balance(t) != 5000 {
		t.Fatalf("expired pending: %v, spent %d", err, before-e2.balance(t))
	}
}

var errAny = errors.New("any refusal")

// TestProofForgeries: every way of passing off a receipt as anchored
// that is not is refused.
func TestProofForgeries(t *testing.T) {
	e := setup(t)
	e.clock.set(day0.Add(25 * time.Hour))
	if err := e.a.Pass(e.ctx); err != nil {
		t.Fatal(err)
	}
	good := e.proof(t, 0, 1)
	if _, _, err := good.Verify(e.ctx, e.rpc, e.cast.Public()); err != nil {
		t.Fatal(err)
	}
	// A receipt castd never accepted, signed by a real node.
	stranger := signReceipt(t, e.nodes[1], 9, day0.Add(5*time.Hour))
	strangerLeaf := onchain.DayLeaf(stranger.Hash())
	// Another key anchors the same memo (and one of its own root).
	mallory, _ := identity.Generate()
	if err := e.chain.Call(e.ctx, "requestAirdrop", []any{mallory.ID(), 1_000_000_000}, nil); err != nil {
		t.Fatal(err)
	}
	malSig, _, err := onchain.Submit(e.ctx, e.rpc, mallory, good.Memo(), onchain.SubmitOptions{Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ownRoot := onchain.DayMemo(good.Day, strangerLeaf, 1)
	malOwn, _, err := onchain.Submit(e.ctx, e.rpc, mallory, ownRoot, onchain.SubmitOptions{Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	other := e.proof(t, 2, 2)

	cases := []struct {
		name   string
		forge  func(p *onchain.DayProof)
		want   error
		signer identity.PublicKey
	}{
		{"another receipt, same path", func(p *onchain.DayProof) { p.Receipt = other.Receipt }, onchain.ErrBadDayProof, e.cast.Public()},
		{"another receipt as its own leaf", func(p *onchain.DayProof) {
			p.Receipt = stranger.Marshal()
			p.Leaf = receipt.HexHash(strangerLeaf)
		}, onchain.ErrBadDayProof, e.cast.Public()},
		{"a root not anchored", func(p *onchain.DayProof) {
			p.Receipt, p.Leaf, p.Root, p.Index, p.N, p.Proof = stranger.Marshal(), receipt.HexHash(strangerLeaf), receipt.HexHash(strangerLeaf), 0, 1, nil
		}, onchain.ErrNotAnchored, e.cast.Public()},
		// The path may still fold to the root with another count (by the
		// leaf's place): then the memo with that count is not on chain.
		{"anchored count changed", func(p *onchain.DayProof) { p.N++ }, errAny, e.cast.Public()},
		{"another day", func(p *onchain.DayProof) { p.Day = "2026-12-03" }, onchain.ErrNotAnchored, e.cast.Public()},
		{"the same memo signed by another key", func(p *onchain.DayProof) {
			p.Anchor = &onchain.Anchor{Signature: malSig.String(), CastKey: mallory.ID()}
		}, onchain.ErrNotAnchored, e.cast.Public()},
		{"its own root signed by another key", func(p *onchain.DayProof) {
			p.Receipt, p.Leaf, p.Root, p.Index, p.N, p.Proof = stranger.Marshal(), receipt.HexHash(strangerLeaf), receipt.HexHash(strangerLeaf), 0, 1, nil
			p.Anchor = &onchain.Anchor{Signature: malOwn.String(), CastKey: mallory.ID()}
		}, onchain.ErrNotAnchored, e.cast.Public()},
		{"no anchor", func(p *onchain.DayProof) { p.Anchor = nil }, onchain.ErrNotAnchored, e.cast.Public()},
		{"an anchor not on chain", func(p *onchain.DayProof) {
			p.Anchor = &onchain.Anchor{Signature: solana.SignatureFromBytes(bytes.Repeat([]byte{9}, 64)).String()}
		}, onchain.ErrNotAnchored, e.cast.Public()},
		{"checked against another CAST key", func(p *onchain.DayProof) {}, onchain.ErrNotAnchored, mallory.Public()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.proof(t, 0, 1)
			c.forge(p)
			_, _, err := p.Verify(e.ctx, e.rpc, c.signer)
			if err == nil || c.want != errAny && !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

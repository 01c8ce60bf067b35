package contracts_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"

	"github.com/blockcast/beacon/cloud/contracts"
	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/offchain"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

type anchorEnv struct {
	chain *solanatest.Chain
	rpc   *solrpc.Client
	store *contracts.Store
	cast  *identity.Keypair
	a     *contracts.Anchorer
	ctx   context.Context
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func fund(t *testing.T, ctx context.Context, ch *solanatest.Chain, k *identity.Keypair) {
	t.Helper()
	if err := ch.Call(ctx, "requestAirdrop", []any{k.ID(), 1_000_000_000}, nil); err != nil {
		t.Fatal(err)
	}
}

func newAnchorEnv(t *testing.T, ch *solanatest.Chain) *anchorEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e := &anchorEnv{chain: ch, ctx: ctx}
	e.cast, _ = identity.Generate()
	fund(t, ctx, ch, e.cast)
	e.rpc, _ = solrpc.New(ch.URL)
	var err error
	if e.store, err = contracts.Open(filepath.Join(t.TempDir(), "contracts.db"), quiet()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	if e.a, err = contracts.NewAnchorer(contracts.AnchorOptions{Store: e.store, RPC: cloudon.NewRPC(ch.URL), Key: e.cast,
		Poll: 20 * time.Millisecond, Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	return e
}

// contract stores a contract the CAST accepted.
func (e *anchorEnv) contract(t *testing.T) contracts.Contract {
	t.Helper()
	owner, _ := identity.Generate()
	node, _ := identity.Generate()
	now := time.Now().UTC().Truncate(time.Second)
	o := contracts.Offer{Owner: owner.Public(), Node: node.Public(), Cast: e.cast.Public(), BandwidthMbps: 10, AvailabilityHours: 20,
		StorageGB: 1, Start: now, End: now.Add(24 * time.Hour)}
	m, s, err := offchain.SignText(owner, o.Text())
	if err != nil {
		t.Fatal(err)
	}
	c, err := contracts.Accept(e.cast, owner.Public(), o.Text(), m, s, now)
	if err != nil {
		t.Fatal(err)
	}
	if c, err = e.store.Put(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *anchorEnv) balance(t *testing.T) uint64 {
	t.Helper()
	var r struct{ Value uint64 }
	if err := e.chain.Call(e.ctx, "getBalance", []any{e.cast.ID()}, &r); err != nil {
		t.Fatal(err)
	}
	return r.Value
}

// TestContractAnchor: an accepted contract is anchored once (a second pass
// pays nothing), its anchor verifies, and a tampered contract, another
// contract, a memo signed by another key or another CAST key are refused.
func TestContractAnchor(t *testing.T) {
	ch := solanatest.Start(t)
	e := newAnchorEnv(t, ch)
	c := e.contract(t)
	before := e.balance(t)
	if err := e.a.Pass(e.ctx); err != nil {
		t.Fatal(err)
	}
	st, ok, err := e.store.AnchorState(c.ID)
	memo, _ := onchain.ContractMemo(c.ID)
	if err != nil || !ok || !st.Anchored() || st.Memo != memo || st.Slot == 0 || len(st.Pending) != 0 {
		t.Fatalf("anchor state: %+v %v %v", st, ok, err)
	}
	if spent := before - e.balance(t); spent != 5000 {
		t.Fatalf("spent %d lamports, want one transaction's 5000", spent)
	}
	before = e.balance(t)
	if err := e.a.Pass(e.ctx); err != nil || e.balance(t) != before {
		t.Fatalf("second pass: %v, spent %d", err, before-e.balance(t))
	}
	rec, err := contracts.CheckAnchor(e.ctx, e.rpc, c, st.Signature, e.cast.Public())
	if err != nil || rec.Slot != st.Slot {
		t.Fatalf("CheckAnchor: %+v %v", rec, err)
	}

	// Tampered: the terms changed after signing (the ID no longer matches
	// the offer), or the ID changed to name another offer.
	tampered := c
	tampered.Offer.BandwidthMbps++
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, tampered, st.Signature, e.cast.Public()); !errors.Is(err, contracts.ErrBadContract) {
		t.Errorf("tampered terms: %v, want ErrBadContract", err)
	}
	renamed := c
	renamed.ID = "00" + c.ID[2:]
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, renamed, st.Signature, e.cast.Public()); !errors.Is(err, contracts.ErrBadContract) {
		t.Errorf("renamed: %v, want ErrBadContract", err)
	}
	// Another contract's anchor does not anchor this one.
	c2 := e.contract(t)
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, c2, st.Signature, e.cast.Public()); !errors.Is(err, contracts.ErrNotAnchored) || !errors.Is(err, onchain.ErrMemoMismatch) {
		t.Errorf("another contract's anchor: %v, want ErrNotAnchored (memo)", err)
	}
	// The same memo, signed and paid by another key.
	other, _ := identity.Generate()
	fund(t, e.ctx, ch, other)
	sig, _, err := cloudon.Publish(e.ctx, cloudon.NewRPC(ch.URL), other, memo, cloudon.PublishOptions{Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, c, sig.String(), e.cast.Public()); !errors.Is(err, contracts.ErrNotAnchored) || !errors.Is(err, onchain.ErrNotSigned) {
		t.Errorf("memo signed by another key: %v, want ErrNotAnchored (not signed)", err)
	}
	// The checker names the CAST key: a contract of another CAST is refused.
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, c, st.Signature, other.Public()); !errors.Is(err, contracts.ErrBadContract) {
		t.Errorf("another CAST key: %v, want ErrBadContract", err)
	}
	// A transaction that is not on chain.
	ghost := solana.SignatureFromBytes(bytes.Repeat([]byte{9}, 64))
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, c, ghost.String(), e.cast.Public()); !errors.Is(err, contracts.ErrNotAnchored) {
		t.Errorf("no such transaction: %v, want ErrNotAnchored", err)
	}
	if _, err := contracts.CheckAnchor(e.ctx, e.rpc, c, "", e.cast.Public()); !errors.Is(err, contracts.ErrNotAnchored) {
		t.Errorf("no signature: %v, want ErrNotAnchored", err)
	}
}

// TestContractAnchorCrash: castd sent a contract's transaction and died
// before recording it; the next pass finds it on chain and pays for no
// other. A transaction that may still land holds the contract back; one
// whose blockhash expired unseen does not.
func TestContractAnchorCrash(t *testing.T) {
	ch := solanatest.Start(t)
	e := newAnchorEnv(t, ch)
	c := e.contract(t)
	memo, _ := onchain.ContractMemo(c.ID)
	st := contracts.AnchorState{Memo: memo}
	sig, _, err := cloudon.Publish(e.ctx, cloudon.NewRPC(ch.URL), e.cast, memo, cloudon.PublishOptions{Poll: 20 * time.Millisecond,
		BeforeSend: func(sig solana.Signature, lastValid uint64) error {
			st.Pending = append(st.Pending, cloudon.Pending{Signature: sig.String(), LastValid: lastValid})
			return e.store.PutAnchorState(c.ID, st)
		}})
	if err != nil {
		t.Fatal(err)
	}
	before := e.balance(t)
	if err := e.a.Pass(e.ctx); err != nil {
		t.Fatal(err)
	}
	got, _, _ := e.store.AnchorState(c.ID)
	if e.balance(t) != before || got.Signature != sig.String() || !got.Anchored() {
		t.Fatalf("anchored again (spent %d) or lost the sent one: %+v", before-e.balance(t), got)
	}

	c2 := e.contract(t)
	ghost := solana.SignatureFromBytes(bytes.Repeat([]byte{7}, 64))
	e.store.PutAnchorState(c2.ID, contracts.AnchorState{Pending: []cloudon.Pending{{Signature: ghost.String(), LastValid: 1 << 40}}})
	before = e.balance(t)
	if err := e.a.Pass(e.ctx); !errors.Is(err, cloudon.ErrInFlight) || e.balance(t) != before {
		t.Fatalf("published while an earlier transaction may land: %v", err)
	}
	e.store.PutAnchorState(c2.ID, contracts.AnchorState{Pending: []cloudon.Pending{{Signature: ghost.String(), LastValid: 0}}})
	if err := e.a.Pass(e.ctx); err != nil || before-e.balance(t) != 5000 {
		t.Fatalf("expired pending: %v, spent %d", err, before-e.balance(t))
	}
	if st, _, _ := e.store.AnchorState(c2.ID); !st.Anchored() {
		t.Fatalf("c2 not anchored: %+v", st)
	}
}

package onchain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/shared/soltx"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

func fund(t *testing.T, c *solanatest.Chain, k identity.PublicKey) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Call(ctx, "requestAirdrop", []any{k.String(), 1_000_000_000}, nil); err != nil {
		t.Fatal(err)
	}
}

func client(t *testing.T, url string) *solrpc.Client {
	t.Helper()
	c, err := solrpc.New(url)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var fast = onchain.SubmitOptions{Timeout: 20 * time.Second, Poll: 20 * time.Millisecond}

// TestSubmitAndCheck: the beacon's own client records a memo on the real
// VM, reads it back and checks it; solana-go reads the same transaction
// and agrees field by field.
func TestSubmitAndCheck(t *testing.T) {
	c := solanatest.Start(t)
	ctx := context.Background()
	node := key(t, "node")
	fund(t, c, node.Public())
	cl := client(t, c.URL)
	memo := onchain.RegistrationMemo(node.Public(), baseReg(t))
	sig, slot, err := onchain.Submit(ctx, cl, node, memo, fast)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := onchain.Check(ctx, cl, sig, node.Public(), memo)
	if err != nil || rec.Slot != slot {
		t.Fatalf("check: %+v %v (sent in slot %d)", rec, err, slot)
	}
	if _, err := onchain.Check(ctx, cl, sig, node.Public(), memo+"x"); !errors.Is(err, onchain.ErrMemoMismatch) {
		t.Fatalf("other memo: %v", err)
	}
	if _, err := onchain.Check(ctx, cl, sig, key(t, "other").Public(), memo); !errors.Is(err, onchain.ErrNotSigned) {
		t.Fatalf("other signer: %v", err)
	}
	if _, err := onchain.Check(ctx, cl, soltx.Signature{1}, node.Public(), memo); !errors.Is(err, solrpc.ErrNotFound) {
		t.Fatalf("unknown: %v", err)
	}
	compareWithSolanaGo(t, c.URL, sig, node.Public(), node.Public(), memo)
}

// compareWithSolanaGo reads transaction sig with solana-go and compares it
// with what soltx decodes from the same bytes, field by field.
func compareWithSolanaGo(t *testing.T, url string, sig soltx.Signature, node, payer identity.PublicKey, memo string) {
	t.Helper()
	ctx := context.Background()
	zero := uint64(0)
	out, err := rpc.New(url).GetTransaction(ctx, solana.Signature(sig), &rpc.GetTransactionOpts{
		Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed, MaxSupportedTransactionVersion: &zero})
	if err != nil {
		t.Fatal(err)
	}
	raw := out.Transaction.GetBinary()
	stx, err := solana.TransactionFromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := soltx.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := stx.VerifySignatures(); err != nil {
		t.Fatal(err)
	}
	m := stx.Message
	if m.IsVersioned() || len(stx.Signatures) != len(ours.Signatures) ||
		m.Header.NumRequiredSignatures != ours.Message.Header.NumRequiredSignatures ||
		m.Header.NumReadonlySignedAccounts != ours.Message.Header.NumReadonlySignedAccounts ||
		m.Header.NumReadonlyUnsignedAccounts != ours.Message.Header.NumReadonlyUnsignedAccounts ||
		m.RecentBlockhash != solana.Hash(ours.Message.RecentBlockhash) || len(m.AccountKeys) != len(ours.Message.AccountKeys) ||
		len(m.Instructions) != 1 {
		t.Fatalf("solana-go reads %+v, soltx %+v", stx, ours)
	}
	for i := range stx.Signatures {
		if stx.Signatures[i] != solana.Signature(ours.Signatures[i]) {
			t.Fatalf("signature %d differs", i)
		}
	}
	for i := range m.AccountKeys {
		if m.AccountKeys[i] != solana.PublicKey(ours.Message.AccountKeys[i]) {
			t.Fatalf("key %d differs", i)
		}
	}
	if m.AccountKeys[0] != solana.PublicKey(payer) || stx.Signatures[0] != solana.Signature(sig) {
		t.Fatalf("fee payer %s, want %s", m.AccountKeys[0], payer)
	}
	ix := m.Instructions[0]
	if m.AccountKeys[ix.ProgramIDIndex] != solana.MemoProgramID || string(ix.Data) != memo ||
		len(ix.Accounts) != 1 || m.AccountKeys[ix.Accounts[0]] != solana.PublicKey(node) ||
		!bytes.Equal(ix.Data, ours.Message.Instructions[0].Data) {
		t.Fatalf("memo instruction %+v (data %q)", ix, ix.Data)
	}
	if !m.IsSigner(solana.PublicKey(node)) {
		t.Fatal("node is no signer for solana-go")
	}
}

// TestSubmitRetriesExpiredBlockhash: the blockhash the beacon got expires
// before its transaction arrives (the runtime refuses it); Submit builds
// it again with a fresh one and it lands.
func TestSubmitRetriesExpiredBlockhash(t *testing.T) {
	c := solanatest.Start(t)
	node := key(t, "node")
	fund(t, c, node.Public())
	var expired atomic.Int32
	// A pass-through to the real VM that lets the first blockhash expire
	// just after handing it out.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp, err := http.Post(c.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		var req struct{ Method string }
		json.Unmarshal(body, &req)
		if req.Method == "getLatestBlockhash" && expired.Add(1) == 1 {
			if _, err := c.ExpireBlockhash(r.Context()); err != nil {
				t.Error(err)
			}
		}
		w.Write(out)
	}))
	defer proxy.Close()
	memo := onchain.CastKeyMemo(node.Public())
	sig, _, err := onchain.Submit(context.Background(), client(t, proxy.URL), node, memo, fast)
	if err != nil {
		t.Fatal(err)
	}
	if n := expired.Load(); n != 2 {
		t.Fatalf("%d blockhashes asked for, want 2 (one expired)", n)
	}
	if _, err := onchain.Check(context.Background(), client(t, c.URL), sig, node.Public(), memo); err != nil {
		t.Fatal(err)
	}
	// With one attempt only, the expiry is the answer.
	expired.Store(0)
	_, _, err = onchain.Submit(context.Background(), client(t, proxy.URL), node, memo+"2", onchain.SubmitOptions{Attempts: 1, Poll: 20 * time.Millisecond})
	if !errors.Is(err, solrpc.ErrBlockhashNotFound) {
		t.Fatalf("one attempt: %v, want ErrBlockhashNotFound", err)
	}
}

// TestSubmitUnfunded: a node key with no lamports gets the runtime's
// refusal, not a hang.
func TestSubmitUnfunded(t *testing.T) {
	c := solanatest.Start(t)
	_, _, err := onchain.Submit(context.Background(), client(t, c.URL), key(t, "poor"), "blockcast:reg:v1:x", fast)
	var re *solrpc.Error
	if !errors.As(err, &re) {
		t.Fatalf("unfunded: %v", err)
	}
}

// TestOwnerPaysWithSolanaGo: the node signs its slot, the owner (solana-go
// standing in for the wallet) signs the message the beacon printed, and
// the completed transaction lands and checks.
func TestOwnerPaysWithSolanaGo(t *testing.T) {
	c := solanatest.Start(t)
	ctx := context.Background()
	node, owner := key(t, "node"), key(t, "owner")
	fund(t, c, owner.Public()) // the node has nothing
	cl := client(t, c.URL)
	memo := onchain.RegistrationMemo(node.Public(), baseReg(t))
	bh, err := cl.LatestBlockhash(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := soltx.NewMemo(node, owner.Public(), bh.Hash, []byte(memo))
	if err != nil {
		t.Fatal(err)
	}
	b58, _ := tx.Base58()
	// The wallet: decode what was printed, sign as the owner.
	stx, err := solana.TransactionFromBase58(b58)
	if err != nil {
		t.Fatal(err)
	}
	opk := solana.PrivateKey(owner.PrivateKey())
	if _, err := stx.PartialSign(func(k solana.PublicKey) *solana.PrivateKey {
		if k == opk.PublicKey() {
			return &opk
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	signedB64, err := stx.ToBase64()
	if err != nil {
		t.Fatal(err)
	}
	signed, err := soltx.DecodeBase64(signedB64)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Merge(signed); err != nil {
		t.Fatal(err)
	}
	if _, err := onchain.SendSigned(ctx, cl, tx, fast); err != nil {
		t.Fatal(err)
	}
	if _, err := onchain.Check(ctx, cl, tx.ID(), node.Public(), memo); err != nil {
		t.Fatal(err)
	}
	compareWithSolanaGo(t, c.URL, tx.ID(), node.Public(), owner.Public(), memo)
}

package soltx_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/soltx"
	"github.com/blockcast/beacon/test/solana/solanatest"
)

// chain starts the LiteSVM front and returns solana-go's client for it.
func chain(t *testing.T) (*solanatest.Chain, *rpc.Client, context.Context) {
	t.Helper()
	c := solanatest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c, rpc.New(c.URL), ctx
}

func latest(t *testing.T, ctx context.Context, cl *rpc.Client) soltx.Hash {
	t.Helper()
	res, err := cl.GetLatestBlockhash(ctx, rpc.CommitmentFinalized)
	if err != nil {
		t.Fatal(err)
	}
	if res.Value.LastValidBlockHeight <= res.Context.Slot {
		t.Fatalf("lastValidBlockHeight %d not after slot %d", res.Value.LastValidBlockHeight, res.Context.Slot)
	}
	return soltx.Hash(res.Value.Blockhash)
}

func airdrop(t *testing.T, ctx context.Context, cl *rpc.Client, to identity.PublicKey, lamports uint64) {
	t.Helper()
	sig, err := cl.RequestAirdrop(ctx, solana.PublicKey(to), lamports, rpc.CommitmentConfirmed)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.GetSignatureStatuses(ctx, true, sig)
	if err != nil || st.Value[0] == nil {
		t.Fatalf("airdrop status: %v %+v", err, st)
	}
	bal, err := cl.GetBalance(ctx, solana.PublicKey(to), rpc.CommitmentConfirmed)
	if err != nil || bal.Value < lamports {
		t.Fatalf("balance after airdrop: %v %+v", err, bal)
	}
}

// send submits tx in the given encoding with solana-go's client.
func send(ctx context.Context, cl *rpc.Client, tx *soltx.Transaction, enc solana.EncodingType) (solana.Signature, error) {
	var s string
	var err error
	if enc == solana.EncodingBase58 {
		s, err = tx.Base58()
	} else {
		s, err = tx.Base64()
	}
	if err != nil {
		return solana.Signature{}, err
	}
	return cl.SendEncodedTransactionWithOpts(ctx, s, rpc.TransactionOpts{Encoding: enc})
}

// refused asserts that the runtime refused a transaction with the given
// JSON-RPC code and, for preflight failures, the given TransactionError.
func refused(t *testing.T, err error, code int, txErr string) {
	t.Helper()
	var re *jsonrpc.RPCError
	if !errors.As(err, &re) {
		t.Fatalf("want RPC error %d %s, got %v", code, txErr, err)
	}
	if re.Code != code {
		t.Fatalf("RPC error code %d (%s), want %d", re.Code, re.Message, code)
	}
	if txErr == "" {
		return
	}
	data, _ := json.Marshal(re.Data)
	var d struct {
		Err json.RawMessage `json:"err"`
	}
	_ = json.Unmarshal(data, &d)
	if !strings.Contains(string(d.Err), txErr) {
		t.Fatalf("runtime error %s (%s), want %s", d.Err, re.Message, txErr)
	}
}

func TestChainMemo(t *testing.T) {
	c, cl, ctx := chain(t)
	node := key(t, "node")
	airdrop(t, ctx, cl, node.Public(), 1_000_000_000)

	for i, enc := range []solana.EncodingType{solana.EncodingBase64, solana.EncodingBase58} {
		text := "blockcast:reg:v1:" + string(enc)
		tx, err := soltx.NewMemo(node, node.Public(), latest(t, ctx, cl), []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		sig, err := send(ctx, cl, tx, enc)
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if sig != solana.Signature(tx.ID()) {
			t.Fatalf("%s: RPC returned signature %s, want %s", enc, sig, tx.ID())
		}
		st, err := cl.GetSignatureStatuses(ctx, false, sig)
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Value[0]; s == nil || s.Err != nil || s.ConfirmationStatus != rpc.ConfirmationStatusConfirmed {
			t.Fatalf("%s: status %+v", enc, s)
		}
		// Not finalized yet: the default (finalized) commitment does not
		// see it, "confirmed" does.
		if _, err := cl.GetTransaction(ctx, sig, nil); !errors.Is(err, rpc.ErrNotFound) {
			t.Fatalf("%s: finalized getTransaction before 32 slots: %v", enc, err)
		}
		got, err := cl.GetTransaction(ctx, sig, &rpc.GetTransactionOpts{Commitment: rpc.CommitmentConfirmed, Encoding: solana.EncodingBase64})
		if err != nil {
			t.Fatal(err)
		}
		stx, err := got.Transaction.GetTransaction()
		if err != nil {
			t.Fatal(err)
		}
		// Read back: the signer, its signature over the message, the memo.
		if stx.Message.AccountKeys[0] != solana.PublicKey(node.Public()) || stx.Signatures[0] != sig {
			t.Fatalf("%s: signer %s sig %s", enc, stx.Message.AccountKeys[0], stx.Signatures[0])
		}
		if err := stx.VerifySignatures(); err != nil {
			t.Fatal(err)
		}
		ix := stx.Message.Instructions[0]
		if stx.Message.AccountKeys[ix.ProgramIDIndex] != solana.MemoProgramID || string(ix.Data) != text {
			t.Fatalf("%s: memo %q via %s", enc, ix.Data, stx.Message.AccountKeys[ix.ProgramIDIndex])
		}
		if m := got.Meta; len(m.PreBalances) != 2 || len(m.PostBalances) != 2 || m.Fee != 5000 || m.PreBalances[0]-m.PostBalances[0] != m.Fee {
			t.Fatalf("%s: fee %d, balances %v -> %v", enc, m.Fee, m.PreBalances, m.PostBalances)
		}
		// The Memo program itself logs the signer it checked and the text.
		logs := strings.Join(got.Meta.LogMessages, "\n")
		if !strings.Contains(logs, "Program log: Signed by:\nProgram log: "+node.ID()+"\n") ||
			!strings.Contains(logs, "Program log: Memo (len "+strconv.Itoa(len(text))+")\nProgram log: "+text+"\n") {
			t.Fatalf("%s: logs %q", enc, got.Meta.LogMessages)
		}
		if i == 1 {
			// 32 slots later it is finalized, in the JSON encoding too.
			if _, err := c.AdvanceSlots(ctx, 32); err != nil {
				t.Fatal(err)
			}
			st, _ := cl.GetSignatureStatuses(ctx, false, sig)
			if st.Value[0].ConfirmationStatus != rpc.ConfirmationStatusFinalized {
				t.Fatalf("after 32 slots: %+v", st.Value[0])
			}
			got, err := cl.GetTransaction(ctx, sig, nil)
			if err != nil {
				t.Fatal(err)
			}
			p, err := got.Transaction.GetTransaction()
			if err != nil {
				t.Fatal(err)
			}
			if p.Message.RecentBlockhash != solana.Hash(tx.Message.RecentBlockhash) || string(p.Message.Instructions[0].Data) != text {
				t.Fatalf("JSON encoding reads back differently: %+v", p.Message)
			}
		}
	}
}

// TestChainOwnerPays: the node (with no lamports) signs, the owner's wallet
// completes and pays; a partially signed transaction is refused.
func TestChainOwnerPays(t *testing.T) {
	_, cl, ctx := chain(t)
	node, owner := key(t, "node"), key(t, "owner")
	airdrop(t, ctx, cl, owner.Public(), 1_000_000_000)
	tx, err := soltx.NewMemo(node, owner.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:owner"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = send(ctx, cl, tx, solana.EncodingBase64)
	refused(t, err, -32003, "")

	msg, _ := tx.Message.MarshalBinary()
	pub, sig, err := soltx.ParseSignerPair(owner.ID() + "=" + soltx.Signature(owner.Sign(msg)).String())
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.AddSignature(pub, sig); err != nil {
		t.Fatal(err)
	}
	before, _ := cl.GetBalance(ctx, solana.PublicKey(owner.Public()), "")
	if _, err := send(ctx, cl, tx, solana.EncodingBase58); err != nil {
		t.Fatal(err)
	}
	after, _ := cl.GetBalance(ctx, solana.PublicKey(owner.Public()), "")
	if fee := before.Value - after.Value; fee != 10_000 {
		t.Fatalf("owner paid %d lamports, want 10000 (two signatures)", fee)
	}
	if n, _ := cl.GetBalance(ctx, solana.PublicKey(node.Public()), ""); n.Value != 0 {
		t.Fatalf("node balance %d", n.Value)
	}
}

// TestChainRefuses: transactions an attacker could try, refused by the runtime.
func TestChainRefuses(t *testing.T) {
	c, cl, ctx := chain(t)
	node, other := key(t, "node"), key(t, "other")
	airdrop(t, ctx, cl, node.Public(), 1_000_000_000)
	airdrop(t, ctx, cl, other.Public(), 1_000_000_000)

	t.Run("tampered", func(t *testing.T) {
		tx, _ := soltx.NewMemo(node, node.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:aaaa"))
		raw, _ := tx.MarshalBinary()
		raw[len(raw)-1] = 'b' // the memo, after signing
		bad, err := soltx.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(bad.Verify(), soltx.ErrBadSignature) {
			t.Fatal("soltx verifies a tampered transaction")
		}
		_, err = send(ctx, cl, bad, solana.EncodingBase64)
		refused(t, err, -32003, "")
	})
	t.Run("replayed", func(t *testing.T) {
		tx, _ := soltx.NewMemo(node, node.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:once"))
		if _, err := send(ctx, cl, tx, solana.EncodingBase64); err != nil {
			t.Fatal(err)
		}
		_, err := send(ctx, cl, tx, solana.EncodingBase58)
		refused(t, err, -32002, `"AlreadyProcessed"`)
	})
	t.Run("expired blockhash", func(t *testing.T) {
		tx, _ := soltx.NewMemo(node, node.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:late"))
		fresh, err := c.ExpireBlockhash(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fresh == tx.Message.RecentBlockhash.String() {
			t.Fatal("blockhash did not change")
		}
		_, err = send(ctx, cl, tx, solana.EncodingBase64)
		refused(t, err, -32002, `"BlockhashNotFound"`)
		// With skipPreflight the RPC hands back the signature, but the
		// transaction never lands: a sender must watch its status.
		sig, err := cl.SendEncodedTransactionWithOpts(ctx, mustBase64(t, tx), rpc.TransactionOpts{SkipPreflight: true})
		if err != nil || sig != solana.Signature(tx.ID()) {
			t.Fatalf("skipPreflight: %v %s", err, sig)
		}
		if st, err := cl.GetSignatureStatuses(ctx, true, sig); err != nil || st.Value[0] != nil {
			t.Fatalf("expired tx has a status: %v %+v", err, st.Value[0])
		}
		// Retried with a fresh blockhash, it lands.
		tx, _ = soltx.NewMemo(node, node.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:late"))
		if _, err := send(ctx, cl, tx, solana.EncodingBase64); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong signer", func(t *testing.T) {
		// Claims to be the node's, signed by another key.
		tx, _ := soltx.NewMemo(node, node.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:imposter"))
		msg, _ := tx.Message.MarshalBinary()
		tx.Signatures[0] = soltx.Signature(other.Sign(msg))
		_, err := send(ctx, cl, tx, solana.EncodingBase64)
		refused(t, err, -32003, "")
		// The other key pays and signs, but the memo names the node as
		// its signer: the node's slot is the one still wrong.
		tx, _ = soltx.NewMemo(node, other.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:imposter"))
		_ = tx.Sign(other)
		msg, _ = tx.Message.MarshalBinary()
		tx.Signatures[1] = soltx.Signature(other.Sign(msg))
		_, err = send(ctx, cl, tx, solana.EncodingBase64)
		refused(t, err, -32003, "")
	})
	t.Run("unfunded payer", func(t *testing.T) {
		poor := key(t, "poor")
		tx, _ := soltx.NewMemo(poor, poor.Public(), latest(t, ctx, cl), []byte("blockcast:reg:v1:poor"))
		_, err := send(ctx, cl, tx, solana.EncodingBase64)
		refused(t, err, -32002, `"AccountNotFound"`)
	})
	t.Run("memo not utf8", func(t *testing.T) {
		// Built by hand around Memo's check: the program fails on it too
		// (it panics on invalid UTF-8).
		ix := soltx.Instruction{ProgramID: soltx.MemoProgramID, Data: []byte{0xff, 0xfe},
			Accounts: []soltx.AccountMeta{{PublicKey: node.Public(), IsSigner: true}}}
		m, err := soltx.NewMessage(node.Public(), latest(t, ctx, cl), ix)
		if err != nil {
			t.Fatal(err)
		}
		tx, _ := soltx.New(m)
		_ = tx.Sign(node)
		_, err = send(ctx, cl, tx, solana.EncodingBase64)
		refused(t, err, -32002, `{"InstructionError":[0,"ProgramFailedToComplete"]}`)
	})
}

func mustBase64(t *testing.T, tx *soltx.Transaction) string {
	t.Helper()
	s, err := tx.Base64()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

package soltx_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	solana "github.com/gagliardetto/solana-go"

	"github.com/blockcast/beacon/shared/goldenhex"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/soltx"
)

func key(t testing.TB, name string) *identity.Keypair {
	t.Helper()
	seed := sha256.Sum256([]byte(name))
	k, err := identity.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func blockhash(name string) soltx.Hash { return soltx.Hash(sha256.Sum256([]byte(name))) }

// fixtures are the transactions the beacon builds, and a few more shapes.
func fixtures(t testing.TB) map[string]*soltx.Transaction {
	t.Helper()
	node, owner, other := key(t, "node"), key(t, "owner"), key(t, "other")
	bh := blockhash("blockhash")
	out := map[string]*soltx.Transaction{}
	var err error
	if out["memo_self"], err = soltx.NewMemo(node, node.Public(), bh, []byte("blockcast:reg:v1:0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	if out["memo_owner_partial"], err = soltx.NewMemo(node, owner.Public(), bh, []byte("blockcast:reg:v1:owner pays")); err != nil {
		t.Fatal(err)
	}
	full, err := soltx.NewMemo(node, owner.Public(), bh, []byte("blockcast:reg:v1:owner pays"))
	if err != nil {
		t.Fatal(err)
	}
	if err := full.Sign(owner); err != nil {
		t.Fatal(err)
	}
	out["memo_owner_signed"] = full
	if out["memo_unicode"], err = soltx.NewMemo(node, node.Public(), bh, []byte("nœud · 节点 · ✓")); err != nil {
		t.Fatal(err)
	}
	if out["memo_max"], err = soltx.NewMemo(node, owner.Public(), bh, bytes.Repeat([]byte("m"), soltx.MaxMemo)); err != nil {
		t.Fatal(err)
	}
	// Several instructions, a writable non-signer, a key used twice with
	// different flags, and a second program.
	m1, _ := soltx.Memo([]byte("one"), node.Public())
	m2, _ := soltx.Memo([]byte("two"), other.Public(), node.Public())
	prog := key(t, "program").Public()
	custom := soltx.Instruction{ProgramID: prog, Data: []byte{1, 2, 3}, Accounts: []soltx.AccountMeta{
		{PublicKey: key(t, "w").Public(), IsWritable: true},
		{PublicKey: key(t, "r").Public()},
		{PublicKey: other.Public(), IsWritable: true},
	}}
	msg, err := soltx.NewMessage(node.Public(), bh, m1, custom, m2)
	if err != nil {
		t.Fatal(err)
	}
	multi, err := soltx.New(msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := multi.Sign(node, other); err != nil {
		t.Fatal(err)
	}
	out["multi"] = multi
	return out
}

func TestMemoProgramID(t *testing.T) {
	if got, want := soltx.MemoProgramID.String(), solana.MemoProgramID.String(); got != want {
		t.Fatalf("MemoProgramID = %s, want %s", got, want)
	}
	if want := "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"; soltx.MemoProgramID.String() != want {
		t.Fatalf("MemoProgramID = %s, want %s", soltx.MemoProgramID, want)
	}
}

// TestSolanaGoDecodes decodes every fixture with solana-go and compares it
// field by field, then has solana-go build and sign the same instructions
// and compares the bytes.
func TestSolanaGoDecodes(t *testing.T) {
	for name, tx := range fixtures(t) {
		t.Run(name, func(t *testing.T) {
			raw, err := tx.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			st, err := solana.TransactionFromBytes(raw)
			if err != nil {
				t.Fatalf("solana-go cannot decode: %v", err)
			}
			m := tx.Message
			sm := st.Message
			if sm.IsVersioned() {
				t.Fatal("solana-go sees a versioned message")
			}
			if sm.Header.NumRequiredSignatures != m.Header.NumRequiredSignatures ||
				sm.Header.NumReadonlySignedAccounts != m.Header.NumReadonlySignedAccounts ||
				sm.Header.NumReadonlyUnsignedAccounts != m.Header.NumReadonlyUnsignedAccounts {
				t.Errorf("header: solana-go %+v, ours %+v", sm.Header, m.Header)
			}
			if len(sm.AccountKeys) != len(m.AccountKeys) {
				t.Fatalf("%d account keys, solana-go %d", len(m.AccountKeys), len(sm.AccountKeys))
			}
			for i, k := range m.AccountKeys {
				if sm.AccountKeys[i] != solana.PublicKey(k) {
					t.Errorf("account %d: solana-go %s, ours %s", i, sm.AccountKeys[i], k)
				}
				w, _ := sm.IsWritable(sm.AccountKeys[i])
				if w != m.IsWritable(i) {
					t.Errorf("account %d writable: solana-go %v, ours %v", i, w, m.IsWritable(i))
				}
				if sm.IsSigner(sm.AccountKeys[i]) != (i < int(m.Header.NumRequiredSignatures)) {
					t.Errorf("account %d signer differs", i)
				}
			}
			if sm.RecentBlockhash != solana.Hash(m.RecentBlockhash) {
				t.Errorf("blockhash: solana-go %s, ours %s", sm.RecentBlockhash, m.RecentBlockhash)
			}
			if len(sm.Instructions) != len(m.Instructions) {
				t.Fatalf("%d instructions, solana-go %d", len(m.Instructions), len(sm.Instructions))
			}
			for i, ix := range m.Instructions {
				six := sm.Instructions[i]
				if six.ProgramIDIndex != uint16(ix.ProgramIDIndex) || !bytes.Equal(six.Data, ix.Data) || len(six.Accounts) != len(ix.Accounts) {
					t.Errorf("instruction %d: solana-go %+v, ours %+v", i, six, ix)
					continue
				}
				for j, a := range ix.Accounts {
					if six.Accounts[j] != uint16(a) {
						t.Errorf("instruction %d account %d: solana-go %d, ours %d", i, j, six.Accounts[j], a)
					}
				}
			}
			if len(st.Signatures) != len(tx.Signatures) {
				t.Fatalf("%d signatures, solana-go %d", len(tx.Signatures), len(st.Signatures))
			}
			for i, s := range tx.Signatures {
				if st.Signatures[i] != solana.Signature(s) {
					t.Errorf("signature %d differs", i)
				}
			}
			if tx.Verify() == nil {
				if err := st.VerifySignatures(); err != nil {
					t.Errorf("solana-go does not verify what we signed: %v", err)
				}
			}
			// The memo is the instruction data itself, with no length byte.
			for i, ix := range m.Instructions {
				if m.AccountKeys[ix.ProgramIDIndex] == soltx.MemoProgramID && sm.AccountKeys[sm.Instructions[i].ProgramIDIndex] != solana.MemoProgramID {
					t.Errorf("instruction %d: solana-go sees another program", i)
				}
			}
			// solana-go re-encodes it to the same bytes.
			again, err := st.MarshalBinary()
			if err != nil || !bytes.Equal(again, raw) {
				t.Errorf("solana-go re-encodes differently: %v", err)
			}
		})
	}
}

// TestSameBytesAsSolanaGo has solana-go build and sign the memo
// transactions itself (with the Memo program ID directly) and compares.
func TestSameBytesAsSolanaGo(t *testing.T) {
	node, owner := key(t, "node"), key(t, "owner")
	bh := blockhash("blockhash")
	keys := map[solana.PublicKey]*solana.PrivateKey{}
	for _, k := range []*identity.Keypair{node, owner} {
		pk := solana.PrivateKey(k.PrivateKey())
		keys[solana.PublicKey(k.Public())] = &pk
	}
	for _, payer := range []*identity.Keypair{node, owner} {
		text := []byte("blockcast:reg:v1:compare")
		ours, err := soltx.NewMemo(node, payer.Public(), bh, text)
		if err != nil {
			t.Fatal(err)
		}
		if err := ours.Sign(payer); err != nil {
			t.Fatal(err)
		}
		ix := solana.NewInstruction(solana.MemoProgramID, solana.AccountMetaSlice{
			{PublicKey: solana.PublicKey(node.Public()), IsSigner: true},
		}, text)
		theirs, err := solana.NewTransaction([]solana.Instruction{ix}, solana.Hash(bh), solana.TransactionPayer(solana.PublicKey(payer.Public())))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := theirs.Sign(func(k solana.PublicKey) *solana.PrivateKey { return keys[k] }); err != nil {
			t.Fatal(err)
		}
		a, err := ours.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b, err := theirs.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("payer %s: ours\n%x\nsolana-go\n%x", payer.Public(), a, b)
		}
	}
}

func TestGolden(t *testing.T) {
	fx := fixtures(t)
	for _, name := range []string{"memo_self", "memo_owner_partial", "memo_owner_signed"} {
		t.Run(name, func(t *testing.T) {
			raw, err := fx[name].MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".hex")
			if *goldenhex.Update {
				if err := os.WriteFile(path, goldenhex.Format("soltx "+name, raw), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			g, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want, err := goldenhex.Parse(g)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw, want) {
				t.Fatalf("%s changed:\n%x\nwant\n%x", name, raw, want)
			}
			tx, err := soltx.Decode(want)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := tx.MarshalBinary()
			if !bytes.Equal(again, want) {
				t.Fatal("decode/encode does not round-trip")
			}
		})
	}
}

func TestRoundTripEncodings(t *testing.T) {
	for name, tx := range fixtures(t) {
		raw, _ := tx.MarshalBinary()
		b58, err := tx.Base58()
		if err != nil {
			t.Fatal(err)
		}
		b64, err := tx.Base64()
		if err != nil {
			t.Fatal(err)
		}
		for enc, dec := range map[string]func() (*soltx.Transaction, error){
			"base58": func() (*soltx.Transaction, error) { return soltx.DecodeBase58(b58) },
			"base64": func() (*soltx.Transaction, error) { return soltx.DecodeBase64(b64) },
			"raw":    func() (*soltx.Transaction, error) { return soltx.Decode(raw) },
		} {
			got, err := dec()
			if err != nil {
				t.Fatalf("%s %s: %v", name, enc, err)
			}
			again, _ := got.MarshalBinary()
			if !bytes.Equal(again, raw) {
				t.Errorf("%s %s: round trip differs", name, enc)
			}
		}
		if st, err := solana.TransactionFromBase58(b58); err != nil || st.Signatures[0] != solana.Signature(tx.ID()) {
			t.Errorf("%s: solana-go reads our base58 differently: %v", name, err)
		}
		if st, err := solana.TransactionFromBase64(b64); err != nil || st.Signatures[0] != solana.Signature(tx.ID()) {
			t.Errorf("%s: solana-go reads our base64 differently: %v", name, err)
		}
	}
}

func TestOwnerCompletes(t *testing.T) {
	node, owner, other := key(t, "node"), key(t, "owner"), key(t, "other")
	tx, err := soltx.NewMemo(node, owner.Public(), blockhash("b"), []byte("reg"))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(tx.Verify(), soltx.ErrMissingSignature) {
		t.Fatalf("partial tx: Verify = %v, want ErrMissingSignature", tx.Verify())
	}
	if got := tx.MissingSigners(); len(got) != 1 || got[0] != owner.Public() {
		t.Fatalf("MissingSigners = %v", got)
	}
	if !tx.ID().IsZero() {
		t.Fatal("ID set before the fee payer signed")
	}
	summary, err := tx.SignOnlySummary()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Blockhash: " + blockhash("b").String(), "Signers (Pubkey=Signature):\n  " + node.ID() + "=",
		"Absent Signers (Pubkey):\n  " + owner.ID() + "\n", "Transaction (base58): ", "Transaction (base64): "} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	msg, _ := tx.Message.MarshalBinary()

	// Signatures of the wrong key or the wrong bytes are refused.
	if err := tx.AddSignature(owner.Public(), other.Sign(msg)); !errors.Is(err, soltx.ErrBadSignature) {
		t.Errorf("other's signature as owner's: %v, want ErrBadSignature", err)
	}
	if err := tx.AddSignature(other.Public(), other.Sign(msg)); !errors.Is(err, soltx.ErrNotSigner) {
		t.Errorf("signature of a non-signer: %v, want ErrNotSigner", err)
	}
	if err := tx.Sign(other); !errors.Is(err, soltx.ErrNotSigner) {
		t.Errorf("Sign by a non-signer: %v, want ErrNotSigner", err)
	}
	if err := tx.AddSignature(owner.Public(), owner.Sign(append(msg, 0))); !errors.Is(err, soltx.ErrBadSignature) {
		t.Errorf("owner's signature of other bytes: %v, want ErrBadSignature", err)
	}

	// The CLI's PUBKEY=SIGNATURE form.
	pair := owner.ID() + "=" + soltx.Signature(owner.Sign(msg)).String()
	pub, sig, err := soltx.ParseSignerPair(pair)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.AddSignature(pub, sig); err != nil {
		t.Fatal(err)
	}
	if err := tx.Verify(); err != nil {
		t.Fatalf("completed tx: %v", err)
	}
	if tx.ID() != soltx.Signature(owner.Sign(msg)) {
		t.Fatal("ID is not the fee payer's signature")
	}
	for _, bad := range []string{"", "x", owner.ID(), owner.ID() + "=", "=" + soltx.Signature{}.String(), owner.ID() + "=0OIl", owner.ID() + "=" + strings.Repeat("1", 89)} {
		if _, _, err := soltx.ParseSignerPair(bad); !errors.Is(err, soltx.ErrInvalid) {
			t.Errorf("ParseSignerPair(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestMerge: what a wallet returns (the same transaction with its own
// signature) completes ours; a wallet that changed the message is refused.
func TestMerge(t *testing.T) {
	node, owner := key(t, "node"), key(t, "owner")
	tx, _ := soltx.NewMemo(node, owner.Public(), blockhash("b"), []byte("reg"))
	b64, _ := tx.Base64()
	walletCopy, err := soltx.DecodeBase64(b64)
	if err != nil {
		t.Fatal(err)
	}
	if err := walletCopy.Sign(owner); err != nil {
		t.Fatal(err)
	}
	changed, _ := soltx.NewMemo(node, owner.Public(), blockhash("b"), []byte("reg!"))
	_ = changed.Sign(owner)
	if err := tx.Merge(changed); !errors.Is(err, soltx.ErrMessageMismatch) {
		t.Fatalf("merge of a changed message: %v, want ErrMessageMismatch", err)
	}
	forged, _ := soltx.DecodeBase64(b64)
	if err := tx.Merge(forged); err != nil || !errors.Is(tx.Verify(), soltx.ErrMissingSignature) {
		t.Fatalf("merge of an unsigned copy: %v, then Verify = %v", err, tx.Verify())
	}
	forged.Signatures[0] = soltx.Signature(node.Sign([]byte("x")))
	if err := tx.Merge(forged); !errors.Is(err, soltx.ErrBadSignature) {
		t.Fatalf("merge of a forged signature: %v, want ErrBadSignature", err)
	}
	if err := tx.Merge(walletCopy); err != nil {
		t.Fatal(err)
	}
	if err := tx.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestBuildRefuses(t *testing.T) {
	node := key(t, "node")
	bh := blockhash("b")
	for name, tc := range map[string]struct {
		text []byte
		want error
	}{
		"empty":    {nil, soltx.ErrInvalid},
		"not utf8": {[]byte{0xff, 0xfe}, soltx.ErrInvalid},
		"too long": {bytes.Repeat([]byte("x"), soltx.MaxMemo+1), soltx.ErrTooLarge},
	} {
		if _, err := soltx.NewMemo(node, node.Public(), bh, tc.text); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, err := soltx.NewMessage(node.Public(), bh); !errors.Is(err, soltx.ErrInvalid) {
		t.Errorf("no instructions: %v", err)
	}
	if _, err := soltx.NewMessage(identity.PublicKey{}, bh, soltx.Instruction{ProgramID: soltx.MemoProgramID}); !errors.Is(err, soltx.ErrInvalid) {
		t.Errorf("zero payer: %v", err)
	}
	// A program that is also a signer cannot be compiled.
	ix := soltx.Instruction{ProgramID: node.Public()}
	if _, err := soltx.NewMessage(node.Public(), bh, ix); !errors.Is(err, soltx.ErrInvalid) {
		t.Errorf("payer as program: %v", err)
	}
	// Fits in one packet with room to spare: many memo instructions do not.
	var ixs []soltx.Instruction
	for range 40 {
		m, _ := soltx.Memo(bytes.Repeat([]byte("y"), 30), node.Public())
		ixs = append(ixs, m)
	}
	m, err := soltx.NewMessage(node.Public(), bh, ixs...)
	if err != nil {
		t.Fatal(err)
	}
	tx, _ := soltx.New(m)
	if _, err := tx.MarshalBinary(); !errors.Is(err, soltx.ErrTooLarge) {
		t.Errorf("oversized tx: %v, want ErrTooLarge", err)
	}
}

// TestHandBuiltNoPanic: a Transaction or Message assembled by hand, with
// counts that do not add up, gets errors from every method, not a panic.
func TestHandBuiltNoPanic(t *testing.T) {
	node := key(t, "node")
	good, _ := soltx.NewMemo(node, node.Public(), blockhash("b"), []byte("x"))
	bad := []*soltx.Transaction{
		{},
		{Message: good.Message},
		{Signatures: make([]soltx.Signature, 3), Message: good.Message},
		{Signatures: good.Signatures, Message: soltx.Message{Header: soltx.Header{NumRequiredSignatures: 4}}},
	}
	for i, tx := range bad {
		for name, err := range map[string]error{
			"Sign":          tx.Sign(node),
			"AddSignature":  tx.AddSignature(node.Public(), make([]byte, 64)),
			"Merge":         tx.Merge(good),
			"MergeInto":     good.Merge(tx),
			"Verify":        tx.Verify(),
			"MarshalBinary": func() error { _, err := tx.MarshalBinary(); return err }(),
			"Summary":       func() error { _, err := tx.SignOnlySummary(); return err }(),
		} {
			if err == nil {
				t.Errorf("case %d: %s accepted a malformed transaction", i, name)
			}
		}
		_ = tx.MissingSigners()
		_ = tx.ID()
		_ = tx.Message.Signers()
		_ = tx.Message.FeePayer()
		_ = tx.Message.Memos()
	}
}

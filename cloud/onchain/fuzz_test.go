package onchain

import (
	"crypto/sha256"
	"errors"
	"testing"

	solana "github.com/gagliardetto/solana-go"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/soltx"
)

// FuzzCheckTx: whatever bytes an RPC endpoint hands castd as a transaction,
// decoding and checking them gives a result or an error (solana-go's
// decoder panics are caught), and only a transaction signed by the node
// with the memo passes.
func FuzzCheckTx(f *testing.F) {
	seed := sha256.Sum256([]byte("node"))
	node, _ := identity.FromSeed(seed[:])
	const memo = "blockcast:reg:v1:x"
	tx, _ := soltx.NewMemo(node, node.Public(), soltx.Hash{1}, []byte(memo))
	good, _ := tx.MarshalBinary()
	f.Add(good)
	f.Add(good[:70])
	f.Add([]byte{0xff, 0xff, 0x03})
	f.Add(append([]byte{1}, make([]byte, 64+3)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		stx, err := decodeTx(b)
		if err != nil {
			return
		}
		if len(stx.Signatures) == 0 {
			return
		}
		err = checkTx(stx, stx.Signatures[0], solana.PublicKey(node.Public()), memo)
		if err == nil {
			// It passed: the node really signed this message.
			if stx.VerifySignatures() != nil || !stx.Message.IsSigner(solana.PublicKey(node.Public())) {
				t.Fatal("accepted a transaction the node did not sign")
			}
			return
		}
		if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNotSigned) && !errors.Is(err, ErrMemoMismatch) {
			t.Fatalf("error without a reason: %v", err)
		}
	})
}

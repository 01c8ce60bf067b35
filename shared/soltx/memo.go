package soltx

import (
	"fmt"
	"unicode/utf8"

	"github.com/blockcast/beacon/shared/identity"
)

// MemoProgramID is the SPL Memo program v2
// (MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr).
var MemoProgramID = identity.PublicKey{
	0x05, 0x4a, 0x53, 0x5a, 0x99, 0x29, 0x21, 0x06, 0x4d, 0x24, 0xe8, 0x71, 0x60, 0xda, 0x38, 0x7c,
	0x7c, 0x35, 0xb5, 0xdd, 0xbc, 0x92, 0xbb, 0x81, 0xe4, 0x1f, 0xa8, 0x40, 0x41, 0x05, 0x44, 0x8d,
}

// MaxMemo is the longest memo that fits one transaction with two signers
// (the owner paying for the node); a longer one is refused up front.
const MaxMemo = PacketDataSize - (1 + 2*64) - (3 + 1 + 3*32 + 32 + 1) - (1 + 1 + 1 + 2)

// Memo returns a Memo program instruction carrying text, which every key
// in signers must sign (the program checks it). The data is the text
// itself: unlike solana-go's programs/memo helper, no length byte.
func Memo(text []byte, signers ...identity.PublicKey) (Instruction, error) {
	if len(text) == 0 {
		return Instruction{}, fmt.Errorf("%w: empty memo", ErrInvalid)
	}
	if len(text) > MaxMemo {
		return Instruction{}, fmt.Errorf("%w: memo of %d bytes, at most %d", ErrTooLarge, len(text), MaxMemo)
	}
	// The Memo program fails the transaction on invalid UTF-8.
	if !utf8.Valid(text) {
		return Instruction{}, fmt.Errorf("%w: memo is not valid UTF-8", ErrInvalid)
	}
	ix := Instruction{ProgramID: MemoProgramID, Data: append([]byte(nil), text...)}
	for _, s := range signers {
		ix.Accounts = append(ix.Accounts, AccountMeta{PublicKey: s, IsSigner: true})
	}
	return ix, nil
}

// Memos returns the data of the message's Memo program instructions, in
// order.
func (m *Message) Memos() [][]byte {
	var out [][]byte
	for _, ix := range m.Instructions {
		if int(ix.ProgramIDIndex) < len(m.AccountKeys) && m.AccountKeys[ix.ProgramIDIndex] == MemoProgramID {
			out = append(out, ix.Data)
		}
	}
	return out
}

// NewMemo builds the transaction the beacon sends: one memo signed by node,
// paid for by feePayer (node itself, or the owner's wallet). It is signed
// by node; when feePayer is someone else, their slot stays empty until
// AddSignature or Merge fills it.
func NewMemo(node *identity.Keypair, feePayer identity.PublicKey, blockhash Hash, text []byte) (*Transaction, error) {
	ix, err := Memo(text, node.Public())
	if err != nil {
		return nil, err
	}
	m, err := NewMessage(feePayer, blockhash, ix)
	if err != nil {
		return nil, err
	}
	tx, err := New(m)
	if err != nil {
		return nil, err
	}
	if err := tx.Sign(node); err != nil {
		return nil, err
	}
	if _, err := tx.MarshalBinary(); err != nil {
		return nil, err
	}
	return tx, nil
}

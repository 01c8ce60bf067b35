// Package soltx builds, signs, encodes and decodes legacy Solana
// transactions with the standard library and shared/identity only: the
// beacon links it, and solana-go would cost it 2.3–3.8 MB of flash. Tests
// decode everything built here with solana-go and compare field by field.
//
// A transaction is a message (header, account keys, recent blockhash,
// compiled instructions, lengths as compact-u16) preceded by one ed25519
// signature per required signer, over the message bytes. The fee payer is
// the first account key and the first signature; when it is not the node
// (the owner pays), the node signs its own slot and leaves the payer's
// zeroed, and the owner completes the transaction with a wallet or the
// solana CLI (see SignOnlySummary, AddSignature, Merge).
package soltx

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/blockcast/beacon/shared/identity"
)

// PacketDataSize is the largest serialized transaction a Solana cluster takes.
const PacketDataSize = 1232

// Sentinel errors callers branch on.
var (
	// ErrMalformed is wrapped by every decoding error.
	ErrMalformed = errors.New("soltx: malformed transaction")
	// ErrUnsupportedVersion: a versioned (v0 or later) message; only
	// legacy messages are built and decoded here.
	ErrUnsupportedVersion = errors.New("soltx: unsupported transaction version")
	// ErrTooLarge: the transaction exceeds PacketDataSize.
	ErrTooLarge = errors.New("soltx: transaction too large")
	// ErrNotSigner: the key is not one of the message's required signers.
	ErrNotSigner = errors.New("soltx: key is not a required signer")
	// ErrBadSignature: a signature does not verify over the message.
	ErrBadSignature = errors.New("soltx: signature does not verify")
	// ErrMissingSignature: a required signature is absent (all zeros).
	ErrMissingSignature = errors.New("soltx: missing signature")
	// ErrMessageMismatch: a signed copy carries a different message.
	ErrMessageMismatch = errors.New("soltx: message differs")
	// ErrInvalid: the instructions cannot make a valid message.
	ErrInvalid = errors.New("soltx: invalid transaction")
)

// Hash is a 32-byte hash (a recent blockhash).
type Hash [32]byte

// String returns the base58 form.
func (h Hash) String() string { return identity.EncodeBase58(h[:]) }

// ParseHash parses a base58 blockhash.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) == 0 || len(s) > 44 {
		return h, fmt.Errorf("%w: blockhash %q: want 32 bytes in base58", ErrInvalid, s)
	}
	b, err := identity.DecodeBase58(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("%w: blockhash %q: want 32 bytes in base58", ErrInvalid, s)
	}
	copy(h[:], b)
	return h, nil
}

// Signature is an ed25519 signature.
type Signature [identity.SignatureSize]byte

// String returns the base58 form (a transaction ID, for the first one).
func (s Signature) String() string { return identity.EncodeBase58(s[:]) }

// IsZero reports whether s is the empty (unsigned) slot.
func (s Signature) IsZero() bool { return s == Signature{} }

// AccountMeta is an account an instruction uses.
type AccountMeta struct {
	PublicKey  identity.PublicKey
	IsSigner   bool
	IsWritable bool
}

// Instruction is an instruction before compilation into a message.
type Instruction struct {
	ProgramID identity.PublicKey
	Accounts  []AccountMeta
	Data      []byte
}

// Header counts the message's signers and read-only accounts.
type Header struct {
	NumRequiredSignatures       uint8
	NumReadonlySignedAccounts   uint8
	NumReadonlyUnsignedAccounts uint8
}

// CompiledInstruction refers to accounts by their index in AccountKeys.
type CompiledInstruction struct {
	ProgramIDIndex uint8
	Accounts       []uint8
	Data           []byte
}

// Message is a legacy transaction message.
type Message struct {
	Header          Header
	AccountKeys     []identity.PublicKey
	RecentBlockhash Hash
	Instructions    []CompiledInstruction
}

// NewMessage compiles instructions into a message paid for by feePayer.
// Account keys are ordered as the runtime requires (writable signers,
// read-only signers, writable non-signers, read-only non-signers), the fee
// payer first, otherwise in order of first use; a key used several times
// gets the union of its flags.
func NewMessage(feePayer identity.PublicKey, blockhash Hash, ixs ...Instruction) (*Message, error) {
	if len(ixs) == 0 {
		return nil, fmt.Errorf("%w: no instructions", ErrInvalid)
	}
	if feePayer.IsZero() {
		return nil, fmt.Errorf("%w: zero fee payer", ErrInvalid)
	}
	type acct struct {
		key              identity.PublicKey
		signer, writable bool
	}
	var order []*acct
	byKey := map[identity.PublicKey]*acct{}
	use := func(k identity.PublicKey, signer, writable bool) {
		a := byKey[k]
		if a == nil {
			a = &acct{key: k}
			byKey[k] = a
			order = append(order, a)
		}
		a.signer = a.signer || signer
		a.writable = a.writable || writable
	}
	use(feePayer, true, true)
	for _, ix := range ixs {
		if ix.ProgramID.IsZero() {
			return nil, fmt.Errorf("%w: zero program ID", ErrInvalid)
		}
		for _, m := range ix.Accounts {
			use(m.PublicKey, m.IsSigner, m.IsWritable)
		}
		use(ix.ProgramID, false, false)
	}
	for _, ix := range ixs {
		if a := byKey[ix.ProgramID]; a.signer || a.writable {
			return nil, fmt.Errorf("%w: program %s is also used as a signer or writable account", ErrInvalid, ix.ProgramID)
		}
	}
	if len(order) > 256 {
		return nil, fmt.Errorf("%w: %d accounts, at most 256", ErrInvalid, len(order))
	}
	m := &Message{RecentBlockhash: blockhash}
	index := map[identity.PublicKey]uint8{}
	for _, g := range []struct{ signer, writable bool }{{true, true}, {true, false}, {false, true}, {false, false}} {
		for _, a := range order {
			if a.signer != g.signer || a.writable != g.writable {
				continue
			}
			index[a.key] = uint8(len(m.AccountKeys))
			m.AccountKeys = append(m.AccountKeys, a.key)
			switch {
			case a.signer && a.writable:
				m.Header.NumRequiredSignatures++
			case a.signer:
				m.Header.NumRequiredSignatures++
				m.Header.NumReadonlySignedAccounts++
			case !a.writable:
				m.Header.NumReadonlyUnsignedAccounts++
			}
		}
	}
	for _, ix := range ixs {
		ci := CompiledInstruction{ProgramIDIndex: index[ix.ProgramID], Data: append([]byte(nil), ix.Data...)}
		for _, a := range ix.Accounts {
			ci.Accounts = append(ci.Accounts, index[a.PublicKey])
		}
		m.Instructions = append(m.Instructions, ci)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// check applies the runtime's sanitize rules (so that what we build or
// accept is what a validator would take).
func (m *Message) check() error {
	h := m.Header
	n := len(m.AccountKeys)
	switch {
	case h.NumRequiredSignatures == 0:
		return fmt.Errorf("%w: no required signatures", ErrInvalid)
	case int(h.NumRequiredSignatures) > n:
		return fmt.Errorf("%w: %d required signatures but %d accounts", ErrInvalid, h.NumRequiredSignatures, n)
	case h.NumReadonlySignedAccounts >= h.NumRequiredSignatures:
		return fmt.Errorf("%w: every signer is read-only (the fee payer must be writable)", ErrInvalid)
	case int(h.NumRequiredSignatures)+int(h.NumReadonlyUnsignedAccounts) > n:
		return fmt.Errorf("%w: header counts exceed the %d accounts", ErrInvalid, n)
	}
	seen := make(map[identity.PublicKey]struct{}, n)
	for _, k := range m.AccountKeys {
		if _, dup := seen[k]; dup {
			return fmt.Errorf("%w: account %s listed twice", ErrInvalid, k)
		}
		seen[k] = struct{}{}
	}
	if len(m.Instructions) > maxShortVec {
		return fmt.Errorf("%w: %d instructions", ErrTooLarge, len(m.Instructions))
	}
	for i, ix := range m.Instructions {
		if len(ix.Accounts) > maxShortVec || len(ix.Data) > maxShortVec {
			return fmt.Errorf("%w: instruction %d too long", ErrTooLarge, i)
		}
		// The fee payer cannot be a program (index 0 is refused).
		if ix.ProgramIDIndex == 0 || int(ix.ProgramIDIndex) >= n {
			return fmt.Errorf("%w: instruction %d: program index %d out of range", ErrInvalid, i, ix.ProgramIDIndex)
		}
		for _, a := range ix.Accounts {
			if int(a) >= n {
				return fmt.Errorf("%w: instruction %d: account index %d out of range", ErrInvalid, i, a)
			}
		}
	}
	return nil
}

// Signers returns the keys that must sign, the fee payer first.
func (m *Message) Signers() []identity.PublicKey {
	return m.AccountKeys[:min(int(m.Header.NumRequiredSignatures), len(m.AccountKeys))]
}

// FeePayer returns the account that pays the fee (zero if there is none).
func (m *Message) FeePayer() identity.PublicKey {
	if len(m.AccountKeys) == 0 {
		return identity.PublicKey{}
	}
	return m.AccountKeys[0]
}

// IsWritable reports whether account i is writable.
func (m *Message) IsWritable(i int) bool {
	h := m.Header
	if i < int(h.NumRequiredSignatures) {
		return i < int(h.NumRequiredSignatures-h.NumReadonlySignedAccounts)
	}
	return i < len(m.AccountKeys)-int(h.NumReadonlyUnsignedAccounts)
}

// MarshalBinary returns the message bytes (what signatures cover).
func (m *Message) MarshalBinary() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 3+1+32*len(m.AccountKeys)+32+64)
	b = append(b, m.Header.NumRequiredSignatures, m.Header.NumReadonlySignedAccounts, m.Header.NumReadonlyUnsignedAccounts)
	b = appendShortVec(b, len(m.AccountKeys))
	for _, k := range m.AccountKeys {
		b = append(b, k[:]...)
	}
	b = append(b, m.RecentBlockhash[:]...)
	b = appendShortVec(b, len(m.Instructions))
	for _, ix := range m.Instructions {
		b = append(b, ix.ProgramIDIndex)
		b = appendShortVec(b, len(ix.Accounts))
		b = append(b, ix.Accounts...)
		b = appendShortVec(b, len(ix.Data))
		b = append(b, ix.Data...)
	}
	return b, nil
}

// Transaction is a message with its signatures, one per required signer in
// the order of Message.Signers; an unsigned slot is all zeros.
type Transaction struct {
	Signatures []Signature
	Message    Message
}

// New returns an unsigned transaction for m.
func New(m *Message) (*Transaction, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	return &Transaction{Signatures: make([]Signature, m.Header.NumRequiredSignatures), Message: *m}, nil
}

// bytes returns the message bytes after checking that tx has one slot per
// required signer (a Transaction assembled by hand may not).
func (tx *Transaction) bytes() ([]byte, error) {
	msg, err := tx.Message.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if len(tx.Signatures) != int(tx.Message.Header.NumRequiredSignatures) {
		return nil, fmt.Errorf("%w: %d signatures for %d signers", ErrInvalid, len(tx.Signatures), tx.Message.Header.NumRequiredSignatures)
	}
	return msg, nil
}

// Sign fills the signature slots of the given keys. A key that is not a
// required signer is an error (ErrNotSigner), and nothing is signed then.
func (tx *Transaction) Sign(keys ...*identity.Keypair) error {
	msg, err := tx.bytes()
	if err != nil {
		return err
	}
	idx := make([]int, len(keys))
	for i, k := range keys {
		if idx[i] = tx.signerIndex(k.Public()); idx[i] < 0 {
			return fmt.Errorf("%w: %s", ErrNotSigner, k.Public())
		}
	}
	for i, k := range keys {
		copy(tx.Signatures[idx[i]][:], k.Sign(msg))
	}
	return nil
}

func (tx *Transaction) signerIndex(p identity.PublicKey) int {
	for i, s := range tx.Message.Signers() {
		if s == p {
			return i
		}
	}
	return -1
}

// AddSignature puts signer's signature (made elsewhere: a wallet, or
// `solana ... --sign-only`) into its slot, after checking it verifies.
func (tx *Transaction) AddSignature(signer identity.PublicKey, sig []byte) error {
	i := tx.signerIndex(signer)
	if i < 0 {
		return fmt.Errorf("%w: %s", ErrNotSigner, signer)
	}
	msg, err := tx.bytes()
	if err != nil {
		return err
	}
	if !signer.Verify(msg, sig) {
		return fmt.Errorf("%w: %s", ErrBadSignature, signer)
	}
	copy(tx.Signatures[i][:], sig)
	return nil
}

// Merge copies the signatures of signed (the same transaction as returned
// by a wallet that added its own) into the empty slots of tx. The messages
// must be identical byte for byte, and every copied signature must verify.
func (tx *Transaction) Merge(signed *Transaction) error {
	a, err := tx.bytes()
	if err != nil {
		return err
	}
	b, err := signed.bytes()
	if err != nil {
		return err
	}
	if !bytes.Equal(a, b) {
		return ErrMessageMismatch
	}
	add := make(map[int]Signature)
	for i, s := range signed.Signatures {
		if s.IsZero() || !tx.Signatures[i].IsZero() {
			continue
		}
		if !tx.Message.AccountKeys[i].Verify(a, s[:]) {
			return fmt.Errorf("%w: %s", ErrBadSignature, tx.Message.AccountKeys[i])
		}
		add[i] = s
	}
	for i, s := range add {
		tx.Signatures[i] = s
	}
	return nil
}

// Verify checks every signature: ErrMissingSignature when a slot is empty,
// ErrBadSignature when one does not verify.
func (tx *Transaction) Verify() error {
	msg, err := tx.bytes()
	if err != nil {
		return err
	}
	var missing error
	for i, s := range tx.Signatures {
		k := tx.Message.AccountKeys[i]
		switch {
		case s.IsZero():
			missing = errors.Join(missing, fmt.Errorf("%w: %s", ErrMissingSignature, k))
		case !k.Verify(msg, s[:]):
			return fmt.Errorf("%w: %s", ErrBadSignature, k)
		}
	}
	return missing
}

// MissingSigners lists the signers whose slot is still empty.
func (tx *Transaction) MissingSigners() []identity.PublicKey {
	var out []identity.PublicKey
	for i, s := range tx.Signatures {
		if s.IsZero() && i < len(tx.Message.AccountKeys) {
			out = append(out, tx.Message.AccountKeys[i])
		}
	}
	return out
}

// ID is the transaction's ID: its first (the fee payer's) signature. It is
// zero until the fee payer has signed.
func (tx *Transaction) ID() Signature {
	if len(tx.Signatures) == 0 {
		return Signature{}
	}
	return tx.Signatures[0]
}

// MarshalBinary returns the wire form (what sendTransaction takes).
func (tx *Transaction) MarshalBinary() ([]byte, error) {
	msg, err := tx.bytes()
	if err != nil {
		return nil, err
	}
	b := appendShortVec(make([]byte, 0, 1+64*len(tx.Signatures)+len(msg)), len(tx.Signatures))
	for _, s := range tx.Signatures {
		b = append(b, s[:]...)
	}
	b = append(b, msg...)
	if len(b) > PacketDataSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), PacketDataSize)
	}
	return b, nil
}

// Base64 returns the wire form in base64 (sendTransaction with
// "encoding":"base64"; `solana decode-transaction --encoding base64`).
func (tx *Transaction) Base64() (string, error) {
	b, err := tx.MarshalBinary()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Base58 returns the wire form in base58 (the RPC's default encoding, and
// what wallet deep links and `solana decode-transaction` take by default).
func (tx *Transaction) Base58() (string, error) {
	b, err := tx.MarshalBinary()
	if err != nil {
		return "", err
	}
	return identity.EncodeBase58(b), nil
}

// maxShortVec is the largest length compact-u16 encodes.
const maxShortVec = 1<<16 - 1

// appendShortVec appends n as compact-u16: 7 bits a byte, low first, the
// high bit set on every byte but the last.
func appendShortVec(b []byte, n int) []byte {
	v := uint16(n)
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

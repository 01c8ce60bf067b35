package soltx

import (
	"encoding/base64"
	"fmt"

	"github.com/blockcast/beacon/shared/identity"
)

// Decode parses a transaction in wire form. It is strict, as the runtime
// is: legacy messages only (ErrUnsupportedVersion), canonical compact-u16
// lengths, no trailing bytes, at most PacketDataSize bytes, one signature
// per required signer, and the runtime's sanitize rules (indexes in range,
// no duplicate keys, a writable fee payer that is not a program). It does
// not verify signatures: call Verify. Errors wrap ErrMalformed.
func Decode(b []byte) (*Transaction, error) {
	if len(b) > PacketDataSize {
		return nil, fmt.Errorf("%w: %w: %d bytes, at most %d", ErrMalformed, ErrTooLarge, len(b), PacketDataSize)
	}
	d := decoder{b: b}
	nsig := d.shortVec("signatures")
	if d.err == nil && nsig*identity.SignatureSize > len(b) {
		d.fail("%d signatures do not fit in %d bytes", nsig, len(b))
	}
	tx := &Transaction{}
	for i := 0; i < nsig && d.err == nil; i++ {
		var s Signature
		copy(s[:], d.bytes(len(s), "signature"))
		tx.Signatures = append(tx.Signatures, s)
	}
	if d.err == nil && d.off < len(b) && b[d.off]&0x80 != 0 {
		return nil, fmt.Errorf("%w: %w: version %d", ErrMalformed, ErrUnsupportedVersion, b[d.off]&0x7f)
	}
	m := &tx.Message
	m.Header.NumRequiredSignatures = d.u8("header")
	m.Header.NumReadonlySignedAccounts = d.u8("header")
	m.Header.NumReadonlyUnsignedAccounts = d.u8("header")
	nkeys := d.shortVec("account keys")
	for i := 0; i < nkeys && d.err == nil; i++ {
		var k identity.PublicKey
		copy(k[:], d.bytes(len(k), "account key"))
		m.AccountKeys = append(m.AccountKeys, k)
	}
	copy(m.RecentBlockhash[:], d.bytes(32, "recent blockhash"))
	nix := d.shortVec("instructions")
	for i := 0; i < nix && d.err == nil; i++ {
		var ix CompiledInstruction
		ix.ProgramIDIndex = d.u8("program index")
		ix.Accounts = append([]byte(nil), d.bytes(d.shortVec("instruction accounts"), "instruction accounts")...)
		ix.Data = append([]byte(nil), d.bytes(d.shortVec("instruction data"), "instruction data")...)
		m.Instructions = append(m.Instructions, ix)
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(b) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b)-d.off)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(tx.Signatures) != int(m.Header.NumRequiredSignatures) {
		return nil, fmt.Errorf("%w: %d signatures for %d required signers", ErrMalformed, len(tx.Signatures), m.Header.NumRequiredSignatures)
	}
	return tx, nil
}

// DecodeBase64 decodes the base64 wire form.
func DecodeBase64(s string) (*Transaction, error) {
	if len(s) > base64.StdEncoding.EncodedLen(PacketDataSize) {
		return nil, fmt.Errorf("%w: %w: %d base64 characters", ErrMalformed, ErrTooLarge, len(s))
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %w", ErrMalformed, err)
	}
	return Decode(b)
}

// maxBase58 is the longest base58 form of PacketDataSize bytes (as the
// RPC's limit).
const maxBase58 = 1683

// DecodeBase58 decodes the base58 wire form.
func DecodeBase58(s string) (*Transaction, error) {
	if len(s) > maxBase58 {
		return nil, fmt.Errorf("%w: %w: %d base58 characters", ErrMalformed, ErrTooLarge, len(s))
	}
	b, err := identity.DecodeBase58(s)
	if err != nil {
		return nil, fmt.Errorf("%w: base58: %w", ErrMalformed, err)
	}
	return Decode(b)
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: at offset %d: %s", ErrMalformed, d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) u8(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("end of data in %s", what)
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > len(d.b)-d.off {
		d.fail("%s: want %d bytes, %d left", what, n, len(d.b)-d.off)
		return nil
	}
	d.off += n
	return d.b[d.off-n : d.off]
}

// shortVec reads a compact-u16 length, refusing the non-canonical forms
// (a longer encoding of a small number) that the runtime refuses too.
func (d *decoder) shortVec(what string) int {
	v := 0
	for i := 0; i < 3; i++ {
		c := d.u8(what)
		if d.err != nil {
			return 0
		}
		if i == 2 && c > 3 {
			d.fail("length of %s overflows 16 bits", what)
			return 0
		}
		v |= int(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if i > 0 && c == 0 {
				d.fail("non-canonical length of %s", what)
				return 0
			}
			return v
		}
	}
	d.fail("length of %s too long", what)
	return 0
}

package soltx_test

import (
	"bytes"
	"errors"
	"testing"

	solana "github.com/gagliardetto/solana-go"

	"github.com/blockcast/beacon/shared/soltx"
)

// TestDecodeRefuses: each mutation of a valid transaction that a validator
// would refuse is refused here, with ErrMalformed.
func TestDecodeRefuses(t *testing.T) {
	fx := fixtures(t)
	self, _ := fx["memo_self"].MarshalBinary() // 1 signature, 2 keys
	multi, _ := fx["multi"].MarshalBinary()    // 2 signatures
	msgOff := 1 + 64                           // start of self's message
	keysOff := msgOff + 3                      // its account-key count
	ixOff := keysOff + 1 + 2*32 + 32           // its instruction count
	mut := func(b []byte, f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"empty":                {nil, soltx.ErrMalformed},
		"truncated":            {self[:len(self)-1], soltx.ErrMalformed},
		"trailing byte":        {append(append([]byte(nil), self...), 0), soltx.ErrMalformed},
		"too large":            {make([]byte, soltx.PacketDataSize+1), soltx.ErrTooLarge},
		"versioned v0":         {mut(self, func(b []byte) []byte { return append(b[:msgOff:msgOff], append([]byte{0x80}, self[msgOff:]...)...) }), soltx.ErrUnsupportedVersion},
		"non-canonical len":    {mut(self, func(b []byte) []byte { return append([]byte{0x81, 0x00}, b[1:]...) }), soltx.ErrMalformed},
		"signature overflow":   {[]byte{0xff, 0xff, 0x03}, soltx.ErrMalformed},
		"sig count mismatch":   {mut(multi, func(b []byte) []byte { b[0] = 1; return append(b[:65], b[129:]...) }), soltx.ErrMalformed},
		"no signers":           {mut(self, func(b []byte) []byte { b[0] = 0; b[msgOff-64] = 0; return append(b[:1], b[65:]...) }), soltx.ErrMalformed},
		"readonly payer":       {mut(self, func(b []byte) []byte { b[msgOff+1] = 1; return b }), soltx.ErrMalformed},
		"duplicate key":        {mut(self, func(b []byte) []byte { copy(b[keysOff+1+32:], b[keysOff+1:keysOff+33]); return b }), soltx.ErrMalformed},
		"program is payer":     {mut(self, func(b []byte) []byte { b[ixOff+1] = 0; return b }), soltx.ErrMalformed},
		"program out of range": {mut(self, func(b []byte) []byte { b[ixOff+1] = 9; return b }), soltx.ErrMalformed},
		"account out of range": {mut(self, func(b []byte) []byte { b[ixOff+3] = 2; return b }), soltx.ErrMalformed},
		"header exceeds keys":  {mut(self, func(b []byte) []byte { b[msgOff+2] = 5; return b }), soltx.ErrMalformed},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := soltx.Decode(tc.b); !errors.Is(err, tc.want) || !errors.Is(err, soltx.ErrMalformed) {
				t.Fatalf("Decode = %v, want %v (and ErrMalformed)", err, tc.want)
			}
		})
	}
	for _, s := range []string{"", "!!!!", "AQ=", "AQ==\n", string(make([]byte, 2000))} {
		if _, err := soltx.DecodeBase64(s); !errors.Is(err, soltx.ErrMalformed) {
			t.Errorf("DecodeBase64(%.20q) = %v", s, err)
		}
	}
	for _, s := range []string{"", "0OIl", string(bytes.Repeat([]byte("z"), 1700))} {
		if _, err := soltx.DecodeBase58(s); !errors.Is(err, soltx.ErrMalformed) {
			t.Errorf("DecodeBase58(%.20q) = %v", s, err)
		}
	}
}

// FuzzDecode: Decode never panics; what it accepts re-encodes to the same
// bytes, and solana-go reads it the same way.
func FuzzDecode(f *testing.F) {
	for _, tx := range fixtures(f) {
		b, _ := tx.MarshalBinary()
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add([]byte{0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := soltx.Decode(b)
		if err != nil {
			if !errors.Is(err, soltx.ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		again, err := tx.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted but cannot re-encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", b, again)
		}
		_ = tx.Verify()
		_ = tx.Message.Memos()
		st, err := solana.TransactionFromBytes(b)
		if err != nil {
			t.Fatalf("we accept what solana-go refuses: %v", err)
		}
		if len(st.Signatures) != len(tx.Signatures) || len(st.Message.AccountKeys) != len(tx.Message.AccountKeys) ||
			len(st.Message.Instructions) != len(tx.Message.Instructions) {
			t.Fatal("solana-go reads it differently")
		}
	})
}

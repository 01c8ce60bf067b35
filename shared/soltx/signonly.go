package soltx

import (
	"fmt"
	"strings"

	"github.com/blockcast/beacon/shared/identity"
)

// SignOnlySummary prints a partially signed transaction for the owner who
// completes it: the blockhash and the "Pubkey=Signature" lines in the form
// `solana ... --sign-only` prints and `--signer` takes, the signers still
// absent, and the whole transaction in base58 and base64 (what wallets,
// `solana decode-transaction` and sendTransaction take).
func (tx *Transaction) SignOnlySummary() (string, error) {
	b58, err := tx.Base58()
	if err != nil {
		return "", err
	}
	b64, err := tx.Base64()
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "Blockhash: %s\n", tx.Message.RecentBlockhash)
	present, absent := "", ""
	for i, s := range tx.Signatures {
		k := tx.Message.AccountKeys[i]
		if s.IsZero() {
			absent += "  " + k.String() + "\n"
		} else {
			present += "  " + k.String() + "=" + s.String() + "\n"
		}
	}
	if present != "" {
		sb.WriteString("Signers (Pubkey=Signature):\n" + present)
	}
	if absent != "" {
		sb.WriteString("Absent Signers (Pubkey):\n" + absent)
	}
	fmt.Fprintf(&sb, "Transaction (base58): %s\nTransaction (base64): %s\n", b58, b64)
	return sb.String(), nil
}

// ParseSignerPair parses "PUBKEY=SIGNATURE" (base58 both), the form the
// solana CLI prints after --sign-only and takes with --signer.
func ParseSignerPair(s string) (identity.PublicKey, []byte, error) {
	k, sig, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return identity.PublicKey{}, nil, fmt.Errorf("%w: signer %q: want PUBKEY=SIGNATURE", ErrInvalid, s)
	}
	pub, err := identity.ParsePublicKey(k)
	if err != nil {
		return identity.PublicKey{}, nil, fmt.Errorf("%w: signer: %w", ErrInvalid, err)
	}
	if len(sig) > 88 {
		return identity.PublicKey{}, nil, fmt.Errorf("%w: signer %s: signature too long", ErrInvalid, pub)
	}
	b, err := identity.DecodeBase58(sig)
	if err != nil || len(b) != identity.SignatureSize {
		return identity.PublicKey{}, nil, fmt.Errorf("%w: signer %s: want a 64-byte base58 signature", ErrInvalid, pub)
	}
	return pub, b, nil
}

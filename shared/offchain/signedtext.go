package offchain

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/blockcast/beacon/shared/identity"
)

// ErrBadSignedText is wrapped when a signed text's fields do not decode or
// its message is not an off-chain message carrying the text.
var ErrBadSignedText = errors.New("offchain: malformed signed text")

// VerifyText checks that signature (base58) is signer's signature of an
// off-chain message whose body is exactly text, and returns the signed
// message bytes. With message (base64 of the signed bytes, what a page
// hands a browser wallet) those bytes are checked; without it the message
// is rebuilt as the solana CLI builds it from text, in the v0 layout
// (Agave 3.x) and in the legacy layout (earlier CLIs), and the one the
// signature verifies is kept. In the v0 layout signer must be among the
// message's signers. The caller judges what text says.
func VerifyText(signer identity.PublicKey, text, message, signature string) ([]byte, error) {
	sig, err := decodeSignature(signature)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignedText, err)
	}
	if message != "" {
		if len(message) > maxMessageBase64 {
			return nil, fmt.Errorf("%w: message: %w", ErrBadSignedText, ErrTooLong)
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(message)
		if err != nil {
			return nil, fmt.Errorf("%w: message is not standard base64: %w", ErrBadSignedText, err)
		}
		m, err := Decode(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSignedText, err)
		}
		if string(m.Body) != text {
			return nil, fmt.Errorf("%w: the message's body is not the text", ErrBadSignedText)
		}
		if !signer.Verify(raw, sig) {
			return nil, ErrBadSignature
		}
		if m.Layout == LayoutV0 && !isSigner(m.Signers, signer) {
			return nil, fmt.Errorf("%w: %s", ErrNotSigner, signer)
		}
		return raw, nil
	}
	for _, layout := range []Layout{LayoutV0, LayoutLegacy} {
		var signers []identity.PublicKey
		if layout == LayoutV0 {
			signers = []identity.PublicKey{signer}
		}
		m, err := NewMessage(layout, []byte(text), signers...)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSignedText, err)
		}
		raw, err := Encode(m)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadSignedText, err)
		}
		if signer.Verify(raw, sig) {
			return raw, nil
		}
	}
	return nil, fmt.Errorf("%w: not a signature of this text by %s in either off-chain message layout", ErrBadSignature, signer)
}

// SignText signs text as `solana sign-offchain-message` in Agave 3.x does
// (v0 layout, zero application domain, the key as only signer) and
// returns the message bytes (base64) and the signature (base58). It is for
// tools and tests that hold the key, and for castd's own countersignatures.
func SignText(k *identity.Keypair, text string) (message, signature string, err error) {
	m, err := NewMessage(LayoutV0, []byte(text), k.Public())
	if err != nil {
		return "", "", err
	}
	raw, err := Encode(m)
	if err != nil {
		return "", "", err
	}
	return base64.StdEncoding.EncodeToString(raw), identity.EncodeBase58(k.Sign(raw)), nil
}

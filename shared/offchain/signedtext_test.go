package offchain

import (
	"encoding/base64"
	"errors"
	"testing"

	"github.com/blockcast/beacon/shared/identity"
)

func TestVerifyText(t *testing.T) {
	k, _ := identity.Generate()
	other, _ := identity.Generate()
	const text = "Blockcast test text; nonce: 1"
	msg, sig, err := SignText(k, text)
	if err != nil {
		t.Fatal(err)
	}
	legacy, _ := NewMessage(LayoutLegacy, []byte(text))
	legacyRaw, _ := Encode(legacy)
	legacySig := identity.EncodeBase58(k.Sign(legacyRaw))
	notSigner, _ := NewMessage(LayoutV0, []byte(text), other.Public())
	notSignerRaw, _ := Encode(notSigner)
	for _, tc := range []struct {
		name, text, msg, sig string
		want                 error
	}{
		{"v0 message (browser wallet)", text, msg, sig, nil},
		{"v0 from the text (Agave 3.x CLI)", text, "", sig, nil},
		{"legacy from the text (older CLIs)", text, "", legacySig, nil},
		{"legacy message", text, base64.StdEncoding.EncodeToString(legacyRaw), legacySig, nil},
		{"another text", "Blockcast test text; nonce: 2", "", sig, ErrBadSignature},
		{"message of another text", "other", msg, sig, ErrBadSignedText},
		{"v0 message not listing the signer", text, base64.StdEncoding.EncodeToString(notSignerRaw), identity.EncodeBase58(k.Sign(notSignerRaw)), ErrNotSigner},
		{"signature by another key", text, msg, identity.EncodeBase58(other.Sign(mustB64(msg))), ErrBadSignature},
		{"short signature", text, msg, "abc", ErrBadSignedText},
		{"bad base64", text, "!!", sig, ErrBadSignedText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyText(k.Public(), tc.text, tc.msg, tc.sig)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func mustB64(s string) []byte {
	b, _ := base64.StdEncoding.DecodeString(s)
	return b
}

func FuzzVerifyText(f *testing.F) {
	k, _ := identity.FromSeed(make([]byte, 32))
	msg, sig, _ := SignText(k, "hello")
	f.Add("hello", msg, sig)
	f.Add("hello", "", sig)
	f.Add("", "/3NvbGFuYSBvZmZjaGFpbgA=", "1")
	f.Fuzz(func(t *testing.T, text, msg, sig string) {
		raw, err := VerifyText(k.Public(), text, msg, sig)
		if err != nil {
			return
		}
		m, err := Decode(raw)
		if err != nil || string(m.Body) != text {
			t.Fatalf("accepted bytes that are not a message of the text: %v", err)
		}
	})
}

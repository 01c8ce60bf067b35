package offchain

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
)

// Sentinel errors for delegations.
var (
	// ErrBadDelegation is wrapped when a Delegation's fields do not decode,
	// its message is not a valid off-chain message (the message error is
	// wrapped too), or the body is not a delegation text in canonical form.
	ErrBadDelegation = errors.New("offchain: malformed delegation")
	// ErrBadSignature means the owner's signature does not verify over the
	// message bytes.
	ErrBadSignature = errors.New("offchain: owner signature does not verify")
	// ErrWrongOwner means the text names an owner other than the signer.
	ErrWrongOwner = errors.New("offchain: delegation text names another owner")
	// ErrWrongNode means the delegation is for another node.
	ErrWrongNode = errors.New("offchain: delegation is for another node")
	// ErrNotSigner means a v0-layout message does not list the owner among
	// its signers.
	ErrNotSigner = errors.New("offchain: owner is not a signer of the message")
)

const delegationTitle = "Blockcast node delegation v1"

// DelegationText is the canonical body an owner signs to delegate to node:
//
//	Blockcast node delegation v1; owner: <owner>; node: <node>; issued: <time>
//
// with base58 keys and the time in RFC 3339, UTC, whole seconds. It is one
// line of printable ASCII: message format 0, which a Ledger shows in full
// (a newline would make it format 1, blind-signed only), and a single shell
// argument to `solana sign-offchain-message -k <owner keypair> "<text>"`.
func DelegationText(owner, node identity.PublicKey, issued time.Time) string {
	return delegationTitle + "; owner: " + owner.String() + "; node: " + node.String() +
		"; issued: " + issued.UTC().Format(time.RFC3339)
}

// ParseDelegationText parses a body made by DelegationText, refusing any
// other spelling of it.
func ParseDelegationText(text string) (owner, node identity.PublicKey, issued time.Time, err error) {
	fail := func(format string, args ...any) (identity.PublicKey, identity.PublicKey, time.Time, error) {
		return identity.PublicKey{}, identity.PublicKey{}, time.Time{},
			fmt.Errorf("%w: %s", ErrBadDelegation, fmt.Sprintf(format, args...))
	}
	parts := strings.Split(text, "; ")
	if len(parts) != 4 || parts[0] != delegationTitle {
		return fail("body is not a %q text", delegationTitle)
	}
	o, ok1 := strings.CutPrefix(parts[1], "owner: ")
	n, ok2 := strings.CutPrefix(parts[2], "node: ")
	t, ok3 := strings.CutPrefix(parts[3], "issued: ")
	if !ok1 || !ok2 || !ok3 {
		return fail("want fields owner, node, issued")
	}
	if owner, err = identity.ParsePublicKey(o); err != nil {
		return fail("owner: %v", err)
	}
	if node, err = identity.ParsePublicKey(n); err != nil {
		return fail("node: %v", err)
	}
	if issued, err = time.Parse(time.RFC3339, t); err != nil {
		return fail("issued: %v", err)
	}
	if DelegationText(owner, node, issued) != text {
		return fail("not in canonical form (UTC, whole seconds)")
	}
	return owner, node, issued.UTC(), nil
}

// maxMessageBase64 bounds Delegation.Message before decoding.
var maxMessageBase64 = base64.StdEncoding.EncodedLen(MaxLen)

// VerifyDelegation checks that d is a valid delegation to node and returns
// the owner wallet. d.Message must be a Solana off-chain message in either
// v0 layout (decoded strictly, any application domain) whose body is a
// DelegationText naming d.Owner and node; d.Signature must be d.Owner's
// ed25519 signature of exactly those message bytes; in the v0 layout the
// owner must be among the message's signers. It does not judge the issued
// time (see ParseDelegationText).
func VerifyDelegation(d protocol.Delegation, node identity.PublicKey) (identity.PublicKey, error) {
	var none identity.PublicKey
	owner, err := identity.ParsePublicKey(d.Owner)
	if err != nil {
		return none, fmt.Errorf("%w: owner: %w", ErrBadDelegation, err)
	}
	sig, err := decodeSignature(d.Signature)
	if err != nil {
		return none, err
	}
	if len(d.Message) > maxMessageBase64 {
		return none, fmt.Errorf("%w: message: %w", ErrBadDelegation, ErrTooLong)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(d.Message)
	if err != nil {
		return none, fmt.Errorf("%w: message is not standard base64: %w", ErrBadDelegation, err)
	}
	m, err := Decode(raw)
	if err != nil {
		return none, fmt.Errorf("%w: %w", ErrBadDelegation, err)
	}
	if !owner.Verify(raw, sig) {
		return none, ErrBadSignature
	}
	textOwner, textNode, _, err := ParseDelegationText(string(m.Body))
	if err != nil {
		return none, err
	}
	if textOwner != owner {
		return none, fmt.Errorf("%w: signed by %s, text names %s", ErrWrongOwner, owner, textOwner)
	}
	if textNode != node {
		return none, fmt.Errorf("%w: delegates to %s, not %s", ErrWrongNode, textNode, node)
	}
	if m.Layout == LayoutV0 && !isSigner(m.Signers, owner) {
		return none, fmt.Errorf("%w: %s", ErrNotSigner, owner)
	}
	return owner, nil
}

// AssembleDelegation turns what an operator has after running
//
//	solana sign-offchain-message -k <owner keypair> "<text>"
//
// (the owner address, the text and the printed base58 signature) into a
// Delegation. The CLI's version decides the layout it signed (v0 for Agave
// 3.x, legacy before), so both are tried and the one the signature verifies
// is kept. It checks the signature and that the text is a delegation from
// owner; VerifyDelegation then checks the node.
func AssembleDelegation(owner identity.PublicKey, text, signature string) (protocol.Delegation, error) {
	sig, err := decodeSignature(signature)
	if err != nil {
		return protocol.Delegation{}, err
	}
	textOwner, _, _, err := ParseDelegationText(text)
	if err != nil {
		return protocol.Delegation{}, err
	}
	if textOwner != owner {
		return protocol.Delegation{}, fmt.Errorf("%w: text names %s, signer is %s", ErrWrongOwner, textOwner, owner)
	}
	for _, layout := range []Layout{LayoutV0, LayoutLegacy} {
		var signers []identity.PublicKey
		if layout == LayoutV0 {
			signers = []identity.PublicKey{owner}
		}
		m, err := NewMessage(layout, []byte(text), signers...)
		if err != nil {
			return protocol.Delegation{}, fmt.Errorf("%w: %w", ErrBadDelegation, err)
		}
		raw, err := Encode(m)
		if err != nil {
			return protocol.Delegation{}, fmt.Errorf("%w: %w", ErrBadDelegation, err)
		}
		if owner.Verify(raw, sig) {
			return protocol.Delegation{
				Owner:     owner.String(),
				Message:   base64.StdEncoding.EncodeToString(raw),
				Signature: identity.EncodeBase58(sig),
			}, nil
		}
	}
	return protocol.Delegation{}, fmt.Errorf("%w: not a signature of this text by %s in either off-chain message layout", ErrBadSignature, owner)
}

// SignDelegation signs a delegation to node with the owner's keypair, as
// `solana sign-offchain-message` in Agave 3.x does (v0 layout, zero
// application domain, the owner as only signer). It is for tools and tests
// that hold the owner key; a router never should.
func SignDelegation(owner *identity.Keypair, node identity.PublicKey, issued time.Time) (protocol.Delegation, error) {
	text := DelegationText(owner.Public(), node, issued)
	m, err := NewMessage(LayoutV0, []byte(text), owner.Public())
	if err != nil {
		return protocol.Delegation{}, err
	}
	raw, err := Encode(m)
	if err != nil {
		return protocol.Delegation{}, err
	}
	return protocol.Delegation{
		Owner:     owner.ID(),
		Message:   base64.StdEncoding.EncodeToString(raw),
		Signature: identity.EncodeBase58(owner.Sign(raw)),
	}, nil
}

// maxSignatureBase58 is the longest base58 form of 64 bytes.
const maxSignatureBase58 = 88

func decodeSignature(s string) ([]byte, error) {
	if len(s) > maxSignatureBase58 {
		return nil, fmt.Errorf("%w: signature is %d characters, more than %d", ErrBadDelegation, len(s), maxSignatureBase58)
	}
	sig, err := identity.DecodeBase58(s)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadDelegation, err)
	}
	if len(sig) != identity.SignatureSize {
		return nil, fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadDelegation, len(sig), identity.SignatureSize)
	}
	return sig, nil
}

func isSigner(signers []identity.PublicKey, k identity.PublicKey) bool {
	for _, s := range signers {
		if s == k {
			return true
		}
	}
	return false
}

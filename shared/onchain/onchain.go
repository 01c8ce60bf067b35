// Package onchain defines what the beacon and castd anchor on Solana and
// how a transaction is checked against it: the memo that commits to a
// node's registration, the memo that records a CAST key, and CheckMemoTx.
// It is stdlib only (with shared/identity, shared/soltx): the beacon links
// it. castd checks the same memos with solana-go (cloud/onchain).
//
// A registration commitment is
//
//	"blockcast:reg:v1:" + base58(sha256(RegistrationBytes(node, reg)))
//
// and a CAST key record is
//
//	"blockcast:cast:v1:" + base58(CAST public key)
//
// each the data of one Memo program instruction whose only account is the
// committing key as a signer (so the Memo program, and anyone reading the
// chain later, checks that the key itself signed it).
package onchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/protocol"
	"github.com/blockcast/beacon/shared/soltx"
)

// Memo prefixes: the version is part of the text, so a later format gets
// a new prefix and old records keep their meaning.
const (
	RegistrationPrefix = "blockcast:reg:v1:"
	CastKeyPrefix      = "blockcast:cast:v1:"
)

// Sentinel errors of CheckMemoTx; callers branch on them (castd maps them
// to refusal reasons).
var (
	// ErrNotSigned: the key is not a signer of the transaction, or its
	// signature does not verify.
	ErrNotSigned = errors.New("onchain: transaction not signed by the key")
	// ErrMemoMismatch: no Memo instruction signed by the key carries the
	// expected text.
	ErrMemoMismatch = errors.New("onchain: memo does not match")
)

// canonical is the committed part of a registration, in a fixed field
// order. The LAN URL and the firmware version are left out on purpose:
// they change without the owner's say (DHCP, upgrades), and a new
// transaction for each would cost the node fees for nothing anyone is paid
// on. What is committed is who the node is, who owns it, and what it
// claims to serve.
type canonical struct {
	V            int      `json:"v"`
	Node         string   `json:"node"`
	Role         string   `json:"role"`
	Capabilities []string `json:"capabilities"`
	CIDRs        []string `json:"cidrs"`
	Owner        string   `json:"owner"`
	DelegSig     string   `json:"delegation_sig"`
}

// RegistrationBytes returns the canonical bytes a registration commitment
// hashes: compact JSON, keys in the order v, node, role, capabilities,
// cidrs, owner, delegation_sig, lists in the order the registration gives
// them (empty lists as []), no HTML escaping, no trailing newline. owner
// and delegation_sig are the delegation's (empty without one).
func RegistrationBytes(node identity.PublicKey, reg protocol.Registration) []byte {
	c := canonical{V: 1, Node: node.String(), Role: reg.Role, Capabilities: reg.Capabilities, CIDRs: reg.CIDRs}
	if c.Capabilities == nil {
		c.Capabilities = []string{}
	}
	if c.CIDRs == nil {
		c.CIDRs = []string{}
	}
	if d := reg.Delegation; d != nil {
		c.Owner, c.DelegSig = d.Owner, d.Signature
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(c) // strings and string slices only: cannot fail
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// RegistrationMemo is the memo that commits to reg made by node.
func RegistrationMemo(node identity.PublicKey, reg protocol.Registration) string {
	sum := sha256.Sum256(RegistrationBytes(node, reg))
	return RegistrationPrefix + identity.EncodeBase58(sum[:])
}

// CastKeyMemo is the memo that records a CAST key on chain.
func CastKeyMemo(key identity.PublicKey) string {
	return CastKeyPrefix + key.String()
}

// ParseSignature parses a base58 transaction signature (a transaction ID).
func ParseSignature(s string) (soltx.Signature, error) {
	var sig soltx.Signature
	if len(s) == 0 || len(s) > 88 {
		return sig, fmt.Errorf("transaction signature %q: want 64 bytes in base58", clip(s))
	}
	b, err := identity.DecodeBase58(s)
	if err != nil || len(b) != len(sig) {
		return sig, fmt.Errorf("transaction signature %q: want 64 bytes in base58", clip(s))
	}
	copy(sig[:], b)
	return sig, nil
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// CheckMemoTx checks a transaction read from the chain against what it
// must record: every signature verifies (a lying RPC endpoint cannot hand
// us a forged one), key is a required signer, and a Memo instruction that
// lists key as a signer carries exactly memo.
func CheckMemoTx(tx *soltx.Transaction, key identity.PublicKey, memo string) error {
	if err := tx.Verify(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSigned, err)
	}
	signers := tx.Message.Signers()
	idx := -1
	for i, s := range signers {
		if s == key {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("%w: %s is not among the signers", ErrNotSigned, key)
	}
	var seen []string
	for _, ix := range tx.Message.Instructions {
		if tx.Message.AccountKeys[ix.ProgramIDIndex] != soltx.MemoProgramID {
			continue
		}
		seen = append(seen, clip(string(ix.Data)))
		if string(ix.Data) != memo {
			continue
		}
		for _, a := range ix.Accounts {
			if int(a) == idx {
				return nil
			}
		}
	}
	if len(seen) == 0 {
		return fmt.Errorf("%w: the transaction has no memo", ErrMemoMismatch)
	}
	return fmt.Errorf("%w: want %q signed by %s, the transaction has %q", ErrMemoMismatch, memo, key, seen)
}

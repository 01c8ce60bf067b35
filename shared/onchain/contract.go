package onchain

import (
	"errors"
	"fmt"
	"strings"
)

// A capacity contract is anchored by the memo
//
//	"blockcast:contract:v1:" + contract ID
//
// where the contract ID is the lowercase hex SHA-256 of the owner's
// signed offer message (cloud/contracts.ID), as castd's API names it. The
// CAST key signs it (the countersigned contract exists); the owner may
// record the same text with its wallet (the offer was made). Which key
// signed tells the two apart.

// ContractPrefix starts a contract anchor's memo.
const ContractPrefix = "blockcast:contract:v1:"

// ErrBadContractMemo: not a contract anchor memo.
var ErrBadContractMemo = errors.New("onchain: not a contract memo")

const contractIDLen = 64 // hex SHA-256

// ContractMemo is the memo that anchors contract id.
func ContractMemo(id string) (string, error) {
	if !validContractID(id) {
		return "", fmt.Errorf("%w: contract ID %q: want 64 lowercase hex digits", ErrBadContractMemo, clip(id))
	}
	return ContractPrefix + id, nil
}

// ParseContractMemo returns the contract ID a memo names.
func ParseContractMemo(memo string) (string, error) {
	id, ok := strings.CutPrefix(memo, ContractPrefix)
	if !ok {
		return "", fmt.Errorf("%w: %q does not start with %s", ErrBadContractMemo, clip(memo), ContractPrefix)
	}
	if !validContractID(id) {
		return "", fmt.Errorf("%w: contract ID %q: want 64 lowercase hex digits", ErrBadContractMemo, clip(id))
	}
	return id, nil
}

// validContractID accepts only the canonical spelling, so one contract
// has one memo text.
func validContractID(id string) bool {
	if len(id) != contractIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

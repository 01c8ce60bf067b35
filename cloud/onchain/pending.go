package onchain

import (
	"context"
	"errors"
	"fmt"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
)

// ErrInFlight: a transaction sent earlier may still land; publish again
// only once it has landed or its blockhash has expired.
var ErrInFlight = errors.New("an earlier transaction may still land")

// Pending is a transaction signed and recorded before it was sent
// (PublishOptions.BeforeSend): what a publisher that must publish once,
// also across a crash, keeps.
type Pending struct {
	Signature string `json:"signature"`
	LastValid uint64 `json:"last_valid_block_height"`
}

// Landed is where a pending transaction landed.
type Landed struct {
	Signature string
	Slot      uint64
}

// Resolve looks for pending transactions on chain: one confirmed is
// returned (ok); while any may still land, ErrInFlight; when all have
// expired without landing, ok is false and nil is returned: publish again.
func Resolve(ctx context.Context, cl *rpc.Client, pending []Pending) (l Landed, ok bool, err error) {
	if len(pending) == 0 {
		return Landed{}, false, nil
	}
	sigs := make([]solana.Signature, 0, len(pending))
	var lastValid uint64
	for _, p := range pending {
		s, err := solana.SignatureFromBase58(p.Signature)
		if err != nil {
			return Landed{}, false, fmt.Errorf("stored pending signature %q: %w", p.Signature, err)
		}
		sigs = append(sigs, s)
		lastValid = max(lastValid, p.LastValid)
	}
	res, err := cl.GetSignatureStatuses(ctx, true, sigs...)
	if err != nil {
		return Landed{}, false, fmt.Errorf("%w: getSignatureStatuses: %w", ErrUnavailable, err)
	}
	if len(res.Value) != len(sigs) {
		return Landed{}, false, fmt.Errorf("%w: getSignatureStatuses answered %d of %d", ErrUnavailable, len(res.Value), len(sigs))
	}
	for i, s := range res.Value {
		if s == nil || s.Err != nil {
			continue
		}
		if s.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || s.ConfirmationStatus == rpc.ConfirmationStatusFinalized {
			return Landed{Signature: pending[i].Signature, Slot: s.Slot}, true, nil
		}
		return Landed{}, false, fmt.Errorf("%w: %s is %s", ErrInFlight, pending[i].Signature, s.ConfirmationStatus)
	}
	h, err := cl.GetBlockHeight(ctx, rpc.CommitmentConfirmed)
	if err != nil {
		return Landed{}, false, fmt.Errorf("%w: getBlockHeight: %w", ErrUnavailable, err)
	}
	if h <= lastValid {
		return Landed{}, false, fmt.Errorf("%w: not seen yet, valid until block height %d (now %d)", ErrInFlight, lastValid, h)
	}
	return Landed{}, false, nil
}

package onchain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"

	"github.com/blockcast/beacon/shared/identity"
)

// PublishOptions tune Publish; zero fields take the defaults.
type PublishOptions struct {
	Timeout  time.Duration // all attempts (90 s)
	Poll     time.Duration // status polling (1 s)
	Attempts int           // fresh blockhashes tried (3)
}

// Publish records memo in a transaction signed and paid for by key (the
// CAST key), waits until it is confirmed and returns its signature and
// slot. An expired blockhash gets a fresh one, up to Attempts times.
func Publish(ctx context.Context, cl *rpc.Client, key *identity.Keypair, memo string, o PublishOptions) (solana.Signature, uint64, error) {
	if o.Timeout <= 0 {
		o.Timeout = 90 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	pk := solana.PrivateKey(key.PrivateKey())
	payer := pk.PublicKey()
	var last error
	for attempt := 0; attempt < o.Attempts; attempt++ {
		bh, err := cl.GetLatestBlockhash(ctx, rpc.CommitmentConfirmed)
		if err != nil {
			return solana.Signature{}, 0, fmt.Errorf("%w: getLatestBlockhash: %w", ErrUnavailable, err)
		}
		// The Memo instruction is built with the program ID directly:
		// solana-go's programs/memo helper prepends a length byte.
		ix := solana.NewInstruction(solana.MemoProgramID, solana.AccountMetaSlice{solana.Meta(payer).SIGNER()}, []byte(memo))
		tx, err := solana.NewTransaction([]solana.Instruction{ix}, bh.Value.Blockhash, solana.TransactionPayer(payer))
		if err != nil {
			return solana.Signature{}, 0, err
		}
		if _, err := tx.Sign(func(k solana.PublicKey) *solana.PrivateKey {
			if k == payer {
				return &pk
			}
			return nil
		}); err != nil {
			return solana.Signature{}, 0, err
		}
		sig := tx.Signatures[0]
		_, err = cl.SendTransactionWithOpts(ctx, tx, rpc.TransactionOpts{PreflightCommitment: rpc.CommitmentConfirmed})
		if err != nil && !isTxError(err, "AlreadyProcessed", "already been processed") {
			if isTxError(err, "BlockhashNotFound", "Blockhash not found") {
				last = err
				continue
			}
			return solana.Signature{}, 0, fmt.Errorf("sending %s: %w", sig, err)
		}
		slot, err := waitConfirmed(ctx, cl, sig, bh.Value.LastValidBlockHeight, o.Poll)
		if errors.Is(err, errExpired) {
			last = err
			continue
		}
		if err != nil {
			return solana.Signature{}, 0, err
		}
		return sig, slot, nil
	}
	return solana.Signature{}, 0, fmt.Errorf("%d attempts, the blockhash expired each time: %w", o.Attempts, last)
}

var errExpired = errors.New("blockhash expired before confirmation")

func waitConfirmed(ctx context.Context, cl *rpc.Client, sig solana.Signature, lastValid uint64, poll time.Duration) (uint64, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		st, err := cl.GetSignatureStatuses(ctx, true, sig)
		if err == nil && len(st.Value) == 1 && st.Value[0] != nil {
			s := st.Value[0]
			if s.Err != nil {
				return 0, fmt.Errorf("%w: %s: %v", ErrFailed, sig, s.Err)
			}
			if s.ConfirmationStatus == rpc.ConfirmationStatusConfirmed || s.ConfirmationStatus == rpc.ConfirmationStatusFinalized {
				return s.Slot, nil
			}
		} else if err == nil {
			if h, err := cl.GetBlockHeight(ctx, rpc.CommitmentConfirmed); err == nil && h > lastValid {
				return 0, fmt.Errorf("%w: %s", errExpired, sig)
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for %s to be confirmed: %w", sig, ctx.Err())
		case <-t.C:
		}
	}
}

// isTxError reports whether err is a preflight refusal with the given
// TransactionError (or message text).
func isTxError(err error, name, text string) bool {
	var re *jsonrpc.RPCError
	if !errors.As(err, &re) {
		return false
	}
	if strings.Contains(re.Message, text) {
		return true
	}
	if m, ok := re.Data.(map[string]any); ok {
		if s, ok := m["err"].(string); ok && s == name {
			return true
		}
	}
	return false
}

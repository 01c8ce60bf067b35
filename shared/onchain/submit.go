package onchain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/solrpc"
	"github.com/blockcast/beacon/shared/soltx"
)

// Defaults of SubmitOptions.
const (
	DefaultSubmitTimeout = 90 * time.Second
	DefaultPoll          = time.Second
	DefaultAttempts      = 3
)

var (
	// ErrTxFailed: the transaction landed with an error.
	ErrTxFailed = errors.New("onchain: transaction failed on chain")
	// ErrExpired: the blockhash expired before the transaction was
	// confirmed (it can no longer land).
	ErrExpired = errors.New("onchain: blockhash expired before confirmation")
)

// SubmitOptions tune Submit and SendSigned; zero fields take the defaults.
type SubmitOptions struct {
	Timeout  time.Duration // whole submission, all attempts (DefaultSubmitTimeout)
	Poll     time.Duration // status polling interval (DefaultPoll)
	Attempts int           // fresh blockhashes tried (DefaultAttempts)
	Logger   *slog.Logger
}

func (o *SubmitOptions) defaults() {
	if o.Timeout <= 0 {
		o.Timeout = DefaultSubmitTimeout
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Submit records memo on chain in a transaction signed and paid for by
// key, and waits until it is confirmed. When the blockhash expires first
// (the endpoint refuses it, or the transaction was dropped and the chain
// moved past its last valid height) it builds the transaction again with a
// fresh one, up to Attempts times. It returns the transaction's ID and
// slot.
func Submit(ctx context.Context, c *solrpc.Client, key *identity.Keypair, memo string, o SubmitOptions) (soltx.Signature, uint64, error) {
	o.defaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var last error
	for attempt := 1; attempt <= o.Attempts; attempt++ {
		bh, err := c.LatestBlockhash(ctx)
		if err != nil {
			return soltx.Signature{}, 0, fmt.Errorf("onchain: getting a blockhash: %w", err)
		}
		tx, err := soltx.NewMemo(key, key.Public(), bh.Hash, []byte(memo))
		if err != nil {
			return soltx.Signature{}, 0, fmt.Errorf("onchain: %w", err)
		}
		slot, err := sendAndConfirm(ctx, c, tx, bh.LastValidBlockHeight, o)
		if err == nil {
			return tx.ID(), slot, nil
		}
		if !errors.Is(err, solrpc.ErrBlockhashNotFound) && !errors.Is(err, ErrExpired) {
			return soltx.Signature{}, 0, err
		}
		last = err
		o.Logger.Warn("on-chain memo: blockhash expired; retrying with a fresh one", "attempt", attempt, "tx", tx.ID(), "err", err)
	}
	return soltx.Signature{}, 0, fmt.Errorf("onchain: %d attempts: %w", o.Attempts, last)
}

// SendSigned sends a transaction that is already completely signed (the
// owner paid and signed it) and waits until it is confirmed. It cannot be
// rebuilt here: when its blockhash expired, the owner signs a new one.
func SendSigned(ctx context.Context, c *solrpc.Client, tx *soltx.Transaction, o SubmitOptions) (uint64, error) {
	o.defaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	bh, err := c.BlockHeight(ctx)
	if err != nil {
		return 0, fmt.Errorf("onchain: %w", err)
	}
	// A blockhash is valid for 150 blocks: bound the wait by that.
	return sendAndConfirm(ctx, c, tx, bh+150, o)
}

func sendAndConfirm(ctx context.Context, c *solrpc.Client, tx *soltx.Transaction, lastValid uint64, o SubmitOptions) (uint64, error) {
	if _, err := c.SendTransaction(ctx, tx); err != nil && !errors.Is(err, solrpc.ErrAlreadyProcessed) {
		return 0, fmt.Errorf("onchain: sending %s: %w", tx.ID(), err)
	}
	t := time.NewTicker(o.Poll)
	defer t.Stop()
	for {
		st, err := c.SignatureStatuses(ctx, tx.ID())
		if err != nil && ctx.Err() == nil {
			o.Logger.Warn("on-chain memo: status", "tx", tx.ID(), "err", err)
		}
		if err == nil && st[0] != nil {
			if st[0].Err != nil {
				return 0, fmt.Errorf("%w: %s: %s", ErrTxFailed, tx.ID(), st[0].Err)
			}
			if st[0].Confirmed() {
				return st[0].Slot, nil
			}
		} else if err == nil {
			if h, err := c.BlockHeight(ctx); err == nil && h > lastValid {
				return 0, fmt.Errorf("%w: %s (block height %d past %d)", ErrExpired, tx.ID(), h, lastValid)
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("onchain: waiting for %s to be confirmed: %w", tx.ID(), ctx.Err())
		case <-t.C:
		}
	}
}

// Record is a transaction found on chain and checked.
type Record struct {
	Signature soltx.Signature
	Slot      uint64
	BlockTime int64
}

// Check reads the transaction sig from the chain and checks that it
// succeeded, is confirmed, is signed by key and carries memo
// (CheckMemoTx). solrpc.ErrNotFound when the chain does not have it.
func Check(ctx context.Context, c *solrpc.Client, sig soltx.Signature, key identity.PublicKey, memo string) (Record, error) {
	l, err := c.Transaction(ctx, sig)
	if err != nil {
		return Record{}, err
	}
	if l.Err != nil {
		return Record{}, fmt.Errorf("%w: %s: %s", ErrTxFailed, sig, l.Err)
	}
	if err := CheckMemoTx(l.Tx, key, memo); err != nil {
		return Record{}, err
	}
	return Record{Signature: sig, Slot: l.Slot, BlockTime: l.BlockTime}, nil
}

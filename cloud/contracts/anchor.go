package contracts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	bolt "go.etcd.io/bbolt"

	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/solrpc"
)

// Anchoring: each accepted contract is recorded on chain by the memo
// onchain.ContractMemo(ID), in a transaction the CAST key signs and pays.
// As the daily anchor (cloud/anchor) does, the signed transaction is
// recorded before it is sent and looked for on chain before another is
// made, so a contract is anchored once, also across a crash.

var bucketAnchors = []byte("anchors")

// ErrNotAnchored: the contract's anchor is not on chain as it must be.
var ErrNotAnchored = errors.New("contracts: contract not anchored")

// AnchorState is a contract's anchor, as stored beside it.
type AnchorState struct {
	Memo      string            `json:"memo"`
	Signature string            `json:"signature,omitempty"` // once confirmed
	Slot      uint64            `json:"slot,omitempty"`
	Pending   []cloudon.Pending `json:"pending,omitempty"` // sent, not seen confirmed yet
	Done      time.Time         `json:"done,omitzero"`
}

// Anchored reports whether the anchor is confirmed on chain.
func (st AnchorState) Anchored() bool { return st.Signature != "" }

// AnchorState returns contract id's anchor state (ok false: none yet).
func (s *Store) AnchorState(id string) (st AnchorState, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketAnchors).Get([]byte(id))
		if raw == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(raw, &st)
	})
	if err != nil {
		return AnchorState{}, false, fmt.Errorf("contracts: anchor of %s: %w", id, err)
	}
	return st, ok, nil
}

// PutAnchorState records contract id's anchor state (synced to disk
// before it returns: bbolt commits with fsync).
func (s *Store) PutAnchorState(id string, st AnchorState) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketAnchors).Put([]byte(id), raw) }); err != nil {
		return fmt.Errorf("contracts: recording the anchor of %s: %w", id, err)
	}
	return nil
}

// AnchorOptions configure an Anchorer.
type AnchorOptions struct {
	Store  *Store
	RPC    *rpc.Client
	Key    *identity.Keypair // the CAST key: signs and pays
	Poll   time.Duration     // transaction status polling (1 s)
	Retry  time.Duration     // first wait after a failed pass, doubling to an hour (10 s)
	Logger *slog.Logger
}

// Anchorer anchors accepted contracts.
type Anchorer struct {
	o    AnchorOptions
	log  *slog.Logger
	kick chan struct{}
}

// NewAnchorer returns an Anchorer.
func NewAnchorer(o AnchorOptions) (*Anchorer, error) {
	if o.Store == nil || o.RPC == nil || o.Key == nil {
		return nil, errors.New("contracts: Store, RPC and Key are required to anchor")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Retry <= 0 {
		o.Retry = 10 * time.Second
	}
	return &Anchorer{o: o, log: o.Logger.With("component", "contract-anchor"), kick: make(chan struct{}, 1)}, nil
}

// Kick asks for a pass now (a contract was accepted); it never blocks.
func (a *Anchorer) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run anchors contracts as they are accepted until ctx ends, retrying
// failures with a growing wait.
func (a *Anchorer) Run(ctx context.Context) {
	wait := a.o.Retry
	for {
		var retry <-chan time.Time
		if err := a.Pass(ctx); err != nil && ctx.Err() == nil {
			level := slog.LevelError
			if errors.Is(err, cloudon.ErrInFlight) {
				level = slog.LevelInfo
			}
			a.log.Log(ctx, level, "contract anchor not published yet (the CAST key pays the fee: keep it funded)", "err", err, "retry_in", wait)
			retry = time.After(wait)
			wait = min(wait*2, time.Hour)
		} else {
			wait = a.o.Retry
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-retry:
		}
	}
}

// Pass anchors every contract not anchored yet, oldest first; it goes on
// past one that fails and returns the first error.
func (a *Anchorer) Pass(ctx context.Context) error {
	var first error
	for _, c := range a.o.Store.List(nil) {
		if err := a.anchor(ctx, c.ID); err != nil {
			if first == nil {
				first = fmt.Errorf("contract %s: %w", c.ID, err)
			}
			if ctx.Err() != nil {
				return first
			}
		}
	}
	return first
}

func (a *Anchorer) anchor(ctx context.Context, id string) error {
	s := a.o.Store
	st, _, err := s.AnchorState(id)
	if err != nil || st.Anchored() {
		return err
	}
	if st.Memo, err = onchain.ContractMemo(id); err != nil {
		return err
	}
	if len(st.Pending) > 0 {
		l, ok, err := cloudon.Resolve(ctx, a.o.RPC, st.Pending)
		switch {
		case err != nil:
			return err
		case ok:
			a.log.Info("contract anchor found on chain (sent before a restart)", "id", id, "tx", l.Signature)
			return a.done(id, &st, l.Signature, l.Slot)
		}
		a.log.Info("earlier contract anchor transactions expired without landing; publishing again", "id", id, "expired", len(st.Pending))
		st.Pending = nil
	}
	sig, slot, err := cloudon.Publish(ctx, a.o.RPC, a.o.Key, st.Memo, cloudon.PublishOptions{Poll: a.o.Poll,
		BeforeSend: func(sig solana.Signature, lastValid uint64) error {
			st.Pending = append(st.Pending, cloudon.Pending{Signature: sig.String(), LastValid: lastValid})
			return s.PutAnchorState(id, st)
		}})
	if err != nil {
		return err
	}
	return a.done(id, &st, sig.String(), slot)
}

func (a *Anchorer) done(id string, st *AnchorState, sig string, slot uint64) error {
	st.Signature, st.Slot, st.Pending, st.Done = sig, slot, nil, time.Now().UTC()
	if err := a.o.Store.PutAnchorState(id, *st); err != nil {
		// On chain but not recorded: the next pass finds it (pending).
		return fmt.Errorf("recording the anchor %s: %w", sig, err)
	}
	a.log.Info("contract anchored on chain", "id", id, "tx", sig, "slot", slot, "memo", st.Memo)
	return nil
}

// CheckAnchor checks on chain that the transaction sig anchors c: c
// verifies on its own (its ID is its offer's, every signature holds), castKey
// (the checker's, never the contract's word) is the CAST that countersigned
// it, and sig is a confirmed, successful transaction signed by castKey whose
// Memo instruction (castKey its signer) is onchain.ContractMemo(c.ID).
// Refusals wrap ErrBadContract or ErrNotAnchored; anything else is the
// endpoint's failure, not a verdict.
func CheckAnchor(ctx context.Context, cl *solrpc.Client, c Contract, sig string, castKey identity.PublicKey) (onchain.Record, error) {
	if err := c.Verify(); err != nil {
		return onchain.Record{}, err
	}
	if c.Offer.Cast != castKey {
		return onchain.Record{}, fmt.Errorf("%w: countersigned by %s, not by the CAST key %s", ErrBadContract, c.Offer.Cast, castKey)
	}
	memo, err := onchain.ContractMemo(c.ID)
	if err != nil {
		return onchain.Record{}, fmt.Errorf("%w: %w", ErrBadContract, err)
	}
	if sig == "" {
		return onchain.Record{}, fmt.Errorf("%w: no anchor transaction named (castd anchors a contract soon after accepting it, with --solana-rpc)", ErrNotAnchored)
	}
	s, err := onchain.ParseSignature(sig)
	if err != nil {
		return onchain.Record{}, fmt.Errorf("%w: %w", ErrNotAnchored, err)
	}
	rec, err := onchain.Check(ctx, cl, s, castKey, memo)
	switch {
	case err == nil:
		return rec, nil
	case errors.Is(err, solrpc.ErrNotFound):
		return onchain.Record{}, fmt.Errorf("%w: transaction %s is not on chain (confirmed)", ErrNotAnchored, sig)
	case errors.Is(err, onchain.ErrNotSigned), errors.Is(err, onchain.ErrMemoMismatch), errors.Is(err, onchain.ErrTxFailed):
		return onchain.Record{}, fmt.Errorf("%w: %w", ErrNotAnchored, err)
	}
	return onchain.Record{}, err
}

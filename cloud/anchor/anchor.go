// Package anchor publishes the daily anchor: once a day has closed, the
// Merkle root over the receipts castd accepted in it goes on chain in a
// Memo transaction signed (and paid for) by the CAST key, one transaction a
// day instead of one a receipt. Each day's state is kept beside the
// receipts (receipts.Book): a day is published at most once, also across a
// crash between sending the transaction and recording it (the signature is
// recorded before it is sent, and looked for on chain before any new one).
package anchor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"

	cloudon "github.com/blockcast/beacon/cloud/onchain"
	"github.com/blockcast/beacon/cloud/receipts"
	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/receipt"
)

// ErrInFlight: a transaction sent for the day may still land; the day is
// tried again once it has landed or its blockhash has expired.
var ErrInFlight = cloudon.ErrInFlight

// Options configure an Anchorer.
type Options struct {
	Book   *receipts.Book
	RPC    *rpc.Client
	Key    *identity.Keypair // the CAST key: signs and pays
	Poll   time.Duration     // transaction status polling (1 s)
	Logger *slog.Logger
	Now    func() time.Time
	// Grace is how long after a day ends it is anchored, so that a
	// receipt being stored at midnight is in (default: a twentieth of the
	// day, at most a minute).
	Grace time.Duration
	// Retry is the first wait after a failed pass (doubling to an hour;
	// default 10 s, shorter days: a fifth of the day).
	Retry time.Duration
}

// Anchorer publishes each closed day's root.
type Anchorer struct {
	o   Options
	log *slog.Logger
}

// New returns an Anchorer.
func New(o Options) (*Anchorer, error) {
	if o.Book == nil || o.RPC == nil || o.Key == nil {
		return nil, errors.New("anchor: Book, RPC and Key are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	day := o.Book.DayLength()
	if o.Grace <= 0 {
		o.Grace = min(day/20, time.Minute)
	}
	if o.Retry <= 0 {
		o.Retry = min(day/5, 10*time.Second)
	}
	return &Anchorer{o: o, log: o.Logger.With("component", "anchor")}, nil
}

// Run anchors each day as it closes until ctx ends, retrying failures
// with a growing wait.
func (a *Anchorer) Run(ctx context.Context) {
	day := a.o.Book.DayLength()
	wait := a.o.Retry
	for {
		next := min(day/4, time.Minute)
		if err := a.Pass(ctx); err != nil && ctx.Err() == nil {
			level := slog.LevelError
			if errors.Is(err, ErrInFlight) {
				level = slog.LevelInfo
			}
			a.log.Log(ctx, level, "daily anchor not published yet (the CAST key pays the fee: keep it funded)", "err", err, "retry_in", wait)
			next, wait = wait, min(wait*2, time.Hour)
		} else {
			wait = a.o.Retry
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// Pass anchors every closed day not anchored yet, oldest first; it stops
// at the first that fails.
func (a *Anchorer) Pass(ctx context.Context) error {
	b := a.o.Book
	day := b.DayLength()
	closed := b.DayStart(a.o.Now().Add(-a.o.Grace)) // days before this one have closed
	through := b.AnchoredThrough()
	if !through.Before(closed) {
		return nil
	}
	days, err := b.Days(through, closed)
	if err != nil {
		return err
	}
	for _, d := range days {
		if err := a.anchorDay(ctx, d); err != nil {
			return fmt.Errorf("anchor: day %s: %w", onchain.DayLabel(d, day), err)
		}
	}
	return b.SetAnchoredThrough(closed)
}

// anchorDay publishes day d's root unless it is already on chain.
func (a *Anchorer) anchorDay(ctx context.Context, d time.Time) error {
	b := a.o.Book
	st, ok, err := b.AnchorState(d)
	if err != nil {
		return err
	}
	if ok && st.Anchored() {
		return nil
	}
	root, n, err := b.DayRoot(d)
	if err != nil {
		return err
	}
	label := onchain.DayLabel(d, b.DayLength())
	if ok && (st.Root != receipt.HexHash(root).String() || st.Count != uint64(n)) {
		// Cannot happen (a closed day gains no receipts); say so if it does.
		a.log.Error("a closed day's root changed before it was anchored", "day", label, "was", st.Root, "now", receipt.HexHash(root).String())
	}
	st.Day, st.Root, st.Count = label, receipt.HexHash(root).String(), uint64(n)
	st.Memo = onchain.DayMemo(label, root, uint64(n))
	if len(st.Pending) > 0 {
		landed, err := a.resolve(ctx, d, &st)
		if err != nil || landed {
			return err
		}
	}
	sig, slot, err := cloudon.Publish(ctx, a.o.RPC, a.o.Key, st.Memo, cloudon.PublishOptions{Poll: a.o.Poll,
		BeforeSend: func(sig solana.Signature, lastValid uint64) error {
			st.Pending = append(st.Pending, PendingTx(sig, lastValid))
			return b.PutAnchorState(d, st)
		}})
	if err != nil {
		return err
	}
	return a.done(d, &st, sig.String(), slot)
}

// PendingTx is the record of a transaction about to be sent.
func PendingTx(sig solana.Signature, lastValid uint64) receipts.PendingTx {
	return receipts.PendingTx{Signature: sig.String(), LastValid: lastValid}
}

func (a *Anchorer) done(d time.Time, st *receipts.AnchorState, sig string, slot uint64) error {
	st.Signature, st.Slot, st.Pending, st.Done = sig, slot, nil, a.o.Now().UTC()
	if err := a.o.Book.PutAnchorState(d, *st); err != nil {
		// On chain but not recorded: the next pass finds it (pending).
		return fmt.Errorf("recording the anchor %s: %w", sig, err)
	}
	a.log.Info("daily anchor published", "day", st.Day, "receipts", st.Count, "root", st.Root, "tx", sig, "slot", slot)
	return nil
}

// resolve looks for the day's pending transactions on chain
// (cloudon.Resolve): one landed makes the day done (true); while any may
// still land, ErrInFlight; when all have expired without landing, they are
// forgotten and the day is published again (false).
func (a *Anchorer) resolve(ctx context.Context, d time.Time, st *receipts.AnchorState) (bool, error) {
	pending := make([]cloudon.Pending, len(st.Pending))
	for i, p := range st.Pending {
		pending[i] = cloudon.Pending{Signature: p.Signature, LastValid: p.LastValid}
	}
	l, ok, err := cloudon.Resolve(ctx, a.o.RPC, pending)
	switch {
	case err != nil:
		return false, err
	case ok:
		a.log.Info("daily anchor found on chain (sent before a restart)", "day", st.Day, "tx", l.Signature)
		return true, a.done(d, st, l.Signature, l.Slot)
	}
	a.log.Info("earlier anchor transactions expired without landing; publishing the day again", "day", st.Day, "expired", len(st.Pending))
	st.Pending = nil
	return false, nil
}

// Package onchain is castd's side of on-chain anchoring, with solana-go's
// RPC client: it verifies that a node's registration is recorded by a
// confirmed Memo transaction the node signed (caching what it verified in
// a bbolt file), and publishes castd's CAST key the same way. The memo
// texts are defined in shared/onchain, which the beacon links too.
package onchain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	solana "github.com/gagliardetto/solana-go"
	"github.com/gagliardetto/solana-go/rpc"
	"github.com/gagliardetto/solana-go/rpc/jsonrpc"
	"go.etcd.io/bbolt"

	"github.com/blockcast/beacon/shared/identity"
	sharedon "github.com/blockcast/beacon/shared/onchain"
)

// Refusal reasons: every error Verify returns wraps exactly one of them.
var (
	// ErrBadReference: the registration names no well-formed signature.
	ErrBadReference = errors.New("malformed transaction reference")
	// ErrNotFound: the chain has no confirmed transaction with that
	// signature (never sent, dropped, expired, or not confirmed yet).
	ErrNotFound = errors.New("transaction not found or not confirmed")
	// ErrFailed: the transaction landed with an error.
	ErrFailed = errors.New("transaction failed on chain")
	// ErrNotSigned: the node did not sign the transaction.
	ErrNotSigned = errors.New("transaction not signed by the node key")
	// ErrMemoMismatch: the transaction's memo is not this registration's.
	ErrMemoMismatch = errors.New("memo does not match the registration")
	// ErrUnavailable: the RPC endpoint did not answer; try again later.
	ErrUnavailable = errors.New("solana RPC endpoint unavailable")
)

var bucketVerified = []byte("verified")

// Verifier checks transactions against an RPC endpoint and remembers what
// it verified.
type Verifier struct {
	rpc *rpc.Client
	db  *bbolt.DB
	log *slog.Logger
}

// Record is a verified transaction, as cached.
type Record struct {
	Signature string    `json:"signature"`
	Signer    string    `json:"signer"`
	Memo      string    `json:"memo"`
	Slot      uint64    `json:"slot"`
	Verified  time.Time `json:"verified"`
}

// Open returns a verifier for the endpoint at rpcURL that caches in the
// bbolt file at dbPath.
func Open(rpcURL, dbPath string, log *slog.Logger) (*Verifier, error) {
	if log == nil {
		log = slog.Default()
	}
	db, err := bbolt.Open(dbPath, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("onchain: cache %s: %w", dbPath, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketVerified)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("onchain: cache %s: %w", dbPath, err)
	}
	return &Verifier{rpc: NewRPC(rpcURL), db: db, log: log}, nil
}

// Close closes the cache file.
func (v *Verifier) Close() error { return v.db.Close() }

// RPC is the solana-go client (for Publish).
func (v *Verifier) RPC() *rpc.Client { return v.rpc }

// cached returns the record of sig if it was verified for signer and memo.
func (v *Verifier) cached(sig solana.Signature, signer identity.PublicKey, memo string) (Record, bool) {
	var rec Record
	found := false
	_ = v.db.View(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketVerified).Get(sig[:])
		if raw != nil && json.Unmarshal(raw, &rec) == nil && rec.Signer == signer.String() && rec.Memo == memo {
			found = true
		}
		return nil
	})
	return rec, found
}

// Cached reports whether Verify would answer from the cache, without the
// endpoint.
func (v *Verifier) Cached(sigText string, signer identity.PublicKey, memo string) bool {
	s, err := sharedon.ParseSignature(sigText)
	if err != nil {
		return false
	}
	_, ok := v.cached(solana.Signature(s), signer, memo)
	return ok
}

// Verify checks that the transaction named by sigText is confirmed,
// succeeded, is signed by signer and carries memo in a Memo instruction
// signer signed. What it verified is cached: a transaction is immutable
// once confirmed, so the same (signature, signer, memo) is not asked for
// again; anything else goes to the chain.
func (v *Verifier) Verify(ctx context.Context, sigText string, signer identity.PublicKey, memo string) (Record, error) {
	s, err := sharedon.ParseSignature(sigText)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrBadReference, err)
	}
	sig := solana.Signature(s)
	if rec, ok := v.cached(sig, signer, memo); ok {
		return rec, nil
	}
	zero := uint64(0)
	out, err := v.rpc.GetTransaction(ctx, sig, &rpc.GetTransactionOpts{
		Encoding: solana.EncodingBase64, Commitment: rpc.CommitmentConfirmed, MaxSupportedTransactionVersion: &zero})
	switch {
	case errors.Is(err, rpc.ErrNotFound):
		return Record{}, fmt.Errorf("%w: %s", ErrNotFound, sig)
	case err != nil:
		var re *jsonrpc.RPCError
		if errors.As(err, &re) {
			return Record{}, fmt.Errorf("%w: getTransaction %s: %w", ErrUnavailable, sig, err)
		}
		return Record{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case out.Transaction == nil || out.Meta == nil:
		return Record{}, fmt.Errorf("%w: %s: the endpoint answered no transaction or metadata", ErrNotFound, sig)
	}
	if out.Meta.Err != nil {
		return Record{}, fmt.Errorf("%w: %s: %v", ErrFailed, sig, out.Meta.Err)
	}
	tx, err := decodeTx(out.Transaction.GetBinary())
	if err != nil {
		return Record{}, fmt.Errorf("%w: %s: %w", ErrNotFound, sig, err)
	}
	if err := checkTx(tx, sig, solana.PublicKey(signer), memo); err != nil {
		return Record{}, err
	}
	rec := Record{Signature: sig.String(), Signer: signer.String(), Memo: memo, Slot: out.Slot, Verified: time.Now().UTC()}
	raw, _ := json.Marshal(rec)
	if err := v.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketVerified).Put(sig[:], raw) }); err != nil {
		v.log.Warn("on-chain cache: storing a verified record", "sig", sig, "err", err)
	}
	return rec, nil
}

// decodeTx decodes wire bytes with solana-go, turning a panic of its
// decoder on hostile bytes into an error.
func decodeTx(b []byte) (tx *solana.Transaction, err error) {
	if len(b) == 0 {
		return nil, errors.New("empty transaction (want base64 encoding)")
	}
	defer func() {
		if r := recover(); r != nil {
			tx, err = nil, fmt.Errorf("undecodable transaction: %v", r)
		}
	}()
	tx, err = solana.TransactionFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("undecodable transaction: %w", err)
	}
	return tx, nil
}

// checkTx is the check of a decoded transaction: it is the one asked for,
// every signature verifies (a lying endpoint cannot forge one), signer is
// a required signer, and a Memo instruction listing signer as its signer
// carries memo exactly.
func checkTx(tx *solana.Transaction, sig solana.Signature, signer solana.PublicKey, memo string) error {
	if len(tx.Signatures) == 0 || tx.Signatures[0] != sig {
		return fmt.Errorf("%w: %s: the endpoint answered another transaction", ErrNotFound, sig)
	}
	if err := tx.VerifySignatures(); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrNotSigned, sig, err)
	}
	keys := tx.Message.AccountKeys // static keys: signers are always among them
	nsig := int(tx.Message.Header.NumRequiredSignatures)
	idx := -1
	for i := 0; i < nsig && i < len(keys); i++ {
		if keys[i] == signer {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("%w: %s is not a signer of %s", ErrNotSigned, signer, sig)
	}
	var memos []string
	for _, ix := range tx.Message.Instructions {
		if int(ix.ProgramIDIndex) >= len(keys) || keys[ix.ProgramIDIndex] != solana.MemoProgramID {
			continue
		}
		memos = append(memos, clip(string(ix.Data)))
		if string(ix.Data) != memo {
			continue
		}
		for _, a := range ix.Accounts {
			if int(a) == idx {
				return nil
			}
		}
	}
	if len(memos) == 0 {
		return fmt.Errorf("%w: %s has no memo", ErrMemoMismatch, sig)
	}
	return fmt.Errorf("%w: want %q signed by %s, %s has %q", ErrMemoMismatch, memo, signer, sig, memos)
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

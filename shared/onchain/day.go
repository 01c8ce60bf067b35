package onchain

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
	"github.com/blockcast/beacon/shared/solrpc"
)

// The daily anchor: once a UTC day has closed, castd publishes the Merkle
// root over the receipts it accepted in that day, in a Memo transaction
// signed by the CAST key:
//
//	"blockcast:day:v1:" + day + ":" + base58(root) + ":" + count
//
// day is the day's label (DayLabel: "2006-01-02" for a UTC day), root the
// RFC 9162 root over DayLeaf of each receipt (ordered by node ID, then
// sequence number) and count the number of leaves. One transaction a day
// instead of one a receipt; a DayProof carries one receipt to that root.

// DayPrefix starts a day anchor's memo.
const DayPrefix = "blockcast:day:v1:"

const dayDomain = "blockcast-day-v1\x00"

// MaxDayProof bounds a proof file (a receipt is bounded; the path is at
// most receipt.MaxProofLen hashes).
const MaxDayProof = 1 << 20

// Sentinel errors of DayProof checks.
var (
	// ErrBadDayProof: the proof does not hold on its own (malformed, the
	// receipt's signature, or its path to the root).
	ErrBadDayProof = errors.New("onchain: day proof does not hold")
	// ErrNotAnchored: the proof's root is not in a day anchor signed by
	// the CAST key on chain.
	ErrNotAnchored = errors.New("onchain: day root not anchored")
)

// DayLeaf is the leaf of a receipt (its hash, receipt.Signed.Hash) in a
// day's tree.
func DayLeaf(receiptHash receipt.Hash) receipt.Hash {
	b := make([]byte, 0, 1+len(dayDomain)+sha256.Size)
	b = append(b, 0)
	b = append(b, dayDomain...)
	b = append(b, receiptHash[:]...)
	return sha256.Sum256(b)
}

// DayLabel names the day (of length period) that starts at start: the
// UTC date for a 24-hour day, otherwise (shortened days, in tests) the
// start as 20060102T150405.000Z. Neither holds a ':' (the memo's
// separator).
func DayLabel(start time.Time, period time.Duration) string {
	if period == 24*time.Hour {
		return start.UTC().Format(time.DateOnly)
	}
	return start.UTC().Format("20060102T150405.000Z")
}

// DayMemo is the memo that anchors a day's root over count receipts.
func DayMemo(day string, root receipt.Hash, count uint64) string {
	return DayPrefix + day + ":" + identity.EncodeBase58(root[:]) + ":" + strconv.FormatUint(count, 10)
}

// validLabel: a label is short and only [0-9A-Za-z.-], so that a proof
// cannot make the memo it is checked against say something else.
func validLabel(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Anchor is where a day's root is recorded on chain.
type Anchor struct {
	Signature string `json:"signature"` // the Memo transaction's ID
	Slot      uint64 `json:"slot,omitempty"`
	Memo      string `json:"memo"`
	CastKey   string `json:"cast_key"`
}

// DayProof is one receipt's inclusion in its day's tree, and (once the
// day is anchored) where its root is on chain: self-contained, anyone can
// check it against the chain (Verify).
type DayProof struct {
	Day     string            `json:"day"` // DayLabel
	Index   uint64            `json:"index"`
	N       uint64            `json:"n"`
	Leaf    receipt.HexHash   `json:"leaf"`
	Proof   []receipt.HexHash `json:"proof"`
	Root    receipt.HexHash   `json:"root"`
	Receipt json.RawMessage   `json:"receipt"` // the signed receipt
	Anchor  *Anchor           `json:"anchor,omitempty"`
}

// DecodeDayProof parses a proof (a file, an API answer) strictly: known
// fields only, bounded size, a valid day label.
func DecodeDayProof(b []byte) (*DayProof, error) {
	if len(b) > MaxDayProof {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBadDayProof, len(b), MaxDayProof)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p DayProof
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDayProof, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the proof", ErrBadDayProof)
	}
	if !validLabel(p.Day) {
		return nil, fmt.Errorf("%w: day %q: want a day label such as 2026-12-05", ErrBadDayProof, clip(p.Day))
	}
	if len(p.Proof) > receipt.MaxProofLen {
		return nil, fmt.Errorf("%w: a path of %d hashes", ErrBadDayProof, len(p.Proof))
	}
	if len(p.Receipt) == 0 {
		return nil, fmt.Errorf("%w: no receipt", ErrBadDayProof)
	}
	return &p, nil
}

// Check verifies p on its own: the receipt is signed by the node it
// names, its hash is the leaf, and the leaf proves against p.Root. It
// returns the receipt.
func (p *DayProof) Check() (*receipt.Signed, error) {
	if !validLabel(p.Day) {
		return nil, fmt.Errorf("%w: day %q", ErrBadDayProof, clip(p.Day))
	}
	s, err := receipt.Decode(p.Receipt)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDayProof, err)
	}
	// The receipt names its signer: check it signed this.
	node, err := identity.ParsePublicKey(s.Receipt.Node)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDayProof, err)
	}
	if s, err = receipt.Open(p.Receipt, node); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDayProof, err)
	}
	if DayLeaf(s.Hash()) != receipt.Hash(p.Leaf) {
		return nil, fmt.Errorf("%w: %w: the receipt is not the leaf", ErrBadDayProof, receipt.ErrBadProof)
	}
	proof := make([]receipt.Hash, len(p.Proof))
	for i, h := range p.Proof {
		proof[i] = receipt.Hash(h)
	}
	if err := receipt.VerifyInclusion(receipt.Hash(p.Leaf), p.Index, p.N, proof, receipt.Hash(p.Root)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDayProof, err)
	}
	return s, nil
}

// Memo is the day anchor memo p's root must be in.
func (p *DayProof) Memo() string { return DayMemo(p.Day, receipt.Hash(p.Root), p.N) }

// Verify checks p on its own (Check) and then on chain: its anchor
// transaction is confirmed, succeeded, is signed by castKey (the caller's,
// never the proof's) and carries exactly the memo of p's day, root and
// count. It returns the receipt and the anchor as found.
func (p *DayProof) Verify(ctx context.Context, c *solrpc.Client, castKey identity.PublicKey) (*receipt.Signed, Record, error) {
	s, err := p.Check()
	if err != nil {
		return nil, Record{}, err
	}
	if p.Anchor == nil || p.Anchor.Signature == "" {
		return nil, Record{}, fmt.Errorf("%w: the proof names no anchor transaction (day %s not anchored yet?)", ErrNotAnchored, p.Day)
	}
	sig, err := ParseSignature(p.Anchor.Signature)
	if err != nil {
		return nil, Record{}, fmt.Errorf("%w: %w", ErrNotAnchored, err)
	}
	rec, err := Check(ctx, c, sig, castKey, p.Memo())
	switch {
	case err == nil:
		return s, rec, nil
	case errors.Is(err, solrpc.ErrNotFound):
		return nil, Record{}, fmt.Errorf("%w: transaction %s is not on chain (confirmed)", ErrNotAnchored, sig)
	case errors.Is(err, ErrNotSigned), errors.Is(err, ErrMemoMismatch), errors.Is(err, ErrTxFailed):
		return nil, Record{}, fmt.Errorf("%w: %w", ErrNotAnchored, err)
	default:
		return nil, Record{}, err // the endpoint: not a verdict on the proof
	}
}

package receipts

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/blockcast/beacon/shared/onchain"
	"github.com/blockcast/beacon/shared/receipt"
)

// The day's root is what the daily anchor publishes (a Memo transaction,
// one per day instead of one per receipt): the RFC 9162 Merkle root over
// the receipts castd accepted in that UTC day, each leaf the receipt's hash
// under its own domain, ordered by node ID then sequence number. Anyone
// holding a receipt and its proof can check it against the anchored root.

// DayLeaf is the leaf of a receipt (its hash, receipt.Signed.Hash) in a
// day's tree (onchain.DayLeaf: the beacon checks proofs too).
func DayLeaf(receiptHash receipt.Hash) receipt.Hash { return onchain.DayLeaf(receiptHash) }

type dayEntry struct {
	node string
	seq  uint64
	leaf receipt.Hash
}

// day lists the receipts accepted in day's UTC date, in tree order.
func (b *Book) day(day time.Time) ([]dayEntry, error) {
	from := b.DayStart(day)
	to := from.Add(b.opts.Day)
	var out []dayEntry
	err := b.db.View(func(tx *bolt.Tx) error {
		nodes := tx.Bucket(bucketNodes)
		return nodes.ForEachBucket(func(id []byte) error {
			rb := nodes.Bucket(id).Bucket(subReceipts)
			if rb == nil {
				return nil
			}
			return rb.ForEach(func(k, v []byte) error {
				var st stored
				if err := json.Unmarshal(v, &st); err != nil {
					return fmt.Errorf("receipt %s/%d: %w", id, getU64(k), err)
				}
				if st.Received.Before(from) || !st.Received.Before(to) {
					return nil
				}
				var h receipt.Hash
				if n, err := hex.Decode(h[:], []byte(st.Hash)); err != nil || n != len(h) {
					return fmt.Errorf("receipt %s/%d: bad hash", id, getU64(k))
				}
				out = append(out, dayEntry{node: string(id), seq: getU64(k), leaf: DayLeaf(h)})
				return nil
			})
		})
	})
	slices.SortFunc(out, func(a, b dayEntry) int {
		if c := bytes.Compare([]byte(a.node), []byte(b.node)); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	return out, err
}

// DayRoot is the root over day's accepted receipts and their number.
func (b *Book) DayRoot(day time.Time) (receipt.Hash, int, error) {
	es, err := b.day(day)
	if err != nil {
		return receipt.Hash{}, 0, fmt.Errorf("receipts: day root: %w", err)
	}
	leaves := make([]receipt.Hash, len(es))
	for i, e := range es {
		leaves[i] = e.leaf
	}
	return receipt.Root(leaves), len(es), nil
}

// DayProof is a receipt's inclusion in its day's tree.
type DayProof = onchain.DayProof

// DayStart is the start of the day (Options.Day long) that holds t.
// Days are aligned to the zero time, so a 24-hour day starts at UTC
// midnight.
func (b *Book) DayStart(t time.Time) time.Time { return t.UTC().Truncate(b.opts.Day) }

// DayLength is Options.Day.
func (b *Book) DayLength() time.Duration { return b.opts.Day }

// Prove returns node's receipt seq with its inclusion proof in the tree of
// the day castd accepted it.
func (b *Book) Prove(node string, seq uint64) (*DayProof, error) {
	raw, ok := b.Receipt(node, seq)
	if !ok {
		return nil, fmt.Errorf("receipts: no receipt %d of node %s", seq, node)
	}
	var received time.Time
	b.db.View(func(tx *bolt.Tx) error {
		var st stored
		if v := tx.Bucket(bucketNodes).Bucket([]byte(node)).Bucket(subReceipts).Get(u64(seq)); v != nil && json.Unmarshal(v, &st) == nil {
			received = st.Received
		}
		return nil
	})
	es, err := b.day(received)
	if err != nil {
		return nil, fmt.Errorf("receipts: prove: %w", err)
	}
	leaves := make([]receipt.Hash, len(es))
	idx := -1
	for i, e := range es {
		leaves[i] = e.leaf
		if e.node == node && e.seq == seq {
			idx = i
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("receipts: receipt %d of node %s not in its day", seq, node)
	}
	p, err := receipt.Proof(leaves, idx)
	if err != nil {
		return nil, err
	}
	out := &DayProof{Day: onchain.DayLabel(b.DayStart(received), b.opts.Day), Index: uint64(idx), N: uint64(len(leaves)),
		Leaf: receipt.HexHash(leaves[idx]), Root: receipt.HexHash(receipt.Root(leaves)), Receipt: raw}
	for _, h := range p {
		out.Proof = append(out.Proof, receipt.HexHash(h))
	}
	return out, nil
}

package receipts

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/blockcast/beacon/shared/identity"
	"github.com/blockcast/beacon/shared/receipt"
)

// The day's root is what the daily anchor publishes (a Memo transaction,
// one per day instead of one per receipt): the RFC 9162 Merkle root over
// the receipts castd accepted in that UTC day, each leaf the receipt's hash
// under its own domain, ordered by node ID then sequence number. Anyone
// holding a receipt and its proof can check it against the anchored root.

const dayDomain = "blockcast-day-v1\x00"

// DayLeaf is the leaf of a receipt (its hash, receipt.Signed.Hash) in a
// day's tree.
func DayLeaf(receiptHash receipt.Hash) receipt.Hash {
	b := make([]byte, 0, 1+len(dayDomain)+sha256.Size)
	b = append(b, 0)
	b = append(b, dayDomain...)
	b = append(b, receiptHash[:]...)
	return sha256.Sum256(b)
}

type dayEntry struct {
	node string
	seq  uint64
	leaf receipt.Hash
}

// day lists the receipts accepted in day's UTC date, in tree order.
func (b *Book) day(day time.Time) ([]dayEntry, error) {
	y, m, d := day.UTC().Date()
	from := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 1)
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
type DayProof struct {
	Day     string            `json:"day"` // YYYY-MM-DD, UTC
	Index   uint64            `json:"index"`
	N       uint64            `json:"n"`
	Leaf    receipt.HexHash   `json:"leaf"`
	Proof   []receipt.HexHash `json:"proof"`
	Root    receipt.HexHash   `json:"root"`
	Receipt json.RawMessage   `json:"receipt"` // the signed receipt
}

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
	out := &DayProof{Day: received.UTC().Format(time.DateOnly), Index: uint64(idx), N: uint64(len(leaves)),
		Leaf: receipt.HexHash(leaves[idx]), Root: receipt.HexHash(receipt.Root(leaves)), Receipt: raw}
	for _, h := range p {
		out.Proof = append(out.Proof, receipt.HexHash(h))
	}
	return out, nil
}

// Check verifies p on its own: the receipt is signed by the node it names,
// its hash is the leaf, and the leaf proves against p.Root (which the
// caller compares with the anchored root).
func (p *DayProof) Check() error {
	s, err := receipt.Decode(p.Receipt)
	if err != nil {
		return err
	}
	// The receipt names its signer: check it signed this.
	node, err := identity.ParsePublicKey(s.Receipt.Node)
	if err != nil {
		return err
	}
	if s, err = receipt.Open(p.Receipt, node); err != nil {
		return err
	}
	if DayLeaf(s.Hash()) != receipt.Hash(p.Leaf) {
		return fmt.Errorf("%w: the receipt is not the leaf", receipt.ErrBadProof)
	}
	proof := make([]receipt.Hash, len(p.Proof))
	for i, h := range p.Proof {
		proof[i] = receipt.Hash(h)
	}
	return receipt.VerifyInclusion(receipt.Hash(p.Leaf), p.Index, p.N, proof, receipt.Hash(p.Root))
}

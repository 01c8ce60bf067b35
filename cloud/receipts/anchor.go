package receipts

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What the daily anchor (cloud/anchor) keeps beside the receipts: each
// day's state, and up to when every day is done. Kept in the same file so
// that a day's root and its anchor cannot come apart.

var (
	bucketAnchor = []byte("anchor")
	keyThrough   = []byte("through")
)

// PendingTx is an anchor transaction signed and (maybe) sent but not yet
// known to have landed: recorded before it is sent, so that after a crash
// castd looks for it on chain before it publishes the day again.
type PendingTx struct {
	Signature string `json:"signature"`
	LastValid uint64 `json:"last_valid"` // the blockhash's last valid block height
}

// AnchorState is one day's anchor.
type AnchorState struct {
	Day       string      `json:"day"` // its label
	Root      string      `json:"root"`
	Count     uint64      `json:"count"`
	Memo      string      `json:"memo,omitempty"`
	Pending   []PendingTx `json:"pending,omitempty"`
	Signature string      `json:"signature,omitempty"` // set once confirmed
	Slot      uint64      `json:"slot,omitempty"`
	Done      time.Time   `json:"done,omitzero"`
}

// Anchored reports whether the day's anchor is confirmed on chain.
func (a *AnchorState) Anchored() bool { return a.Signature != "" }

// AnchorState returns the state of the day starting at start.
func (b *Book) AnchorState(start time.Time) (AnchorState, bool, error) {
	var st AnchorState
	var ok bool
	err := b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketAnchor)
		if bk == nil {
			return nil
		}
		raw := bk.Get(u64(uint64(start.UnixNano())))
		if raw == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(raw, &st)
	})
	if err != nil {
		return AnchorState{}, false, fmt.Errorf("receipts: anchor of %s: %w", start.UTC().Format(time.RFC3339), err)
	}
	return st, ok, nil
}

// PutAnchorState records the state of the day starting at start
// (committed to disk when it returns).
func (b *Book) PutAnchorState(start time.Time, st AnchorState) error {
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketAnchor)
		if err != nil {
			return err
		}
		return bk.Put(u64(uint64(start.UnixNano())), raw)
	})
}

// AnchoredThrough is the time before which every closed day is anchored
// (or had no receipts); zero at first.
func (b *Book) AnchoredThrough() time.Time {
	var t time.Time
	b.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket(bucketAnchor); bk != nil {
			if v := bk.Get(keyThrough); len(v) == 8 {
				t = time.Unix(0, int64(getU64(v))).UTC()
			}
		}
		return nil
	})
	return t
}

// SetAnchoredThrough records AnchoredThrough.
func (b *Book) SetAnchoredThrough(t time.Time) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketAnchor)
		if err != nil {
			return err
		}
		return bk.Put(keyThrough, u64(uint64(t.UnixNano())))
	})
}

// Days lists the starts of the days that hold receipts received in
// [from, to), oldest first: one pass over the receipts.
func (b *Book) Days(from, to time.Time) ([]time.Time, error) {
	seen := map[time.Time]bool{}
	err := b.db.View(func(tx *bolt.Tx) error {
		nodes := tx.Bucket(bucketNodes)
		return nodes.ForEachBucket(func(id []byte) error {
			rb := nodes.Bucket(id).Bucket(subReceipts)
			if rb == nil {
				return nil
			}
			return rb.ForEach(func(k, v []byte) error {
				var st struct {
					Received time.Time `json:"received"`
				}
				if err := json.Unmarshal(v, &st); err != nil {
					return fmt.Errorf("receipt %s/%d: %w", id, getU64(k), err)
				}
				if !st.Received.Before(from) && st.Received.Before(to) {
					seen[b.DayStart(st.Received)] = true
				}
				return nil
			})
		})
	})
	if err != nil {
		return nil, fmt.Errorf("receipts: days: %w", err)
	}
	out := make([]time.Time, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out, nil
}

// ReceivedDay is the start of the day castd accepted node's receipt seq
// in (false when it has no such receipt).
func (b *Book) ReceivedDay(node string, seq uint64) (time.Time, bool) {
	var at time.Time
	var ok bool
	b.db.View(func(tx *bolt.Tx) error {
		nb := tx.Bucket(bucketNodes).Bucket([]byte(node))
		if nb == nil || nb.Bucket(subReceipts) == nil {
			return nil
		}
		var st stored
		if v := nb.Bucket(subReceipts).Get(u64(seq)); v != nil && json.Unmarshal(v, &st) == nil {
			at, ok = b.DayStart(st.Received), true
		}
		return nil
	})
	return at, ok
}

package receipts

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/blockcast/beacon/cloud/contracts"
	"github.com/blockcast/beacon/shared/receipt"
)

// SourceReceipts names where the Book's served figures come from.
const SourceReceipts = "receipts"

// maxFlaggedShown bounds ServedFigures.Flagged.
const maxFlaggedShown = 8

// ServedBytes implements contracts.Served from the node's accepted
// receipts: bytes, requests and hit ratio (cache-hit bytes over all bytes,
// from the receipts' bytes by path) of the receipts whose interval overlaps
// [from, to). A receipt straddling an edge counts pro rata of its interval
// inside the window: a beacon serves through its interval, and a receipt
// says no more precisely when.
//
// A receipt flagged by the cross-checks (objects castd never gave the node,
// more requests than redirects, served while offline, a failed or refused
// audit, a second receipt for its seq or its time) is not counted at all:
// castd cannot tell which of its bytes are true, and counting up to some
// corroborated share would still pay a lie. Its bytes go to ExcludedBytes,
// and "seq N: reason" to Flagged, so the owner sees why.
//
// Received is set when the node has sent castd any receipt before to: from
// then on its figures come from receipts (zero when it sends none), so that
// a node cannot withhold receipts to be measured by its own counters.
func (b *Book) ServedBytes(node string, from, to time.Time) (contracts.ServedFigures, error) {
	f := contracts.ServedFigures{Source: SourceReceipts}
	lo, hi := from.UnixMilli(), to.UnixMilli()
	if lo >= hi {
		return f, nil
	}
	var bytes, reqs, hit, excluded float64
	err := b.db.View(func(tx *bolt.Tx) error {
		rb := get2(tx.Bucket(bucketNodes).Bucket([]byte(node)), subReceipts)
		if rb == nil {
			return nil
		}
		c := rb.Cursor()
		k, v := c.First()
		if k == nil {
			return nil
		}
		_, first, err := decodeForServed(k, v)
		if err != nil {
			return err
		}
		f.Received = first.Start < hi
		if !f.Received {
			return nil
		}
		// Accepted receipts never overlap, so in seq order their intervals
		// rise: find the first that ends after from by bisecting seqs.
		lastK, _ := c.Last()
		slo, shi := getU64(k), getU64(lastK)+1
		for slo < shi {
			mid := slo + (shi-slo)/2
			k, v := c.Seek(u64(mid))
			if k == nil {
				shi = mid
				continue
			}
			_, r, err := decodeForServed(k, v)
			if err != nil {
				return err
			}
			if r.End > lo {
				shi = mid
			} else {
				slo = getU64(k) + 1
			}
		}
		for k, v := c.Seek(u64(slo)); k != nil; k, v = c.Next() {
			st, r, err := decodeForServed(k, v)
			if err != nil {
				return err
			}
			if r.Start >= hi {
				break
			}
			inside := min(r.End, hi) - max(r.Start, lo)
			if inside <= 0 {
				continue
			}
			frac := float64(inside) / float64(r.End-r.Start)
			if len(st.Flags) > 0 {
				f.Excluded++
				excluded += float64(r.Bytes) * frac
				if len(f.Flagged) < maxFlaggedShown {
					f.Flagged = append(f.Flagged, fmt.Sprintf("seq %d: %s", r.Seq, strings.Join(st.Flags, ", ")))
				}
				continue
			}
			f.Receipts++
			bytes += float64(r.Bytes) * frac
			reqs += float64(r.Requests) * frac
			hit += float64(r.ByPath.Hit) * frac
		}
		return nil
	})
	if err != nil {
		return contracts.ServedFigures{}, fmt.Errorf("receipts: served by %s: %w", node, err)
	}
	if f.Excluded > maxFlaggedShown {
		f.Flagged = append(f.Flagged, fmt.Sprintf("and %d more", f.Excluded-maxFlaggedShown))
	}
	f.Bytes, f.Requests, f.ExcludedBytes = uint64(bytes+0.5), uint64(reqs+0.5), uint64(excluded+0.5)
	if bytes > 0 {
		f.HitRatio = hit / bytes
	}
	return f, nil
}

// decodeForServed decodes a stored receipt; a damaged record is an error
// (the books must not silently lose a receipt).
func decodeForServed(k, v []byte) (stored, *receipt.Receipt, error) {
	var st stored
	if err := json.Unmarshal(v, &st); err != nil {
		return st, nil, fmt.Errorf("receipt %d: %w", getU64(k), err)
	}
	s, err := receipt.Decode(st.Signed)
	if err != nil {
		return st, nil, fmt.Errorf("receipt %d: %w", getU64(k), err)
	}
	return st, &s.Receipt, nil
}

// markStored adds reason to the flags of the stored receipt at key.
func markStored(rb *bolt.Bucket, key []byte, reason string) error {
	raw := rb.Get(key)
	if raw == nil {
		return nil
	}
	var st stored
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("receipt %d: %w", getU64(key), err)
	}
	if slices.Contains(st.Flags, reason) {
		return nil
	}
	st.Flags = append(st.Flags, reason)
	out, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return rb.Put(key, out)
}

// flagReasons adds the reasons of flags to have, once each.
func flagReasons(have []string, flags []Flag) []string {
	for _, f := range flags {
		if !slices.Contains(have, f.Reason) {
			have = append(have, f.Reason)
		}
	}
	return have
}

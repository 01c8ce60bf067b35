package registry

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// keyTrackedSince (in the meta bucket) is when this file began recording
// SeenOnline: nodes registered before then may have been online unrecorded.
var keyTrackedSince = []byte("seen_online_since")

// TrackedSince returns when the file began recording SeenOnline, recording
// now on the first call on a file. A node whose FirstSeen is older counts
// as registered then, so that a file written before SeenOnline existed does
// not make every old node look never-online.
func (r *Registry) TrackedSince() (time.Time, error) {
	var since time.Time
	err := r.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if raw := meta.Get(keyTrackedSince); raw != nil {
			return since.UnmarshalText(raw)
		}
		since = r.nowUTC()
		raw, err := since.MarshalText()
		if err != nil {
			return err
		}
		return meta.Put(keyTrackedSince, raw)
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("registry: %s: %w", keyTrackedSince, err)
	}
	return since, nil
}

// MarkOnline records that the control plane has seen the nodes online: it
// writes SeenOnline = at for each that has none yet, in one transaction,
// and returns how many it wrote. Unknown IDs (expired or never registered)
// are skipped. castd calls it on a node's first online, never per report.
func (r *Registry) MarkOnline(at time.Time, ids ...string) (int, error) {
	at = at.UTC().Round(0)
	var marked int
	err := r.update(func(tx *bolt.Tx) error {
		marked = 0
		b := tx.Bucket(bucketNodes)
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				continue
			}
			n, err := decode(id, v)
			if err != nil {
				r.noteDamaged(id, v, err) // left as it is, like ForEach does
				continue
			}
			if !n.SeenOnline.IsZero() {
				continue
			}
			n.SeenOnline = at
			if err := putRaw(b, n); err != nil {
				return err
			}
			marked++
		}
		return nil
	})
	return marked, err
}

// ExpireUnseen removes, in one transaction, each of the nodes that has
// never been seen online and first registered before cutoff, and returns
// the IDs it removed. Nodes that do not qualify (any more) are left alone:
// checking inside the transaction means a node marked online meanwhile is
// never removed.
func (r *Registry) ExpireUnseen(cutoff time.Time, ids ...string) ([]string, error) {
	var gone []string
	err := r.update(func(tx *bolt.Tx) error {
		gone = gone[:0]
		b := tx.Bucket(bucketNodes)
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				continue
			}
			n, err := decode(id, v)
			if err != nil {
				r.noteDamaged(id, v, err) // left as it is, like ForEach does
				continue
			}
			if !n.SeenOnline.IsZero() || !n.FirstSeen.Before(cutoff) {
				continue
			}
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
			if err := dropApprovals(tx, id); err != nil {
				return err
			}
			gone = append(gone, id)
		}
		return addCount(tx, -int64(len(gone)))
	})
	if err != nil {
		return nil, err
	}
	r.count.Add(-int64(len(gone)))
	return gone, nil
}

func putRaw(b *bolt.Bucket, n Node) error {
	val, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("registry: encoding node %s: %w", n.ID, err)
	}
	if err := b.Put([]byte(n.ID), val); err != nil {
		return fmt.Errorf("registry: storing node %s: %w", n.ID, err)
	}
	return nil
}

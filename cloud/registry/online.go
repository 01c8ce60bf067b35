package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// keyTrackedSince (in the meta bucket) is when this file began recording
// SeenOnline: nodes registered before then may have been online unrecorded.
var keyTrackedSince = []byte("seen_online_since")

// ErrNotExpired means ExpireUnseen left the node alone: it has been online,
// or it registered anew after the cut-off.
var ErrNotExpired = errors.New("node has been online, or registered after the cut-off")

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

// MarkOnline records that the control plane has seen the node online, once:
// it writes SeenOnline only when it is zero, and reports whether it did.
// It is called on the first online after a registration, never per report.
func (r *Registry) MarkOnline(id string, at time.Time) (bool, error) {
	var changed bool
	err := r.batch(func(tx *bolt.Tx) error {
		changed = false
		b := tx.Bucket(bucketNodes)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		n, err := decode(id, v)
		if err != nil {
			return err
		}
		if !n.SeenOnline.IsZero() {
			return nil
		}
		n.SeenOnline = at.UTC().Round(0)
		if err := putRaw(b, n); err != nil {
			return err
		}
		changed = true
		return nil
	})
	return changed, err
}

// ExpireUnseen removes the node if it has never been seen online and first
// registered before cutoff, in one transaction, so that a node coming
// online (MarkOnline) at the same moment is never removed. It returns
// ErrNotExpired when it leaves the node, and ErrNotFound when there is none.
func (r *Registry) ExpireUnseen(id string, cutoff time.Time) error {
	err := r.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNodes)
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		n, err := decode(id, v)
		if err != nil {
			return err
		}
		if !n.SeenOnline.IsZero() || !n.FirstSeen.Before(cutoff) {
			return fmt.Errorf("%w: %s", ErrNotExpired, id)
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		return addCount(tx, -1)
	})
	if err == nil {
		r.count.Add(-1)
	}
	return err
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

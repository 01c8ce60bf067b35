package registry

import (
	"sync"
	"sync/atomic"
)

// maxDamagedListed is how many damaged records a process logs one by one;
// past it they are summed up, so that a badly damaged file does not flood
// the log.
const maxDamagedListed = 16

// damaged remembers the records that could not be decoded (bad JSON, or a
// node under another node's key). They are skipped by ForEach, refused by
// Get, reported once each, and left as they are in the file: what they
// held (an owner binding above all) is the operator's to recover.
type damaged struct {
	n        atomic.Int64 // len(keys), read without the lock
	mu       sync.Mutex
	keys     map[string]struct{}
	listed   int // logged one by one
	unlisted int // found since the last summary, not logged one by one
}

// noteDamaged records that the record under key failed to decode with err,
// logging it the first time.
func (r *Registry) noteDamaged(key string, v []byte, err error) {
	d := &r.damaged
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.keys[key]; ok {
		return
	}
	if d.keys == nil {
		d.keys = make(map[string]struct{})
	}
	d.keys[key] = struct{}{}
	d.n.Store(int64(len(d.keys)))
	if d.listed >= maxDamagedListed {
		d.unlisted++
		return
	}
	d.listed++
	r.log.Error("registry: damaged record skipped: it is not routed to and is left as it is in the file",
		"key", clip(key), "bytes", len(v), "err", clip(err.Error()),
		"fix", "the node re-registers with its owner's delegation, or the record is deleted")
}

// reportUnlisted logs how many damaged records were found but not logged
// one by one since the last call.
func (r *Registry) reportUnlisted() {
	d := &r.damaged
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unlisted > 0 {
		r.log.Error("registry: more damaged records skipped (not listed)", "count", d.unlisted, "damaged_total", len(d.keys))
		d.unlisted = 0
	}
}

// noteReplaced forgets damaged records that a write has replaced or
// deleted.
func (r *Registry) noteReplaced(keys ...string) {
	d := &r.damaged
	if d.n.Load() == 0 {
		return // the usual case: no lock
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, k := range keys {
		delete(d.keys, k)
	}
	d.n.Store(int64(len(d.keys)))
}

// Damaged is the number of records found damaged (by ForEach, Get or a
// registration) and not since replaced or deleted. Open does not read the
// records, so it counts what has been read: castd loads every record at
// start, which finds them all.
func (r *Registry) Damaged() int { return int(r.damaged.n.Load()) }

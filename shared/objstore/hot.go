package objstore

import "sync"

// The hot cache keeps recently read small objects (record and inline
// body) in RAM, so that a hit on one costs a map lookup instead of a bbolt
// read transaction and a record decode. It is bounded in bytes, not in
// objects.
//
// It never serves a version older than bbolt's: a write transaction takes
// the keys it changes out of the cache before it commits (hotWrite.change,
// from inside the transaction) and keeps them out until it has ended (done);
// both steps bump gen, and a Get adds what it read only if gen has not moved
// since before its read transaction began. So once any reader can see a
// change in bbolt, the cache no longer holds what it replaced, and a reader
// never sees a version older than one it has seen.

const (
	hotMaxBytes = 1 << 20
	// hotOverhead approximates the map entry, hotEntry and header map.
	hotOverhead = 256
	// hotSample is how many entries an eviction looks at.
	hotSample = 5
)

type hotCache struct {
	mu      sync.Mutex
	gen     uint64
	tick    uint64
	max     int
	bytes   int
	m       map[string]*hotEntry
	writing map[string]int // keys write transactions under way are changing
}

type hotEntry struct {
	id   uint64
	txid int    // the bbolt transaction that read it
	meta Meta   // Header is shared by every Object made from the entry
	body []byte // never modified
	cost int
	used uint64 // tick of the last hit
}

func (h *hotCache) init(max int) {
	h.max = max
	h.m = make(map[string]*hotEntry)
	h.writing = make(map[string]int)
}

// get returns the entry for key, or nil and the generation to pass to add.
func (h *hotCache) get(key string) (*hotEntry, uint64) {
	h.mu.Lock()
	e := h.m[key]
	if e != nil {
		h.tick++
		e.used = h.tick
	}
	gen := h.gen
	h.mu.Unlock()
	return e, gen
}

// add caches o (an inline object read by transaction txid; recLen is its
// record size) unless a change was committed since get returned gen.
func (h *hotCache) add(gen uint64, txid int, key string, o *Object, recLen int) {
	cost := len(o.body) + len(key) + recLen + hotOverhead
	if cost > h.max/16 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if gen != h.gen || h.writing[key] > 0 {
		return
	}
	if old := h.m[key]; old != nil {
		if old.txid > txid {
			return
		}
		h.bytes -= old.cost
		delete(h.m, key)
	}
	for h.bytes+cost > h.max && len(h.m) > 0 {
		h.evictOne()
	}
	h.tick++
	h.m[key] = &hotEntry{id: o.id, txid: txid, meta: o.Meta, body: o.body, cost: cost, used: h.tick}
	h.bytes += cost
}

// evictOne removes the least recently used of a few entries; map
// iteration starts at a random place.
func (h *hotCache) evictOne() {
	var vk string
	var ve *hotEntry
	n := 0
	for k, e := range h.m {
		if ve == nil || e.used < ve.used {
			vk, ve = k, e
		}
		if n++; n == hotSample {
			break
		}
	}
	if ve != nil {
		delete(h.m, vk)
		h.bytes -= ve.cost
	}
}

// hotWrite follows one write transaction for the hot cache: call change
// inside the transaction with the keys it changed, last thing before it
// commits, and done after it (committed or not).
type hotWrite struct {
	h    *hotCache
	keys []string
}

func (w *hotWrite) change(keys ...string) {
	h := w.h
	h.mu.Lock()
	h.gen++
	for _, k := range keys {
		if e := h.m[k]; e != nil {
			h.bytes -= e.cost
			delete(h.m, k)
		}
		h.writing[k]++
	}
	h.mu.Unlock()
	w.keys = append(w.keys, keys...)
}

func (w *hotWrite) done() {
	h := w.h
	h.mu.Lock()
	h.gen++
	for _, k := range w.keys {
		if h.writing[k]--; h.writing[k] <= 0 {
			delete(h.writing, k)
		}
	}
	h.mu.Unlock()
	w.keys = nil
}

func (h *hotCache) clear() {
	h.mu.Lock()
	h.gen++
	clear(h.m)
	h.bytes = 0
	h.mu.Unlock()
}

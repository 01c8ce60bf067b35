package popularity

import (
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/blockcast/beacon/shared/protocol"
)

// Table is the in-memory Counter of one castd.
//
// What it keeps, and why: per object, the set of the Threshold most
// recently seen distinct nodes (64-bit keyed hashes of node IDs) with each
// one's latest request time. Counting "at least Threshold distinct nodes
// in the window" needs no more: if Threshold nodes asked within the window,
// the Threshold most recent ones are among them; so the count is exact up
// to the threshold in Threshold×16 bytes, whatever a flood of node IDs on
// one object does (it only replaces the oldest).
//
// Objects live in a table of at most MaxObjects, keyed by a 64-bit keyed
// hash of the content key (fixed size whatever the key's length; the seed
// is per process, so nobody can aim collisions). When the table is full, a
// new object replaces the weakest of a few randomly sampled ones: fewest
// nodes in the window, then least recently asked (sampled eviction, as in
// Redis's approximate LFU). A flood of distinct keys, each asked by one
// node, therefore replaces other one-node entries and not an object that
// several beacons asked for: to push out an object with c nodes in the
// window, every sampled entry must have c or more, which takes c
// registered nodes per key. A count-min sketch with a top-K was the other
// choice; it estimates counts (over-counting on collisions, which would
// send objects by multicast that nobody shares) and cannot tell distinct
// nodes from one node asking often without a per-object set anyway.
//
// The cost of the choice: an object asked by ONE node during such a flood
// may be forgotten before its second node asks, so a flood can delay
// (never falsely cause) a multicast decision for new objects.
type Table struct {
	threshold int
	window    int64 // ns
	pats      []Pattern
	seed      maphash.Seed
	shards    []shard
}

// evictSample is how many entries a full shard looks at to pick a victim.
const evictSample = 8

type shard struct {
	mu    sync.Mutex
	max   int
	index map[uint64]int32 // key hash -> position in objs
	objs  []object
}

type object struct {
	key   uint64
	nodes []seen // at most threshold, unordered
}

type seen struct {
	node uint64
	at   int64 // unix ns of the node's latest request
}

var _ Counter = (*Table)(nil)

// New returns a Table for o.
func New(o Options) (*Table, error) {
	pats, err := o.compile()
	if err != nil {
		return nil, err
	}
	maxObj := o.MaxObjects
	if maxObj == 0 {
		maxObj = DefaultMaxObjects
	}
	n := 1
	if maxObj >= 1024 {
		n = 16 // less lock contention; the bound stays maxObj
	}
	t := &Table{
		threshold: o.Threshold,
		window:    int64(o.Window),
		pats:      pats,
		seed:      maphash.MakeSeed(),
		shards:    make([]shard, n),
	}
	for i := range t.shards {
		per := maxObj / n
		if i < maxObj%n {
			per++
		}
		t.shards[i].max = per
		t.shards[i].index = make(map[uint64]int32)
	}
	return t, nil
}

// Decide records node's miss of key at now and decides how it is answered.
func (t *Table) Decide(key, node string, now time.Time) Decision {
	if len(t.pats) > 0 {
		if _, err := protocol.CleanContentPath(key); err == nil {
			for _, p := range t.pats {
				if p.matchClean(key) {
					return Decision{Multicast: true, Reason: ReasonPath}
				}
			}
		}
	}
	if t.threshold == 0 {
		return Decision{Reason: ReasonBelow}
	}
	kh := maphash.String(t.seed, key)
	nh := maphash.String(t.seed, node)
	ns := now.UnixNano()
	s := &t.shards[kh%uint64(len(t.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.index[kh]
	if !ok {
		i = s.insert(kh, ns, t.window)
	}
	o := &s.objs[i]
	o.see(nh, ns, t.window, t.threshold)
	n := o.inWindow(ns, t.window)
	if n >= t.threshold {
		return Decision{Multicast: true, Reason: ReasonPopular, Nodes: t.threshold}
	}
	return Decision{Reason: ReasonBelow, Nodes: n}
}

// insert adds an object, replacing a weak one when the shard is full.
func (s *shard) insert(kh uint64, now, window int64) int32 {
	if len(s.objs) < s.max {
		s.objs = append(s.objs, object{key: kh})
		i := int32(len(s.objs) - 1)
		s.index[kh] = i
		return i
	}
	victim := int32(rand.IntN(len(s.objs)))
	vn, vlast := s.objs[victim].score(now, window)
	for range evictSample - 1 {
		j := int32(rand.IntN(len(s.objs)))
		n, last := s.objs[j].score(now, window)
		if n < vn || n == vn && last < vlast {
			victim, vn, vlast = j, n, last
		}
	}
	delete(s.index, s.objs[victim].key)
	o := &s.objs[victim]
	o.key = kh
	o.nodes = o.nodes[:0] // keep the array: its size is already within the bound
	s.index[kh] = victim
	return victim
}

// see records node at now, keeping at most limit nodes: the most recent
// in the window. When full, a node out of the window (expired, or more than
// a window ahead after a clock step) goes first, else the oldest.
func (o *object) see(node uint64, now, window int64, limit int) {
	victim := -1
	stale := false
	for i := range o.nodes {
		e := &o.nodes[i]
		if e.node == node {
			e.at = maxInt64(e.at, now)
			if e.at-now >= window { // far ahead after a clock step
				e.at = now
			}
			return
		}
		if stale {
			continue
		}
		if d := now - e.at; d >= window || d <= -window {
			victim, stale = i, true
		} else if victim < 0 || e.at < o.nodes[victim].at {
			victim = i
		}
	}
	if len(o.nodes) < limit {
		if len(o.nodes) == cap(o.nodes) {
			// Grow by hand so that cap never passes limit.
			grown := make([]seen, len(o.nodes), min(limit, max(4, 2*cap(o.nodes))))
			copy(grown, o.nodes)
			o.nodes = grown
		}
		o.nodes = append(o.nodes, seen{node: node, at: now})
		return
	}
	if stale || o.nodes[victim].at <= now {
		o.nodes[victim] = seen{node: node, at: now}
	}
}

// inWindow counts nodes whose latest request is less than window old. A
// time after now (the clock stepped back) counts while it is less than a
// window ahead; a larger step forgets it (an under-count, which is safe).
func (o *object) inWindow(now, window int64) int {
	n := 0
	for _, e := range o.nodes {
		if d := now - e.at; d < window && d > -window {
			n++
		}
	}
	return n
}

// score is what eviction compares: nodes in the window, latest request.
func (o *object) score(now, window int64) (int, int64) {
	var last int64
	for _, e := range o.nodes {
		last = maxInt64(last, e.at)
	}
	return o.inWindow(now, window), last
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Len is how many objects the table tracks.
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.objs)
		s.mu.Unlock()
	}
	return n
}

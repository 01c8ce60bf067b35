package popularity

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func newTable(t testing.TB, o Options) *Table {
	t.Helper()
	tb, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

type req struct {
	key, node string
	at        time.Duration // after t0
	multicast bool
	reason    Reason
	nodes     int
}

func TestDecide(t *testing.T) {
	const w = 10 * time.Second
	for _, tc := range []struct {
		name string
		opt  Options
		reqs []req
	}{
		{"threshold reached by the third distinct node", Options{Threshold: 3, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n2", time.Second, false, ReasonBelow, 2},
			{"/a", "n3", 2 * time.Second, true, ReasonPopular, 3},
			{"/a", "n4", 3 * time.Second, true, ReasonPopular, 3},
		}},
		{"one node asking again counts once", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n1", 1, false, ReasonBelow, 1},
			{"/a", "n1", 2 * time.Second, false, ReasonBelow, 1},
			{"/a", "n2", 3 * time.Second, true, ReasonPopular, 2},
		}},
		{"objects count apart", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/b", "n2", 0, false, ReasonBelow, 1},
			{"/a?v=2", "n3", 0, false, ReasonBelow, 1},
		}},
		{"window edge: exactly Window old has expired", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n2", w, false, ReasonBelow, 1},
		}},
		{"window edge: 1ns less still counts", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n2", w - 1, true, ReasonPopular, 2},
		}},
		{"a node asking again moves its time forward", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n1", 9 * time.Second, false, ReasonBelow, 1},
			{"/a", "n2", 18 * time.Second, true, ReasonPopular, 2},
		}},
		{"popularity decays", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n2", time.Second, true, ReasonPopular, 2},
			{"/a", "n3", time.Second + w, false, ReasonBelow, 1},
		}},
		{"threshold 1: every miss", Options{Threshold: 1, Window: w}, []req{
			{"/a", "n1", 0, true, ReasonPopular, 1},
		}},
		{"threshold 0: paths only", Options{Paths: []string{"/live/*"}}, []req{
			{"/a", "n1", 0, false, ReasonBelow, 0},
			{"/a", "n2", 0, false, ReasonBelow, 0},
			{"/live/x.ts", "n1", 0, true, ReasonPath, 0},
		}},
		{"path beats count", Options{Threshold: 5, Window: w, Paths: []string{"/fw/*", "/live/*.m3u8"}}, []req{
			{"/fw/beacon.ipk", "n1", 0, true, ReasonPath, 0},
			{"/live/a.m3u8", "n1", 0, true, ReasonPath, 0},
			{"/live/a.ts", "n1", 0, false, ReasonBelow, 1},
		}},
		{"clock stepping back does not inflate", Options{Threshold: 3, Window: w}, []req{
			{"/a", "n1", 5 * time.Second, false, ReasonBelow, 1},
			{"/a", "n1", 0, false, ReasonBelow, 1},
			{"/a", "n2", 0, false, ReasonBelow, 2},
		}},
		{"a clock step back of a window or more forgets", Options{Threshold: 2, Window: w}, []req{
			{"/a", "n1", time.Hour, false, ReasonBelow, 1},
			{"/a", "n2", 0, false, ReasonBelow, 1},
			{"/a", "n3", 0, true, ReasonPopular, 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t, tc.opt)
			for i, r := range tc.reqs {
				d := tb.Decide(r.key, r.node, t0.Add(r.at))
				want := Decision{Multicast: r.multicast, Reason: r.reason, Nodes: r.nodes}
				if d != want {
					t.Fatalf("request %d (%s by %s at +%v) = %+v, want %+v", i, r.key, r.node, r.at, d, want)
				}
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, o := range []Options{
		{Threshold: -1, Window: time.Second},
		{Threshold: MaxThreshold + 1, Window: time.Second},
		{Threshold: 2},
		{Threshold: 2, Window: -time.Second},
		{MaxObjects: -1},
		{Paths: []string{"/ok/*", "bad"}},
	} {
		if _, err := New(o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("New(%+v) = %v, want ErrBadOptions", o, err)
		}
	}
}

// TestFloodKeepsHotObject is the attack: a stranger with one registered
// node (or many) asks for a million distinct keys to push out what real
// beacons are counting up. The object several beacons asked for must stay
// tracked, reach the threshold with the next honest beacon, and the
// table must stay within its bound in entries and bytes.
func TestFloodKeepsHotObject(t *testing.T) {
	const (
		maxObj    = 4096
		threshold = 8
		flood     = 1_000_000
	)
	tb := newTable(t, Options{Threshold: threshold, Window: time.Minute, MaxObjects: maxObj})
	now := t0
	for i := range threshold - 1 {
		if d := tb.Decide("/hot.bin", "honest"+strconv.Itoa(i), now); d.Multicast {
			t.Fatalf("multicast after %d nodes", i+1)
		}
	}
	// A second object with only two nodes: to evict it, every sampled entry
	// would need two nodes too.
	tb.Decide("/warm.bin", "honest0", now)
	tb.Decide("/warm.bin", "honest1", now)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	key := make([]byte, 0, 32)
	for i := range flood {
		key = strconv.AppendInt(append(key[:0], "/junk/"...), int64(i), 10)
		// Distinct keys from distinct fake node IDs, time moving on.
		tb.Decide(string(key), "fake"+strconv.Itoa(i), now.Add(time.Duration(i)*time.Microsecond))
	}
	// And a flood of fake node IDs on the hot object itself.
	for i := range 100_000 {
		tb.Decide("/hot.bin", "fakeN"+strconv.Itoa(i), now)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	if n := tb.Len(); n > maxObj {
		t.Fatalf("tracking %d objects, bound %d", n, maxObj)
	}
	// Generous bound: per object a map entry, the object and a node array
	// of at most threshold entries.
	perObj := uint64(16 + 32 + threshold*16 + 64)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > int64(maxObj*perObj) {
		t.Fatalf("heap grew %d bytes over the flood, bound %d", grew, maxObj*perObj)
	}
	t.Logf("heap after flood: %d bytes (grew %d) for %d objects", after.HeapAlloc, int64(after.HeapAlloc)-int64(before.HeapAlloc), tb.Len())

	// The fake nodes on /hot.bin made it popular (that is why callers pass
	// only authenticated IDs) but did not grow its node set past the bound.
	tb2 := newTable(t, Options{Threshold: threshold, Window: time.Minute, MaxObjects: maxObj})
	for i := range threshold - 1 {
		tb2.Decide("/hot.bin", "honest"+strconv.Itoa(i), now)
	}
	tb2.Decide("/warm.bin", "honest0", now)
	tb2.Decide("/warm.bin", "honest1", now)
	for i := range flood {
		key = strconv.AppendInt(append(key[:0], "/junk/"...), int64(i), 10)
		tb2.Decide(string(key), "fake"+strconv.Itoa(i%1000), now.Add(time.Duration(i)*time.Microsecond))
	}
	later := now.Add(2 * time.Second)
	if d := tb2.Decide("/hot.bin", "honest-last", later); !d.Multicast || d.Nodes != threshold {
		t.Fatalf("hot object after the flood: %+v, want multicast with %d nodes", d, threshold)
	}
	if d := tb2.Decide("/warm.bin", "honest2", later); d.Nodes != 3 {
		t.Fatalf("warm object after the flood: %+v, want 3 nodes", d)
	}
	for i := range tb2.shards {
		for _, o := range tb2.shards[i].objs {
			if cap(o.nodes) > threshold {
				t.Fatalf("node set cap %d > threshold %d", cap(o.nodes), threshold)
			}
		}
	}
}

func TestDecideConcurrent(t *testing.T) {
	tb := newTable(t, Options{Threshold: 50, Window: time.Minute, MaxObjects: 2048})
	var wg sync.WaitGroup
	var mu sync.Mutex
	multicast := 0
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				tb.Decide(fmt.Sprintf("/k%d", i), fmt.Sprintf("g%d", g), t0)
			}
			if tb.Decide("/shared", fmt.Sprintf("g%d", g), t0).Multicast {
				mu.Lock()
				multicast++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Exactly the 50th distinct node crossed the threshold.
	if multicast != 1 {
		t.Fatalf("%d goroutines saw multicast, want exactly 1 (the 50th)", multicast)
	}
}

func BenchmarkDecide(b *testing.B) {
	for _, bc := range []struct {
		name string
		keys int
	}{{"hot-key", 1}, {"1k-keys", 1000}, {"flood-full-table", 1 << 20}} {
		b.Run(bc.name, func(b *testing.B) {
			tb := newTable(b, Options{Threshold: 16, Window: time.Minute, MaxObjects: 1 << 16, Paths: []string{"/live/*", "/fw/*.ipk"}})
			keys := make([]string, min(bc.keys, 1<<16))
			for i := range keys {
				keys[i] = "/vod/movie" + strconv.Itoa(i) + "/seg.ts"
			}
			nodes := make([]string, 64)
			for i := range nodes {
				nodes[i] = "node" + strconv.Itoa(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var k string
				if bc.keys > len(keys) {
					k = "/junk/" + strconv.Itoa(i)
				} else {
					k = keys[i%len(keys)]
				}
				tb.Decide(k, nodes[i%len(nodes)], t0.Add(time.Duration(i)))
			}
		})
	}
}

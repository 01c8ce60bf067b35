package metrics

import (
	"io"
	"math"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	n := 41.0
	r.Func("beacon_cache_hits_total", "Cache hits.", Counter, func() float64 { n++; return n })
	r.Collect("castd_nodes", "Nodes by state\nand role.", Gauge, func() []Sample {
		return []Sample{
			{Labels: []string{"state", "online", "role", `be"a\con`}, Value: 3},
			{Labels: []string{"state", "offline", "role", "relay"}, Value: math.Inf(1)},
		}
	})
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	want := `# HELP beacon_cache_hits_total Cache hits.
# TYPE beacon_cache_hits_total counter
beacon_cache_hits_total 42
# HELP castd_nodes Nodes by state\nand role.
# TYPE castd_nodes gauge
castd_nodes{state="online",role="be\"a\\con"} 3
castd_nodes{state="offline",role="relay"} +Inf
`
	if got := rec.Body.String(); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("content type %q", ct)
	}
}

func TestInvalidNamePanics(t *testing.T) {
	for _, name := range []string{"", "1abc", "a-b", "a b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%q: no panic", name)
				}
			}()
			NewRegistry().Func(name, "", Gauge, func() float64 { return 0 })
		}()
	}
}

func TestProcessGauges(t *testing.T) {
	runtime.GC() // so that the live heap has been measured once
	r := NewRegistry()
	r.RegisterProcess()
	var b strings.Builder
	r.WriteTo(&b)
	page := b.String()
	for _, name := range []string{"go_goroutines", "go_gc_heap_live_bytes", "process_open_fds", "process_resident_memory_bytes"} {
		var v float64
		found := false
		for _, line := range strings.Split(page, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == name {
				v, _ = strconv.ParseFloat(f[1], 64)
				found = true
			}
		}
		if !found || v <= 0 {
			t.Errorf("%s: found %v value %v, want a positive sample\n%s", name, found, v, page)
		}
	}
}

// scrapeRegistry is a page the size of castd's: 150 families, labelled
// samples in a third of them.
func scrapeRegistry() *Registry {
	r := NewRegistry()
	for i := range 150 {
		name := "family_" + strconv.Itoa(i) + "_total"
		if i%3 == 0 {
			r.Collect(name, "a labelled counter, with a help line of some length", Counter, func() []Sample {
				return []Sample{{Labels: []string{"kind", "hit"}, Value: 1}, {Labels: []string{"kind", "miss"}, Value: 2}}
			})
			continue
		}
		r.Func(name, "an unlabelled counter, with a help line of some length", Counter, func() float64 { return float64(i) })
	}
	return r
}

// TestScrapeGarbage: a scrape allocates about the size of its page, not a
// table per line; a node scraped every 10 s for months (on a router, too)
// should not churn its heap for it. Building the escapers per line made
// ~1.8 MB per scrape of this page (84 times its size; now about 5).
func TestScrapeGarbage(t *testing.T) {
	r := scrapeRegistry()
	var page strings.Builder
	r.WriteTo(&page)
	var before, after runtime.MemStats
	const n = 20
	runtime.ReadMemStats(&before)
	for range n {
		r.WriteTo(io.Discard)
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	if limit := uint64(8 * page.Len()); per > limit {
		t.Fatalf("a scrape of a %d-byte page allocates %d bytes, want at most %d", page.Len(), per, limit)
	}
	t.Logf("a scrape of a %d-byte page allocates %d bytes", page.Len(), per)
}

func BenchmarkScrape(b *testing.B) {
	r := scrapeRegistry()
	b.ReportAllocs()
	for range b.N {
		r.WriteTo(io.Discard)
	}
}

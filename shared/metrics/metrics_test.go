package metrics

import (
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

package metrics

import (
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
)

// RegisterProcess adds the standard process gauges Prometheus' own client
// exports (go_goroutines, process_open_fds, process_resident_memory_bytes),
// read from the runtime and /proc/self when scraped, so that a soak run or
// an operator's dashboard can see a leak in any of our programs. Gauges the
// platform cannot report (no /proc) are left out rather than shown as 0.
func (r *Registry) RegisterProcess() {
	r.Func("go_goroutines", "Number of goroutines that currently exist.", Gauge, func() float64 {
		return float64(runtime.NumGoroutine())
	})
	// The heap the last collection found live: RSS swings with the
	// collector's cycle (up to twice this), so a leak shows here first.
	r.Func("go_gc_heap_live_bytes", "Heap memory occupied by live objects that were marked by the previous GC.", Gauge, heapLive)
	if _, err := os.Stat("/proc/self/fd"); err == nil {
		r.Func("process_open_fds", "Number of open file descriptors.", Gauge, func() float64 {
			n, _ := openFDs()
			return float64(n)
		})
	}
	if _, err := residentBytes(); err == nil {
		r.Func("process_resident_memory_bytes", "Resident memory size in bytes.", Gauge, func() float64 {
			n, _ := residentBytes()
			return float64(n)
		})
	}
}

// openFDs counts /proc/self/fd without sorting or stat'ing each entry.
func openFDs() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	// The directory's own descriptor is one of them.
	return max(len(names)-1, 0), err
}

// residentBytes reads the resident set from /proc/self/statm (pages).
func residentBytes() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, os.ErrInvalid
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}

// heapLive reads /gc/heap/live:bytes without stopping the world (unlike
// runtime.ReadMemStats).
func heapLive() float64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return float64(s[0].Value.Uint64())
}

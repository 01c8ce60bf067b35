package httpcache

import "github.com/blockcast/beacon/shared/metrics"

// RegisterMetrics exposes the cache's counters under prefix (e.g.
// "beacon_cache" or "castd_midcache").
func (c *Cache) RegisterMetrics(r *metrics.Registry, prefix string) {
	stat := func(name, help string, kind metrics.Kind, get func(Stats) int64) {
		r.Func(prefix+"_"+name, help, kind, func() float64 { return float64(get(c.Stats())) })
	}
	stat("hits_total", "Requests answered from the cache.", metrics.Counter, func(s Stats) int64 { return s.Hits })
	stat("misses_total", "Requests that went upstream.", metrics.Counter, func(s Stats) int64 { return s.Misses })
	stat("revalidated_total", "Stale objects the upstream confirmed with 304.", metrics.Counter, func(s Stats) int64 { return s.Revalidated })
	stat("stale_served_total", "Stale objects served while the upstream failed.", metrics.Counter, func(s Stats) int64 { return s.StaleServed })
	stat("served_bytes_total", "Body bytes sent to clients.", metrics.Counter, func(s Stats) int64 { return s.BytesServed })
	stat("upstream_bytes_total", "Body bytes read from the upstream.", metrics.Counter, func(s Stats) int64 { return s.UpstreamBytes })
	stat("upstream_errors_total", "Upstream transport errors, 5xx answers and cut bodies.", metrics.Counter, func(s Stats) int64 { return s.UpstreamErrors })
	stat("passed_on_total", "Responses the store gave up on midway (file system full, too large), finished from the upstream uncached.", metrics.Counter, func(s Stats) int64 { return s.PassedOn })
	stat("store_full", "1 while the cache's file system is refusing writes for lack of space.", metrics.Gauge, func(s Stats) int64 {
		if s.StoreFullSince.IsZero() {
			return 0
		}
		return 1
	})
	stat("objects", "Objects stored.", metrics.Gauge, func(s Stats) int64 { return s.Objects })
	stat("bytes", "Bytes stored.", metrics.Gauge, func(s Stats) int64 { return s.Bytes })
}

// Package history keeps, per node and per hour, what castd's monitor saw:
// seconds online out of seconds observed, bytes served (from the health
// reports' counters), the hit ratio weighted by bytes, the fastest served
// rate between two samples, and the least storage the node offered. It is
// what capacity contracts are measured against (package contracts); its
// served figures are the nodes' own health reports, not cross-checked
// delivery receipts, and say so in their Source.
package history

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/contracts"
	bolt "go.etcd.io/bbolt"
)

// Defaults.
const (
	DefaultRetention = 400 * 24 * time.Hour // a yearly payout period and its disputes
	// maxRate caps a node's claimed rate between two samples: a counter
	// that jumps further is a reset or a lie, and counts as nothing.
	maxRateBps = 100e9
)

// SourceHealth names where History's served figures come from.
const SourceHealth = "health-reports"

var bucketHours = []byte("hours")

// Sample is one node as the monitor has it at a sampling tick.
type Sample struct {
	Node   string
	Online bool
	// Health numbers, when the node has reported (HasHealth).
	HasHealth    bool
	BytesServed  uint64        // counter since the node started
	Uptime       time.Duration // how long the node has run (its counter's age), whole seconds
	HitRatio     float64
	StorageBytes uint64 // cache bytes plus free storage: what it offers
}

// Hour is one node's record for one UTC hour.
type Hour struct {
	ObservedS      float64 `json:"observed_s"`
	OnlineS        float64 `json:"online_s"`
	Bytes          uint64  `json:"bytes"`
	HitBytes       float64 `json:"hit_bytes"` // bytes × hit ratio, summed
	PeakMbps       float64 `json:"peak_mbps"`
	StorageMin     uint64  `json:"storage_min"`
	StorageSamples int     `json:"storage_samples"`
	// FirstS and LastS bound the part of the hour that was observed
	// (seconds into the hour): a window that cuts the hour gets the share
	// of the figures that its overlap with this span is of the span.
	FirstS float64 `json:"first_s"`
	LastS  float64 `json:"last_s"`
}

// fraction is the share of r's figures that fall in [lo, hi) (inside the
// hour), assuming they are spread evenly over the observed span.
func (r Hour) fraction(hour, lo, hi time.Time) float64 {
	if r.LastS <= r.FirstS {
		return hi.Sub(lo).Seconds() / 3600 // records from before the span was kept
	}
	a := math.Max(r.FirstS, lo.Sub(hour).Seconds())
	b := math.Min(r.LastS, hi.Sub(hour).Seconds())
	if b <= a {
		return 0
	}
	return (b - a) / (r.LastS - r.FirstS)
}

// History is the bbolt-backed hourly record.
type History struct {
	db        *bolt.DB
	log       *slog.Logger
	retention time.Duration

	mu        sync.Mutex
	last      map[string]uint64 // node → last BytesServed counter
	lastTick  time.Time
	firstTick time.Time // since when castd watches (Watching, or the first Record)
	lastPrune time.Time
}

// Open opens (creating) the history at path. retention ≤ 0 means
// DefaultRetention.
func Open(path string, retention time.Duration, log *slog.Logger) (*History, error) {
	if retention <= 0 {
		retention = DefaultRetention
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketHours)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("history: %w", err)
	}
	return &History{db: db, log: log, retention: retention, last: map[string]uint64{}}, nil
}

// Close closes the file.
func (h *History) Close() error { return h.db.Close() }

// Watching tells h that castd has watched the nodes since t (its start,
// before any node could register with it): a node whose first report says
// it started after t has served all of its counter since. Without it, the
// first Record's time is used.
func (h *History) Watching(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.firstTick = t
}

func key(node string, hour time.Time) []byte {
	k := make([]byte, 0, len(node)+9)
	k = append(k, node...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(hour.Unix()))
}

// Record adds one sampling tick at now: every node in samples is credited
// with the time since the previous tick (at most maxGap, so that castd
// being down is not counted as observed), online or not. The first tick
// after Open only sets the baseline.
func (h *History) Record(now time.Time, maxGap time.Duration, samples []Sample) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.lastTick
	h.lastTick = now
	if h.firstTick.IsZero() {
		h.firstTick = now
	}
	if prev.IsZero() || !now.After(prev) {
		for _, s := range samples {
			if s.HasHealth {
				h.last[s.Node] = s.BytesServed
			}
		}
		return nil
	}
	dt := now.Sub(prev)
	if dt > maxGap {
		dt = maxGap
	}
	type contrib struct {
		online        bool
		delta         uint64
		hit, rateMbps float64
		counted       bool // delta is real
		storage       *uint64
	}
	cs := make([]contrib, len(samples))
	seen := make(map[string]bool, len(samples))
	for i, s := range samples {
		seen[s.Node] = true
		cs[i].online = s.Online
		if !s.HasHealth {
			continue
		}
		storage := s.StorageBytes
		cs[i].storage = &storage
		last, had := h.last[s.Node]
		h.last[s.Node] = s.BytesServed
		// (Uptime is in whole seconds, so the node may be up to a second
		// older: a node cannot be routed to before castd runs, and a second
		// of slack is what a node starting with castd needs.)
		if !had && !now.Add(-s.Uptime).Before(h.firstTick) {
			// The node started while castd watched: its whole counter
			// was served since, none of it before.
			last, had = 0, true
		}
		if !had {
			continue
		}
		delta := s.BytesServed - last
		if s.BytesServed < last {
			delta = s.BytesServed // the node restarted: its counter began again
		}
		if rate := float64(delta) * 8 / dt.Seconds(); rate <= maxRateBps {
			cs[i] = contrib{online: s.Online, delta: delta, hit: clamp01(s.HitRatio), rateMbps: rate / 1e6, counted: true, storage: &storage}
		}
	}
	// The interval [now-dt, now) is split over the hours it spans; the
	// storage figure belongs to the hour of the sample.
	from := now.Add(-dt)
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHours)
		for hour := from.UTC().Truncate(time.Hour); hour.Before(now); hour = hour.Add(time.Hour) {
			lo, hi := maxTime(hour, from), minTime(hour.Add(time.Hour), now)
			if !lo.Before(hi) {
				continue
			}
			frac := hi.Sub(lo).Seconds() / dt.Seconds()
			last := !hi.Before(now)
			for i, s := range samples {
				c := cs[i]
				k := key(s.Node, hour)
				var r Hour
				if v := b.Get(k); v != nil {
					if err := json.Unmarshal(v, &r); err != nil {
						h.log.Warn("history: damaged hour record replaced", "node", s.Node, "err", err)
						r = Hour{}
					}
				}
				if r.ObservedS == 0 {
					r.FirstS = lo.Sub(hour).Seconds()
				}
				r.LastS = math.Max(r.LastS, hi.Sub(hour).Seconds())
				r.ObservedS += hi.Sub(lo).Seconds()
				if c.online {
					r.OnlineS += hi.Sub(lo).Seconds()
				}
				if c.counted {
					part := uint64(math.Round(float64(c.delta) * frac))
					if last {
						part = c.delta - uint64(math.Round(float64(c.delta)*(1-frac)))
					}
					r.Bytes += part
					r.HitBytes += float64(part) * c.hit
					r.PeakMbps = math.Max(r.PeakMbps, c.rateMbps)
				}
				if last && c.storage != nil {
					if r.StorageSamples == 0 || *c.storage < r.StorageMin {
						r.StorageMin = *c.storage
					}
					r.StorageSamples++
				}
				v, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if err := b.Put(k, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for n := range h.last {
		if !seen[n] {
			delete(h.last, n) // forgotten nodes do not pile up
		}
	}
	if err != nil {
		return fmt.Errorf("history: %w", err)
	}
	if now.Sub(h.lastPrune) >= 24*time.Hour {
		h.lastPrune = now
		return h.prune(now.Add(-h.retention))
	}
	return nil
}

func clamp01(f float64) float64 {
	if !(f >= 0) { // NaN too
		return 0
	}
	return math.Min(f, 1)
}

// prune deletes hours before cutoff.
func (h *History) prune(cutoff time.Time) error {
	var n int
	err := h.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHours)
		var old [][]byte
		b.ForEach(func(k, _ []byte) error {
			if len(k) < 9 || int64(binary.BigEndian.Uint64(k[len(k)-8:])) < cutoff.Unix() {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if n > 0 {
		h.log.Info("history: pruned old hours", "records", n, "before", cutoff.UTC().Format(time.RFC3339))
	}
	return err
}

// Hours calls fn for each stored hour of node that overlaps [from, to),
// with the share of its figures inside the window.
func (h *History) Hours(node string, from, to time.Time, fn func(hour time.Time, r Hour, frac float64)) error {
	if !from.Before(to) {
		return nil
	}
	start := from.UTC().Truncate(time.Hour)
	return h.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketHours).Cursor()
		end := key(node, to)
		for k, v := c.Seek(key(node, start)); k != nil && string(k) < string(end) && len(k) == len(node)+9 && k[len(node)] == 0 && string(k[:len(node)]) == node; k, v = c.Next() {
			hour := time.Unix(int64(binary.BigEndian.Uint64(k[len(node)+1:])), 0).UTC()
			lo, hi := maxTime(hour, from), minTime(hour.Add(time.Hour), to)
			if !lo.Before(hi) {
				continue
			}
			var r Hour
			if err := json.Unmarshal(v, &r); err != nil {
				h.log.Warn("history: damaged hour record skipped", "node", node, "hour", hour, "err", err)
				continue
			}
			if f := r.fraction(hour, lo, hi); f > 0 {
				fn(hour, r, f)
			}
		}
		return nil
	})
}

// Measure implements contracts.Measurer.
func (h *History) Measure(node string, from, to time.Time) (contracts.Measured, error) {
	var m contracts.Measured
	err := h.Hours(node, from, to, func(_ time.Time, r Hour, frac float64) {
		m.Observed += time.Duration(r.ObservedS * frac * float64(time.Second))
		m.Online += time.Duration(r.OnlineS * frac * float64(time.Second))
		m.PeakMbps = math.Max(m.PeakMbps, r.PeakMbps)
		if r.StorageSamples > 0 && (m.StorageSamples == 0 || r.StorageMin < m.StorageMinBytes) {
			m.StorageMinBytes = r.StorageMin
		}
		m.StorageSamples += r.StorageSamples
	})
	return m, err
}

// ServedBytes implements contracts.Served from the nodes' health reports.
func (h *History) ServedBytes(node string, from, to time.Time) (contracts.ServedFigures, error) {
	f := contracts.ServedFigures{Source: SourceHealth}
	var bytes, hit float64
	err := h.Hours(node, from, to, func(_ time.Time, r Hour, frac float64) {
		bytes += float64(r.Bytes) * frac
		hit += r.HitBytes * frac
	})
	f.Bytes = uint64(math.Round(bytes))
	if bytes > 0 {
		f.HitRatio = hit / bytes
	}
	return f, err
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

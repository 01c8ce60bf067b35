package mcrecv

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/blockcast/beacon/shared/metrics"
	"github.com/blockcast/beacon/shared/objrecv"
)

// Stats are the receiver's counters since start, finished and active
// objects together. Nothing in them is about end users.
type Stats struct {
	Bytes          map[string]uint64 // verified bytes by path: multicast, early, repair, fallback
	ParityUsedByte uint64            // parity bytes that went into a decode (counted in Bytes too)
	Rejected       map[string]uint64 // packets dropped, by reason (objrecv's, "source", "unwanted")
	Offers         map[string]uint64 // offers by result: taken, bad_signature, replay, expired, malformed, wrong_object, busy, no_cast_key
	Objects        map[string]uint64 // finished objects by outcome: multicast, fallback, failed
	Joins          map[string]uint64 // channel joins by path: native, amt
	Nacks          uint64
	Active         int
	ChannelsNative int // joined now
	ChannelsAMT    int
}

func loadMap(m *sync.Map) map[string]uint64 {
	out := map[string]uint64{}
	m.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

// Stats returns the counters.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	tot := objrecv.Stats{Bytes: map[string]uint64{}, Packets: map[string]uint64{}, Rejected: map[objrecv.Reason]uint64{}}
	addStats(&tot, r.done)
	active := make([]*object, 0, len(r.active))
	for o := range r.active {
		active = append(active, o)
	}
	r.mu.Unlock()
	for _, o := range active {
		addStats(&tot, o.a.Stats())
	}
	st := Stats{Bytes: map[string]uint64{}, Rejected: map[string]uint64{}, ParityUsedByte: tot.ParityByte,
		Offers: loadMap(&r.c.offers), Objects: loadMap(&r.c.outcomes), Joins: loadMap(&r.c.joins),
		Nacks: r.c.nacks.Load(), Active: len(active)}
	for _, l := range []string{labelMulticast, labelEarly, labelRepair, labelFallback} {
		st.Bytes[l] = tot.Bytes[l]
	}
	for k, v := range tot.Rejected {
		st.Rejected[string(k)] = v
	}
	if n := r.c.source.Load(); n > 0 {
		st.Rejected["source"] = n
	}
	if n := r.c.unwanted.Load(); n > 0 {
		st.Rejected["unwanted"] = n
	}
	st.ChannelsNative, st.ChannelsAMT = r.chans.count()
	return st
}

func samples(m map[string]uint64, label string) []metrics.Sample {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]metrics.Sample, 0, len(keys))
	for _, k := range keys {
		out = append(out, metrics.Sample{Labels: []string{label, k}, Value: float64(m[k])})
	}
	return out
}

// RegisterMetrics exposes the counters under prefix (e.g. "beacon_multicast").
func (r *Receiver) RegisterMetrics(m *metrics.Registry, prefix string) {
	m.Collect(prefix+"_bytes_total", "Verified object bytes received, by path (multicast, early media, repair, HTTP fallback).", metrics.Counter,
		func() []metrics.Sample { return samples(r.Stats().Bytes, "path") })
	m.Func(prefix+"_parity_used_bytes_total", "Parity bytes that rebuilt lost source symbols (also counted under their path).", metrics.Counter,
		func() float64 { return float64(r.Stats().ParityUsedByte) })
	m.Collect(prefix+"_packets_rejected_total", "Packets dropped, by reason (digest: failed the signed manifest's check; source: not the channel's source).", metrics.Counter,
		func() []metrics.Sample { return samples(r.Stats().Rejected, "reason") })
	m.Collect(prefix+"_offers_total", "castd's multicast offers, by result (taken, or why refused: bad_signature, replay, ...).", metrics.Counter,
		func() []metrics.Sample { return samples(r.Stats().Offers, "result") })
	m.Collect(prefix+"_objects_total", "Objects received by multicast, by outcome (multicast: without HTTP; fallback: the rest by HTTP range; failed).", metrics.Counter,
		func() []metrics.Sample { return samples(r.Stats().Objects, "outcome") })
	m.Collect(prefix+"_channel_joins_total", "Channel joins, by path (native, amt).", metrics.Counter,
		func() []metrics.Sample { return samples(r.Stats().Joins, "via") })
	m.Collect(prefix+"_channels", "Channels joined now, by path.", metrics.Gauge, func() []metrics.Sample {
		st := r.Stats()
		return []metrics.Sample{{Labels: []string{"via", "amt"}, Value: float64(st.ChannelsAMT)}, {Labels: []string{"via", "native"}, Value: float64(st.ChannelsNative)}}
	})
	m.Func(prefix+"_nacks_total", "NACKs sent to castd.", metrics.Counter, func() float64 { return float64(r.Stats().Nacks) })
	m.Func(prefix+"_objects_active", "Objects in reception now.", metrics.Gauge, func() float64 { return float64(r.Stats().Active) })
}

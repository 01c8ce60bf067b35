package castd

import (
	"github.com/blockcast/beacon/cloud/mcsend"
	"github.com/blockcast/beacon/shared/dtlschan"
	"github.com/blockcast/beacon/shared/metrics"
)

// multicastMetrics exposes the multicast transport under castd_multicast_*.
// No series is per node: a fleet's worth of labels would swamp the scrape
// and tell anyone with /metrics which homes are joined.
func (s *Server) multicastMetrics(m *metrics.Registry) {
	mc := s.mc
	if mc == nil {
		return
	}
	stat := func(name, help string, kind metrics.Kind, get func(mcsend.Stats) float64) {
		m.Collect("castd_multicast_"+name, help, kind, func() []metrics.Sample {
			return []metrics.Sample{{Value: get(mc.sender.Stats())}}
		})
	}
	stat("sessions", "Object sessions running on channels.", metrics.Gauge, func(st mcsend.Stats) float64 { return float64(st.Active) })
	stat("sessions_total", "Object sessions started.", metrics.Counter, func(st mcsend.Stats) float64 { return float64(st.Sessions) })
	stat("nodes", "Nodes the repair service keeps state for.", metrics.Gauge, func(st mcsend.Stats) float64 { return float64(st.Nodes) })
	stat("joins_total", "Join messages from beacons taking an offer.", metrics.Counter, func(st mcsend.Stats) float64 { return float64(st.Joins) })
	stat("nacks_total", "NACK messages taken.", metrics.Counter, func(st mcsend.Stats) float64 { return float64(st.Nacks) })
	stat("leaves_total", "Leave messages.", metrics.Counter, func(st mcsend.Stats) float64 { return float64(st.Leaves) })
	stat("passes_total", "Carousel passes completed.", metrics.Counter, func(st mcsend.Stats) float64 { return float64(st.Passes) })
	stat("send_errors_total", "Datagrams a sink (native or AMT) failed to send.", metrics.Counter, func(st mcsend.Stats) float64 { return float64(st.SendErrs) })
	m.Collect("castd_multicast_bytes_total", "ALC bytes sent, by kind: data, parity, nack_parity, auth (on channels), early, repair (over DTLS).", metrics.Counter, func() []metrics.Sample {
		st := mc.sender.Stats()
		out := make([]metrics.Sample, mcsend.NumKinds)
		for k := range mcsend.NumKinds {
			out[k] = metrics.Sample{Labels: []string{"kind", mcsend.Kind(k).String()}, Value: float64(st.Bytes[k])}
		}
		return out
	})
	m.Collect("castd_multicast_packets_total", "ALC packets sent, by kind.", metrics.Counter, func() []metrics.Sample {
		st := mc.sender.Stats()
		out := make([]metrics.Sample, mcsend.NumKinds)
		for k := range mcsend.NumKinds {
			out[k] = metrics.Sample{Labels: []string{"kind", mcsend.Kind(k).String()}, Value: float64(st.Packets[k])}
		}
		return out
	})
	m.Collect("castd_multicast_refused_total", "Control messages or ranges the repair service refused, by reason.", metrics.Counter, func() []metrics.Sample {
		st := mc.sender.Stats()
		out := make([]metrics.Sample, mcsend.NumRefusals)
		for r := range mcsend.NumRefusals {
			out[r] = metrics.Sample{Labels: []string{"reason", mcsend.Refusal(r).String()}, Value: float64(st.Refused[r])}
		}
		return out
	})
	m.Func("castd_multicast_offers_total", "Beacon misses answered with a multicast offer.", metrics.Counter, func() float64 { return float64(mc.offers.Load()) })
	m.Func("castd_multicast_saved_bytes", "Bytes multicast spared the uplink: object bytes taken by offer less all the sessions sent (data, parity, early media, repairs).", metrics.Gauge, func() float64 {
		t := s.pathTotals()
		return float64(t.offered - t.multicast - t.parity - t.repair)
	})
	m.Func("castd_multicast_offered_bytes_total", "Object bytes handed to beacons by offer (what unicast would have sent).", metrics.Counter, func() float64 { return float64(mc.offerBytes.Load()) })
	m.Collect("castd_multicast_fallbacks_total", "Misses meant for multicast answered by unicast, by reason.", metrics.Counter, func() []metrics.Sample {
		out := make([]metrics.Sample, len(fallbackReasons))
		for i, r := range fallbackReasons {
			out[i] = metrics.Sample{Labels: []string{"reason", r}, Value: float64(mc.fallbacks[i].Load())}
		}
		return out
	})
	dtls := func(name, help string, kind metrics.Kind, get func(dtlschan.Stats) float64) {
		m.Collect("castd_multicast_dtls_"+name, help, kind, func() []metrics.Sample {
			srv := mc.dtls.Load()
			if srv == nil {
				return nil
			}
			return []metrics.Sample{{Value: get(srv.Stats())}}
		})
	}
	m.Collect("castd_multicast_dtls_sessions", "DTLS sessions open now.", metrics.Gauge, func() []metrics.Sample {
		srv := mc.dtls.Load()
		if srv == nil {
			return nil
		}
		return []metrics.Sample{{Value: float64(srv.Sessions())}}
	})
	dtls("handshakes_total", "DTLS handshakes completed and accepted.", metrics.Counter, func(st dtlschan.Stats) float64 { return float64(st.Sessions) })
	m.Collect("castd_multicast_dtls_refused_total", "DTLS handshakes and datagrams refused, by reason.", metrics.Counter, func() []metrics.Sample {
		srv := mc.dtls.Load()
		if srv == nil {
			return nil
		}
		st := srv.Stats()
		return []metrics.Sample{
			{Labels: []string{"reason", "unregistered"}, Value: float64(st.Unregistered)},
			{Labels: []string{"reason", "bad_cert"}, Value: float64(st.BadCert)},
			{Labels: []string{"reason", "failed"}, Value: float64(st.Failed)},
			{Labels: []string{"reason", "unverified"}, Value: float64(st.Unverified)},
			{Labels: []string{"reason", "rate_limited"}, Value: float64(st.RateLimited)},
			{Labels: []string{"reason", "busy"}, Value: float64(st.Busy)},
			{Labels: []string{"reason", "dropped"}, Value: float64(st.Dropped)},
			{Labels: []string{"reason", "send_limited"}, Value: float64(st.SendLimited)},
		}
	})
}

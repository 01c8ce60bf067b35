package castd

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/blockcast/beacon/cloud/mcsend"
	"github.com/blockcast/beacon/cloud/web"
)

// historyMinutes is how far back the multicast history goes.
const historyMinutes = 60

// pathTotals are castd's cumulative byte counters by delivery path.
type pathTotals struct {
	origin, unicast, multicast, parity, repair, offered int64
}

func (a pathTotals) sub(b pathTotals) pathTotals {
	return pathTotals{a.origin - b.origin, a.unicast - b.unicast, a.multicast - b.multicast,
		a.parity - b.parity, a.repair - b.repair, a.offered - b.offered}
}

// byteHistory keeps the cumulative totals at each step boundary of the
// hour; a minute's bytes are the difference of two (the last one's, of it
// and the totals now). Memory is fixed: historyMinutes snapshots.
type byteHistory struct {
	step time.Duration

	mu    sync.Mutex
	snaps []historySnap // oldest first
}

type historySnap struct {
	at time.Time
	t  pathTotals
}

func newByteHistory(now time.Time) *byteHistory {
	return &byteHistory{step: time.Minute, snaps: []historySnap{{at: now}}}
}

// record keeps the totals t taken at now.
func (h *byteHistory) record(now time.Time, t pathTotals) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snaps = append(h.snaps, historySnap{now, t})
	if n := len(h.snaps) - historyMinutes; n > 0 {
		h.snaps = append(h.snaps[:0], h.snaps[n:]...)
	}
}

// view returns the history, the step in progress (cur, taken at now) last.
func (h *byteHistory) view(now time.Time, cur pathTotals) web.History {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := web.History{Time: now.UTC(), Minutes: make([]web.HistoryMinute, len(h.snaps))}
	for i, sn := range h.snaps {
		next := cur
		if i+1 < len(h.snaps) {
			next = h.snaps[i+1].t
		}
		d := next.sub(sn.t)
		out.Minutes[i] = web.HistoryMinute{
			Start: sn.at.UTC(), Origin: d.origin, Unicast: d.unicast, Multicast: d.multicast,
			Parity: d.parity, Repair: d.repair, Saved: d.offered - d.multicast - d.parity - d.repair,
		}
	}
	return out
}

// pathTotals reads the counters the history is made of.
func (s *Server) pathTotals() pathTotals {
	cs := s.cache.Stats()
	t := pathTotals{origin: cs.UpstreamBytes, unicast: cs.BytesServed}
	if s.mc != nil {
		st := s.mc.sender.Stats()
		t.multicast = int64(st.Bytes[mcsend.KindData] + st.Bytes[mcsend.KindAuth])
		t.parity = int64(st.Bytes[mcsend.KindParity] + st.Bytes[mcsend.KindNackParity])
		t.repair = int64(st.Bytes[mcsend.KindEarly] + st.Bytes[mcsend.KindRepair])
		t.offered = int64(s.mc.offerBytes.Load())
	}
	return t
}

// recordByteHistory takes the totals at every step until ctx ends.
func (s *Server) recordByteHistory(ctx context.Context) {
	t := time.NewTicker(s.history.step)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.history.record(now, s.pathTotals())
		}
	}
}

// handleMulticastHistory serves the operator the last hour's bytes by path.
func (s *Server) handleMulticastHistory(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		s.fail(w, r, http.StatusMethodNotAllowed, "the multicast history takes GET")
		return
	}
	if !s.requireAdmin(w, r) {
		return
	}
	writeJSON(w, s.history.view(time.Now(), s.pathTotals()))
}

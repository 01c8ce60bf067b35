package contracts

import (
	"fmt"
	"math"
	"time"
)

// Measured is what castd saw of a node over a window (package history
// implements Measurer from the monitor).
type Measured struct {
	Observed        time.Duration // time castd was watching the node
	Online          time.Duration // of which it was online
	PeakMbps        float64       // fastest served rate between two samples
	StorageMinBytes uint64        // least storage (cache + free) reported
	StorageSamples  int
}

// Measurer measures a node over [from, to).
type Measurer interface {
	Measure(node string, from, to time.Time) (Measured, error)
}

// ServedFigures is what a node served over a window.
type ServedFigures struct {
	Bytes    uint64  `json:"bytes"`
	Requests uint64  `json:"requests,omitempty"`
	HitRatio float64 `json:"hit_ratio"`
	// Source says where the figures come from: "health-reports" (the
	// node's own counters) today; cross-checked delivery receipts
	// (cloud/receipts) implement Served too.
	Source string `json:"source"`
}

// Served is the one thing contracts need from delivery receipts.
type Served interface {
	ServedBytes(node string, from, to time.Time) (ServedFigures, error)
}

// Term statuses and verdicts.
const (
	StatusMet        = "met"
	StatusNotMet     = "not_met"
	StatusUnverified = "unverified" // castd cannot measure it; does not fail the contract
	VerdictMet       = "met"
	VerdictNotMet    = "not_met"
	VerdictRunning   = "in_progress" // the window is not over: figures so far
	VerdictOutside   = "outside"     // the window does not overlap the contract
	VerdictNotYet    = "not_started" // the window starts later than now
	// VerdictUnmeasured: castd watched the node less than MinObserved of
	// the window (castd down, or no control plane): too little to judge.
	VerdictUnmeasured = "unmeasured"
	MinObserved       = 0.5
)

// Term is one commitment judged.
type Term struct {
	Name      string  `json:"name"` // availability_hours, storage_gb, bandwidth_mbps
	Committed float64 `json:"committed"`
	Measured  float64 `json:"measured"`
	Status    string  `json:"status"`
	Reason    string  `json:"reason,omitempty"`
}

// Evaluation is a contract judged over a window.
type Evaluation struct {
	Contract string        `json:"contract"`
	Owner    string        `json:"owner"`
	Node     string        `json:"node"`
	From     time.Time     `json:"from"` // the window: the period asked, within the contract
	To       time.Time     `json:"to"`
	Verdict  string        `json:"verdict"`
	Reasons  []string      `json:"reasons,omitempty"`
	Terms    []Term        `json:"terms"`
	Observed float64       `json:"observed_hours"`
	Online   float64       `json:"online_hours"`
	Served   ServedFigures `json:"served"`
}

// Evaluate judges c over [from, to) at now. The availability commitment
// is pro-rated to the part of the contract inside the window and to the
// share of it castd observed (castd being down is not the node's fault);
// storage must never have dropped below the commitment in any report;
// bandwidth is shown met when the node served that fast, and is otherwise
// unverified (castd has no capacity probe: low demand is not a breach).
func Evaluate(c Contract, from, to, now time.Time, m Measurer, sv Served) (Evaluation, error) {
	o := c.Offer
	ev := Evaluation{Contract: c.ID, Owner: o.Owner.String(), Node: o.Node.String(), Terms: []Term{}}
	lo, hi := later(from, o.Start), earlier(to, o.End)
	ev.From, ev.To = lo.UTC(), hi.UTC()
	if !lo.Before(hi) {
		ev.Verdict = VerdictOutside
		ev.From, ev.To = from.UTC(), to.UTC()
		return ev, nil
	}
	if !lo.Before(now) {
		ev.Verdict = VerdictNotYet
		return ev, nil
	}
	end := earlier(hi, now)
	node := o.Node.String()
	var meas Measured
	var err error
	if meas, err = m.Measure(node, lo, end); err != nil {
		return ev, fmt.Errorf("contracts: measuring %s: %w", node, err)
	}
	if ev.Served, err = sv.ServedBytes(node, lo, end); err != nil {
		return ev, fmt.Errorf("contracts: served by %s: %w", node, err)
	}
	ev.Observed, ev.Online = meas.Observed.Hours(), meas.Online.Hours()
	window := hi.Sub(lo)
	share := window.Hours() / o.End.Sub(o.Start).Hours()
	required := float64(o.AvailabilityHours) * share * math.Min(1, meas.Observed.Hours()/window.Hours())
	avail := Term{Name: "availability_hours", Committed: round2(required), Measured: round2(ev.Online), Status: StatusMet}
	if ev.Online+1e-9 < required {
		avail.Status = StatusNotMet
		avail.Reason = fmt.Sprintf("online %.3f h of the %.3f h due in this window (%d h over the whole contract; castd observed the node %.3f h of the %.3f h window)",
			ev.Online, required, o.AvailabilityHours, ev.Observed, window.Hours())
	}
	gb := float64(meas.StorageMinBytes) / 1e9
	storage := Term{Name: "storage_gb", Committed: float64(o.StorageGB), Measured: round2(gb), Status: StatusMet}
	switch {
	case meas.StorageSamples == 0:
		storage.Status, storage.Reason = StatusNotMet, "no health report with storage figures in the window"
	case gb < float64(o.StorageGB):
		storage.Status, storage.Reason = StatusNotMet, fmt.Sprintf("offered as little as %.2f GB (cache plus free space), %d GB committed", gb, o.StorageGB)
	}
	bw := Term{Name: "bandwidth_mbps", Committed: float64(o.BandwidthMbps), Measured: round2(meas.PeakMbps), Status: StatusMet}
	if meas.PeakMbps < float64(o.BandwidthMbps) {
		bw.Status = StatusUnverified
		bw.Reason = fmt.Sprintf("served at most %.2f Mbit/s between samples; castd does not probe capacity, so %d Mbit/s is neither shown nor refuted", meas.PeakMbps, o.BandwidthMbps)
	}
	ev.Terms = append(ev.Terms, avail, storage, bw)
	for _, t := range ev.Terms {
		if t.Status == StatusNotMet {
			ev.Reasons = append(ev.Reasons, t.Name+": "+t.Reason)
		}
	}
	switch {
	case now.Before(hi):
		ev.Verdict = VerdictRunning
	case ev.Observed < MinObserved*window.Hours():
		ev.Verdict = VerdictUnmeasured
		ev.Reasons = append(ev.Reasons, fmt.Sprintf("castd observed the node %.2f h of the %.2f h window, less than %.0f%%", ev.Observed, window.Hours(), 100*MinObserved))
	case len(ev.Reasons) > 0:
		ev.Verdict = VerdictNotMet
	default:
		ev.Verdict = VerdictMet
	}
	return ev, nil
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

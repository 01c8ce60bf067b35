package amtgw

import (
	"testing"
	"time"
)

// TestOptionsDefaults: zero Options get the documented defaults.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"LocalAddr", o.LocalAddr, DefaultLocalAddr},
		{"ReadBuffer", o.ReadBuffer, DefaultReadBuffer},
		{"NoDataTimeout", o.NoDataTimeout, DefaultNoDataTimeout},
		{"RetransmitInitial", o.RetransmitInitial, DefaultRetransmitInitial},
		{"RetransmitMax", o.RetransmitMax, DefaultRetransmitMax},
		{"ConnectAttempts", o.ConnectAttempts, DefaultConnectAttempts},
		{"BackoffInitial", o.BackoffInitial, DefaultBackoffInitial},
		{"BackoffMax", o.BackoffMax, DefaultBackoffMax},
		{"HoldDown", o.HoldDown, DefaultHoldDown},
		{"LimitHoldDown", o.LimitHoldDown, DefaultLimitHoldDown},
		{"ReportInterval", o.ReportInterval, DefaultReportInterval},
		{"ResolveTimeout", o.ResolveTimeout, DefaultResolveTimeout},
		{"ResolveCache", o.ResolveCache, DefaultResolveCache},
		{"QueueLen", o.QueueLen, DefaultQueueLen},
		{"MaxDatagram", o.MaxDatagram, DefaultMaxDatagram},
		{"ReemitInterface", o.ReemitInterface, ""}, // off
		{"Logger set", o.Logger != nil, true},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	// A maximum below its initial value is raised to it.
	o = Options{RetransmitInitial: 200 * time.Second, BackoffInitial: 300 * time.Second}
	o.ensureDefaults()
	if o.RetransmitMax != 200*time.Second || o.BackoffMax != 300*time.Second {
		t.Errorf("maxima %v %v", o.RetransmitMax, o.BackoffMax)
	}
}

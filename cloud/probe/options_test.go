package probe

import (
	"strings"
	"testing"
	"time"
)

// TestOptionsDefaults: zero Options get the documented defaults (Timeout
// from Interval), and refusals name the field.
func TestOptionsDefaults(t *testing.T) {
	for _, tc := range []struct {
		interval, timeout time.Duration
	}{
		{2 * time.Second, time.Second},
		{time.Minute, maxTimeout},
	} {
		o := Options{Interval: tc.interval}
		o.ensureDefaults()
		if o.Timeout != tc.timeout || o.MaxInFlight != DefaultMaxInFlight || o.Logger == nil {
			t.Errorf("Interval %v: %+v", tc.interval, o)
		}
		if err := o.check(); err != nil {
			t.Errorf("Interval %v: %v", tc.interval, err)
		}
	}
	for field, bad := range map[string]Options{
		"Options.Interval":    {},
		"Options.Timeout":     {Interval: 2 * time.Second, Timeout: 3 * time.Second},
		"Options.MaxInFlight": {Interval: 2 * time.Second, MaxInFlight: -1},
	} {
		bad.ensureDefaults()
		if err := bad.check(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}

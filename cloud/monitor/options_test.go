package monitor

import (
	"strings"
	"testing"
)

// TestOptionsDefaults: zero Options get the documented defaults; a
// negative SweepEvery keeps meaning "never by itself".
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.ensureDefaults()
	for _, tc := range []struct {
		field     string
		got, want any
	}{
		{"Window", o.Window, DefaultWindow},
		{"DefaultInterval", o.DefaultInterval, DefaultInterval},
		{"Grace", o.Grace, DefaultGrace},
		{"MaxNodes", o.MaxNodes, DefaultMaxNodes},
		{"MaxResults", o.MaxResults, DefaultMaxResults},
		{"ReplayCacheSize", o.ReplayCacheSize, DefaultReplayCacheSize},
		{"SweepEvery", o.SweepEvery, DefaultSweepEvery},
		{"Workers", o.Workers, 0}, // the bus's own goroutines
		{"Logger set", o.Logger != nil, true},
		{"Now set", o.Now != nil, true},
	} {
		if tc.got != tc.want {
			t.Errorf("zero %s became %v, want %v", tc.field, tc.got, tc.want)
		}
	}
	off := Options{SweepEvery: -1}
	off.ensureDefaults()
	if off.SweepEvery != -1 {
		t.Errorf("negative SweepEvery replaced: %v", off.SweepEvery)
	}
	if err := o.check(); err == nil || !strings.Contains(err.Error(), "Options.Bus") {
		t.Errorf("no Bus: %v", err)
	}
}
